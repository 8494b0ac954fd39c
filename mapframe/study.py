"""The :class:`MergeStudy` orchestrator: Plain MAP (the paper's Algorithm 1), read top to bottom.

    sample -> merge -> evaluate -> store -> fit -> solve -> (verify) -> select

Merging happens inside the evaluator (through the :class:`~mapframe.merging.merger.Merger` it
is set up with), evaluations go through an :class:`~mapframe.executors.Executor` (the seam
that distributed backends replace), and every evaluation is stored as it arrives.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapframe.errors import (
    BudgetError,
    ConfigError,
    EvaluationError,
    MapframeWarning,
    MetricError,
)
from mapframe.evaluators.base import Evaluator
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors.base import Executor, Job, JobResult, MergeSpec
from mapframe.history import Evaluation, History, coefficient_key
from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import CheckpointHook, CheckpointLoader, TaskVectors
from mapframe.metrics import select_by_preference, spread_subset
from mapframe.plugin import get_plugin_manager, get_registry
from mapframe.problem import SearchSpace, Task, as_tasks
from mapframe.results import Front, StudyResult
from mapframe.samplers.base import Sampler, SamplerContext
from mapframe.solvers.base import FrontSolver
from mapframe.stopping import RoundState, StoppingRule
from mapframe.storage.base import EvaluationStore
from mapframe.surrogates.base import Surrogate

__all__ = ["MergeStudy", "ProgressEvent"]

_MAX_IDLE_ROUNDS = 3
#: Surrogates whose in-sample R² falls below this trigger a MapframeWarning.
POOR_FIT_R2 = 0.8


@dataclass(frozen=True)
class ProgressEvent:
    """Passed to the ``progress`` callback after each stored evaluation and at each stage."""

    stage: str  # "evaluate", "verify", "fit", "solve", "done"
    done: int
    total: int
    reused: int
    failed: int
    elapsed: float
    #: The executor's workers now (``None`` when it does not track them).
    workers: int | None = None
    #: Evaluations running now (``None`` when the executor does not track them).
    busy: int | None = None
    #: Jobs re-run on another worker because theirs died.
    retried: int = 0


class MergeStudy:
    """Finds the amortised Pareto front of model merges (MAP).

    Either give a black-box ``objective`` (``f(C) -> M``, ``(B, N)`` coefficients to
    ``(B, T)`` metrics) with ``task_names``; or an ``evaluator`` component, which for model
    merging comes with ``checkpoints={"pretrained": path, "finetuned": {task: path}}`` (or
    ``task_vectors=``) and a ``merge_strategy``. Components (``sampler``, ``surrogate``,
    ``front_solver``, ``storage``, ``executor``, ``merge_strategy``, ``evaluator``) are given
    by registry name, by ``{"name": ..., **params}``, or as instances.

    ``storage`` is in memory by default; pass a path (``"study.sqlite"``) to keep evaluations
    on disk, so that re-running the same study (same ``study_name``) reuses every stored
    evaluation instead of redoing it.

    Metrics are maximised unless ``directions`` says ``"min"`` for a task; ``metric_ranges``
    gives known metric ranges (``(0, 1)`` for accuracy), which the default ``"auto"``
    surrogate uses to pick a warped quadratic and which evaluations are checked against.
    """

    def __init__(
        self,
        objective: Callable[[np.ndarray], Any] | None = None,
        task_names: Sequence[str] | None = None,
        *,
        tasks: Sequence[Task | str | dict[str, Any]] | None = None,
        directions: Sequence[str] | str | None = None,
        metric_ranges: Sequence[tuple[float, float] | None] | None = None,
        evaluator: Evaluator | str | Mapping[str, Any] | None = None,
        merge_strategy: MergeStrategy | str | Mapping[str, Any] = "task_arithmetic",
        checkpoints: Mapping[str, Any] | None = None,
        task_vectors: TaskVectors | None = None,
        allow_pickle: bool = False,
        budget: int = 30,
        seed: int | None = 0,
        search_bounds: Sequence[float] | Sequence[Sequence[float]] = (0.0, 1.0),
        n_coefficients: int | None = None,
        sampler: Sampler | str | Mapping[str, Any] = "sobol",
        surrogate: Surrogate | str | Mapping[str, Any] = "auto",
        front_solver: FrontSolver | str | Mapping[str, Any] = "auto",
        storage: EvaluationStore | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        study_name: str = "study",
        executor: Executor | str | Mapping[str, Any] = "inprocess",
        stopping: StoppingRule | str | Mapping[str, Any] | None = None,
        verify: int = 0,
        preference: Sequence[float] | None = None,
        preference_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        on_error: str = "raise",
        progress: Callable[[ProgressEvent], None] | None = None,
    ) -> None:
        registry = get_registry()
        # -- what is evaluated ------------------------------------------------------------
        if (objective is None) == (evaluator is None):
            raise ConfigError(
                "give exactly one of objective= (a function of coefficients) or evaluator= "
                "(a component that merges and evaluates models)"
            )
        if objective is not None:
            if task_names is None and tasks is None:
                raise ConfigError("objective= needs task_names=[...] naming its T metrics")
            self.evaluator: Evaluator = CallableEvaluator(
                objective, tasks if tasks is not None else list(task_names or []),
                directions=directions, ranges=metric_ranges,
            )
        else:
            self.evaluator = registry.create("evaluator", evaluator)  # type: ignore[assignment]
            if task_names is not None or tasks is not None or directions is not None:
                raise ConfigError(
                    "with evaluator=, the evaluator defines the tasks; drop task_names=, "
                    "tasks= and directions="
                )
        self.tasks: list[Task] = list(self.evaluator.tasks)
        if not self.tasks:
            raise ConfigError(f"evaluator {self.evaluator.name!r} defines no tasks")
        as_tasks(tasks=self.tasks)  # validates unique names

        # -- what is merged ----------------------------------------------------------------
        self.merge_spec: MergeSpec | None = None
        if checkpoints is not None or task_vectors is not None:
            strategy = registry.create("merge_strategy", merge_strategy)
            self.merge_spec = _merge_spec(strategy, checkpoints, task_vectors, allow_pickle,
                                          self.evaluator)
        elif self.evaluator.needs_merger:
            raise ConfigError(
                f"evaluator {self.evaluator.name!r} merges checkpoints: pass checkpoints="
                "{'pretrained': path, 'finetuned': {task: path, ...}} (or task_vectors=)"
            )
        if self.merge_spec is not None:
            n_vec = len(self.merge_spec.finetuned) or (
                self.merge_spec.task_vectors.n_tasks if self.merge_spec.task_vectors else 0)
            if n_coefficients is not None and n_coefficients != n_vec:
                raise ConfigError(
                    f"n_coefficients={n_coefficients} but there are {n_vec} fine-tuned "
                    "checkpoints: the coefficient vector has one entry per checkpoint"
                )
            n_coefficients = n_vec
        n_dims = int(n_coefficients) if n_coefficients is not None else len(self.tasks)
        if n_dims < 1:
            raise ConfigError(f"n_coefficients must be >= 1, got {n_dims}")
        if self.merge_spec is not None and self.merge_spec.finetuned:
            cnames = list(self.merge_spec.finetuned)
        elif n_dims == len(self.tasks):
            cnames = [t.name for t in self.tasks]
        else:
            cnames = [f"c{i}" for i in range(n_dims)]
        self.space = SearchSpace.box(n_dims, search_bounds, cnames)  # type: ignore[arg-type]

        # -- how it is searched -------------------------------------------------------------
        self.sampler: Sampler = registry.create("sampler", sampler)  # type: ignore[assignment]
        self.surrogate: Surrogate = registry.create(  # type: ignore[assignment]
            "surrogate", surrogate)
        self.front_solver: FrontSolver = registry.create(  # type: ignore[assignment]
            "front_solver", front_solver)
        self.executor: Executor = registry.create("executor", executor)  # type: ignore[assignment]
        self.stopping: StoppingRule | None = None
        if stopping is not None:
            rule: StoppingRule = registry.create("stopping", stopping)  # type: ignore[assignment]
            self.stopping = rule
            if not self.sampler.adaptive:
                raise ConfigError(
                    f"stopping={rule.name!r} needs an adaptive sampler (one that "
                    f"proposes in rounds, such as 'bins' or 'gp'); {self.sampler.name!r} "
                    "proposes its whole design at once"
                )
        if storage is None:
            storage = "memory"
        elif isinstance(storage, (str, os.PathLike)) and (
            os.fspath(storage) not in registry.names("storage")
        ):
            storage = {"name": "sqlite", "path": os.fspath(storage)}
        self.storage: EvaluationStore = registry.create(  # type: ignore[assignment]
            "storage", storage)

        # -- settings -----------------------------------------------------------------------
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ConfigError(f"budget must be a positive integer, got {budget!r}")
        self.budget = int(budget)
        n_params = self.surrogate.n_params(n_dims)
        if self.budget < n_params:
            raise BudgetError(
                f"budget {self.budget} cannot fit the {n_params}-parameter {self.surrogate.name} "
                f"surrogate for {n_dims} coefficients: set budget >= {n_params} (the paper "
                f"uses about twice that, {2 * n_params})"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int,
                                                                                   np.integer))):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        self.seed = int(seed) if seed is not None else int(
            int(np.random.SeedSequence().entropy) % (2**31))  # type: ignore[arg-type]
        if not isinstance(verify, (int, np.integer)) or isinstance(verify, bool) or verify < 0:
            raise ConfigError(f"verify must be a non-negative integer, got {verify!r}")
        self.verify = int(verify)
        if on_error not in ("raise", "record"):
            raise ConfigError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        self.on_error = on_error
        self.preference = None if preference is None else _check_preference(
            preference, len(self.tasks))
        self.preference_bounds = _check_bounds(preference_bounds, len(self.tasks))
        if not isinstance(study_name, str) or not study_name:
            raise ConfigError(f"study_name must be a non-empty string, got {study_name!r}")
        self.study_name = study_name
        self.progress = progress
        self._hooks = get_plugin_manager().hook

    # ------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def fingerprint(self) -> dict[str, Any]:
        """What gives stored metrics their meaning; a resumed study must match it."""
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "n_coefficients": self.space.n_dims,
            "evaluator": self.evaluator.describe(),
            "merge": self.merge_spec.describe() if self.merge_spec else None,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "seed": self.seed,
            "sampler": self.sampler.describe(),
            "surrogate": self.surrogate.describe(),
            "front_solver": self.front_solver.describe(),
            "executor": self.executor.describe(),
            "stopping": self.stopping.describe() if self.stopping else None,
            "storage": self.storage.describe(),
            "verify": self.verify,
            **self.fingerprint(),
        }

    # ------------------------------------------------------------------------------------
    def run(self) -> StudyResult:
        """Run the study (resuming from the store) and return its :class:`StudyResult`."""
        t_start = time.perf_counter()
        self.storage.open(self.study_name, self.fingerprint())
        stored: dict[tuple[str, str], Evaluation] = {
            (e.phase, e.key): e for e in self.storage.load() if e.status != "failed"}
        self._counts = {"new": 0, "reused": 0, "failed": 0}
        self._t0 = t_start
        self._hooks.mapframe_study_started(study=self)
        history = History(self.space.n_dims, len(self.tasks))
        self.sampler.setup(SamplerContext(
            space=self.space, tasks=tuple(self.tasks), surrogate=self.surrogate,
            budget=self.budget, seed=self.seed, capacity=self.executor.capacity))
        timings: dict[str, float] = {"propose_s": 0.0}
        rounds: list[dict[str, Any]] = []
        stopped: str | None = None
        if self.stopping is not None:
            self.stopping.reset()
        started = False
        try:
            # 1-4. sample -> merge -> evaluate -> store, in rounds (one for a fixed design)
            t = time.perf_counter()
            round_no, idle = 0, 0
            while len(history) < self.budget:
                remaining = self.budget - len(history)
                n = int(self.sampler.batch_size(remaining, history, self.executor.capacity))
                n = max(1, min(n, remaining))
                rng = np.random.default_rng([self.seed, round_no])
                t_prop = time.perf_counter()
                X = self._check_proposal(self.sampler.propose(n, self.space, history, rng), n)
                t_prop = time.perf_counter() - t_prop
                timings["propose_s"] += t_prop
                if round_no == 0 and not self.sampler.adaptive and n == self.budget:
                    # A fixed design that cannot identify the surrogate would waste the budget.
                    self.surrogate.check_design(X)
                before = len(history)
                t_eval = time.perf_counter()
                jobs = self._reuse_or_schedule(X, "search", round_no, history, stored)
                if jobs:
                    if not started:
                        started = self._start_executor(timings)
                    self._evaluate(jobs, history, "evaluate")
                record: dict[str, Any] = {
                    "round": round_no, "proposed": int(X.shape[0]), "new": len(jobs),
                    "reused": len(history) - before - len(jobs), "n_evaluated": len(history),
                    "propose_s": t_prop, "evaluate_s": time.perf_counter() - t_eval}
                rounds.append(record)
                if self.stopping is not None and len(history) < self.budget:
                    stopped = self._check_stopping(round_no, history, record)
                    if stopped is not None:
                        break
                idle = idle + 1 if len(history) == before else 0
                if idle >= _MAX_IDLE_ROUNDS:
                    raise EvaluationError(
                        f"sampler {self.sampler.name!r} keeps proposing points that were "
                        f"already evaluated ({len(history)} of {self.budget} done); use a "
                        "sampler that explores, or lower the budget"
                    )
                round_no += 1
            timings["evaluate_s"] = time.perf_counter() - t

            # 5. fit one surrogate per task on the successful evaluations
            t = time.perf_counter()
            surrogates, diagnostics = self._fit(history)
            timings["fit_s"] = time.perf_counter() - t

            def predict(C: np.ndarray) -> np.ndarray:
                C = np.atleast_2d(C)
                return np.column_stack([s.predict(C) for s in surrogates])

            # 6. solve the multi-objective problem on the surrogates
            t = time.perf_counter()
            self._report("solve", len(history))
            sol = self.front_solver.solve(predict, self.space, self.tasks, self.seed)
            X_front, F_front = np.asarray(sol.X, float), np.asarray(sol.F, float)
            if X_front.ndim != 2 or X_front.shape[0] == 0:
                raise EvaluationError(
                    f"front solver {self.front_solver.name!r} returned no points"
                )
            order = np.argsort(F_front[:, 0] * -self.tasks[0].sign, kind="stable")
            X_front, F_front = X_front[order], F_front[order]
            std_front = _predicted_std(surrogates, X_front)
            real = np.full_like(F_front, np.nan)
            timings["solve_s"] = time.perf_counter() - t

            # 7. verify: evaluate some front points for real
            t = time.perf_counter()
            verification = None
            if self.verify > 0:
                directions = [t.direction for t in self.tasks]
                idx = spread_subset(F_front, self.verify, directions)
                if self.preference is not None:
                    # Always check for real the point step 8 will hand the user.
                    chosen = select_by_preference(F_front, self.preference, directions,
                                                  *(self.preference_bounds or (None, None)))
                    if chosen not in idx:
                        idx = np.union1d(spread_subset(F_front, self.verify - 1, directions),
                                         [chosen])
                jobs = self._reuse_or_schedule(X_front[idx], "verify", round_no, history,
                                               stored)
                if jobs:
                    if not started:
                        started = self._start_executor(timings)
                    self._evaluate(jobs, history, "verify")
                for i in idx:
                    ev = history.get(coefficient_key(X_front[i]), "verify")
                    if ev is not None and ev.ok:
                        real[i] = ev.metrics
                verification = _verification_report(F_front, real, self.tasks)
            timings["verify_s"] = time.perf_counter() - t
        finally:
            if started:
                self.executor.shutdown()
            self.storage.close()
        # 8. select the point for the user's preference
        front = Front(X_front, F_front, real, self.task_names,
                      [t.direction for t in self.tasks], predicted_std=std_front)
        result = StudyResult(
            study_name=self.study_name,
            tasks=list(self.tasks),
            space=self.space,
            coefficient_names=list(self.space.names),
            front=front,
            history=history,
            surrogates=surrogates,
            diagnostics=diagnostics,
            verification=verification,
            preference=None if self.preference is None else self.preference.tolist(),
            selected=None,
            n_evaluated=self._counts["new"],
            n_reused=self._counts["reused"],
            seed=self.seed,
            timings=timings,
            settings=self.settings(),
            merge_spec=self.merge_spec,
            preference_bounds=self.preference_bounds,
            rounds=rounds,
            stopped_early=stopped,
            stopping_trace=self.stopping.trace() if self.stopping is not None else [],
        )
        if self.preference is not None:
            result.selected = result.select(self.preference)
        timings["total_s"] = time.perf_counter() - t_start
        self.storage.open(self.study_name, self.fingerprint())
        try:
            self.storage.set_meta("summary", result.summary())
        finally:
            self.storage.close()
        self._report("done", len(history))
        self._hooks.mapframe_study_finished(study=self, result=result)
        return result

    # ------------------------------------------------------------------------------------
    def _check_proposal(self, X: Any, n: int) -> np.ndarray:
        name = self.sampler.name
        try:
            X = np.asarray(X, dtype=float)
        except (TypeError, ValueError):
            raise EvaluationError(f"sampler {name!r} proposed non-numeric points") from None
        if X.ndim != 2 or X.shape[1] != self.space.n_dims or X.shape[0] > n:
            raise EvaluationError(
                f"sampler {name!r} proposed shape {X.shape}; expected at most ({n}, "
                f"{self.space.n_dims})"
            )
        if not np.all(np.isfinite(X)):
            raise EvaluationError(f"sampler {name!r} proposed non-finite coefficients")
        if not np.all(self.space.contains(X, atol=1e-9)):
            raise EvaluationError(f"sampler {name!r} proposed points outside the search box")
        return np.clip(X, self.space.lower, self.space.upper)

    def _reuse_or_schedule(
        self,
        X: np.ndarray,
        phase: str,
        round_no: int,
        history: History,
        stored: Mapping[tuple[str, str], Evaluation],
    ) -> list[Job]:
        jobs: list[Job] = []
        seen: set[str] = set()
        for x in X:
            key = coefficient_key(x)
            if key in seen or history.get(key, phase) is not None:
                continue
            seen.add(key)
            old = stored.get((phase, key))
            if old is not None:
                history.add(old)
                self._counts["reused"] += 1
                _raise_if_out_of_range(old)
                continue
            jobs.append(Job(key, x.copy(), phase, round_no))
        return jobs

    def _start_executor(self, timings: dict[str, float]) -> bool:
        """Start the executor (workers up, evaluator set up in each); time it."""
        t = time.perf_counter()
        self.executor.start(self.evaluator, self.merge_spec)
        timings["executor_start_s"] = time.perf_counter() - t
        return True

    def _evaluate(self, jobs: list[Job], history: History, stage: str) -> None:
        # Results are stored the moment they arrive, in whatever order workers finish; the
        # history (what samplers and surrogates see) takes them in submission order once the
        # round is complete, so a study gives the same front on any executor.
        self.executor.submit(jobs)
        pending = {j.key for j in jobs}
        arrived: dict[str, Evaluation] = {}
        done_before = len(history) if stage == "evaluate" else len(
            history.select("verify", ok=False))
        try:
            for res in self.executor.as_completed():
                if res.job.key not in pending:
                    continue  # a duplicate result (e.g. a retried job that also finished)
                pending.discard(res.job.key)
                ev = self._record(res)
                self.storage.add(ev)
                arrived[ev.key] = ev
                self._counts["new"] += 1
                if not ev.ok:
                    self._counts["failed"] += 1
                self._hooks.mapframe_evaluation_stored(study=self, evaluation=ev)
                self._report(stage, done_before + len(arrived))
                self._check_result(ev)
        finally:
            for job in jobs:
                if job.key in arrived:
                    history.add(arrived[job.key])
        if pending:
            raise EvaluationError(
                f"executor {self.executor.name!r} finished without results for "
                f"{len(pending)} of {len(jobs)} submitted evaluations; this is a bug in the "
                "executor (as_completed must yield one result per submitted job)"
            )

    def _check_result(self, ev: Evaluation) -> None:
        if ev.status == "failed" and self.on_error == "raise":
            first = (ev.error or "").splitlines()[0]
            raise EvaluationError(
                f"evaluation of coefficients {np.round(ev.coefficients, 6).tolist()} "
                f"failed: {first}; fix the evaluator, or pass on_error='record' to skip "
                "failing points"
            )
        _raise_if_out_of_range(ev)

    def _record(self, res: JobResult) -> Evaluation:
        job = res.job
        base: dict[str, Any] = {"coefficients": job.coefficients, "phase": job.phase,
                                "round": job.round, "duration": res.duration, "key": job.key}
        if res.error is not None or res.metrics is None:
            return Evaluation(metrics=None, status="failed", error=res.error or "no metrics",
                              **base)
        m = np.asarray(res.metrics, dtype=float).reshape(-1)
        if m.size != len(self.tasks):
            raise EvaluationError(
                f"evaluator {self.evaluator.name!r} returned {m.size} metrics for "
                f"{len(self.tasks)} tasks"
            )
        bad = [t.name for t, v in zip(self.tasks, m) if not math.isfinite(v)]
        if bad:
            msg = f"NaN or infinite metric for task(s) {', '.join(bad)}"
            warnings.warn(
                f"{msg} at coefficients {np.round(job.coefficients, 6).tolist()}: recorded as "
                "invalid and left out of the surrogate fit", MapframeWarning, stacklevel=3)
            return Evaluation(metrics=m, status="invalid", error=msg, **base)
        for t, v in zip(self.tasks, m):
            if not (t.lower - 1e-9 <= v <= t.upper + 1e-9):
                msg = (f"out of range: task {t.name!r} metric {v:g} is outside its declared "
                       f"range [{t.lower:g}, {t.upper:g}]; fix the evaluator's scale (e.g. "
                       "accuracy as a fraction) or the task's range")
                return Evaluation(metrics=m, status="invalid", error=msg, **base)
        return Evaluation(metrics=m, status="ok", **base)

    def _fit(self, history: History) -> tuple[list[Surrogate], dict[str, dict[str, Any]]]:
        X, Y = history.X, history.Y
        n_params = self.surrogate.n_params(self.space.n_dims)
        self._report("fit", len(history))
        if X.shape[0] < n_params:
            n_bad = len(history.failures)
            raise BudgetError(
                f"only {X.shape[0]} of {len(history)} evaluations succeeded ({n_bad} failed or "
                f"gave NaN/out-of-range metrics), fewer than the {n_params} parameters of the "
                f"{self.surrogate.name} surrogate: fix the failing evaluations or raise the "
                "budget"
            )
        surrogates, diagnostics = self._fit_copies(X, Y)
        for s, task in zip(surrogates, self.tasks):
            r2 = diagnostics[task.name].get("r2")
            if r2 is not None and np.isfinite(r2) and r2 < POOR_FIT_R2:
                warnings.warn(
                    f"the {s.name} surrogate of task {task.name!r} fits poorly (R² {r2:.2f}): "
                    "its part of the front is unreliable; raise the budget, narrow the search "
                    "box, or verify more front points", MapframeWarning, stacklevel=3)
        return surrogates, diagnostics

    def _fit_copies(self, X: np.ndarray, Y: np.ndarray
                    ) -> tuple[list[Surrogate], dict[str, dict[str, Any]]]:
        """One fresh copy of the prototype surrogate fitted per task, and its diagnostics."""
        surrogates: list[Surrogate] = []
        diagnostics: dict[str, dict[str, Any]] = {}
        for j, task in enumerate(self.tasks):
            s = copy.deepcopy(self.surrogate)
            s.fit(X, Y[:, j], task)
            surrogates.append(s)
            diagnostics[task.name] = dict(s.diagnostics())
        return surrogates, diagnostics

    def _check_stopping(self, round_no: int, history: History,
                        record: dict[str, Any]) -> str | None:
        """Fit the surrogates on everything so far and ask the stopping rule."""
        assert self.stopping is not None
        n_params = self.surrogate.n_params(self.space.n_dims)
        X, Y = history.canonical()
        if X.shape[0] < n_params:
            return None
        surrogates, diagnostics = self._fit_copies(X, Y)
        state = RoundState(round=round_no, n_evaluated=len(history), budget=self.budget,
                           history=history, surrogates=surrogates, diagnostics=diagnostics,
                           tasks=tuple(self.tasks), space=self.space, n_params=n_params)
        t = time.perf_counter()
        reason = self.stopping.update(state)
        record["stopping_s"] = time.perf_counter() - t
        return reason

    def _report(self, stage: str, done: int) -> None:
        if self.progress is None:
            return
        total = self.budget if stage in ("evaluate", "fit", "solve", "done") else self.verify
        st = self.executor.status() if stage in ("evaluate", "verify") else None
        self.progress(ProgressEvent(stage, done, total, self._counts["reused"],
                                    self._counts["failed"], time.perf_counter() - self._t0,
                                    workers=st.workers if st else None,
                                    busy=st.busy if st else None,
                                    retried=st.retried if st else 0))


# ----------------------------------------------------------------------------------------
def _predicted_std(surrogates: Sequence[Surrogate], X: np.ndarray) -> np.ndarray | None:
    """``(K, T)`` predictive standard deviations at the front, when every surrogate has them."""
    cols = []
    for s in surrogates:
        sd = s.predict_std(X)
        if sd is None:
            return None
        cols.append(np.asarray(sd, dtype=float).reshape(-1))
    return np.column_stack(cols)


def _raise_if_out_of_range(ev: Evaluation) -> None:
    """Metrics outside their declared range mean a scale bug: stop, also on a resumed run."""
    if ev.status == "invalid" and ev.error and ev.error.startswith("out of range"):
        raise MetricError(ev.error.removeprefix("out of range: "))


def _merge_spec(
    strategy: Any,
    checkpoints: Mapping[str, Any] | None,
    task_vectors: TaskVectors | None,
    allow_pickle: bool,
    evaluator: Evaluator | None = None,
) -> MergeSpec:
    if task_vectors is not None:
        if checkpoints is not None:
            raise ConfigError("give checkpoints= or task_vectors=, not both")
        return MergeSpec(strategy, task_vectors=task_vectors)
    assert checkpoints is not None
    if not isinstance(checkpoints, Mapping) or set(checkpoints) - {"pretrained", "finetuned"}:
        raise ConfigError(
            "checkpoints must be a mapping with keys 'pretrained' (a path) and 'finetuned' "
            "({task: path})"
        )
    pre, ft = checkpoints.get("pretrained"), checkpoints.get("finetuned")
    if not isinstance(pre, (str, os.PathLike)):
        raise ConfigError("checkpoints.pretrained must be the path of the pretrained checkpoint")
    if not isinstance(ft, Mapping) or not ft:
        raise ConfigError(
            "checkpoints.finetuned must map each task name to its fine-tuned checkpoint path"
        )
    from mapframe.errors import CheckpointError

    loader = checkpoint_loader(evaluator) if evaluator is not None else None
    for p in [pre, *ft.values()]:
        path = os.fspath(p)
        if loader is not None and os.path.isdir(path):
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
    return MergeSpec(strategy, os.fspath(pre), {str(k): os.fspath(v) for k, v in ft.items()},
                     allow_pickle=allow_pickle,
                     prepare=checkpoint_hook(evaluator) if evaluator is not None else None,
                     loader=loader)


def checkpoint_loader(evaluator: Evaluator) -> CheckpointLoader | None:
    """The evaluator's :meth:`~mapframe.evaluators.Evaluator.load_task_vectors`, or ``None``
    when it keeps the base class's one (mapframe reads the checkpoint files)."""
    if type(evaluator).load_task_vectors is Evaluator.load_task_vectors:
        return None
    return evaluator.load_task_vectors


