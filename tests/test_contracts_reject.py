"""The contracts in mapframe.testing reject components that break the documented contract.

Each broken component below passes a weaker contract but would give a silent wrong answer in
a study; the contract must fail at least one of its checks on it.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mapframe.executors.base import Executor, JobResult
from mapframe.metrics import pareto_mask
from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.storage.base import EvaluationStore
from mapframe.testing import ExecutorContract, FrontSolverContract, StoreContract


def _failing_checks(contract: Any, tmp_path: Any) -> list[str]:
    """Run every ``test_*`` check of ``contract`` but ``test_is_registered`` (the broken
    components here are not installed); return the names of those that fail."""
    failed = []
    for name in sorted(dir(contract)):
        if not name.startswith("test_") or name == "test_is_registered":
            continue
        method = getattr(contract, name)
        kwargs: dict[str, Any] = {}
        params = inspect.signature(method).parameters
        if "tmp_path" in params:
            kwargs["tmp_path"] = tmp_path / name
            kwargs["tmp_path"].mkdir()
        try:
            method(**kwargs)
        except Exception:
            failed.append(name)
    return failed


class UnitBoxSolver(FrontSolver):
    """Ignores ``space``: draws from the unit square instead of ``space.scale(...)``."""

    name = "unit_box_for_test"

    def solve(self, predict, space, tasks, seed=None):
        X = np.random.default_rng(seed).random((4096, space.n_dims))
        F = np.asarray(predict(X), float)
        keep = pareto_mask(F, [t.direction for t in tasks])
        return SolverResult(X=X[keep], F=F[keep], n_evaluations=len(X))


class TestFrontSolverContractRejects:
    def test_a_solver_that_ignores_the_box(self, tmp_path):
        class Contract(FrontSolverContract):
            def make_solver(self):
                return UnitBoxSolver()

        assert "test_respects_an_offset_box" in _failing_checks(Contract(), tmp_path)

    def test_the_offset_box_check_passes_a_solver_that_scales(self):
        class Scaled(UnitBoxSolver):
            def solve(self, predict, space, tasks, seed=None):
                X = space.scale(np.random.default_rng(seed).random((4096, space.n_dims)))
                F = np.asarray(predict(X), float)
                keep = pareto_mask(F, [t.direction for t in tasks])
                return SolverResult(X=X[keep], F=F[keep], n_evaluations=len(X))

        class Contract(FrontSolverContract):
            def make_solver(self):
                return Scaled()

        Contract().test_respects_an_offset_box()


class LeakyStore(EvaluationStore):
    """Keys rows by ``evaluation.key`` only, in one file: it ignores the study name (two
    studies share their rows and meta) and the phase (a verify row replaces the search row)."""

    name = "leaky_for_test"

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def _read(self) -> dict[str, Any]:
        import os
        import pickle

        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                return pickle.load(f)
        return {"fps": {}, "rows": {}, "meta": {}}

    def _write(self, d: dict[str, Any]) -> None:
        import pickle

        with open(self.path, "wb") as f:
            pickle.dump(d, f)

    def open(self, study_name, fingerprint):
        d = self._read()
        if study_name in d["fps"]:
            self._check_fingerprint(study_name, d["fps"][study_name], fingerprint, self.path)
        else:
            d["fps"][study_name] = fingerprint
            self._write(d)

    def load(self):
        return list(self._read()["rows"].values())

    def add(self, evaluation):
        d = self._read()
        d["rows"].pop(evaluation.key, None)
        d["rows"][evaluation.key] = evaluation
        self._write(d)

    def set_meta(self, key, value):
        d = self._read()
        d["meta"][key] = value
        self._write(d)

    def get_meta(self, key, default=None):
        return self._read()["meta"].get(key, default)


class TestStoreContractRejects:
    def test_a_store_that_mixes_studies_and_ignores_the_phase(self, tmp_path):
        class Contract(StoreContract):
            def make_store(self, tmp_path):
                return LeakyStore(str(tmp_path / "s.pkl"))

        failed = _failing_checks(Contract(), tmp_path)
        assert "test_studies_stay_apart" in failed
        assert "test_phase_and_key_are_the_identity" in failed

    def test_a_store_that_only_mixes_studies(self, tmp_path):
        class PhaseAware(LeakyStore):
            def add(self, evaluation):
                d = self._read()
                d["rows"].pop((evaluation.phase, evaluation.key), None)
                d["rows"][(evaluation.phase, evaluation.key)] = evaluation
                self._write(d)

        class Contract(StoreContract):
            def make_store(self, tmp_path):
                return PhaseAware(str(tmp_path / "s.pkl"))

        failed = _failing_checks(Contract(), tmp_path)
        assert "test_studies_stay_apart" in failed
        assert "test_phase_and_key_are_the_identity" not in failed


class SloppyExecutor(Executor):
    """Never sets the evaluator up with the merge spec (``evaluator.setup(spec.build())``)."""

    name = "sloppy_for_test"

    def start(self, evaluator, merge_spec):
        self._ev, self._jobs = evaluator, []

    def submit(self, jobs):
        self._jobs.extend(jobs)

    def as_completed(self):
        while self._jobs:
            job = self._jobs.pop(0)
            try:
                m = np.asarray(self._ev.evaluate(job.coefficients[None]), float)[0]
                yield JobResult(job, m)
            except Exception as e:
                yield JobResult(job, None, f"{type(e).__name__}: {e}")


class TestExecutorContractRejects:
    def test_an_executor_that_skips_the_merge_spec(self, tmp_path):
        class Contract(ExecutorContract):
            def make_executor(self):
                return SloppyExecutor()

        assert _failing_checks(Contract(), tmp_path) == ["test_merging_evaluator"]
