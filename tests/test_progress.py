"""Progress that moves: per-merge progress inside a batch, each evaluation timed on its own,
rates and ETAs per stage, a rich bar on a terminal, plain lines in logs."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from mapframe import MergeStudy
from mapframe.evaluators import Evaluator
from mapframe.executors import InProcessExecutor
from mapframe.problem import Task
from mapframe.progress import ProgressDisplay
from mapframe.study import ProgressEvent


class RowByRow(Evaluator):
    """Scores a batch one row at a time; row b sleeps (b % 3 + 1) * 10 ms."""

    name: ClassVar[str] = "row_by_row"

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self._slept: list[float] = []  # private: not part of the setup

    @property
    def tasks(self) -> list[Task]:
        return [Task("a"), Task("b")]

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        C = np.atleast_2d(coefficients)
        out = np.column_stack([1 - ((C - 0.8) ** 2).sum(1), 1 - ((C - 0.2) ** 2).sum(1)])
        for b in range(C.shape[0]):
            pause = (b % 3 + 1) * 0.01
            time.sleep(pause)
            self._slept.append(pause)
            if self.announce:
                self.row_finished()
        return out[:, list(tasks)]


def _study(evaluator: Evaluator, events: list[ProgressEvent], budget: int = 12) -> Any:
    return MergeStudy(evaluator=evaluator, budget=budget, seed=0, sampler="sobol",  # 1 batch
                      study_name=f"progress-{id(evaluator)}",
                      executor=InProcessExecutor(batch_size=budget),
                      progress=events.append).run()


def test_progress_advances_inside_one_batch_and_rows_are_timed() -> None:
    events: list[ProgressEvent] = []
    ev = RowByRow()
    result = _study(ev, events)
    done = [e.done for e in events if e.stage == "evaluate"]
    # One batch of 12, yet progress went through every count before the batch returned.
    assert sorted(set(done)) == list(range(0, 13)) or sorted(set(done)) == list(range(1, 13))
    durations = [e.duration for e in result.history.select("search")]
    assert len(set(np.round(durations, 6))) > 1, "durations were averaged"
    # Each measured duration is at least that row's sleep, and the pattern follows it.
    for d, pause in zip(durations, ev._slept):
        assert d >= pause * 0.9
    assert np.corrcoef(durations, ev._slept[:len(durations)])[0, 1] > 0.8


def test_without_row_calls_the_batch_time_is_shared() -> None:
    events: list[ProgressEvent] = []
    result = _study(RowByRow(announce=False), events)
    durations = [e.duration for e in result.history.select("search")]
    assert len(set(durations)) == 1
    assert [e.done for e in events if e.stage == "evaluate"][-1] == 12


def _ev(stage: str, done: int, total: int, reused: int = 0) -> ProgressEvent:
    return ProgressEvent(stage, done, total, reused, 0, 0.0, workers=1, busy=1,
                         busy_workers=1)


def test_plain_lines_rate_and_eta_per_stage(monkeypatch: Any) -> None:
    import mapframe.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    show = ProgressDisplay(out, rich_bar=False)
    show(_ev("evaluate", 4, 20, reused=4))  # resumed: 4 reused from the store
    for done in range(5, 21):
        clock[0] += 1.0
        show(_ev("evaluate", done, 20, reused=4))
    show(_ev("fit", 20, 20))
    clock[0] += 50.0
    show(_ev("verify", 0, 4))
    clock[0] += 2.0
    show(_ev("verify", 1, 4))
    clock[0] += 6.0
    show(_ev("verify", 4, 4))
    show.close()
    lines = out.getvalue().splitlines()
    search = [ln for ln in lines if ln.startswith("search")]
    # This run's rate (16 in 16 s), not inflated by the 4 reused ones; an ETA while running.
    assert "search 20/20" in search[-1] and "(1.00/s)" in search[-1]
    # A line every 5 s: at 9/20, 5 made in 5 s, 11 left at 1/s.
    assert any(ln.startswith("search 9/20") and "eta 11s" in ln for ln in search)
    assert "workers 1/1 busy" in search[-1]
    verify = [ln for ln in lines if ln.startswith("verify")]
    # Verification is timed from its own start (8 s), not from the start of the search.
    assert "verify 4/4" in verify[-1] and "8.0s (0.50/s)" in verify[-1]
    assert "fit ..." in lines


def test_rich_bar_on_a_terminal() -> None:
    out = io.StringIO()
    show = ProgressDisplay(out, rich_bar=True)
    for done in range(0, 7):
        show(_ev("evaluate", done, 6))
    show(_ev("done", 6, 6))
    show.close()
    text = out.getvalue()
    assert "6/6" in text and "search" in text and "eta" in text
    assert "━" in text  # rich's bar, not a hand-drawn one


def test_quiet_shows_nothing() -> None:
    out = io.StringIO()
    show = ProgressDisplay(out, quiet=True, rich_bar=True)
    show(_ev("evaluate", 1, 2))
    show.close()
    assert out.getvalue() == ""


def test_a_progress_callback_that_raises_loses_no_finished_evaluation(tmp_path) -> None:
    # It raised inside the batch's collection: 1 of 12 finished evaluations was stored and
    # the rerun evaluated the other 11 again. Now the batch is stored, then it propagates.
    calls: list[int] = []

    def objective(C: np.ndarray) -> np.ndarray:
        calls.append(len(C))
        return np.column_stack([1 - ((C - 0.8) ** 2).sum(1), 1 - ((C - 0.2) ** 2).sum(1)])

    def crashes(ev: ProgressEvent) -> None:
        if ev.stage == "evaluate" and ev.done >= 1:
            raise RuntimeError("display crashed")

    kw: dict[str, Any] = dict(objective=objective, task_names=["a", "b"], budget=12, seed=0,
                              sampler="sobol", storage=str(tmp_path / "s.sqlite"))
    try:
        MergeStudy(progress=crashes, **kw).run()
    except RuntimeError as err:
        assert "display crashed" in str(err)
    else:
        raise AssertionError("the callback's error did not propagate")
    assert sum(calls) == 12
    again = MergeStudy(**kw).run()
    assert again.n_reused == 12 and again.n_evaluated == 0 and sum(calls) == 12


def test_a_resumed_stage_says_its_reused_points_and_they_do_not_inflate_the_rate(
        monkeypatch: Any) -> None:
    # The study's stage starts at 0/20 with nothing reused; the 4 points read back from the
    # store arrive as one event (there was none: the display read "search 0/20" until the
    # first new evaluation) and must not count in this run's rate (it read 1.25/s).
    import mapframe.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    show = ProgressDisplay(out, rich_bar=False)
    show(_ev("evaluate", 0, 20))
    show(_ev("evaluate", 4, 20, reused=4))
    for done in range(5, 21):
        clock[0] += 1.0
        show(_ev("evaluate", done, 20, reused=4))
    show.close()
    search = [ln for ln in out.getvalue().splitlines() if ln.startswith("search")]
    assert "search 20/20" in search[-1] and "(1.00/s)" in search[-1]

    events: list[ProgressEvent] = []

    def objective(C: np.ndarray) -> np.ndarray:
        return np.column_stack([1 - ((C - 0.8) ** 2).sum(1), 1 - ((C - 0.2) ** 2).sum(1)])

    from mapframe.storage import MemoryStore

    store = MemoryStore()
    kw: dict[str, Any] = dict(objective=objective, task_names=["a", "b"], seed=0,
                              sampler="sobol", storage=store)
    MergeStudy(budget=8, **kw).run()
    MergeStudy(budget=12, progress=events.append, **kw).run()
    search = [(e.done, e.reused) for e in events if e.stage == "evaluate"]
    assert search[0] == (0, 0) and search[1] == (8, 8) and search[-1] == (12, 8)