def checkpoint_hook(evaluator: Evaluator) -> CheckpointHook | None:
    """The evaluator's :meth:`~mapframe.evaluators.Evaluator.prepare_checkpoint`, or ``None``
    when it keeps the base class's (identity) one."""
    if type(evaluator).prepare_checkpoint is Evaluator.prepare_checkpoint:
        return None
    return evaluator.prepare_checkpoint


def _check_preference(preference: Sequence[float], n: int) -> np.ndarray:
    try:
        p = np.asarray(preference, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"preference must be {n} numbers, got {preference!r}") from None
    if p.size != n:
        raise ConfigError(f"preference has {p.size} weights for {n} tasks; give one per task")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ConfigError(
            f"preference weights must be finite, non-negative and not all zero, got {p.tolist()}"
        )
    return p / p.sum()


def _check_bounds(
    bounds: tuple[Sequence[float], Sequence[float]] | None, n: int
) -> tuple[list[float], list[float]] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (np.asarray(b, dtype=float).reshape(-1) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(
            f"preference_bounds must be (lower, upper) with {n} numbers each, got {bounds!r}"
        ) from None
    if lo.size != n or hi.size != n or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
                                             and np.all(lo < hi)):
        raise ConfigError(
            f"preference_bounds must be (lower, upper) with {n} finite numbers each and "
            f"lower < upper, got {bounds!r}"
        )
    return lo.tolist(), hi.tolist()


def _verification_report(
    predicted: np.ndarray, real: np.ndarray, tasks: Sequence[Task]
) -> dict[str, Any]:
    mask = np.all(np.isfinite(real), axis=1)
    report: dict[str, Any] = {"n_verified": int(mask.sum()),
                              "indices": np.flatnonzero(mask).tolist()}
    if mask.any():
        err = predicted[mask] - real[mask]
        report["mean_abs_error"] = {t.name: float(np.mean(np.abs(err[:, j])))
                                    for j, t in enumerate(tasks)}
        report["max_abs_error"] = {t.name: float(np.max(np.abs(err[:, j])))
                                   for j, t in enumerate(tasks)}
    return report
