__version__ = "0.1.0"

#: The installed distributions whose versions can change a study's numbers (summary.json's
#: ``settings.versions``): mapframe's own and the numerical libraries its components use.
RESULT_LIBRARIES = ("numpy", "scipy", "torch", "gpytorch", "botorch", "pymoo",
                    "scikit-learn")


def installed_versions() -> dict[str, str | None]:
    """Python's and mapframe's versions and those of :data:`RESULT_LIBRARIES` (``None``:
    not installed), read from the installed metadata (nothing is imported)."""
    import platform
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version(),
                                  "mapframe": __version__}
    for name in RESULT_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
