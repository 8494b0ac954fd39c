"""Shared pieces of the benchmarks: the digits example as a ground-truth problem."""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.examples import digits
from mapframe.merging import Merger, TaskArithmetic, TaskVectors
from mapframe.metrics import pareto_mask

if TYPE_CHECKING:
    from mapframe.results import StudyResult

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DigitsProblem:
    """The built-in example for a list of tasks: checkpoints plus val/test evaluators."""

    tasks: list[str]
    checkpoints: dict
    val: digits.DigitsEvaluator
    test: digits.DigitsEvaluator
    task_vectors: TaskVectors | None = None

    @classmethod
    def make(cls, tasks: list[str]) -> DigitsProblem:
        ck = digits.prepare_checkpoints(tasks=tasks)
        tv = TaskVectors.from_files(ck["pretrained"], ck["finetuned"])
        evs = []
        for split in ("validation", "test"):
            ev = digits.DigitsEvaluator(tasks=tasks, split=split)
            ev.setup(Merger(TaskArithmetic(), tv))
            evs.append(ev)
        return cls(list(tasks), ck, evs[0], evs[1], tv)

    def evaluator(self, strategy: object, split: str) -> digits.DigitsEvaluator:
        """A ready evaluator that merges with ``strategy`` (a name, spec or instance)."""
        from mapframe.plugin import get_registry

        strat = get_registry().create("merge_strategy", strategy)
        ev = digits.DigitsEvaluator(tasks=self.tasks, split=split)
        assert self.task_vectors is not None
        ev.setup(Merger(strat, self.task_vectors))  # type: ignore[arg-type]
        return ev

    def evaluator_spec(self, split: str) -> dict[str, object]:
        """The evaluator's config for a study on ``split``."""
        return {"name": "digits", "tasks": self.tasks, "split": split}

    def evaluate(self, C: np.ndarray, split: str = "test", chunk: int = 512) -> np.ndarray:
        ev = self.test if split == "test" else self.val
        C = np.atleast_2d(C)
        return np.vstack([ev.evaluate(C[i : i + chunk]) for i in range(0, len(C), chunk)])

    def ground_truth(self, points_per_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense grid over [0, 1]^N evaluated for real on the test split; its Pareto front."""
        axes = [np.linspace(0.0, 1.0, points_per_dim)] * len(self.tasks)
        grid = np.array(list(itertools.product(*axes)))
        F = self.evaluate(grid, "test")
        mask = pareto_mask(F)
        return grid[mask], F[mask]


def map_budget(n: int) -> int:
    """MAP's evaluation budget in the preference benchmarks: twice the quadratic surrogate's
    (N+1)(N+2)/2 coefficients, at least 20."""
    return max((n + 1) * (n + 2), 20)


def map_front(problem: Any, strategy: Any, budget: int, seed: int,
              search_bounds: tuple[float, float] = (0.0, 1.0),
              skip_failed: bool = False) -> tuple[StudyResult, np.ndarray]:
    """Plain MAP with ``strategy`` searching on the validation split; its result and the
    *test*-split metrics of its front points (scoring them is not charged to the budget).
    ``problem`` is a :class:`DigitsProblem` or anything with its ``tasks``, ``checkpoints``,
    ``evaluator_spec`` and ``evaluator``. With ``skip_failed``, a front point whose merge
    raises gets a row of NaN instead."""
    from mapframe import MergeStudy

    res = MergeStudy(evaluator=problem.evaluator_spec("validation"),
                     checkpoints={"pretrained": problem.checkpoints["pretrained"],
                                  "finetuned": problem.checkpoints["finetuned"]},
                     merge_strategy=strategy, budget=budget, seed=seed, sampler="sobol",
                     search_bounds=search_bounds).run()  # Plain MAP, as recorded
    ev = problem.evaluator(strategy, "test")
    C = res.front.coefficients
    try:
        return res, ev.evaluate(C)
    except Exception:
        if not skip_failed:
            raise
    F = np.full((len(C), len(problem.tasks)), np.nan)
    for i, c in enumerate(C):
        try:
            F[i] = ev.evaluate(c[None])[0]
        except Exception:  # left NaN, counted by the caller
            continue
    return res, F


def preference_scores(predicted: np.ndarray, F_test: np.ndarray,
                      P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per preference p (rows of ``P``): the test score Σ p_i m_i of the front point with the
    best *predicted* score (what a user gets), and the best test score on the front (picked on
    test: an upper bound)."""
    picked = np.argmax(predicted @ P.T, axis=0)
    return np.einsum("kn,kn->k", F_test[picked], P), np.max(F_test @ P.T, axis=0)


def mean_std(rows: list[dict], key: str, fmt: str = ".3f") -> str:
    """``"mean ± std"`` of ``row[key]`` over ``rows`` (NaN values ignored)."""
    v = np.array([r[key] for r in rows], float)
    return f"{np.nanmean(v):{fmt}} ± {np.nanstd(v):{fmt}}"


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
