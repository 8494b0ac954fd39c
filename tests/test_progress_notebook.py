"""Progress in a Jupyter notebook: ``progress=True`` is the default display (it was refused
with a ConfigError), and in a Jupyter kernel the display never forces a terminal (it wrote
raw escape codes into the cell's output): rich's Jupyter widget when ipywidgets is there,
plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import numpy as np
import pytest

import mapframe.progress as progress_mod
from mapframe import MergeStudy
from mapframe.errors import ConfigError
from mapframe.progress import ProgressDisplay, check_progress, in_jupyter_kernel
from mapframe.study import ProgressEvent


def quad(C: np.ndarray) -> np.ndarray:
    return np.column_stack([-(C**2).sum(axis=1), -((C - 1) ** 2).sum(axis=1)])


class ZMQInteractiveShell:  # the class name ipykernel's shell has
    pass


class ColabShell(ZMQInteractiveShell):  # a notebook service's subclass of it
    pass


class TerminalInteractiveShell:  # IPython in a terminal: no notebook
    pass


def _fake_ipython(monkeypatch: pytest.MonkeyPatch, shell: object | None,
                  kernel: bool = True) -> None:
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    if kernel:
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


def _events(stage: str, total: int) -> list[ProgressEvent]:
    return [ProgressEvent(stage, done, total, 0, 0, 0.0) for done in range(total + 1)]


def test_no_kernel_without_ipykernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert in_jupyter_kernel() is False


@pytest.mark.parametrize("shell, kernel, expected", [
    (ZMQInteractiveShell(), True, True),
    (ColabShell(), True, True),
    (TerminalInteractiveShell(), True, False),
    (None, True, False),                      # IPython imported, no shell running
    (ZMQInteractiveShell(), False, False),    # no ipykernel imported
])
def test_jupyter_kernel_detection(monkeypatch: pytest.MonkeyPatch, shell: object | None,
                                  kernel: bool, expected: bool) -> None:
    _fake_ipython(monkeypatch, shell, kernel)
    assert in_jupyter_kernel() is expected


def test_a_broken_get_ipython_is_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> object:
        raise RuntimeError("no")

    _fake_ipython(monkeypatch, None)
    monkeypatch.setattr(sys.modules["IPython"], "get_ipython", broken)
    assert in_jupyter_kernel() is False


@pytest.mark.parametrize("rich_bar", [True, None])
def test_in_a_kernel_without_ipywidgets_the_bar_is_plain_lines(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        rich_bar: bool | None) -> None:
    """rich_bar=True forced a terminal console: its escape codes landed in the notebook."""
    _fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    show = ProgressDisplay(rich_bar=rich_bar)
    assert show._rich is None
    for ev in [*_events("evaluate", 3), ProgressEvent("done", 3, 3, 0, 0, 0.0)]:
        show(ev)
    show.close()
    err = capsys.readouterr().err
    assert "search 3/3" in err and "done." in err
    assert "\x1b" not in err


class _FakeLive:
    def __init__(self) -> None:
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1


class _FakeProgress:
    """What ProgressDisplay uses of rich's Progress, recorded."""

    def __init__(self) -> None:
        self.live = _FakeLive()
        self.calls: list[str] = []
        self.console = types.SimpleNamespace(print=lambda *a, **k: self.calls.append("print"))

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        self.calls.append("update")


def test_in_a_kernel_with_ipywidgets_the_bar_is_a_jupyter_widget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's Jupyter console, drawn by the display itself: never started (no refresh
    thread, stdout/stderr not redirected), so nothing stays behind when a study fails."""
    _fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setattr(progress_mod, "_widgets_available", lambda: True)
    made: list[tuple[Any, bool]] = []
    fake = _FakeProgress()

    def rich_progress(stream: Any, jupyter: bool = False) -> _FakeProgress:
        made.append((stream, jupyter))
        return fake

    monkeypatch.setattr(progress_mod, "_rich_progress", rich_progress)
    for rich_bar in (None, True):
        made.clear()
        show = ProgressDisplay(rich_bar=rich_bar)
        assert made == [(sys.stderr, True)]
    threads = threading.active_count()
    for ev in [*_events("evaluate", 4), ProgressEvent("fit", 4, 4, 0, 0, 0.0)]:
        show(ev)
    show.close()
    assert "start" not in fake.calls and "stop" not in fake.calls
    assert fake.live.refreshed >= 2  # the last state drawn, at least
    assert threading.active_count() == threads


def test_rich_bar_false_in_a_kernel_is_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setattr(progress_mod, "_widgets_available", lambda: True)
    assert ProgressDisplay(rich_bar=False)._rich is None


def test_a_stream_of_ones_own_in_a_kernel_keeps_the_terminal_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file passed as stream is no notebook output: no widget, plain lines."""
    import io

    _fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setattr(progress_mod, "_widgets_available", lambda: True)
    show = ProgressDisplay(io.StringIO())
    assert show._rich is None and not show._jupyter


def test_check_progress() -> None:
    assert isinstance(check_progress(True), ProgressDisplay)
    assert check_progress(None) is None and check_progress(False) is None

    def cb(ev: ProgressEvent) -> None:
        pass

    assert check_progress(cb) is cb
    with pytest.raises(ConfigError, match=r"progress must be True \(the default display\), a "
                                          r"callable .* got 1"):
        check_progress(1)


def test_progress_true_is_the_default_display(capsys: pytest.CaptureFixture[str]) -> None:
    study = MergeStudy(objective=quad, task_names=["a", "b"], budget=6, seed=0,
                       sampler="sobol", progress=True)
    assert isinstance(study.progress, ProgressDisplay)
    study.run()
    err = capsys.readouterr().err  # not a terminal here: plain lines
    assert "search 6/6" in err and "done." in err and "\x1b" not in err


def test_progress_false_is_none() -> None:
    study = MergeStudy(objective=quad, task_names=["a", "b"], budget=6, progress=False)
    assert study.progress is None


def test_nested_study_takes_progress_true() -> None:
    pytest.importorskip("torch")
    from test_nested_faults import problem, study

    tv, ev = problem(["a", "b", "c"])
    assert isinstance(study(tv, ev, progress=True).progress, ProgressDisplay)
