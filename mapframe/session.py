"""The evaluation session: the one path every evaluation of a study takes.

    coefficients -> reused from the store? -> else submitted to the executor
                 -> recorded as results arrive (checked, stored, announced)

A session is opened on a store under a study name and fingerprint (what gives the metrics
their meaning), starts its executor on first use, and is closed at the end (executor shut
down, store closed). Plain MAP's search and verification, and Nested MAP's pair, profile
and final evaluations all go through :meth:`EvaluationSession.evaluate`, so each of them
is stored the moment it finishes, reused on a rerun, and checked the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from mapframe.errors import (
    ClusterLostError,
    ConfigError,
    EvaluationError,
    MapframeWarning,
    MetricError,
    StoreError,
)
from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import Executor, ExecutorStatus, Job, JobResult, MergeSpec
from mapframe.history import Evaluation, FailureReason, History, coefficient_key
from mapframe.problem import Task
from mapframe.storage.base import EvaluationStore, driver_id, retire_driver

__all__ = ["EvaluationCounts", "EvaluationSession", "check_metrics"]

log = logging.getLogger(__name__)

#: The study meta key holding the digest of an importable objective's code when its
#: evaluations were stored (see :meth:`EvaluationSession._check_code`).
CODE_META = "evaluator_code"


@dataclass
class EvaluationCounts:
    """What a session did: evaluations made now, reused from the store, failed/invalid."""

    new: int = 0
    reused: int = 0
    failed: int = 0
    #: Seconds the executor took to start (``None`` while not started).
    executor_start_s: float | None = None
    #: Evaluations made per phase (``{"search": 12, "verify": 3}``).
    by_phase: dict[str, int] = field(default_factory=dict)
    #: Of ``reused``: evaluations another driver of the same study made while this one ran.
    by_other_drivers: int = 0


class EvaluationSession:
    """Evaluates coefficient vectors through the store and the executor.

    ``on_error`` is ``"raise"`` (a failed evaluation stops the session with an
    :class:`~mapframe.errors.EvaluationError`, after everything finished is stored) or
    ``"record"`` (it is kept as failed and the session goes on). Metrics outside a task's
    declared range raise :class:`~mapframe.errors.MetricError` in both modes (a scale bug).
    ``on_stored(evaluation)`` is called after each evaluation is written; ``on_progress(
    phase, done)`` after each one arrives.

    On a store that other processes can open (:attr:`EvaluationStore.shared`), the session
    claims points before evaluating them, one batch per worker at a time, so that several
    drivers of one study share the work and never evaluate a point twice; points
    another driver holds are waited for and read from the store. Its claims are renewed by a
    heartbeat thread while it runs and released when it stops.
    """

    #: Seconds between looks at the store while other drivers hold the remaining points.
    poll_s: float = 0.2

    def __init__(
        self,
        store: EvaluationStore,
        study_name: str,
        fingerprint: dict[str, Any],
        evaluator: Evaluator,
        merge_spec: MergeSpec | None,
        executor: Executor,
        tasks: Sequence[Task],
        on_error: str = "raise",
        on_stored: Callable[[Evaluation], None] | None = None,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.study_name = study_name
        self.fingerprint = fingerprint
        self.evaluator = evaluator
        self.merge_spec = merge_spec
        self.executor = executor
        self.tasks = list(tasks)
        self.on_error = on_error
        self.on_stored = on_stored
        self.on_progress = on_progress
        #: The first exception ``on_progress`` raised, held until the batch is stored.
        self._progress_error: Exception | None = None
        self.counts = EvaluationCounts()
        self._stored: dict[tuple[str, str], Evaluation] = {}
        #: (phase, key) of the evaluations stored as failed when the session opened: run
        #: again when proposed again (a retry, not a point the earlier runs never proposed).
        self._failed_earlier: set[tuple[str, str]] = set()
        #: This run's evaluations with NaN/infinite metrics, per phase, not yet warned about
        #: (one summary warning per phase: see :meth:`_warn_invalid`).
        self._non_finite: dict[str, list[Evaluation]] = {}
        self._started = False
        self._open = False
        #: The evaluator's code digest, to keep in the store with the first evaluation this
        #: session stores (``None``: nothing to keep, or kept already).
        self._code_to_record: str | None = None
        self._new_owner()

    def _new_owner(self) -> None:
        #: Who this driver is in the store's claims (host, process, random part). Retired
        #: when the session closes or is garbage collected: claims it could not release
        #: (a locked store) are then taken over at once by this process's next study.
        self.owner = driver_id()
        self._retire_owner = weakref.finalize(self, retire_driver, self.owner)

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> EvaluationSession:
        """Open the store (checking the fingerprint) and read what earlier runs stored."""
        if not self._retire_owner.alive:  # reopened after close: a live owner again
            self._new_owner()
        try:
            self.store.open(self.study_name, self.fingerprint)
        except BaseException:
            self._retire_owner()
            raise
        self._open = True
        try:
            self._read_stored()
        except BaseException:
            self._shutdown()  # the store closed: a caller keeping the error keeps no file open
            raise
        return self

    def _read_stored(self) -> None:
        stored = self.store.load()
        if stored and not self.evaluator.identifiable:
            raise ConfigError(
                f"the store already holds {len(stored)} evaluations of study "
                f"{self.study_name!r}, and evaluator {self.evaluator.name!r} cannot be "
                "identified (a function whose captured values have no stable identity), so "
                "they may come from another function: pass study_name= a name unique to this "
                "objective, or define the function at module level")
        self._stored = {(e.phase, e.key): e for e in stored if e.status != "failed"}
        self._failed_earlier = {(e.phase, e.key) for e in stored if e.status == "failed"}
        self._check_code()

    def _check_code(self) -> None:
        """An objective known by its importable name (``module:function``: its name, not its
        code, is in the fingerprint, so that an edit does not orphan what is stored) has its
        code's digest kept in the store with the evaluations stored. A resume with other
        code warns once, before reusing them: they may measure the old function."""
        self._code_to_record = None
        digest_of = getattr(self.evaluator, "code_digest", None)
        code = digest_of() if callable(digest_of) else None
        if not isinstance(code, str):
            return
        kept = self.store.get_meta(CODE_META)
        if not isinstance(kept, str) or not self._stored:
            # none kept (a store written before the digest was), or nothing to reuse: the
            # evaluations stored from now on are this code's
            self._code_to_record = code if kept != code else None
            return
        from mapframe.evaluators.identity import legacy_digest_matches

        if not legacy_digest_matches(kept, code):  # equal, or the earlier algorithm's
            n = len(self._stored)
            fn = getattr(self.evaluator, "function", self.evaluator.name)
            where = self.store.location
            delete = (f"mapframe store delete {where} {self.study_name}" if where
                      else "delete it from its store")
            warnings.warn(MapframeWarning(
                f"the function {fn} changed since its {n} stored evaluation"
                f"{'s' if n != 1 else ''} (study {self.study_name!r}) were made: they are "
                "reused although its code changed; to evaluate it again, change the study's "
                f"name (study.name; study_name= in Python) or delete the study ({delete})"),
                stacklevel=2)

    def _record_code(self) -> None:
        """Keep the evaluator's code digest in the store (after the first evaluation this
        session stores); a store that cannot take it now loses only the warning."""
        code, self._code_to_record = self._code_to_record, None
        if code is not None:
            with contextlib.suppress(StoreError):
                self.store.set_meta(CODE_META, code)

    def close(self) -> None:
        """Warn about this run's NaN/infinite metrics not yet warned about, shut the executor
        down (if it was started) and close the store."""
        try:
            self._warn_invalid()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self._started:
                self._started = False
                self.executor.shutdown()
        finally:
            self._retire_owner()
            if self._open:
                self._open = False
                self.store.close()

    def __enter__(self) -> EvaluationSession:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        # the summary is still due (the evaluations are stored), but a warning turned into an
        # error (-W error) must not hide the exception that stopped the run
        try:
            self._warn_invalid()
        except Exception:
            log.debug("the invalid-metrics warning failed while another error propagated",
                      exc_info=True)
        finally:
            self._shutdown()

    def _warn_invalid(self, keep: str | None = None) -> None:
        """One :class:`~mapframe.errors.MapframeWarning` per phase whose evaluations made in
        this run had NaN or infinite metrics (all phases but ``keep``, the one running):
        how many of the phase's evaluations, per task, and the first one; each stays in the
        history (``result.history.failures``) with its ``error`` and ``reason``."""
        for phase in [p for p in self._non_finite if p != keep]:
            bad = self._non_finite.pop(phase)
            if not bad:
                continue
            made = self.counts.by_phase.get(phase, len(bad))
            tasks = [t.name for t in self.tasks]
            per_task: dict[str, int] = {}
            for ev in bad:
                for t, v in zip(tasks, np.asarray(ev.metrics, dtype=float).reshape(-1)):
                    if not math.isfinite(v):
                        per_task[t] = per_task.get(t, 0) + 1
            which = ", ".join(f"{t!r} in {n}" for t, n in per_task.items())
            first = np.round(bad[0].coefficients, 6).tolist()
            n = len(bad)
            left_out = _LEFT_OUT.get(phase, "left out of the results")
            warnings.warn(MapframeWarning(
                f"NaN or infinite metrics in {n} of {made} evaluation{'s' if made != 1 else ''}"
                f" of the {phase} phase of study {self.study_name!r} (task {which}; the first "
                f"at coefficients {first}): {'they are' if n != 1 else 'it is'} stored as "
                f"invalid and {left_out}; each is in result.history.failures, with its "
                "error"),
                stacklevel=_outside_stacklevel())

    def status(self) -> ExecutorStatus | None:
        """The executor's status while it runs, else ``None``."""
        return self.executor.status() if self._started else None

    # -- evaluating -------------------------------------------------------------------------
    def stored_earlier(self, phase: str) -> list[Evaluation]:
        """The evaluations of ``phase`` the store held when the session opened (earlier
        runs'; failed ones left out, they are run again)."""
        return [e for (p, _), e in self._stored.items() if p == phase]

    def n_new(self, X: np.ndarray, phase: str, history: History, retries: bool = True) -> int:
        """How many rows of ``X`` :meth:`evaluate` would run: those neither in ``history``
        nor stored earlier (another driver may still store some of them first); without
        ``retries``, not counting those an earlier run stored as failed (proposed before:
        run again, not new to the study)."""
        keys = {coefficient_key(x) for x in np.atleast_2d(X)}
        return sum(1 for k in keys if history.get(k, phase) is None
                   and (phase, k) not in self._stored
                   and (retries or (phase, k) not in self._failed_earlier))

    def evaluate(self, X: np.ndarray, phase: str, round_no: int, history: History,
                 ) -> list[Job]:
        """Evaluate the rows of ``X`` (those not already in ``history``) in ``phase``:
        reuse stored results, run the others; everything lands in ``history`` in the order
        of ``X``. Returns the jobs that were run (not reused)."""
        self._warn_invalid(keep=phase)  # an earlier phase ended: its summary is due
        order, reused, jobs = self._reuse_or_schedule(X, phase, round_no, history)
        collected: dict[str, Evaluation] = {}
        try:
            for old in reused.values():
                _raise_if_out_of_range(old)
            if reused:  # a resumed round: its stored points count as done at once
                self._progress(phase, len(history.select(phase, ok=False)) + len(reused))
                self._raise_progress_error()
            if not jobs:
                return jobs
            done_before = len(history.select(phase, ok=False)) + len(reused)
            if self.store.shared:
                return self._run_claimed(jobs, phase, collected, done_before)
            self._run(jobs, phase, collected, done_before)
            return jobs
        except ClusterLostError as exc:
            raise ClusterLostError(f"{exc}; {self._safe_count()}: restart the cluster and run "
                                   "the study again to resume") from None
        finally:
            # The history (what samplers and surrogates see) takes the results in submission
            # order, whoever made them, in whatever order they came and whether this run or
            # an earlier one stored them (a round cut short by an interruption is partly
            # stored: its stored points went in first and changed the final fit), so a study
            # gives the same front on any executor, with any number of drivers, resumed or not.
            for key in order:
                ev = reused.get(key) or collected.get(key)
                if ev is not None:
                    history.add(ev)

    def _safe_count(self) -> str:
        """What is safe in the store, for messages about a lost cluster."""
        where = f" in {self.store.location}" if self.store.location else " (in memory)"
        try:
            n = sum(1 for e in self.store.load() if e.status != "failed")
        except Exception:
            return f"the evaluations stored so far are safe{where}"
        return f"{n} evaluations of study {self.study_name!r} are stored{where}"

    def _reuse_or_schedule(self, X: np.ndarray, phase: str, round_no: int, history: History
                           ) -> tuple[list[str], dict[str, Evaluation], list[Job]]:
        """The keys of ``X``'s rows new to ``history`` (in ``X``'s order, once each), the
        stored evaluations among them, and the jobs for the others."""
        order: list[str] = []
        reused: dict[str, Evaluation] = {}
        jobs: list[Job] = []
        seen: set[str] = set()
        for x in np.atleast_2d(X):
            key = coefficient_key(x)
            if key in seen or history.get(key, phase) is not None:
                continue
            seen.add(key)
            order.append(key)
            old = self._stored.get((phase, key))
            if old is not None:
                reused[key] = old
                self.counts.reused += 1
                continue
            jobs.append(Job(key, np.array(x, dtype=float), phase, round_no))
        return order, reused, jobs

    def _start(self) -> None:
        t = time.perf_counter()
        self.executor.start(self.evaluator, self.merge_spec)
        self._started = True
        self.counts.executor_start_s = time.perf_counter() - t

    def _run_claimed(self, jobs: list[Job], phase: str, collected: dict[str, Evaluation],
                     done_before: int) -> list[Job]:
        """Evaluate ``jobs`` together with any other drivers of the study: claim a few,
        evaluate them, read what the others stored, wait for points they hold; returns the
        jobs this driver evaluated."""
        todo = {j.key: j for j in jobs}
        ran: list[Job] = []
        # A claim is what the executor runs in one go: a batch per worker (a vectorised
        # evaluator with no batch limit takes every remaining point at once).
        per_worker = self.evaluator.max_batch_size or len(todo)
        chunk = max(1, int(self.executor.capacity)) * max(1, int(per_worker))
        delay = self.poll_s
        with _Heartbeat(self.store, self.owner):
            try:
                while todo:
                    for key, ev in self.store.stored(phase, list(todo)).items():
                        del todo[key]
                        collected[key] = ev
                        self.counts.reused += 1
                        self.counts.by_other_drivers += 1
                        self._progress(phase, done_before + len(collected))
                        _raise_if_out_of_range(ev)
                    self._raise_progress_error()
                    if not todo:
                        break
                    got = self.store.claim(phase, list(todo), self.owner, limit=chunk)
                    if got:
                        batch = [todo.pop(k) for k in got]
                        ran += batch
                        self._run(batch, phase, collected, done_before)
                        delay = self.poll_s
                    else:  # other drivers hold every remaining point: wait for them
                        time.sleep(delay)
                        delay = min(2 * delay, 2.0)
            except BaseException:
                # The error that stopped the run says more than a release that fails too
                # (a locked store): claims left behind go when this session closes.
                with contextlib.suppress(StoreError):
                    self.store.release_claims(self.owner)
                raise
            self.store.release_claims(self.owner)
        return ran

    def _progress(self, phase: str, done: int) -> None:
        """Call ``on_progress``; an exception it raises is held (and later calls skipped)
        until :meth:`_raise_progress_error`, so that the batch's finished results are stored
        first (they were lost with it)."""
        if self.on_progress is None or self._progress_error is not None:
            return
        try:
            self.on_progress(phase, done)
        except Exception as exc:
            self._progress_error = exc

    def _raise_progress_error(self) -> None:
        error, self._progress_error = self._progress_error, None
        if error is not None:
            raise error

    def _run(self, jobs: list[Job], phase: str, collected: dict[str, Evaluation],
             done_before: int) -> None:
        # Results are stored the moment they arrive, in whatever order workers finish, and
        # put in ``collected`` for the caller to add to the history in submission order.
        if not self._started:
            self._start()
        self.executor.submit(jobs)
        pending = {j.key for j in jobs}
        done_here = len(collected)
        rows = 0  # evaluations finished inside running batches (executor.on_row)

        def row_finished() -> None:
            nonlocal rows
            rows += 1
            ahead = done_here + min(rows, len(jobs))
            if ahead > len(collected):
                self._progress(phase, done_before + ahead)

        self.executor.on_row = row_finished
        try:
            self._collect(jobs, phase, collected, done_before, pending)
        finally:
            self.executor.on_row = None

    def _collect(self, jobs: list[Job], phase: str, collected: dict[str, Evaluation],
                 done_before: int, pending: set[str]) -> None:
        first_failure: Evaluation | None = None
        # An out-of-range row stops the study, but only after every result the executor
        # still delivers is stored: the rows after it in the batch finished too.
        first_out_of_range: Evaluation | None = None
        # A plugin's stored-evaluation hook that raises stops the study too, but only after
        # the batch's other results are stored (they were lost with the raw exception).
        hook_error: Exception | None = None
        # A result the store cannot take (another program holds its lock) stops the study,
        # but only after the batch's other results are handed to it too: the SQLite store
        # keeps them in its journal, and the last error says how many it keeps.
        store_error: StoreError | None = None
        for res in self.executor.as_completed():
            if res.job.key not in pending:
                continue  # a duplicate result (e.g. a retried job that also finished)
            pending.discard(res.job.key)
            ev = check_metrics(res, self.tasks, self.evaluator.name)
            try:
                self.store.add(ev)
            except StoreError as exc:
                store_error = exc
                continue
            collected[ev.key] = ev
            if self._code_to_record is not None:
                self._record_code()
            self.counts.new += 1
            self.counts.by_phase[phase] = self.counts.by_phase.get(phase, 0) + 1
            if not ev.ok:
                self.counts.failed += 1
            if ev.reason is FailureReason.NON_FINITE:
                self._non_finite.setdefault(phase, []).append(ev)
            if self.on_stored is not None and hook_error is None:
                try:
                    self.on_stored(ev)
                except Exception as exc:
                    hook_error = exc
            self._progress(phase, done_before + len(collected))
            if ev.out_of_range and first_out_of_range is None:
                first_out_of_range = ev
            if ev.status == "failed" and self.on_error == "raise" and first_failure is None:
                first_failure = ev
            if not pending and (first_failure is not None or first_out_of_range is not None):
                break
        if store_error is not None:
            raise store_error
        if hook_error is not None:
            raise hook_error
        self._raise_progress_error()
        if first_out_of_range is not None:
            _raise_if_out_of_range(first_out_of_range)
        if first_failure is not None:
            first = (first_failure.error or "").splitlines()[0]
            raise EvaluationError(
                f"evaluation of coefficients {np.round(first_failure.coefficients, 6).tolist()} "
                f"failed: {first}; fix the evaluator, or pass on_error='record' to skip "
                "failing points"
            )
        if pending:
            raise EvaluationError(
                f"executor {self.executor.name!r} finished without results for "
                f"{len(pending)} of {len(jobs)} submitted evaluations; this is a bug in the "
                "executor (as_completed must yield one result per submitted job)"
            )


