"""Pieces shared by the vision evaluators: config checks, task lists, checkpoint checks and
the resident model. Private to the package; each caller keeps its own wording of errors and
passes the parts that differ."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mapframe.errors import CheckpointError, ConfigError
from mapframe.problem import Task
from mapframe_vision.runtime import METRICS

if TYPE_CHECKING:
    import torch

    from mapframe_vision.data import TaskSpec

__all__ = [
    "check_count",
    "check_metric",
    "check_preload",
    "check_state_shapes",
    "check_task_mapping",
    "drop_attributes",
    "freeze_on_device",
    "metric_index",
    "metric_tasks",
    "parse_task_list",
    "synchronize",
]

_SpecT = TypeVar("_SpecT", bound="TaskSpec")


# -- config checks -------------------------------------------------------------------------------
def check_metric(metric: str) -> None:
    """Raise :class:`~mapframe.errors.ConfigError` unless ``metric`` is one of ``METRICS``."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")


def check_count(arg: str, value: Any, low: int) -> None:
    """Raise :class:`~mapframe.errors.ConfigError` unless ``value`` (the argument ``arg``) is
    an integer (not a bool) of at least ``low``: 1 (positive) or 0 (non-negative)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "positive" if low else "non-negative"
        raise ConfigError(f"{arg} must be a {kind} integer, got {value!r}")


def check_preload(preload: Any) -> None:
    """Raise :class:`~mapframe.errors.ConfigError` unless ``preload`` is true, false or auto."""
    if preload not in (True, False, "auto"):
        raise ConfigError(f"preload must be true, false or auto, got {preload!r}")


def metric_index(metric: str) -> int:
    """Where ``metric`` sits in :func:`~mapframe_vision.runtime.score_classifier`'s
    ``(accuracy, loss)``."""
    return 0 if metric == "accuracy" else 1


def metric_tasks(specs: Iterable[TaskSpec], metric: str) -> list[Task]:
    """One objective per task: accuracy in [0, 1] (maximised) or loss >= 0 (minimised)."""
    if metric == "accuracy":
        return [Task(s.name, "max", 0.0, 1.0) for s in specs]
    return [Task(s.name, "min", 0.0, float("inf")) for s in specs]


# -- task lists ----------------------------------------------------------------------------------
def check_task_mapping(value: Any, where: str, example: str, allowed: set[str]) -> None:
    """Raise :class:`~mapframe.errors.ConfigError` unless ``value`` is a mapping whose keys
    are all in ``allowed``; ``example`` is the mapping the error shows (``{name: ..., ...}``)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a task must be a mapping such as {example}, got {value!r}")
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (allowed: "
                          f"{', '.join(sorted(allowed))})")


def parse_task_list(
    tasks: Any, fields: str, parse: Callable[[Any, str], _SpecT]
) -> list[_SpecT]:
    """``parse(task, "tasks[i]")`` of every item of the non-empty list ``tasks``, whose names
    must be unique; ``fields`` names the task fields in the error for a missing list."""
    if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)) or not tasks:
        raise ConfigError(f"tasks must be a non-empty list of {fields} mappings")
    specs = [parse(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise ConfigError(f"task name {s.name!r} is used twice; task names must be unique")
        seen.add(s.name)
    return specs


# -- checkpoints ---------------------------------------------------------------------------------
def check_state_shapes(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    *,
    misfit: str,
    model: str,
    varies: str,
    fix: str,
    keys_fix: str | None = None,
    hint: str = "",
) -> None:
    """Raise :class:`~mapframe.errors.CheckpointError` unless ``state`` has exactly the keys
    of ``expected``, with those shapes.

    The errors read ``checkpoint <source> <misfit>: N tensors missing ..., M unexpected ...;
    it comes from another architecture<hint>: <keys_fix>`` and ``checkpoint <source>: tensor
    K has shape S, <model> has E (N tensors differ); it comes from another architecture or
    <varies><hint>: <fix>`` (``keys_fix`` defaults to ``fix``).
    """
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {source} {misfit}: {len(missing)} tensors missing (e.g. "
            f"{missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}); it comes from "
            f"another architecture{hint}: {fix if keys_fix is None else keys_fix}"
        )
    bad = [(k, tuple(v.shape), expected[k]) for k, v in state.items()
           if tuple(v.shape) != expected[k]]
    if bad:
        k, have, want = bad[0]
        raise CheckpointError(
            f"checkpoint {source}: tensor {k!r} has shape {have}, {model} has {want} "
            f"({len(bad)} tensors differ); it comes from another architecture or {varies}"
            f"{hint}: {fix}"
        )


# -- the resident model --------------------------------------------------------------------------
def freeze_on_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode without gradients: the resident model that merges
    are written into (:meth:`~mapframe.evaluators.ModelEvaluator.bind_parameters` then binds
    its tensors, checking the checkpoints' names and shapes)."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def synchronize(device: str) -> None:
    """Wait for the CUDA work queued on ``device`` (a no-op elsewhere), for honest timings."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def drop_attributes(obj: object, names: Iterable[str]) -> None:
    """Delete those of the attributes ``names`` that ``obj`` has (to free memory on close)."""
    for attr in names:
        if hasattr(obj, attr):
            delattr(obj, attr)
