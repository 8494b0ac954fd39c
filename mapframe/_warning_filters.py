"""One lock for every mapframe block that changes the process's warning filters.

``warnings.catch_warnings()`` saves the filters on entry and puts them back on exit, for the
whole process (before Python 3.14's context-aware warnings). Two such blocks overlapping in
two threads (studies run concurrently) put back each other's filters: one's filters, an
``ignore`` among them, stayed for the rest of the process and silenced later studies'
warnings. :func:`warning_filters` takes a process-wide re-entrant lock around the block, so
mapframe's blocks never overlap across threads (nested blocks in one thread are fine).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["warning_filters"]

_LOCK = threading.RLock()


@contextmanager
def warning_filters() -> Iterator[None]:
    """``warnings.catch_warnings()``, taken under the lock that every mapframe block changing
    warning filters takes: change filters inside it, and they are put back on exit without
    touching another thread's."""
    with _LOCK, warnings.catch_warnings():
        yield
