"""Device and dtype choices of the language-model evaluators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "dtype_name", "resolve_device", "resolve_dtype"]

#: Dtypes a model can be loaded and merged in. ``auto`` keeps the checkpoint's own dtype
#: (a bfloat16 or float16 checkpoint stays so; float32 stays float32).
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

_DEVICE_FORMS = "auto, cpu, cuda, cuda:<index> or mps"


def resolve_device(device: str) -> torch.device:
    """The ``torch.device`` a config's ``device`` names.

    ``auto`` is ``cuda`` when CUDA is available, else ``cpu``; ``cpu``, ``cuda``,
    ``cuda:<index>`` and ``mps`` are taken as they are once checked to exist here. A device
    that is not available, or a string of another form, is a :class:`ConfigError` naming
    the fix.
    """
    import torch

    d = str(device if device is not None else "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        idx = d.partition(":")[2]
        if d != "cuda" and not idx.isdigit():
            raise ConfigError(f"unknown device {device!r}; use {_DEVICE_FORMS}")
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here; "
                              "use device: cpu, or device: auto (CUDA when there is one)")
        if idx and int(idx) >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1}); use one of them or auto")
        return torch.device(d)
    if d == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {device!r} requested but MPS is not available here; "
                              "use device: cpu or auto")
        return torch.device("mps")
    raise ConfigError(f"unknown device {device!r}; use {_DEVICE_FORMS}")


def resolve_dtype(name: str, stored: torch.dtype) -> torch.dtype:
    """The dtype to load and merge a model in: ``auto`` is ``stored`` (the checkpoint's own
    dtype), otherwise the named one of :data:`DTYPES`."""
    import torch

    key = str(name).strip().lower() if name is not None else "auto"
    if key == "auto":
        return stored
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if key not in table:
        raise ConfigError(f"unknown dtype {name!r}; available: {', '.join(DTYPES)} (auto keeps "
                          "the checkpoint's own dtype)")
    return table[key]


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as configs and reports spell it: ``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")
