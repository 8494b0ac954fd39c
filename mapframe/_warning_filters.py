"""One lock for every mapframe block that changes the process's warning filters.

``warnings.catch_warnings()`` saves the filters on entry and puts them back on exit, for the
whole process (before Python 3.14's context-aware warnings). Two such blocks overlapping in
two threads (studies run concurrently) put back each other's filters: one's filters, an
``ignore`` among them, stayed for the rest of the process and silenced later studies'
warnings. :func:`warning_filters` takes a process-wide re-entrant lock around the block, so
mapframe's blocks never overlap across threads (nested blocks in one thread are fine).

A block's end takes out exactly the filters the block added (:meth:`Filters.ignore`), not
the whole list as it was at the block's start, which also dropped the filters another
thread (the program's own, not mapframe's) added while the block ran.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, cast

__all__ = ["Filters", "library_filters_unchanged", "warning_filters"]

_LOCK = threading.RLock()


class Filters:
    """The warning filters one :func:`warning_filters` block added, taken out at its end."""

    def __init__(self) -> None:
        self._added: list[tuple[Any, ...]] = []

    def ignore(self, message: str = "", category: type[Warning] = Warning,
               module: str = "") -> None:
        """``warnings.filterwarnings("ignore", ...)`` until the block ends."""
        before = list(warnings.filters)
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
        item = warnings.filters[0]
        if item not in before:  # one the process already had stays after the block
            self._added.append(item)

    def _remove(self) -> None:
        for item in reversed(self._added):
            with contextlib.suppress(ValueError):  # taken out meanwhile (resetwarnings())
                cast(list, warnings.filters).remove(item)
        self._added.clear()
        warnings._filters_mutated()  # type: ignore[attr-defined]  # drop cached decisions


@contextlib.contextmanager
def warning_filters() -> Iterator[Filters]:
    """A block, taken under the lock that every mapframe block changing warning filters
    takes, whose :meth:`Filters.ignore` filters hold until its end: then exactly those are
    taken out, and the filters another thread added meanwhile stay."""
    with _LOCK:
        filters = Filters()
        try:
            yield filters
        finally:
            filters._remove()


class _FiltersUnchanged:
    """Stands in for the ``warnings`` module inside a library's modules: everything as the
    module, but ``simplefilter`` / ``filterwarnings`` / ``resetwarnings`` do nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)

    @staticmethod
    def simplefilter(*args: Any, **kwargs: Any) -> None:
        return None

    @staticmethod
    def filterwarnings(*args: Any, **kwargs: Any) -> None:
        return None

    @staticmethod
    def resetwarnings() -> None:
        return None


@contextlib.contextmanager
def library_filters_unchanged(package: str) -> Iterator[None]:
    """While the block runs (under the lock of :func:`warning_filters`), the imported
    modules of ``package`` that change warning filters through their module-level
    ``warnings`` name change nothing.

    For a library that calls ``warnings.simplefilter("ignore")`` outside any
    ``catch_warnings`` (pymoo 0.6's NSGA-III normalisation): in a ``catch_warnings`` block
    that filter still silenced, until the block's end, every warning of every thread of the
    process (a study solving its front hid another study's warnings in a service), and the
    block's end put back the filters as they were at its start, dropping those another
    thread added meanwhile. The caller silences what the library meant to (numpy's floating
    point warnings with ``np.errstate``, which is per thread)."""
    prefix = package + "."
    with _LOCK:
        patched = [m for name, m in list(sys.modules.items())
                   if (name == package or name.startswith(prefix)) and m is not None
                   and getattr(m, "warnings", None) is warnings]
        stand_in = _FiltersUnchanged()
        for module in patched:
            module.warnings = stand_in  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in patched:
                module.warnings = warnings  # type: ignore[attr-defined]
