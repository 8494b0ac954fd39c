"""Shared pieces of the benchmarks: the digits example as a ground-truth problem."""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapframe.examples import digits
from mapframe.merging import Merger, TaskArithmetic, TaskVectors
from mapframe.metrics import pareto_mask

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
