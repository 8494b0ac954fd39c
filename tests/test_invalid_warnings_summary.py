"""Evaluations with NaN or infinite metrics: one summary warning per phase of a study run
(15 NaN points gave 15 warnings, 30 lines of stderr, each message different so Python's
once-filter never folded them, each attributed to a line of mapframe/session.py). The
summary points at the user's line, and each evaluation keeps its details in the history."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import EvaluationError, MapframeWarning
from mapframe.evaluators import CallableEvaluator
from mapframe.history import FailureReason


def nan_right_half(C: np.ndarray) -> np.ndarray:
    out = np.column_stack([-(C**2).sum(axis=1), -((C - 1) ** 2).sum(axis=1)])
    out[C[:, 0] > 0.5, 0] = np.nan
    return out


def nan_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, MapframeWarning)
            and "NaN or infinite" in str(w.message)]


def test_one_summary_for_the_search_pointing_at_the_caller() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = MergeStudy(objective=nan_right_half, task_names=["a", "b"], budget=30,
                            seed=0, sampler="sobol").run()
    bad = [e for e in result.history if e.status == "invalid"]
    got = nan_warnings(record)
    assert len(got) == 1, [str(w.message) for w in got]
    msg = str(got[0].message)
    assert "\n" not in msg
    assert f"NaN or infinite metrics in {len(bad)} of 30 evaluations of the search phase" in msg
    assert f"task 'a' in {len(bad)}" in msg and "study 'study'" in msg
    assert "first at coefficients [" in msg
    assert "stored as invalid and left out of the surrogate fit" in msg
    assert "result.history.failures" in msg
    # the user's line, not mapframe's
    assert got[0].filename == __file__, got[0].filename
    # the details of each stay with the evaluation
    assert bad and result.history.failures == bad
    assert all(e.error == "NaN or infinite metric for task(s) a"
               and e.reason is FailureReason.NON_FINITE for e in bad)


def test_each_phase_has_its_summary() -> None:
    rows = [0]

    def nan_after_search(C: np.ndarray) -> np.ndarray:
        out = np.column_stack([-(C**2).sum(axis=1), -((C - 1) ** 2).sum(axis=1)])
        index = rows[0] + np.arange(len(C))  # the rows after the search's 12: verification
        rows[0] += len(C)
        out[index >= 12, 1] = np.inf
        return out

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        MergeStudy(objective=nan_after_search, task_names=["a", "b"], budget=12, seed=0,
                   sampler="sobol", verify=2, study_name="two").run()
    got = [str(w.message) for w in nan_warnings(record)]
    assert len(got) == 1, got
    assert "in 2 of 2 evaluations of the verify phase of study 'two' (task 'b' in 2" in got[0]
    assert "left out of the verification" in got[0]


def test_a_run_stopped_by_an_error_still_warns_and_keeps_the_error(tmp_path) -> None:
    """The summary is due at the end of the run, also when a failure stops it; a warning
    turned into an error (-W error) does not hide the failure."""

    def one(c: np.ndarray) -> list[float]:
        if c[0] > 0.9:
            raise RuntimeError("boom")
        return [float("nan") if c[0] > 0.5 else -c[0], -c[1]]

    def study(store: str) -> MergeStudy:
        return MergeStudy(evaluator=CallableEvaluator(one, ["a", "b"], vectorized=False),
                          budget=20, seed=0, sampler="sobol", storage=tmp_path / store)

    with pytest.warns(MapframeWarning, match=r"NaN or infinite metrics in \d+ of \d+ "
                                             r"evaluations of the search phase"), \
            pytest.raises(EvaluationError, match="boom"):
        study("s.sqlite").run()
    stored = study("s.sqlite").storage
    stored.open("study", study("s.sqlite").fingerprint())
    try:
        assert any(e.reason is FailureReason.NON_FINITE for e in stored.load())
    finally:
        stored.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MapframeWarning)
        with pytest.raises(EvaluationError, match="boom"):
            study("t.sqlite").run()


def test_no_warning_without_nan() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        MergeStudy(objective=lambda C: -np.column_stack([C[:, 0], C[:, 1]]),
                   task_names=["a", "b"], budget=8, seed=0, sampler="sobol").run()
    assert nan_warnings(record) == []


def test_the_summary_is_issued_once_per_run_not_per_point() -> None:
    """Two runs: two summaries (each run's), whatever the number of NaN points."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's default: once per message and line
        for seed in (0, 1):
            MergeStudy(objective=nan_right_half, task_names=["a", "b"], budget=30, seed=seed,
                       sampler="sobol", study_name=f"s{seed}").run()
    assert len(nan_warnings(record)) == 2
