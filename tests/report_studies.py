"""Small, fast studies whose results folders the report tests read (importable by module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapframe import MergeStudy


def conflicting(n_tasks: int):
    """``n_tasks`` concave tasks, task ``j`` best at ``0.2 + 0.6 e_j``: every pair conflicts."""
    targets = 0.2 + 0.6 * np.eye(n_tasks)

    def f(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        return np.column_stack([1.0 - ((C - t) ** 2).sum(axis=1) for t in targets])

    return f


def make_study(folder: Path, n_tasks: int = 2, budget: int | None = None, verify: int = 3,
               preference: list[float] | None = None, seed: int = 0,
               directions: list[str] | None = None,
               preference_bounds: tuple[list[float], list[float]] | None = None
               ) -> MergeStudy:
    """The study of :func:`conflicting` with its store in ``folder/evaluations.sqlite``."""
    n_params = (n_tasks + 1) * (n_tasks + 2) // 2
    folder.mkdir(parents=True, exist_ok=True)
    names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"][:n_tasks]
    f = conflicting(n_tasks)
    objective = f
    if directions is not None:  # a task to minimise: its metric negated
        signs = np.array([1.0 if d == "max" else -1.0 for d in directions])

        def objective(C: np.ndarray) -> np.ndarray:
            return f(C) * signs

    return MergeStudy(
        objective=objective, task_names=names, directions=directions,
        budget=budget or n_params + 4, seed=seed, verify=verify,
        preference=preference or [1.0] * n_tasks, preference_bounds=preference_bounds,
        sampler="lhs",
        front_solver={"name": "nsga2", "n_gen": 40} if n_tasks > 2 else "auto",
        storage=folder / "evaluations.sqlite", study_name=f"report-{n_tasks}")


def make_results(folder: Path, n_tasks: int = 2, **kw) -> Path:
    """Run :func:`make_study` and write its results folder (no front.png); returns it."""
    study = make_study(folder, n_tasks, **kw)
    study.run().save(folder, plot=False)
    return folder
