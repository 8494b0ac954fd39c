"""The :class:`MergeStudy` orchestrator: Plain MAP (the paper's Algorithm 1).

:meth:`MergeStudy.run` reads as the algorithm, one method per phase over a
:class:`StudyRun` (the state of one run; the study object keeps none)::

    search -> fit -> solve -> verify -> combine -> result -> select

The settings come from one validated :class:`~mapframe.spec.StudySpec`; the components are
built and cross-checked by :func:`~mapframe.assembly.assemble`; every evaluation (search
and verification) goes through one :class:`~mapframe.session.EvaluationSession`, which
reuses stored results, runs the others on the executor and stores each as it arrives.
Merging happens inside the evaluator (through the :class:`~mapframe.merging.merger.Merger`
it is set up with).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mapframe._version import installed_versions
from mapframe.assembly import StudyParts, assemble
from mapframe.component import component_failures
from mapframe.errors import BudgetError, ConfigError, EvaluationError, MapframeWarning, StoreError
from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import Executor, MergeSpec
from mapframe.history import History, coefficient_key
from mapframe.hypervolume import greedy_hypervolume_subset
from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors
from mapframe.metrics import pareto_mask, select_by_preference
from mapframe.plugin import get_plugin_manager
from mapframe.plugin.events import announce
from mapframe.problem import SearchSpace, Task
from mapframe.progress import check_progress
from mapframe.results import Front, StudyResult
from mapframe.samplers.base import Sampler, SamplerContext
from mapframe.session import EvaluationSession
from mapframe.solvers._common import PredictWithDerivatives
from mapframe.solvers.base import FrontSolver
from mapframe.spec import StudySpec
from mapframe.stopping import RoundState, StoppingRule
from mapframe.storage.base import EvaluationStore
from mapframe.study_checks import (
    extrapolation_check,
    interpolation_check,
    tradeoff_check,
    unused_stored_check,
    verified_error_check,
)
from mapframe.surrogates.base import Surrogate, expected_errors
from mapframe.surrogates.quadratic import quadratic_derivatives

__all__ = ["POOR_FIT_R2", "MergeStudy", "ProgressEvent", "StudyRun"]

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
    #: Workers running something now (``None`` when the executor does not track them).
    busy_workers: int | None = None


@dataclass
class StudyRun:
    """The state of one :meth:`MergeStudy.run`: what each phase hands the next."""

    session: EvaluationSession
    history: History
    t0: float
    timings: dict[str, float] = field(default_factory=lambda: {"propose_s": 0.0})
    rounds: list[dict[str, Any]] = field(default_factory=list)
    round_no: int = 0
    stopped: str | None = None
    surrogates: list[Surrogate] = field(default_factory=list)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The front: coefficients, predicted metrics, their std (if the surrogates give one),
    #: and real metrics where verified (NaN elsewhere).
    X_front: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    F_front: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    std_front: np.ndarray | None = None
    real: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    verification: dict[str, Any] | None = None
    #: How many front points the verification evaluates (``verify`` or fewer).
    verify_total: int = 0
    #: The front solver's report on its result (``SolverResult.diagnostics``).
    solver_diagnostics: dict[str, Any] = field(default_factory=dict)
    #: The front handed to the user: the solved front combined with the measured points.
    front: Front | None = None
    #: Whether the run has begun new search evaluations (checked for unused stored ones).
    spending: bool = False
    #: The unused-stored warning, given before the first new search evaluation.
    unused_warning: str | None = None
    #: Evaluations the executor runs at once, as the sampler's rounds are sized: the
    #: study's first run's (kept in the store), so that a resumed run proposes its points.
    capacity: int = 1

    def predict(self, C: np.ndarray) -> np.ndarray:
        """The fitted surrogates' predictions ``(M, T)`` at ``C`` ``(M, N)``."""
        C = np.atleast_2d(C)
        return np.column_stack([s.predict(C) for s in self.surrogates])

    def solver_predict(self) -> Callable[[np.ndarray], np.ndarray]:
        """:meth:`predict` for the front solver: with the surrogates' exact derivatives
        attached where they are plain quadratics, which the Pareto polish then uses instead
        of finite differences (:func:`~mapframe.surrogates.quadratic.quadratic_derivatives`)."""
        derivatives = quadratic_derivatives(self.surrogates)
        if derivatives is None:
            return self.predict
        return PredictWithDerivatives(self.predict, derivatives)


