"""A resumed study whose stored search evaluations this run will not propose (another seed;
an older study whose default sampler was ``sobol`` resumed under today's ``sampler: auto``)
warned only at the end, after it had paid for new evaluations; the warning now comes before
the first new evaluation, once, and is recorded in the result's warnings."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import MapframeWarning

CALLS: list[int] = []


def _counted(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    CALLS.append(len(C))
    return np.column_stack([1 - ((C - t) ** 2).sum(1) for t in ([0.8, 0.2], [0.2, 0.8])])


def _run(db: str, **kw: Any) -> Any:
    kw.setdefault("sampler", "sobol")
    kw.setdefault("seed", 0)
    return MergeStudy(objective=_counted, task_names=["a", "b"], budget=10, storage=db,
                      surrogate="quadratic", study_name="old", **kw).run()


def _until_the_warning(db: str, **kw: Any) -> tuple[list[int], str]:
    """The objective's calls before the unused-stored warning (made an error), and it."""
    CALLS.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*went unused", category=MapframeWarning)
        with pytest.raises(MapframeWarning, match="went unused") as info:
            _run(db, **kw)
    return list(CALLS), str(info.value)


def test_unused_stored_evaluations_are_reported_before_new_ones_are_made(tmp_path,
                                                                         monkeypatch):
    db = str(tmp_path / "old.sqlite")
    _run(db)  # an older study: the sobol sampler (the default before 2026-12-06)
    calls, message = _until_the_warning(db, seed=1)
    assert calls == [] and message.startswith("10 finished search evaluations stored")
    assert "said before this run evaluated any new point" in message
    with warnings.catch_warnings(record=True) as caught:  # once, and in result.warnings
        warnings.simplefilter("always")
        CALLS.clear()
        result = _run(db, seed=2)
    text = [str(w.message) for w in caught if "went unused" in str(w.message)]
    assert len(text) == 1 and text[0] in result.warnings and sum(CALLS) == 10
    # Resumed under today's default, auto, which picks an adaptive sampler for this size
    # (gp with gpytorch; here bins, sparing gpytorch's seconds of import and fit): its start
    # reuses the first Sobol' points, its rounds propose their own.
    import mapframe.assembly
    import mapframe.samplers.choice

    for module in (mapframe.assembly, mapframe.samplers.choice):
        monkeypatch.setattr(module, "auto_sampler_name", lambda n_dims, budget: "bins")
    calls, message = _until_the_warning(db, sampler="auto")
    assert calls == [] and "sampler 'bins'" in message and "'sobol' before" in message


def _fails_right(C: np.ndarray) -> np.ndarray:
    """Fails (every time) for a first coefficient above 0.85."""
    C = np.atleast_2d(C)
    if (C[:, 0] > 0.85).any():
        raise RuntimeError("boom")
    return np.column_stack([1 - ((C - t) ** 2).sum(1) for t in ([0.8, 0.2], [0.2, 0.8])])


def test_a_rerun_retrying_a_failed_point_does_not_call_the_stored_points_unused(
        tmp_path: Any) -> None:
    """An adaptive study whose search had failed evaluations, run again: its early round
    re-proposes the failed point, which runs again; that counted as this run's first new
    point, before the later rounds had re-proposed their stored points, so the run warned
    (and wrote into summary.json) that 10 stored evaluations "went unused" while it
    reused all 15."""
    db = str(tmp_path / "s.sqlite")
    kw: dict[str, Any] = dict(objective=_fails_right, task_names=["a", "b"], budget=16, seed=0,
                              storage=db, sampler={"name": "gp", "batch": 2}, on_error="record")
    first = MergeStudy(**kw).run()
    assert first.n_evaluated == 16 and len(first.history.failures) >= 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*went unused", category=MapframeWarning)
        again = MergeStudy(**kw).run()
    assert again.n_reused == 16 - len(first.history.failures)
    assert not any("went unused" in w for w in again.summary()["warnings"])
