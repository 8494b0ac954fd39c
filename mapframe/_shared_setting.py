"""A process-wide setting that concurrent studies share: the first user applies it, the last
puts it back.

Each user saving the setting on entry and restoring it on exit (``dask.config.set``,
threadpoolctl's ``limit``) restores the values in the wrong order when two studies overlap in
threads (A saves 2, B saves 1, A restores 2, B restores 1): the second ran without the
setting, and the first's value stayed for good. :class:`SharedSetting` counts its users.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["SharedSetting"]


class SharedSetting:
    """``apply()`` changes the setting and returns what puts it back; it runs when the
    first user arrives (:meth:`hold`), and what it returned when the last one leaves
    (:meth:`release`)."""

    def __init__(self, apply: Callable[[], Callable[[], object]]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._undo: Callable[[], object] | None = None

    def hold(self) -> None:
        with self._lock:
            if self._users == 0:
                self._undo = self._apply()
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._undo is not None:
                undo, self._undo = self._undo, None
                undo()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The setting applied inside the block."""
        self.hold()
        try:
            yield
        finally:
            self.release()
