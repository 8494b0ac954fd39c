"""The progress display: a rich progress bar with ETA on a terminal (and in a Jupyter
notebook with ipywidgets), plain lines (every few seconds, with an ETA) in logs, CI and
notebooks without ipywidgets. ``progress=True`` in a study is :class:`ProgressDisplay()`.

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

__all__ = ["ProgressDisplay", "check_progress", "in_jupyter_kernel"]

#: Seconds between two plain progress lines (not a terminal).
PLAIN_EVERY_S = 5.0
_STAGE_LABEL = {"evaluate": "search", "verify": "verify"}


def check_progress(progress: object) -> Any:
    """The progress callback a study keeps for its ``progress`` argument: ``True`` is the
    default display (:class:`ProgressDisplay()`), ``None`` or ``False`` none, a callable
    itself. Anything else is a one-line :class:`~mapframe.errors.ConfigError`: a study
    accepted ``progress=1`` and stopped with a raw ``TypeError`` at its first event."""
    if progress is True:
        return ProgressDisplay()
    if progress is None or progress is False:
        return None
    if not callable(progress):
        from mapframe.errors import ConfigError

        raise ConfigError(f"progress must be True (the default display), a callable taking a "
                          f"ProgressEvent (e.g. mapframe.progress.ProgressDisplay()) or None, "
                          f"got {progress!r}")
    return progress


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel running code (a notebook, JupyterLab, VS
    Code's notebooks): IPython's shell there is a ``ZMQInteractiveShell`` (or a subclass).
    Looks only at modules already imported, so it imports nothing."""
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    if not callable(get_ipython):
        return False
    try:
        shell = get_ipython()
    except Exception:  # a broken shell is no kernel to display in
        return False
    if shell is None:
        return False
    return any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def _widgets_available() -> bool:
    """ipywidgets can be imported (rich draws its bar in a Jupyter widget)."""
    try:
        import ipywidgets  # noqa: F401
    except Exception:  # ImportError, or a broken install: plain lines then
        return False
    return True


class ProgressDisplay:
    """Shows a study's progress on ``stream`` (default stderr); call :meth:`close` when the
    study ends. ``quiet`` shows nothing; ``rich_bar`` forces the bar on (``True``) or off
    (``False``); by default it is on when ``stream`` is a terminal and rich is installed.

    In a Jupyter kernel (:func:`in_jupyter_kernel`, showing on the notebook's own stderr or
    stdout) the bar is rich's Jupyter widget, by default and with ``rich_bar=True``, when
    ipywidgets is installed, and plain lines otherwise: never a terminal's escape codes in
    the cell's output."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 rich_bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        notebook = (self.stream is sys.stderr or self.stream is sys.stdout) and \
            in_jupyter_kernel()
        self._rich: Any = None
        #: The bar is drawn in a Jupyter widget: redrawn by this display on its events (no
        #: refresh thread, no redirected stdout/stderr, nothing left running if a study
        #: stops with an error).
        self._jupyter = False
        if not quiet and (rich_bar if rich_bar is not None else tty or notebook):
            if not notebook:
                self._rich = _rich_progress(self.stream)
            elif _widgets_available():
                self._rich = _rich_progress(self.stream, jupyter=True)
                self._jupyter = self._rich is not None
        self._last_draw = 0.0
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
            if self._jupyter and (ev.done >= ev.total or now - self._last_draw >= 0.5):
                self._draw()
                self._last_draw = now
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
            if self._jupyter:
                self._draw()  # the widget shows the last state; nothing to stop
            else:
                self._rich.stop()
            self._rich = None

    # -- helpers --------------------------------------------------------------------------
    def _draw(self) -> None:
        """Redraw the bar in its Jupyter widget (rich's Progress.refresh draws only a started
        display, which would start a refresh thread)."""
        self._rich.live.refresh()

    def _new_stage(self, ev: Any, now: float) -> None:
        self._stage = ev.stage
        self._stage_t0 = now
        self._stage_done0 = ev.done
        self._stage_reused0 = ev.reused
        self._last_line = 0.0
        if ev.stage in _STAGE_LABEL:
            if self._rich is not None:
                if not self._jupyter:
                    self._rich.start()
                self._task = self._rich.add_task(_STAGE_LABEL[ev.stage], total=ev.total,
                                                 completed=ev.done, detail="")
            return
        if self._rich is not None:
            if self._jupyter:
                self._draw()  # the stage before, as it ended
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


def _rich_progress(stream: TextIO, jupyter: bool = False) -> Any:
    """A rich Progress on ``stream`` (a terminal's, whatever ``stream`` is), or in a Jupyter
    widget (``jupyter``); ``None`` when rich is not installed."""
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
    columns = (TextColumn("{task.description:<6}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.fields[detail]}"))
    if jupyter:  # never started: ProgressDisplay redraws it (refresh) into its widget
        return Progress(*columns, console=Console(force_jupyter=True, highlight=False),
                        auto_refresh=False, redirect_stdout=False, redirect_stderr=False,
                        transient=False, speed_estimate_period=60)
    return Progress(*columns, console=Console(file=stream, force_terminal=True),
                    transient=False, speed_estimate_period=60)
