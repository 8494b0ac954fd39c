"""``summary.json`` records the evaluator's batch size (a callable's ``batch_size``, an
evaluator's ``max_batch_size``) beside the executor's, which it always did; the batch size
stays out of the fingerprint, so a resume with another one reuses every evaluation."""

from __future__ import annotations

import json

import numpy as np

from mapframe import MergeStudy
from mapframe.evaluators.base import Evaluator
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.problem import Task


def _quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - t) ** 2).sum(1) for t in ([0.8, 0.2], [0.2, 0.8])])


class _ClassCapped(Evaluator):
    """An evaluator whose batch size is a class attribute (no describe() of its own)."""

    name = "class_capped_test"
    max_batch_size = 2

    @property
    def tasks(self) -> list[Task]:
        return [Task("a"), Task("b")]

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: object) -> np.ndarray:
        return _quad(coefficients)


def _study(evaluator: Evaluator, **kw: object) -> MergeStudy:
    return MergeStudy(evaluator=evaluator, budget=8, seed=0, sampler="sobol",
                      surrogate="quadratic", **kw)


def test_summary_json_records_the_evaluator_batch_size(tmp_path):
    db = str(tmp_path / "s.sqlite")
    first = _study(CallableEvaluator(_quad, tasks=["a", "b"], batch_size=3), storage=db).run()
    first.save(tmp_path / "out", plot=False)
    settings = json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]
    assert settings["evaluator"]["max_batch_size"] == 3
    assert settings["executor"]["batch_size"] is None
    # as the study is told (a config's evaluator mapping), and one point at a time
    told = _study({"name": "callable", "function": _quad, "tasks": ["a", "b"],
                   "batch_size": 5})
    assert told.settings()["evaluator"]["max_batch_size"] == 5
    one = _study(CallableEvaluator(_quad, tasks=["a", "b"], vectorized=False))
    assert one.settings()["evaluator"]["max_batch_size"] == 1
    assert _study(_ClassCapped()).settings()["evaluator"]["max_batch_size"] == 2
    # not part of the fingerprint: another batch size resumes from the store
    again = _study(CallableEvaluator(_quad, tasks=["a", "b"], batch_size=2), storage=db)
    assert "max_batch_size" not in again.fingerprint()["evaluator"]
    resumed = again.run()
    assert resumed.n_reused == 8 and resumed.n_evaluated == 0
    assert resumed.summary()["settings"]["evaluator"]["max_batch_size"] == 2


def test_nested_json_records_the_evaluator_batch_size_too(tmp_path):
    from test_nested import make_problem

    from mapframe.nested import NestedMergeStudy

    tv, ev, *_ = make_problem(3)
    ev.max_batch_size = 4
    res = NestedMergeStudy(ev, task_vectors=tv, pair_budget=6, front_solver="grid",
                           preference=[1.0] * 3).run()
    assert res.settings["evaluator"]["max_batch_size"] == 4
    res.save(tmp_path / "nested")
    saved = json.loads((tmp_path / "nested" / "nested.json").read_text())
    assert saved["settings"]["evaluator"]["max_batch_size"] == 4