class _Heartbeat:
    """Renews a driver's claims every ``claim_ttl / 4`` seconds from a daemon thread, so that
    an evaluation longer than the claim's lifetime keeps its points; a killed process stops
    renewing and its claims expire."""

    def __init__(self, store: EvaluationStore, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        self._thread = threading.Thread(target=self._beat, name="mapframe-claims",
                                        daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = max(0.05, float(self.store.claim_ttl) / 4)
        while not self._stop.wait(interval):
            try:
                self.store.renew_claims(self.owner)
            except Exception as exc:  # a missed beat only risks a takeover
                log.warning("could not renew this driver's claims in the store: %s", exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def check_metrics(res: JobResult, tasks: Sequence[Task], evaluator: str) -> Evaluation:
    """The :class:`~mapframe.history.Evaluation` of one result: ``ok``, ``failed`` (the
    evaluator raised) or ``invalid`` (NaN/infinite metrics, or outside a task's range)."""
    job = res.job
    base: dict[str, Any] = {"coefficients": job.coefficients, "phase": job.phase,
                            "round": job.round, "duration": res.duration, "key": job.key}
    if res.error is not None or res.metrics is None:
        return Evaluation(metrics=None, status="failed", error=res.error or "no metrics",
                          reason=FailureReason.RAISED, **base)
    m = np.asarray(res.metrics, dtype=float).reshape(-1)
    if m.size != len(tasks):
        raise EvaluationError(
            f"evaluator {evaluator!r} returned {m.size} metrics for {len(tasks)} tasks"
        )
    bad = [t.name for t, v in zip(tasks, m) if not math.isfinite(v)]
    if bad:
        # no warning per point: the session warns once per phase (see _warn_invalid)
        msg = f"NaN or infinite metric for task(s) {', '.join(bad)}"
        return Evaluation(metrics=m, status="invalid", error=msg,
                          reason=FailureReason.NON_FINITE, **base)
    for t, v in zip(tasks, m):
        if not (t.lower - 1e-9 <= v <= t.upper + 1e-9):
            msg = (f"out of range: task {t.name!r} metric {v:.10g} is outside its declared "
                   f"range [{t.lower:.10g}, {t.upper:.10g}]; fix the evaluator's scale (e.g. "
                   "accuracy as a fraction) or the task's range")
            return Evaluation(metrics=m, status="invalid", error=msg,
                              reason=FailureReason.OUT_OF_RANGE, **base)
    return Evaluation(metrics=m, status="ok", **base)


#: What an evaluation with NaN/infinite metrics is left out of, per phase.
_LEFT_OUT = {"search": "left out of the surrogate fit",
             "verify": "left out of the verification (those front points stay unverified)"}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning issued by the caller of this function to
    the first frame outside the mapframe package (the user's code that ran the study, not a
    line of mapframe; ``warnings.warn(skip_file_prefixes=...)`` needs Python 3.12); 2 (the
    caller's caller) when every frame is mapframe's."""
    frame: types.FrameType | None = sys._getframe(2)  # the caller of the warning function
    level = 2
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
            return level
        frame = frame.f_back
        level += 1
    return 2


def _raise_if_out_of_range(ev: Evaluation) -> None:
    """Metrics outside their declared range mean a scale bug: stop, also on a resumed run."""
    if ev.out_of_range:
        raise MetricError((ev.error or "").removeprefix("out of range: "))
