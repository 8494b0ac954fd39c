"""Warnings that matter: verified error far above the leave-one-out estimate, a selected
point outside the evaluated region, no trade-off between tasks, zero or duplicate task
vectors. Each is a MapframeWarning and is recorded in the result (summary.json)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import MapframeWarning
from mapframe.problem import Task
from mapframe.study_checks import extrapolation_check, tradeoff_check, verified_error_check

TARGETS = np.array([[0.8, 0.2], [0.2, 0.8]])


def _run(objective: Any, **kw: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kw.setdefault("sampler", "sobol")  # the scenarios are built on this Sobol' design
        kw.setdefault("seed", 0)
        result = MergeStudy(objective=objective, task_names=["a", "b"], **kw).run()
    return result, [str(w.message) for w in caught if issubclass(w.category, MapframeWarning)]


def _quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - t) ** 2).sum(1) for t in TARGETS])


def test_verified_error_far_above_loo_warns() -> None:
    plain, messages = _run(_quad, budget=12, verify=4, preference=[0.7, 0.3])
    assert messages == []
    where = plain.front.coefficients[plain.selected]
    searched = np.array([e.coefficients for e in plain.history.select("search")])
    assert np.min(np.linalg.norm(searched - where, axis=1)) > 0.05

    def dip(C: np.ndarray) -> np.ndarray:
        # A narrow dip where the preference selects: no search point sees it (the search
        # is the same as above: the same seed and design, and the dip is ~0 there).
        C = np.atleast_2d(C)
        hole = 0.5 * np.exp(-((C - where) ** 2).sum(1) / 0.0005)
        return _quad(C) - hole[:, None]

    result, messages = _run(dip, budget=12, verify=4, preference=[0.7, 0.3])
    text = [m for m in messages if "leave-one-out" in m]
    assert len(text) == 1 and "'a'" in text[0] and "'b'" in text[0]
    assert text[0] in result.warnings and text[0] in result.summary()["warnings"]


def test_well_fitted_study_gives_no_warning() -> None:
    result, messages = _run(_quad, budget=12, verify=4, preference=[1.0, 1.0])
    assert messages == [] and result.warnings == []


def test_selected_unevaluated_corner_warns() -> None:
    def rising(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)  # task a rises with c_a, b with c_b: the best is corner (1, 1)
        return np.column_stack([C[:, 0] - 0.3 * C[:, 1] ** 2, C[:, 1] - 0.3 * C[:, 0] ** 2])

    result, messages = _run(rising, budget=12, verify=0, preference=[1.0, 1.0])
    c = result.front.coefficients[result.selected]
    assert np.all(c > 0.97)
    text = [m for m in messages if "outside the region the search evaluated" in m]
    assert len(text) == 1 and text[0] in result.warnings
    # Verified, the same selection is measured: no extrapolation warning.
    _, messages = _run(rising, budget=12, verify=3, preference=[1.0, 1.0])
    assert not [m for m in messages if "outside the region" in m]


def test_no_tradeoff_warns() -> None:
    def agree(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        d = ((C - 0.6) ** 2).sum(1)
        return np.column_stack([1 - d, 0.5 - 2 * d])

    _, messages = _run(agree, budget=12, verify=2, preference=[1.0, 1.0])
    text = [m for m in messages if "no trade-off" in m]
    assert len(text) == 1 and "(0.6, 0.6)" in text[0]


def test_check_functions_on_arrays() -> None:
    tasks = [Task("a"), Task("b", direction="min")]
    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    diag = {"a": {"loo_rmse": 0.01}, "b": {"loo_rmse": 0.01}}
    assert verified_error_check(P, P + 0.005, diag, tasks) is None
    msg = verified_error_check(P, P + np.array([0.1, 0.0]), diag, tasks)
    assert msg is not None and "'a'" in msg and "'b'" not in msg
    assert msg.endswith("search adaptively (sampler: front)")
    # a study already searching adaptively is not told to
    msg = verified_error_check(P, P + np.array([0.1, 0.0]), diag, tasks, adaptive=True)
    assert msg is not None and "adaptively" not in msg and msg.endswith("raise the budget")
    # One verified point says nothing.
    real = np.full_like(P, np.nan)
    real[0] = P[0] + 1
    assert verified_error_check(P, real, diag, tasks) is None

    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], float)
    lo, hi = np.zeros(2), np.ones(2)
    assert extrapolation_check([0.5, 0.5], square, lo, hi, ["x", "y"], False) is None
    assert extrapolation_check([0.9, 0.9], square[:3], lo, hi, ["x", "y"], False) is not None
    assert extrapolation_check([0.9, 0.9], square[:3], lo, hi, ["x", "y"], True) is None

    # Direction matters: "b" is minimised, so [0.9, 0.1] is best on both.
    F = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    Y = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert tradeoff_check(F, F, Y, tasks) is not None
    assert tradeoff_check(F, F, Y, [Task("a"), Task("b")]) is None


def test_zero_and_duplicate_task_vectors_warn() -> None:
    torch = pytest.importorskip("torch")
    from mapframe.merging import TaskVectors

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    ft = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    other = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    with pytest.warns(MapframeWarning) as caught:
        tv = TaskVectors(base, [ft, dict(base), dict(ft), other],
                         task_names=["x", "same", "x2", "y"],
                         sources=["x.pt", "base-copy.pt", "x-again.pt", "y.pt"])
    messages = [str(w.message) for w in caught]
    assert any("'same' is zero" in m and "base-copy.pt" in m for m in messages)
    assert any("'x', 'x2' are identical" in m for m in messages)
    assert len(tv.degeneracies()) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TaskVectors(base, [ft, other]).degeneracies() == []


def test_stored_evaluations_a_run_did_not_propose_are_reported(tmp_path) -> None:
    # A study resumed with another seed (or sampler, or budget) proposes other points: the
    # stored ones stay, unused, and the run says so (nothing is silently paid for twice).
    db = str(tmp_path / "s.sqlite")

    def run(**kw: Any) -> tuple[Any, list[str]]:
        return _run(_quad, budget=10, storage=db, study_name="same", **kw)

    _, messages = run()
    assert not any("went unused" in m for m in messages)
    again, messages = run()  # the same study: everything reused, nothing to report
    assert again.n_reused == 10 and not any("went unused" in m for m in messages)
    other, messages = run(seed=1)
    text = [m for m in messages if "went unused" in m]
    assert len(text) == 1 and text[0].startswith("10 finished search evaluations stored for "
                                                 "study 'same' were not proposed")
    assert "sampler 'sobol', seed 1" in text[0] and text[0] in other.warnings
    # A changed sampler: the stored Sobol' design is not what the gp sampler proposes.
    pytest.importorskip("gpytorch")
    _, messages = _run(_quad, budget=10, storage=db, study_name="same", sampler="auto")
    assert any("went unused" in m and "sampler 'gp'" in m for m in messages)
    # An old 20-point Sobol' study (the default before 2026-12-06) resumed on the new default:
    # only the gp sampler's initial design (the same first 6 Sobol' points) is found.
    db2 = str(tmp_path / "old.sqlite")
    _run(_quad, budget=20, storage=db2)
    resumed, messages = _run(_quad, budget=20, storage=db2, sampler="auto")
    assert resumed.n_reused == 6 and resumed.n_evaluated == 14
    assert any(m.startswith("14 finished search evaluations") for m in messages)
    # seed=None resumes with the seed the study first ran with (0, kept in the store): the
    # first run's 10 points are reused, and the other runs' are reported.
    drawn, messages = run(seed=None)
    assert drawn.seed == 0 and drawn.n_reused == 10
    assert any("went unused" in m and "seed 0" in m for m in messages)


def test_a_front_study_started_on_sobol_points_is_resumed_with_design_sobol(tmp_path) -> None:
    # The front sampler's start is a Latin hypercube since 2026-12-06: an older front study
    # (Sobol' start) resumed on the default re-draws its start and says how to keep it.
    pytest.importorskip("gpytorch")
    db = str(tmp_path / "front.sqlite")
    old = {"name": "front", "design": "sobol"}
    first, _ = _run(_quad, budget=9, storage=db, sampler=old)
    assert first.n_evaluated == 9
    resumed, messages = _run(_quad, budget=9, storage=db, sampler=old)
    assert resumed.n_reused == 9 and resumed.n_evaluated == 0
    assert not any("went unused" in m for m in messages)
    redrawn, messages = _run(_quad, budget=9, storage=db, sampler="front")
    text = [m for m in messages if "went unused" in m]
    assert redrawn.n_evaluated > 0 and len(text) == 1
    assert "front sampler starts with a Latin hypercube (design 'sobol' before)" in text[0]
    assert "rounds of 1 below a search budget of 3 (N + 1) (batch 3 before)" in text[0]


def test_a_resume_with_another_worker_count_names_the_workers(tmp_path) -> None:
    """An adaptive sampler's rounds hold at least one point per worker: a store written
    before the first run's round capacity was kept, resumed with more workers, leaves its
    stored rounds unused, and the warning names the workers (it named only the seed,
    sampler and budget, all unchanged). Since then the rounds keep the first run's size."""
    pytest.importorskip("gpytorch")
    from mapframe.executors.inprocess import InProcessExecutor

    class FourWide(InProcessExecutor):
        name = "four_wide_test"

        @property
        def capacity(self) -> int:
            return 4

    import sqlite3

    db = str(tmp_path / "s.sqlite")
    _run(_quad, budget=16, storage=db, sampler="gp")
    kept, messages = _run(_quad, budget=16, storage=db, sampler="gp", executor=FourWide())
    assert kept.n_reused == 16 and not any("went unused" in m for m in messages)
    with sqlite3.connect(db) as conn:  # as an older mapframe left it
        conn.execute("DELETE FROM meta WHERE key = 'round_capacity'")
    resumed, messages = _run(_quad, budget=16, storage=db, sampler="gp",
                             executor=FourWide())
    assert resumed.n_reused < 16  # the rounds after the start proposed other points
    text = [m for m in messages if "went unused" in m]
    assert len(text) == 1 and "the same number of workers" in text[0]
