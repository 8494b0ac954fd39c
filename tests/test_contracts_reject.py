"""The contracts in mapframe.testing reject components that break the documented contract.

Each broken component below passes a weaker contract but would give a silent wrong answer in
a study; the contract must fail at least one of its checks on it.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mapframe.metrics import pareto_mask
from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.testing import FrontSolverContract


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