class MergeStudy:
    """Finds the amortised Pareto front of model merges (MAP).

    Either give a black-box ``objective`` (``f(C) -> M``, ``(B, N)`` coefficients to
    ``(B, T)`` metrics) with ``task_names``; or an ``evaluator`` component, which for model
    merging comes with ``checkpoints={"pretrained": path, "finetuned": {task: path}}`` (or
    ``task_vectors=``) and a ``merge_strategy``. Components (``sampler``, ``surrogate``,
    ``front_solver``, ``storage``, ``executor``, ``merge_strategy``, ``evaluator``) are given
    by registry name, by ``{"name": ..., **params}``, or as instances. The default sampler,
    ``"auto"``, runs Bayesian MAP where gpytorch is installed (``gp`` for up to 2
    coefficients, ``front`` from 3) and Plain MAP's Sobol' design without it; name
    ``sampler="sobol"`` for Plain MAP.

    ``storage`` is in memory by default; pass a path (``"study.sqlite"``) to keep evaluations
    on disk, so that re-running the same study (same ``study_name``) reuses every stored
    evaluation instead of redoing it.

    Metrics are maximised unless ``directions`` says ``"min"`` for a task; ``metric_ranges``
    gives known metric ranges (``(0, 1)`` for accuracy), which the default ``"auto"``
    surrogate uses to pick a warped quadratic and which evaluations are checked against.

    The keyword arguments are the facade of a :class:`~mapframe.spec.StudySpec`, where each
    is validated and documented; :meth:`from_spec` builds a study from a spec directly.
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
        sampler: Sampler | str | Mapping[str, Any] = "auto",
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
        progress: Callable[[ProgressEvent], None] | bool | None = None,
    ) -> None:
        spec = StudySpec.from_kwargs(
            objective, task_names, tasks=tasks, directions=directions,
            metric_ranges=metric_ranges, evaluator=evaluator, allow_pickle=allow_pickle,
            checkpoints=checkpoints, merge_strategy=merge_strategy, task_vectors=task_vectors,
            budget=budget, seed=seed, search_bounds=search_bounds,
            n_coefficients=n_coefficients, sampler=sampler, surrogate=surrogate,
            front_solver=front_solver, storage=storage, study_name=study_name,
            executor=executor, stopping=stopping, verify=verify, preference=preference,
            preference_bounds=preference_bounds, on_error=on_error)
        self._use(assemble(spec), progress)

    @classmethod
    def from_spec(cls, spec: StudySpec,
                  progress: Callable[[ProgressEvent], None] | bool | None = None
                  ) -> MergeStudy:
        """The study a :class:`~mapframe.spec.StudySpec` describes."""
        study = cls.__new__(cls)
        study._use(assemble(spec), progress)
        return study

    def _use(self, parts: StudyParts, progress: Callable[[ProgressEvent], None] | bool | None
             ) -> None:
        self.spec = parts.spec
        self.evaluator: Evaluator = parts.evaluator
        self.tasks: list[Task] = parts.tasks
        self.merge_spec: MergeSpec | None = parts.merge_spec
        self.space: SearchSpace = parts.space
        self.sampler: Sampler = parts.sampler
        self.surrogate: Surrogate = parts.surrogate
        self.front_solver: FrontSolver = parts.front_solver
        self.executor: Executor = parts.executor
        self.stopping: StoppingRule | None = parts.stopping
        self.storage: EvaluationStore = parts.storage
        self.budget = parts.spec.budget
        self.seed = parts.seed
        self.verify = parts.spec.verify
        self.on_error = parts.spec.on_error
        self.preference = parts.preference
        self.preference_bounds = parts.preference_bounds
        self.study_name = parts.spec.study_name
        #: Evaluations at once the adaptive rounds were sized for (set when a run begins).
        self._round_capacity: int | None = None
        self.progress = check_progress(progress)  # True: the default ProgressDisplay()
        self._hooks = get_plugin_manager().hook

    # ------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __repr__(self) -> str:
        from mapframe.results import describe_tasks

        where = self.storage.location or "in memory"
        return (f"<MergeStudy {self.study_name!r}: tasks "
                f"{describe_tasks(self.task_names, [t.direction for t in self.tasks])}; "
                f"budget {self.budget}; sampler {self.sampler.name}, surrogate "
                f"{self.surrogate.name}, front solver {self.front_solver.name}; store {where}>")

    def fingerprint(self) -> dict[str, Any]:
        """What gives stored metrics their meaning; a resumed study must match it."""
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "n_coefficients": self.space.n_dims,
            "evaluator": self.evaluator.describe(),
            "merge": self.merge_spec.describe() if self.merge_spec else None,
        }

    def settings(self) -> dict[str, Any]:
        """What ``summary.json`` records: every component's settings and the fingerprint,
        whose evaluator entry gains the evaluator's ``max_batch_size`` (most merges per
        call: a callable's ``batch_size``). That is no part of the fingerprint: it changes
        how evaluations are batched, not what they measure, so a resume may change it."""
        fingerprint = self.fingerprint()
        fingerprint["evaluator"] = {**fingerprint["evaluator"],
                                    "max_batch_size": self.evaluator.max_batch_size}
        return {
            "budget": self.budget,
            "seed": self.seed,
            "sampler": self.sampler.describe(),
            "surrogate": self.surrogate.describe(),
            "front_solver": self.front_solver.describe(),
            "executor": self.executor.describe(),
            # an adaptive sampler's rounds hold at least this many points (the workers of
            # the study's first run): part of what makes its points
            "round_capacity": self._round_capacity,
            "versions": installed_versions(),
            "stopping": self.stopping.describe() if self.stopping else None,
            "storage": self.storage.describe(),
            "verify": self.verify,
            **fingerprint,
        }

    # -- the algorithm --------------------------------------------------------------------
    def run(self) -> StudyResult:
        """Run the study (resuming from the store) and return its :class:`StudyResult`."""
        run = self._begin()
        with run.session:
            announce(self._hooks, "mapframe_study_started", study=self)
            self._search(run)
            self._fit(run)
            self._solve(run)
            self._verify(run)
        self._combine(run)
        result = self._result(run)
        self._select(result)
        self._check(run, result)
        self._finish(run, result)
        return result

    def _begin(self) -> StudyRun:
        """A fresh run: its evaluation session on the store, an empty history."""
        from mapframe._bootstrapping import refuse_study_in_bootstrapping_worker

        refuse_study_in_bootstrapping_worker()  # any store, before a point is claimed
        session = EvaluationSession(
            self.storage, self.study_name, self.fingerprint(), self.evaluator,
            self.merge_spec, self.executor, self.tasks, on_error=self.on_error,
            on_stored=lambda ev: announce(self._hooks, "mapframe_evaluation_stored",
                                          study=self, evaluation=ev),
            on_progress=None)
        run = StudyRun(session, History(self.space.n_dims, len(self.tasks)),
                       time.perf_counter())
        session.on_progress = lambda phase, done: self._report(
            run, "evaluate" if phase == "search" else phase, done)
        if self.stopping is not None:
            with component_failures(self.stopping, "reset"):
                self.stopping.reset()
        return run

    def _search(self, run: StudyRun) -> None:
        """1-4. sample -> merge -> evaluate -> store, in rounds (one for a fixed design)."""
        t = time.perf_counter()
        self._keep_stored_constants(run)
        with component_failures(self.sampler, "setup"):
            self.sampler.setup(SamplerContext(
                space=self.space, tasks=tuple(self.tasks), surrogate=self.surrogate,
                budget=self.budget, seed=self.seed, capacity=run.capacity))
        self._report(run, "evaluate", len(run.history))  # the stage starts (timed from here)
        idle = 0
        while len(run.history) < self.budget:
            before = len(run.history)
            record = self._search_round(run)
            if self.stopping is not None and len(run.history) < self.budget:
                run.stopped = self._check_stopping(run, record)
                if run.stopped is not None:
                    break
            idle = idle + 1 if len(run.history) == before else 0
            if idle >= _MAX_IDLE_ROUNDS:
                raise EvaluationError(
                    f"sampler {self.sampler.name!r} keeps proposing points that were "
                    f"already evaluated ({len(run.history)} of {self.budget} done); use a "
                    "sampler that explores, or lower the budget"
                )
            run.round_no += 1
        run.timings["evaluate_s"] = time.perf_counter() - t

    def _keep_stored_constants(self, run: StudyRun) -> None:
        """The seed and round capacity of the study's first run, kept in the store, so that
        a resumed run proposes the points it stored (nothing is evaluated twice).

        ``seed=None`` takes the seed an earlier run of this study drew (from the store; a
        finished run's summary for stores written before the seed was kept), else keeps the
        one drawn now. An adaptive sampler's rounds hold at least one point per evaluation
        the executor runs at once (its ``capacity``): a resumed run sizes them by the first
        run's capacity (:meth:`_warn_before_spending` says so when its executor runs more
        at once)."""
        store = self.storage
        stored_seed = store.get_meta("seed")
        if stored_seed is None:
            summary = store.get_meta("summary")
            stored_seed = summary.get("seed") if isinstance(summary, Mapping) else None
        if not isinstance(stored_seed, int) or isinstance(stored_seed, bool):
            stored_seed = None
        if self.spec.seed is None and stored_seed is not None:
            self.seed = stored_seed
        if stored_seed is None:
            store.set_meta("seed", self.seed)
        now = max(1, int(self.executor.capacity))
        first = store.get_meta("round_capacity")
        if not isinstance(first, int) or isinstance(first, bool) or first < 1:
            store.set_meta("round_capacity", now)
            first = now
        run.capacity = self._round_capacity = first

    def _search_round(self, run: StudyRun) -> dict[str, Any]:
        """One round: the sampler proposes, the session evaluates; returns its record."""
        remaining = self.budget - len(run.history)
        with component_failures(self.sampler, "batch_size"):
            n = self.sampler.batch_size(remaining, run.history, run.capacity)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise EvaluationError(f"sampler {self.sampler.name!r}: batch_size() returned "
                                  f"{n!r}; it must return an integer >= 1")
        n = max(1, min(int(n), remaining))
        rng = np.random.default_rng([self.seed, run.round_no])
        t_prop = time.perf_counter()
        with component_failures(self.sampler, "propose"):
            proposed = self.sampler.propose(n, self.space, run.history, rng)
        X = self._check_proposal(proposed, n)
        t_prop = time.perf_counter() - t_prop
        run.timings["propose_s"] += t_prop
        if run.round_no == 0 and not self.sampler.adaptive and n == self.budget:
            # A fixed design that cannot identify the surrogate would waste the budget.
            self.surrogate.check_design(X)
        self._warn_before_spending(run, X)
        before = len(run.history)
        t_eval = time.perf_counter()
        jobs = run.session.evaluate(X, "search", run.round_no, run.history)
        record: dict[str, Any] = {
            "round": run.round_no, "proposed": int(X.shape[0]), "new": len(jobs),
            "reused": len(run.history) - before - len(jobs), "n_evaluated": len(run.history),
            "propose_s": t_prop, "evaluate_s": time.perf_counter() - t_eval}
        run.rounds.append(record)
        return record

    def _warn_before_spending(self, run: StudyRun, X: np.ndarray) -> None:
        """Before the first round that evaluates new points: warn when the store holds
        finished search evaluations that this run has not proposed so far, nor proposes
        now (:func:`~mapframe.study_checks.unused_stored_check`: another seed, sampler,
        budget or worker count; an older study resumed on today's ``sampler: auto``), so
        the user can stop it before paying for them twice. A resumed run proposes the stored
        points again before any new one, so later rounds need no look. A point an earlier
        run stored as failed is proposed again in its round and run again: a retry, not yet
        a point of this run's own (counting it said the stored points of later rounds, not
        proposed yet, went unused)."""
        if run.spending or not run.session.n_new(X, "search", run.history, retries=False):
            return
        run.spending = True
        now = max(1, int(self.executor.capacity))
        if now > run.capacity and self.sampler.adaptive:
            warnings.warn(
                f"study {self.study_name!r} resumes with an executor that runs {now} "
                f"evaluations at once, but its adaptive rounds keep the size its first run "
                f"gave them ({run.capacity} at once), so that they propose the points it "
                "stored: some workers wait during those rounds; to fill them, run it as a new "
                "study (another study_name)", MapframeWarning, stacklevel=5)
        proposed = {coefficient_key(x) for x in X}
        stored = [e for e in run.session.stored_earlier("search") if e.key not in proposed]
        message = unused_stored_check(stored, run.history, self.study_name,
                                      self.sampler.name, self.seed)
        if message is not None:
            run.unused_warning = (f"{message} (said before this run evaluated any new point: "
                                  "stopping it now costs nothing)")
            warnings.warn(run.unused_warning, MapframeWarning, stacklevel=5)

    def _fit(self, run: StudyRun) -> None:
        """5. fit one surrogate per task on the successful evaluations."""
        t = time.perf_counter()
        X, Y = run.history.X, run.history.Y
        n_params = self.surrogate.n_params(self.space.n_dims)
        self._report(run, "fit", len(run.history))
        if X.shape[0] < n_params:
            n_bad = len(run.history.failures)
            raise BudgetError(
                f"only {X.shape[0]} of {len(run.history)} evaluations succeeded ({n_bad} "
                f"failed or gave NaN/out-of-range metrics), fewer than the {n_params} "
                f"parameters of the {self.surrogate.name} surrogate: fix the failing "
                "evaluations or raise the budget"
            )
        run.surrogates, run.diagnostics = self._fit_copies(X, Y)
        for j, (s, task) in enumerate(zip(run.surrogates, self.tasks)):
            r2 = run.diagnostics[task.name].get("r2")
            if np.ptp(Y[:, j]) <= 1e-12 * max(1.0, float(np.abs(Y[:, j]).max())):
                warnings.warn(
                    f"task {task.name!r} has the same metric ({Y[0, j]:.6g}) at all "
                    f"{Y.shape[0]} evaluated points: it does not vary over the search box, "
                    "so it cannot trade off against the other tasks; check that the "
                    "evaluator scores this task (and that the coefficients change the model)",
                    MapframeWarning, stacklevel=3)
            elif r2 is not None and np.isfinite(r2) and r2 < POOR_FIT_R2:
                warnings.warn(
                    f"the {s.name} surrogate of task {task.name!r} fits poorly (R² {r2:.2f}): "
                    "its part of the front is unreliable; raise the budget, narrow the search "
                    "box, or verify more front points", MapframeWarning, stacklevel=3)
        run.timings["fit_s"] = time.perf_counter() - t

    def _solve(self, run: StudyRun) -> None:
        """6. solve the multi-objective problem on the surrogates."""
        t = time.perf_counter()
        self._report(run, "solve", len(run.history))
        with component_failures(self.front_solver, "solve"):
            sol = self.front_solver.solve(run.solver_predict(), self.space, self.tasks,
                                          self.seed)
        X_front, F_front = self._check_front(run, sol)
        run.solver_diagnostics = dict(getattr(sol, "diagnostics", None) or {})
        order = np.argsort(F_front[:, 0] * -self.tasks[0].sign, kind="stable")
        run.X_front, run.F_front = X_front[order], F_front[order]
        run.std_front = _predicted_std(run.surrogates, run.X_front)
        run.real = np.full_like(run.F_front, np.nan)
        run.timings["solve_s"] = time.perf_counter() - t

    def _verify(self, run: StudyRun) -> None:
        """7. verify: evaluate some front points for real, chosen one at a time by the
        hypervolume their predictions add to what is already measured (so the verified points
        extend the measured front rather than repeat it), always including the one the
        preference picks on the predictions, when a preference is given."""
        t = time.perf_counter()
        if self.verify > 0:
            directions = [t.direction for t in self.tasks]
            measured = run.history.Y
            # A front point the search measured already has real metrics (the handed-over
            # front gives it them): verifying it would spend an evaluation on a known value.
            fresh = np.array([not _measured_ok(run.history, x) for x in run.X_front], bool)
            rows = np.flatnonzero(fresh)
            idx = rows[greedy_hypervolume_subset(run.F_front[rows], self.verify, directions,
                                                 measured)]
            if self.preference is not None:
                chosen = select_by_preference(run.F_front, self.preference, directions,
                                              *(self.preference_bounds or (None, None)))
                if fresh[chosen] and chosen not in idx:
                    idx = np.union1d(rows[greedy_hypervolume_subset(
                        run.F_front[rows], self.verify - 1, directions, measured)], [chosen])
            run.verify_total = int(idx.size)
            self._report(run, "verify", 0)
            self._verify_points(run, idx)
        run.timings["verify_s"] = time.perf_counter() - t

    def _verify_points(self, run: StudyRun, idx: np.ndarray) -> None:
        """Evaluate the front rows ``idx`` for real (phase ``"verify"``), record their real
        metrics and the verification report."""
        if idx.size:
            run.session.evaluate(run.X_front[idx], "verify", run.round_no, run.history)
        for i in idx:
            ev = run.history.get(coefficient_key(run.X_front[i]), "verify")
            if ev is not None and ev.ok:
                run.real[i] = ev.metrics
        run.verification = _verification_report(run.F_front, run.real, self.tasks)

    def _combine(self, run: StudyRun) -> None:
        """8. combine the solved front with every measured point (search and verification),
        so that the front is never worse than the measurements (:meth:`Front.with_measured`).

        When the study verifies for a preference, the measured point that the preference
        ranks best also enters (even where a prediction claims better), so that selection
        can hand it over instead of a verified point it beats."""
        t = time.perf_counter()
        directions: list[str] = [task.direction for task in self.tasks]
        solved = Front(run.X_front, run.F_front, run.real, self.task_names, directions,
                       predicted_std=run.std_front)
        evs = [e for e in run.history if e.ok and e.phase in ("search", "verify")]
        C = np.array([e.coefficients for e in evs], dtype=float).reshape(len(evs), -1)
        R = np.array([e.metrics for e in evs], dtype=float).reshape(len(evs), -1)
        if not evs:
            run.front = solved
        else:
            P, S = run.predict(C), _predicted_std(run.surrogates, C)
            margin = expected_errors(run.diagnostics, self.task_names)
            run.front = solved.with_measured(C, P, R, S, margin=margin)
            if self.preference is not None and self.verify > 0:
                lo, hi = self.preference_bounds or (run.front.best_known.min(axis=0),
                                                    run.front.best_known.max(axis=0))
                # Among the measured points no other one dominates: with a zero weight a
                # dominated point can tie with the one dominating it, and a forced dominated
                # point would be dropped again, leaving the choice to the predictions.
                undominated = np.flatnonzero(pareto_mask(R, directions))
                best = int(undominated[select_by_preference(
                    R[undominated], self.preference, directions, lo, hi)])
                run.front = solved.with_measured(C, P, R, S, force=[best], margin=margin)
        if run.verification is not None:
            run.verification["indices"] = np.flatnonzero(run.front.verified).tolist()
        run.timings["combine_s"] = time.perf_counter() - t

    def _result(self, run: StudyRun) -> StudyResult:
        """The run's :class:`StudyResult` (selection still to come)."""
        counts = run.session.counts
        if counts.executor_start_s is not None:
            run.timings["executor_start_s"] = counts.executor_start_s
        assert run.front is not None
        return StudyResult(
            study_name=self.study_name, tasks=list(self.tasks), space=self.space,
            coefficient_names=list(self.space.names), front=run.front, history=run.history,
            surrogates=run.surrogates, diagnostics=run.diagnostics,
            verification=run.verification,
            preference=None if self.preference is None else self.preference.tolist(),
            selected=None, n_evaluated=counts.new, n_reused=counts.reused, seed=self.seed,
            timings=run.timings, settings=self.settings(), merge_spec=self.merge_spec,
            preference_bounds=self.preference_bounds, rounds=run.rounds,
            stopped_early=run.stopped,
            stopping_trace=self.stopping.trace() if self.stopping is not None else [],
            solver_diagnostics=run.solver_diagnostics,
        )

    def _select(self, result: StudyResult) -> None:
        """9. select the front point for the user's preference, on best-known metrics; a
        study that verifies hands over a measured point (the verified pick, or a measured
        point that beats it)."""
        if self.preference is not None:
            result.selected = result.select(self.preference, measured_only=self.verify > 0)

    def _check(self, run: StudyRun, result: StudyResult) -> None:
        """10. warn about what deserves attention (:mod:`mapframe.study_checks`): surrogates
        verification found far off, a selected point extrapolated beyond the evaluations, a
        front without trade-off, a quadratic fitted to exactly as many evaluations as it has
        parameters; each also recorded in ``result.warnings``."""
        front = result.front
        searched = [e for e in run.history if e.ok and e.phase == "search"]
        X = np.array([e.coefficients for e in searched], float).reshape(-1, self.space.n_dims)
        Y = np.array([e.metrics for e in searched], float).reshape(-1, len(self.tasks))
        found = [verified_error_check(run.F_front, run.real, run.diagnostics, self.tasks,
                                      adaptive=bool(getattr(self.sampler, "adaptive", False))),
                 tradeoff_check(front.best_known, front.coefficients, Y, self.tasks),
                 interpolation_check(len(searched), self.surrogate.n_params(self.space.n_dims),
                                     self.surrogate.name,
                                     self.surrogate.interpolates_at_n_params)]
        if result.selected is not None:
            found.append(extrapolation_check(
                front.coefficients[result.selected], X, self.space.lower, self.space.upper,
                result.coefficient_names, measured=bool(front.measured[result.selected])))
        for message in found:
            _warn(result, message)

    def _unused_stored(self, run: StudyRun) -> str | None:
        """:func:`~mapframe.study_checks.unused_stored_check` on the evaluations the (open)
        store holds for this study (a drawn seed is the stored study's, so it applies to
        ``seed=None`` too)."""
        try:
            stored = self.storage.load()
        except StoreError:  # a check never fails a finished run
            return None
        return unused_stored_check(stored, run.history, self.study_name, self.sampler.name,
                                   self.seed)

    def _finish(self, run: StudyRun, result: StudyResult) -> None:
        """With the store opened once more: warn about stored evaluations this run did not
        use (the last check of step 10, which needs the store), store the summary and the front
        (``front.json``'s content: :func:`mapframe.load_results` reads a finished study back
        from its store alone); then report and announce."""
        run.timings["total_s"] = time.perf_counter() - run.t0
        # The fingerprint the run opened the store with: an evaluator whose public state
        # changes while it evaluates (a call counter) must not lose the finished study here.
        self.storage.open(self.study_name, run.session.fingerprint)
        try:
            if run.unused_warning is not None:  # given before the search spent anything
                result.warnings.append(run.unused_warning)
            else:
                _warn(result, self._unused_stored(run))
            self.storage.set_meta("summary", result.summary())
            # after the summary: a front stored before it (an older run's, the summary since
            # rewritten by a mapframe that stores none) is known stale (load_results)
            self.storage.set_meta("front", result.front_json())
        finally:
            self.storage.close()
        self._report(run, "done", len(run.history))
        announce(self._hooks, "mapframe_study_finished", study=self, result=result)

    # -- helpers of the phases ------------------------------------------------------------
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
        if X.shape[0] == 0:
            raise EvaluationError(f"sampler {name!r} proposed no points when asked for {n}; "
                                  "a sampler must propose at least one")
        if not np.all(np.isfinite(X)):
            raise EvaluationError(f"sampler {name!r} proposed non-finite coefficients")
        if not np.all(self.space.contains(X, atol=1e-9)):
            raise EvaluationError(f"sampler {name!r} proposed points outside the search box")
        return np.clip(X, self.space.lower, self.space.upper)

    def _check_front(self, run: StudyRun, sol: Any) -> tuple[np.ndarray, np.ndarray]:
        """The solver's front as ``(X, F)`` arrays, after checking its contract: ``(K, N)``
        points inside the search box (clipped to it within round-off) and ``(K, T)`` finite
        predictions that are the surrogates' at those points. A front that broke it was
        handed over (predictions of other points, coefficients outside the box) or ended in
        a raw numpy error."""
        name = self.front_solver.name
        try:
            X, F = np.asarray(sol.X, dtype=float), np.asarray(sol.F, dtype=float)
        except (AttributeError, TypeError, ValueError):
            raise EvaluationError(f"front solver {name!r} returned {type(sol).__name__}, not "
                                  "a solution with numeric X and F arrays") from None
        n, t = self.space.n_dims, len(self.tasks)
        if X.ndim != 2 or X.shape[0] == 0:
            raise EvaluationError(f"front solver {name!r} returned no points")
        if X.shape[1] != n or F.shape != (X.shape[0], t):
            raise EvaluationError(
                f"front solver {name!r} returned X of shape {X.shape} and F of shape "
                f"{F.shape}; expected (K, {n}) and (K, {t}) for the same K")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(F))):
            raise EvaluationError(f"front solver {name!r} returned non-finite values")
        if not np.all(self.space.contains(X, atol=1e-9)):
            raise EvaluationError(
                f"front solver {name!r} returned points outside the search box; a solver "
                "must search space.lower..space.upper (space.scale maps the unit cube there)")
        X = np.clip(X, self.space.lower, self.space.upper)
        expected = run.predict(X)
        scale = np.maximum(1.0, np.abs(expected))
        if not np.all(np.abs(F - expected) <= 1e-6 * scale):
            raise EvaluationError(
                f"front solver {name!r} returned predictions F that are not the surrogates' "
                "predictions at its points X; return F = predict(X) row for row")
        return X, F

    def _fit_copies(self, X: np.ndarray, Y: np.ndarray
                    ) -> tuple[list[Surrogate], dict[str, dict[str, Any]]]:
        """One fresh copy of the prototype surrogate fitted per task, and its diagnostics."""
        surrogates: list[Surrogate] = []
        diagnostics: dict[str, dict[str, Any]] = {}
        for j, task in enumerate(self.tasks):
            s = copy.deepcopy(self.surrogate)
            with component_failures(s, "fit"):
                s.fit(X, Y[:, j], task)
            surrogates.append(s)
            with component_failures(s, "diagnostics"):
                diagnostics[task.name] = dict(s.diagnostics())
        return surrogates, diagnostics

    def _check_stopping(self, run: StudyRun, record: dict[str, Any]) -> str | None:
        """Fit the surrogates on everything so far and ask the stopping rule."""
        assert self.stopping is not None
        n_params = self.surrogate.n_params(self.space.n_dims)
        X, Y = run.history.canonical()
        if X.shape[0] < n_params:
            return None
        surrogates, diagnostics = self._fit_copies(X, Y)
        state = RoundState(round=run.round_no, n_evaluated=len(run.history),
                           budget=self.budget, history=run.history, surrogates=surrogates,
                           diagnostics=diagnostics, tasks=tuple(self.tasks), space=self.space,
                           n_params=n_params)
        t = time.perf_counter()
        with component_failures(self.stopping, "update"):
            reason = self.stopping.update(state)
        record["stopping_s"] = time.perf_counter() - t
        if reason is not None and not (isinstance(reason, str) and reason):
            # False, 0 or "" would stop the study while stopped_early reads as false
            raise ConfigError(f"stopping rule {self.stopping.name!r}: update() returned "
                              f"{reason!r}; it must return None to go on or a non-empty "
                              "string saying why the study stops")
        return reason

    def _report(self, run: StudyRun, stage: str, done: int) -> None:
        if self.progress is None:
            return
        total = self.budget if stage in ("evaluate", "fit", "solve", "done") else run.verify_total
        st = run.session.status() if stage in ("evaluate", "verify") else None
        counts = run.session.counts
        self.progress(ProgressEvent(stage, done, total, counts.reused, counts.failed,
                                    time.perf_counter() - run.t0,
                                    workers=st.workers if st else None,
                                    busy=st.busy if st else None,
                                    busy_workers=st.busy_workers if st else None,
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


def _measured_ok(history: History, x: np.ndarray) -> bool:
    """Whether the search evaluated ``x`` successfully."""
    ev = history.get(coefficient_key(x), "search")
    return ev is not None and ev.ok


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


def _warn(result: StudyResult, message: str | None) -> None:
    """Record a check's ``message`` (if any) in ``result.warnings`` and emit it as a
    :class:`MapframeWarning` from :meth:`MergeStudy.run`'s caller."""
    if message is not None:
        result.warnings.append(message)
        warnings.warn(message, MapframeWarning, stacklevel=4)
