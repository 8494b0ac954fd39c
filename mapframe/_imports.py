"""Lazy imports of optional, heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
import importlib.util
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


def installed(module: str) -> bool:
    """Whether ``module`` can be found for import, without importing it (cheap: for checks
    that run before a heavy optional dependency is needed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
