"""The digits example's study configuration: :func:`digits_study_config`, the config
``mapframe example`` writes and runs, and :func:`default_budget`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError
from mapframe.examples.digits.data import DEFAULT_TASKS, _check_split_and_metric, _check_tasks
from mapframe.examples.digits.training import checkpoint_paths

__all__ = ["default_budget", "digits_study_config"]


def default_budget(n_tasks: int) -> int:
    """Evaluations the example spends: twice the quadratic's ``(N+1)(N+2)/2`` parameters,
    at least 20 (N=2: 20, N=3: 20, N=4: 30, N=8: 90)."""
    if n_tasks < 1:
        raise ConfigError(f"the number of tasks must be positive, got {n_tasks}")
    return max((n_tasks + 1) * (n_tasks + 2), 20)


def digits_study_config(
    output_dir: str | os.PathLike[str],
    tasks: Sequence[str] = DEFAULT_TASKS,
    budget: int | None = None,
    checkpoints: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    split: str = "validation",
    metric: str = "accuracy",
    preference: Sequence[float] | None = None,
    verify: int = 5,
) -> dict[str, Any]:
    """The study configuration (a plain dict, ready for YAML) of the digits example.

    ``tasks`` are both the fine-tuned checkpoints merged and the objectives. ``budget``
    defaults to :func:`default_budget` ``(len(tasks))``. ``checkpoints`` is what
    :func:`prepare_checkpoints` returned; without it the paths are those
    :func:`checkpoint_paths` ``(cache_dir, tasks)`` gives (nothing is trained here: run
    :func:`prepare_checkpoints` before the study).
    """
    names = _check_tasks(tasks)
    _check_split_and_metric(split, metric)
    if budget is None:
        budget = default_budget(len(names))
    elif isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget must be a positive integer, got {budget!r}")
    if checkpoints is None:
        checkpoints = checkpoint_paths(cache_dir, names)
    finetuned = checkpoints.get("finetuned") or {}
    missing = [t for t in names if t not in finetuned]
    if "pretrained" not in checkpoints or missing:
        raise ConfigError(
            "checkpoints must hold 'pretrained' and a 'finetuned' path per task; missing: "
            f"{', '.join(missing) or 'pretrained'}"
        )
    out = Path(output_dir)
    return {
        "study": {
            "name": f"digits-{len(names)}tasks",
            "budget": budget,
            "seed": 0,
            "output": str(out),
            "storage": str(out / "evaluations.sqlite"),
            "search_bounds": [0.0, 1.0],
            "verify": verify,
            "preference": None if preference is None else [float(p) for p in preference],
            "export": preference is not None,
        },
        "evaluator": {"name": "digits", "tasks": names, "split": split, "metric": metric},
        "checkpoints": {
            "pretrained": str(checkpoints["pretrained"]),
            "finetuned": {t: str(finetuned[t]) for t in names},
        },
        "merge_strategy": "task_arithmetic",
        "sampler": "sobol",
        "surrogate": "auto",
        "front_solver": "auto",
    }
