"""From a :class:`~mapframe.spec.StudySpec` to the components a study runs with.

:func:`assemble` builds every component the spec names (through the registry), prepares
the merge (checkpoint paths checked against what the evaluator reads), and checks the
components against each other: the search box against the coefficient count, the budget
against the surrogate's size, a stopping rule against the sampler, the preference against
the tasks. The result, :class:`StudyParts`, is what :class:`~mapframe.study.MergeStudy` and
:class:`~mapframe.nested.NestedMergeStudy` hold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapframe.errors import (
    BudgetError,
    CheckpointError,
    ComponentError,
    ConfigError,
    MapframeError,
    one_line,
)
from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import Executor, MergeSpec
from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task, as_tasks
from mapframe.results import check_task_columns
from mapframe.samplers.base import Sampler
from mapframe.samplers.choice import (
    MAX_ADAPTIVE_DIMS,
    auto_adaptive_budget,
    auto_sampler_name,
    is_auto,
    resolve_auto_sampler,
)
from mapframe.solvers.base import FrontSolver
from mapframe.spec import CheckpointsSpec, StudySpec, check_preference, check_preference_bounds
from mapframe.stopping import StoppingRule
from mapframe.storage.base import EvaluationStore
from mapframe.surrogates import choice as surrogate_choice
from mapframe.surrogates.base import Surrogate
from mapframe.surrogates.choice import (
    INSTALL_GP_HINT,
    resolve_auto_surrogate,
    up_to_quadratic_count,
)

__all__ = ["StudyParts", "assemble", "build_merge_spec", "fresh_seed", "saved_merge_spec"]


@dataclass
class StudyParts:
    """The built components of a study and its checked settings."""

    spec: StudySpec
    evaluator: Evaluator
    tasks: list[Task]
    merge_spec: MergeSpec | None
    space: SearchSpace
    sampler: Sampler
    surrogate: Surrogate
    front_solver: FrontSolver
    executor: Executor
    stopping: StoppingRule | None
    storage: EvaluationStore
    seed: int
    preference: np.ndarray | None
    preference_bounds: tuple[list[float], list[float]] | None


def fresh_seed() -> int:
    """A random seed for ``seed=None``."""
    return int(int(np.random.SeedSequence().entropy) % (2**31))  # type: ignore[arg-type]


def assemble(spec: StudySpec) -> StudyParts:
    """Build and cross-check the components of ``spec`` (a Plain MAP study, or the shared
    parts of a Nested MAP one: there the search box and budget are per pair)."""
    registry = get_registry()
    evaluator: Evaluator = registry.create("evaluator", spec.evaluator)  # type: ignore[assignment]
    tasks = list(evaluator.tasks)
    if not tasks:
        raise ConfigError(f"evaluator {evaluator.name!r} defines no tasks")
    as_tasks(tasks=tasks)  # validates unique names

    merge_spec: MergeSpec | None = None
    if spec.checkpoints is not None or spec.task_vectors is not None:
        strategy: MergeStrategy = registry.create(  # type: ignore[assignment]
            "merge_strategy", spec.merge_strategy)
        merge_spec = build_merge_spec(strategy, spec.checkpoints, spec.task_vectors, evaluator)
    elif evaluator.needs_merger:
        raise ConfigError(
            f"evaluator {evaluator.name!r} merges checkpoints: pass checkpoints="
            "{'pretrained': path, 'finetuned': {task: path, ...}} (or task_vectors=)"
        )
    space = _search_space(spec, tasks, merge_spec)
    check_task_columns([t.name for t in tasks], space.names)

    sampler_spec = resolve_auto_sampler(spec.sampler, space.n_dims, spec.budget)
    auto_note = ""
    if is_auto(spec.sampler):
        chosen = auto_sampler_name(space.n_dims, spec.budget)  # what resolve_... picked
        auto_note = (f"sampler auto chose {chosen!r} for {space.n_dims} coefficients and "
                     f"budget {spec.budget} (docs/adaptive-sampling.md)")
    try:
        sampler: Sampler = registry.create("sampler", sampler_spec)  # type: ignore[assignment]
    except ConfigError as exc:
        if not auto_note:
            raise
        raise ConfigError(f"{auto_note}, and it refuses a setting given to auto: {exc}; name "
                          "the sampler those settings are for") from None
    surrogate: Surrogate = registry.create(  # type: ignore[assignment]
        "surrogate", resolve_auto_surrogate(
            spec.surrogate, sampler.name, len(tasks), n_dims=space.n_dims,
            budget=spec.budget if spec.nested is None else None))
    front_solver: FrontSolver = registry.create(  # type: ignore[assignment]
        "front_solver", spec.front_solver)
    executor: Executor = registry.create("executor", spec.executor)  # type: ignore[assignment]
    stopping: StoppingRule | None = None
    if spec.stopping is not None:
        stopping = registry.create("stopping", spec.stopping)  # type: ignore[assignment]
        assert stopping is not None
        if not sampler.adaptive:
            fix = ""
            if auto_note:
                least = auto_adaptive_budget(space.n_dims)
                if least is not None:
                    fix = (f" ({auto_note}: raise the budget to at least {least}, or name an "
                           "adaptive sampler)")
                elif space.n_dims > MAX_ADAPTIVE_DIMS:
                    fix = (f" ({auto_note}: auto runs Plain MAP beyond {MAX_ADAPTIVE_DIMS} "
                           "coefficients; name an adaptive sampler, e.g. front or bins)")
                else:
                    fix = (f" ({auto_note}: install gpytorch, pip install 'mapframe[gp]', "
                           "for Bayesian MAP, or name sampler: bins)")
            raise ConfigError(
                f"stopping={stopping.name!r} needs an adaptive sampler (one that proposes in "
                f"rounds, such as 'bins' or 'gp'); {sampler.name!r} proposes its whole design "
                f"at once{fix}"
            )
    storage: EvaluationStore = registry.create(  # type: ignore[assignment]
        "storage", spec.storage_spec())
    if spec.nested is None:
        n_params = surrogate.n_params(space.n_dims)
        if spec.budget < n_params:
            # ``surrogate: auto`` picks the gp below the quadratic's count when gpytorch is
            # installed (mapframe.surrogates.choice); say so where that is what is missing.
            gp_hint = (f", or {INSTALL_GP_HINT}, which needs {space.n_dims + 1}"
                       if spec.surrogate == "auto" and surrogate.name == "auto"
                       and up_to_quadratic_count(space.n_dims, spec.budget) else "")
            if (spec.surrogate == "auto" and surrogate.name == "auto"
                    and spec.budget < space.n_dims + 1 and surrogate_choice.installed("gpytorch")):
                # from N + 1 evaluations surrogate: auto fits the gp instead
                raise BudgetError(
                    f"budget {spec.budget} cannot fit a surrogate for {space.n_dims} "
                    f"coefficients: set budget >= {space.n_dims + 1} (surrogate: auto then "
                    f"fits the gp; the {n_params}-parameter quadratic needs {n_params}, and "
                    f"the paper uses about twice that, {2 * n_params})")
            raise BudgetError(
                f"budget {spec.budget} cannot fit the {n_params}-parameter {surrogate.name} "
                f"surrogate for {space.n_dims} coefficients: set budget >= {n_params} (the "
                f"paper uses about twice that, {2 * n_params}){gp_hint}"
            )
    preference = None if spec.preference is None else check_preference(
        spec.preference, len(tasks))
    return StudyParts(
        spec=spec, evaluator=evaluator, tasks=tasks, merge_spec=merge_spec, space=space,
        sampler=sampler, surrogate=surrogate, front_solver=front_solver, executor=executor,
        stopping=stopping, storage=storage,
        seed=spec.seed if spec.seed is not None else fresh_seed(),
        preference=preference,
        preference_bounds=check_preference_bounds(spec.preference_bounds, len(tasks)),
    )


def _search_space(spec: StudySpec, tasks: list[Task], merge_spec: MergeSpec | None
                  ) -> SearchSpace:
    n_coefficients = spec.n_coefficients
    if merge_spec is not None:
        n_vec = len(merge_spec.finetuned) or (
            merge_spec.task_vectors.n_tasks if merge_spec.task_vectors else 0)
        if n_coefficients is not None and n_coefficients != n_vec:
            raise ConfigError(
                f"n_coefficients={n_coefficients} but there are {n_vec} fine-tuned "
                "checkpoints: the coefficient vector has one entry per checkpoint"
            )
        n_coefficients = n_vec
    n_dims = int(n_coefficients) if n_coefficients is not None else len(tasks)
    if n_dims < 1:
        raise ConfigError(f"n_coefficients must be >= 1, got {n_dims}")
    if merge_spec is not None and merge_spec.finetuned:
        names = list(merge_spec.finetuned)
    elif n_dims == len(tasks):
        names = [t.name for t in tasks]
    else:
        names = [f"c{i}" for i in range(n_dims)]
    return SearchSpace.box(n_dims, spec.search_bounds, names)


def saved_merge_spec(spec: StudySpec, allow_pickle: bool = False) -> MergeSpec | None:
    """The merge of a saved study's ``spec`` (a results folder's ``config.yaml``), for
    export: its checkpoints and merge strategy only, ``None`` without checkpoints.

    Nothing else the spec names is built. The evaluator is built only when its registered
    class adapts or reads checkpoints itself (``prepare_checkpoint``, ``reads_checkpoints``:
    the vision and LLM plugins'), since the merged weights depend on it; any other evaluator
    (``callable`` and the modules it names included) is neither built nor imported.
    ``allow_pickle`` replaces the spec's own: a folder's config does not decide whether its
    checkpoints may run code when unpickled."""
    if spec.checkpoints is None:
        return None
    registry = get_registry()
    strategy: MergeStrategy = registry.create(  # type: ignore[assignment]
        "merge_strategy", spec.merge_strategy)
    evaluator: Evaluator | None = None
    name = spec.evaluator.get("name") if isinstance(spec.evaluator, Mapping) else spec.evaluator
    if isinstance(name, str):
        cls = registry.get("evaluator", name)
        if (getattr(cls, "reads_checkpoints", False) or getattr(
                cls, "prepare_checkpoint", None) is not Evaluator.prepare_checkpoint):
            settings = ({k: v for k, v in spec.evaluator.items() if k != "name"}
                        if isinstance(spec.evaluator, Mapping) else {})
            evaluator = _checkpoint_handler(cls, name, settings)
            if evaluator is None:
                evaluator = registry.create(  # type: ignore[assignment]
                    "evaluator", spec.evaluator)
    checkpoints = spec.checkpoints.model_copy(update={"allow_pickle": allow_pickle})
    return build_merge_spec(strategy, checkpoints, None, evaluator)


def _checkpoint_handler(cls: type, name: str, settings: dict[str, Any]) -> Evaluator | None:
    """``cls.for_checkpoints(settings)``, its failures in one line naming the evaluator."""
    hook = getattr(cls, "for_checkpoints", None)
    if hook is None:
        return None
    try:
        handler = hook(settings)
    except MapframeError:
        raise
    except Exception as exc:  # a plugin's own bug: name it, in one line
        raise ComponentError(
            f"evaluator {name!r}: for_checkpoints() failed while reading the saved config's "
            f"settings for export: {one_line(exc)}") from None
    if handler is not None and not isinstance(handler, Evaluator):
        raise ComponentError(
            f"evaluator {name!r}: for_checkpoints() returned {type(handler).__name__}, not an "
            "Evaluator (or None)")
    return handler


def build_merge_spec(
    strategy: MergeStrategy,
    checkpoints: CheckpointsSpec | Mapping[str, Any] | None,
    task_vectors: TaskVectors | None,
    evaluator: Evaluator | None = None,
) -> MergeSpec:
    """The merge a study's evaluations run: ``strategy`` over loaded ``task_vectors`` or
    over the checkpoint files at ``checkpoints`` (checked to exist; folders only for an
    evaluator that reads its checkpoints itself)."""
    if task_vectors is not None:
        if checkpoints is not None:
            raise ConfigError("give checkpoints= or task_vectors=, not both")
        if not isinstance(task_vectors, TaskVectors):
            raise ConfigError(
                "task_vectors must be a mapframe.merging.TaskVectors (task vectors in memory), "
                f"got {type(task_vectors).__name__} {task_vectors!r:.80}; for checkpoint files "
                "give checkpoints={'pretrained': path, 'finetuned': {task: path, ...}}")
        return MergeSpec(strategy, task_vectors=task_vectors)
    assert checkpoints is not None
    if not isinstance(checkpoints, CheckpointsSpec):
        checkpoints = CheckpointsSpec(**checkpoints)
    reads_itself = evaluator is not None and evaluator.reads_checkpoints
    paths = [checkpoints.pretrained, *checkpoints.finetuned.values()]
    for path in paths:
        if reads_itself and os.path.isdir(path):
            continue  # the evaluator reads folders (model directories, adapters) itself
        if os.path.isdir(path):
            raise CheckpointError(
                f"checkpoint {path} is a folder, but evaluator {evaluator.name!r} reads "
                "checkpoint files (one state dict each): give the file's path, or use an "
                "evaluator that reads model folders"
                if evaluator is not None else
                f"checkpoint {path} is a folder: give the path of the checkpoint file")
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint not found: {path} (check the path)")
    return MergeSpec(strategy, checkpoints.pretrained, dict(checkpoints.finetuned),
                     allow_pickle=checkpoints.allow_pickle,
                     fingerprint=checkpoints.fingerprint,
                     prepare=evaluator.prepare_checkpoint if evaluator is not None else None,
                     loader=evaluator.load_task_vectors if reads_itself and evaluator
                     is not None else None)
