"""Lazy imports of optional, heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from mapframe.errors import MapframeError


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a :class:`MapframeError` telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MapframeError(
            f"{purpose} needs the package '{module.split('.')[0]}', which is not importable "
            f"({exc}); install it with: pip install 'mapframe[{extra}]'"
        ) from exc
