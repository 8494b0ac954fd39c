"""The command line's progress display: a rich progress bar with ETA on a terminal, plain
lines (every few seconds, with an ETA) in logs and CI.

It consumes :class:`~mapframe.study.ProgressEvent` s: one per stored evaluation, one per
finished merge inside a running batch (evaluators that call
:meth:`~mapframe.evaluators.Evaluator.row_finished`, as every model evaluator does), and
one per stage (``fit``, ``solve``, ``done``). Rates and ETAs count from the start of each
stage (verification is timed on its own) and from the evaluations made in this run
(evaluations reused from the store do not inflate the rate).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressDisplay", "check_progress"]

#: Seconds between two plain progress lines (not a terminal).
PLAIN_EVERY_S = 5.0
_STAGE_LABEL = {"evaluate": "search", "verify": "verify"}


def check_progress(progress: object) -> None:
    """A one-line :class:`~mapframe.errors.ConfigError` unless ``progress`` is ``None`` or
    callable: a study accepted ``progress=True`` and stopped with a raw ``TypeError`` at its
    first event."""
    if progress is not None and not callable(progress):
        from mapframe.errors import ConfigError

        raise ConfigError(f"progress must be a callable taking a ProgressEvent (e.g. "
                          f"mapframe.progress.ProgressDisplay()) or None, got {progress!r}")


class ProgressDisplay:
    """Shows a study's progress on ``stream`` (default stderr); call :meth:`close` when the
    study ends. ``quiet`` shows nothing; ``rich_bar`` forces the bar on (``True``) or off
    (``False``); by default it is on when ``stream`` is a terminal and rich is installed."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 rich_bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._rich: Any = None
        if not quiet and (rich_bar if rich_bar is not None else tty):
            self._rich = _rich_progress(self.stream)
        self._stage = ""
        self._stage_t0 = 0.0
        self._stage_done0 = 0
        self._stage_reused0 = 0
        self._last_line = 0.0
        self._task: Any = None

    # -- events ---------------------------------------------------------------------------
    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if ev.stage != self._stage:
            self._new_stage(ev, now)
        if ev.stage not in _STAGE_LABEL:
            return
        detail = _detail(ev)
        rate, eta = self._rate_eta(ev, now)
        if self._rich is not None:
            self._rich.update(self._task, completed=min(ev.done, ev.total), total=ev.total,
                              detail=detail)
            return
        if ev.done >= ev.total or now - self._last_line >= PLAIN_EVERY_S:
            eta_text = f"  eta {eta:.0f}s" if eta is not None and ev.done < ev.total else ""
            self.stream.write(f"{_STAGE_LABEL[ev.stage]:6s} {ev.done}/{ev.total}  {detail}  "
                              f"{now - self._stage_t0:.1f}s ({rate:.2f}/s){eta_text}\n")
            self.stream.flush()
            self._last_line = now

    def close(self) -> None:
        """Stop the bar (leaving its last state on screen)."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    # -- helpers --------------------------------------------------------------------------
    def _new_stage(self, ev: Any, now: float) -> None:
        self._stage = ev.stage
        self._stage_t0 = now
        self._stage_done0 = ev.done
        self._stage_reused0 = ev.reused
        self._last_line = 0.0
        if ev.stage in _STAGE_LABEL:
            if self._rich is not None:
                self._rich.start()
                self._task = self._rich.add_task(_STAGE_LABEL[ev.stage], total=ev.total,
                                                 completed=ev.done, detail="")
            return
        if self._rich is not None:
            self._rich.console.print(f"{ev.stage} ..." if ev.stage != "done" else "done.")
        else:
            self.stream.write(f"{ev.stage} ...\n" if ev.stage != "done" else "done.\n")
            self.stream.flush()

    def _rate_eta(self, ev: Any, now: float) -> tuple[float, float | None]:
        """Evaluations per second in this stage (this run's own), and seconds left."""
        took = now - self._stage_t0
        # evaluations read back from the store take no time: they are not this run's rate
        made = (ev.done - self._stage_done0) - (ev.reused - self._stage_reused0)
        if took <= 0 or made <= 0:
            return 0.0, None
        rate = made / took
        return rate, max(ev.total - ev.done, 0) / rate


def _detail(ev: Any) -> str:
    parts = [f"reused {ev.reused}", f"failed {ev.failed}"]
    if getattr(ev, "workers", None) is not None:
        busy_workers = getattr(ev, "busy_workers", None)
        parts.append(f"workers {busy_workers}/{ev.workers} busy" if busy_workers is not None
                     else f"workers {ev.workers}")
        if ev.retried:
            parts.append(f"retried {ev.retried}")
    return "  ".join(parts)


def _rich_progress(stream: TextIO) -> Any:
    """A rich Progress on ``stream`` (``None`` when rich is not installed)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return None
    return Progress(TextColumn("{task.description:<6}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    TextColumn("{task.fields[detail]}"),
                    console=Console(file=stream, force_terminal=True), transient=False,
                    speed_estimate_period=60)
