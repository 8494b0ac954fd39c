"""The ``ray`` executor: evaluations run in Ray actors, on this machine or on a cluster.

This module is the actor pool: actors holding one set-up evaluator each, batches dispatched
to idle actors, and dead actors replaced with their jobs re-run. Where the cluster is and what
it holds is :mod:`mapframe.executors.ray_cluster`; how Ray's errors become mapframe's,
:mod:`mapframe.executors.ray_errors`; the re-run bookkeeping,
:mod:`mapframe.executors.jobqueue`.

Ray is imported only when a :class:`RayExecutor` is created; importing this module does not
import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mapframe._imports import optional_import
from mapframe.errors import ClusterLostError, ConfigError, EvaluationError, MapframeError
from mapframe.executors.base import (
    Executor,
    ExecutorStatus,
    Job,
    JobResult,
    MergeSpec,
    take_batch,
    unsendable_evaluator_error,
)
from mapframe.executors.jobqueue import JobQueue
from mapframe.executors.ray_cluster import (
    Lease,
    actors_to_fill,
    before_import,
    check_fits,
    connect,
    gpus_per_actor,
    kept,
    parse_address,
    release,
)
from mapframe.executors.ray_errors import cause, first_line, remote_error, summary, where
from mapframe.executors.worker import BatchTimer, WorkerRuntime, WorkerSetupError, batch_share

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator

#: Seconds without a finished evaluation after which the executor checks that the cluster's
#: head still answers (Ray aborts a driver whose head is gone about a minute later).
HEALTH_CHECK_S = 10.0
#: Seconds an interrupted study (Ctrl-C, SIGTERM) waits for the batches under way, whose
#: results are finished evaluations the study then stores.
FINISH_TIMEOUT_S = 5.0

__all__ = ["RayExecutor"]

_PURPOSE = "the 'ray' executor"


def _import_ray() -> Any:
    before_import()
    return optional_import("ray", "ray", _PURPOSE)


class RayExecutor(Executor):
    """Evaluates jobs in Ray actors, each holding one resident, set-up evaluator.

    Args:
        address: ``None`` (default): start a private local Ray instance
            (``ray.init(address="local")``; ``RAY_ADDRESS`` is not consulted). ``"auto"``: the
            cluster this machine belongs to (``RAY_ADDRESS``, or the one ``ray start`` started
            here). ``"host:port"`` (the head node's GCS port, 6379 by default) or
            ``"ray://host:port"`` (Ray Client, 10001 by default): an existing cluster.
            Unreachable addresses fail within ``connect_timeout`` seconds. When this process
            has already initialised Ray, that connection is used whatever ``address`` says
            (with a warning when it names a cluster). Concurrent studies of one process
            share the instance (or connection) mapframe started: the last one to end shuts
            it down; one with another ``address`` or ``init`` is a ``ConfigError``.
        workers: number of actors; default: as many as the cluster holds (its CPUs //
            ``num_cpus``, and its GPUs // ``num_gpus`` when actors take GPUs).
        num_cpus: CPUs each actor reserves; torch in the actor uses ``int(num_cpus)`` threads.
        num_gpus: GPUs each actor reserves; ``"auto"``: 1 when the cluster has GPUs, else 0.
            Ray sets ``CUDA_VISIBLE_DEVICES`` per actor, so an evaluator with ``device: cuda``
            uses the actor's own GPU.
        batch_size: most jobs sent to an actor at once (also capped by the evaluator's
            ``max_batch_size``); default: the queued jobs split evenly over the actors.
        max_retries: times a job is re-run on another actor after its actor died (a crash,
            ``SIGKILL``, the out-of-memory killer, a lost node); after that it comes back as
            a failed result naming the actor.
        init: extra keyword arguments for ``ray.init`` when this executor initialises Ray
            (``num_cpus``, ``runtime_env``, ``namespace``, ...); ignored when the program
            initialised Ray itself; a concurrent study on the instance mapframe started must
            give the same ``init`` (or none).
        connect_timeout: seconds to wait for a cluster address to answer.
        wait_for_resources: on an existing cluster too small for ``workers`` actors, wait
            for it to grow (an autoscaler); by default the actors that fit start, with a
            warning, and a cluster where none fits is an error at once.

    What goes where: the evaluator and the merge spec (checkpoint paths, or task vectors given
    in memory) are put into Ray's object store once and fetched once by each actor, which
    loads the checkpoints and builds its resident model in :meth:`start`; every evaluation
    then merges in place into that model, and only coefficient vectors travel to actors and
    metric rows back. The study, its store, the sampler, the surrogates and the front solver
    stay in this (driver) process. On a cluster, checkpoint paths must be readable on every
    node, and an objective given as a function must be importable there by its module path
    (for a local instance, the driver's working directory is on the actors' path; give other
    directories with ``init={"runtime_env": {"env_vars": {"PYTHONPATH": ...}}}``).

    Each actor has one batch in flight; queued jobs are split so that every actor is busy.
    When an actor dies, its jobs are queued again (up to ``max_retries`` re-runs each), each
    to run alone, so that a point that kills its actor fails alone, not its batch-mates; a
    replacement actor is started and set up, so no evaluation is lost or stored twice.

    An evaluator bug (:class:`~mapframe.errors.EvaluationError`: the wrong shape of metrics)
    stops the study: no further batch is handed out, the batches under way finish and their
    results come out (the study stores them), as do the rows the failing batch finished
    before the bug (an actor evaluates its batch in several calls), and then the one-line
    error, naming the actor, is raised.
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        num_cpus: float = 1,
        num_gpus: float | str = "auto",
        batch_size: int | None = None,
        max_retries: int = 2,
        init: Mapping[str, Any] | None = None,
        connect_timeout: float = 15,
        wait_for_resources: bool = False,
    ) -> None:
        self._target = parse_address(address)
        self.address = address
        self.workers = _positive_int("workers", workers, allow_none=True)
        self.num_cpus = _non_negative("num_cpus", num_cpus)
        if num_gpus != "auto":
            num_gpus = _non_negative("num_gpus", num_gpus, "or 'auto'")
        self.num_gpus: float | str = num_gpus
        self.batch_size = _positive_int("batch_size", batch_size, allow_none=True)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.max_retries = max_retries
        if init is not None and not isinstance(init, Mapping):
            raise ConfigError(f"init must be a mapping of ray.init arguments, got {init!r}")
        self.init = dict(init or {})
        if "address" in self.init:
            raise ConfigError("give the cluster as address=, not inside init=")
        if (isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float))
                or not connect_timeout > 0):
            raise ConfigError(
                f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self.connect_timeout = float(connect_timeout)
        if not isinstance(wait_for_resources, bool):
            raise ConfigError(f"wait_for_resources must be true or false, got "
                              f"{wait_for_resources!r}")
        self.wait_for_resources = wait_for_resources
        _import_ray()  # fail at configuration time, with the install hint, without Ray

        self._ray: Any = None
        self._remote_cls: Any = None
        self._lease: Lease | None = None  # a use of the Ray connection mapframe started
        self._evaluator_name = ""
        self._max_batch: int | None = None
        self._timer = BatchTimer()
        self._shared: list[Any] = []  # object refs of the evaluator and the merge spec
        self._resources: dict[str, float] = {}
        self._gpus = 0.0  # GPUs per actor
        self._n_actors = 0
        self._next_index = 1
        self._actors: list[_Actor] = []
        self._setting_up: dict[Any, _Actor] = {}  # setup ref -> replacement being set up
        self._in_flight: dict[Any, _Actor] = {}  # run ref -> actor running that batch
        self._queue = JobQueue()
        self._lost = 0


    # -- lifecycle ------------------------------------------------------------------------
    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        ray = _import_ray()
        # None when this process had initialised Ray itself: not ours to shut down.
        self._lease = connect(ray, self._target, self.address, self.init,
                              self.connect_timeout)
        self._ray = ray
        self._next_index = 1
        self._queue.reset()
        self._lost = 0
        try:
            self._resources = {k: float(v) for k, v in ray.cluster_resources().items()}
            gpus = self._gpus = gpus_per_actor(self.num_gpus, self._resources)
            self._n_actors = self.workers or actors_to_fill(self._resources, self.num_cpus, gpus)
            self._n_actors = check_fits(
                self._resources, self._n_actors, self.num_cpus, gpus,
                own_local=self._lease is not None and self._lease.owner.target[0] == "local",
                wait=self.wait_for_resources)
            if merge_spec is not None and merge_spec.pretrained is not None:
                # Checkpoint paths are what travels; each actor loads them itself.
                merge_spec = dataclasses.replace(merge_spec, task_vectors=None)
            self._evaluator_name = evaluator.name
            self._max_batch = evaluator.max_batch_size
            self._remote_cls = ray.remote(_RayWorker)
            self._shared = _put_for_actors(ray, evaluator, merge_spec)
            pending = {}
            for _ in range(self._n_actors):
                actor = self._spawn(gpus)
                pending[actor.setup_ref] = actor
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                self._finish_setup(pending.pop(ref), ref)
        except BaseException:
            self.shutdown()
            raise

    def submit(self, jobs: Sequence[Job]) -> None:
        self._queue.extend(jobs)

    def as_completed(self) -> Iterator[JobResult]:
        ray = self._ray
        assert ray is not None and self._actors, "start() was not called"
        error: MapframeError | None = None
        while (self._queue and error is None) or self._in_flight:
            if error is None:
                self._dispatch()
            # After an error only the batches under way are awaited (no new actor is needed).
            waiting = [*self._in_flight, *(self._setting_up if error is None else [])]
            if not waiting:
                raise MapframeError(
                    f"ray executor: {len(self._queue)} job(s) queued but no actor is left to "
                    "run them"
                )
            try:
                ready, _ = ray.wait(waiting, num_returns=1, timeout=HEALTH_CHECK_S)
            except Exception:
                raise
            except BaseException:  # Ctrl-C (or SIGTERM) while waiting for the actors
                yield from self._finish_under_way()
                raise
            if not ready:  # nothing finished for a while: is the cluster still there?
                self._check_cluster_alive()
                continue
            [ref] = ready
            if ref in self._setting_up:
                self._finish_setup(self._setting_up.pop(ref), ref)
                continue
            actor = self._in_flight.pop(ref)
            jobs, actor.jobs = actor.jobs or [], None
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # raised by mapframe in the actor
                # Stop handing out work, but let the batches under way finish: their
                # results are finished evaluations, and the study stores them.
                if error is None:
                    error = remote_error(exc, actor.name)
                    self._queue.clear()
                continue
            except ray.exceptions.RayError as exc:  # the actor, its node or its result is lost
                results = self._actor_died(actor, jobs, exc)
            else:
                if isinstance(outcome, _EvaluatorBug):
                    # An evaluator bug: the rows its batch finished before it are finished
                    # evaluations (the study stores them); then as above.
                    results = list(outcome.done)
                    if error is None:
                        error = EvaluationError(outcome.message)
                        self._queue.clear()
                else:
                    results = outcome
                    self._timer.update(results)
            yield from results
        if error is not None:
            raise error

    def _finish_under_way(self) -> Iterator[JobResult]:
        """After an interruption: the results of the batches under way that come back within
        :data:`FINISH_TIMEOUT_S`, for the study to store (an actor finishes its batch
        anyway, and those were finished evaluations thrown away); nothing new is sent."""
        ray = self._ray
        self._queue.clear()
        refs = list(self._in_flight)
        if not refs:
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=FINISH_TIMEOUT_S)
        for ref in done:
            actor = self._in_flight.pop(ref)
            actor.jobs = None
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError:  # failed or lost: nothing to keep
                continue
            yield from (outcome.done if isinstance(outcome, _EvaluatorBug) else outcome)

    def _check_cluster_alive(self) -> None:
        """Raise :class:`ClusterLostError` when the cluster's head (its GCS) no longer takes
        connections: Ray itself would abort this process about a minute later, saying
        nothing useful."""
        try:
            address = str(self._ray.get_runtime_context().gcs_address or "")
        except Exception:  # a Ray client (ray://) session has no GCS address to probe
            return
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            return
        try:
            socket.create_connection((host, int(port)), timeout=5.0).close()
        except OSError as exc:
            raise ClusterLostError(
                f"the Ray cluster stopped answering: its head at {address} refuses "
                f"connections ({exc})") from None

    @property
    def capacity(self) -> int:
        if self._n_actors:
            return self._n_actors
        return self.workers or 1

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(
            workers=sum(1 for a in self._actors if a.ready),
            busy=sum(len(a.jobs or ()) for a in self._in_flight.values()),
            queued=len(self._queue),
            retried=self._queue.retried,
            lost_workers=self._lost,
            busy_workers=sum(1 for a in self._in_flight.values() if a.jobs),
        )

    def shutdown(self) -> None:
        ray = self._ray
        if ray is None:
            return
        self._ray = None
        actors, self._actors = self._actors, []
        self._setting_up.clear()
        self._in_flight.clear()
        self._queue.clear()
        self._shared = []
        try:
            if ray.is_initialized():
                closing = [a.handle.close.remote() for a in actors if a.ready]
                if closing:
                    ray.wait(closing, num_returns=len(closing), timeout=10)
                for a in actors:
                    _kill(ray, a.handle)
        finally:
            # The last study using mapframe's Ray connection shuts it down (and its watchdog).
            lease, self._lease = self._lease, None
            if lease is not None:
                release(ray, lease)

    def keep_alive(self) -> contextlib.AbstractContextManager[None]:
        """Keep the Ray connection mapframe starts (a local instance: about 5-10 s to
        start) up between studies while the block lasts; each study's actors are still
        removed at its end. A later study set up otherwise (another ``address`` or
        ``init``) shuts the kept one down and starts its own. Ray initialised by the program
        itself is never mapframe's to keep or stop."""
        return kept()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "workers": self.workers,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "batch_size": self.batch_size,
            "max_retries": self.max_retries,
            "init": {str(k): _plain(v) for k, v in self.init.items()},
            "connect_timeout": self.connect_timeout,
            "wait_for_resources": self.wait_for_resources,
        }

    # -- actors ---------------------------------------------------------------------------
    def _spawn(self, gpus: float) -> _Actor:
        index = self._next_index
        self._next_index += 1
        handle = self._remote_cls.options(
            num_cpus=self.num_cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0,
        ).remote(list(self._shared), index)
        threads = max(1, int(self.num_cpus))
        actor = _Actor(index, handle, f"ray-actor-{index}")
        actor.setup_ref = handle.setup.remote(threads)
        self._actors.append(actor)
        return actor

    def _finish_setup(self, actor: _Actor, ref: Any) -> None:
        ray = self._ray
        try:
            actor.name = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            inner = cause(exc)
            if isinstance(inner, WorkerSetupError):
                raise WorkerSetupError(str(inner)) from None
            raise WorkerSetupError(
                f"worker {actor.name} could not set up evaluator {self._evaluator_name!r}: "
                f"{type(inner).__name__}: {inner}"
            ) from None
        except ray.exceptions.RayError as exc:  # the actor died, or never started
            raise WorkerSetupError(
                f"worker {actor.name}{where(exc)} died while setting up evaluator "
                f"{self._evaluator_name!r}: {summary(exc)}; check that mapframe is "
                "installed on every node and that the checkpoints fit in its memory"
            ) from None
        actor.ready = True

    def _dispatch(self) -> None:
        idle = [a for a in self._actors if a.ready and a.jobs is None]
        if not idle or not self._queue:
            return
        # An even share per actor (busy ones included), so that every actor gets work.
        n = batch_share(len(self._queue), sum(1 for a in self._actors if a.ready),
                        self.batch_size, self._max_batch,
                        self._timer.cap(self.batch_size, self._max_batch))
        for actor in idle:
            if not self._queue:
                break
            jobs = take_batch(self._queue, n)  # a re-run job alone
            actor.jobs = jobs
            self._in_flight[actor.handle.run.remote(jobs, self.batch_size)] = actor

    def _actor_died(self, actor: _Actor, jobs: list[Job], exc: Exception) -> list[JobResult]:
        """Queue the dead actor's jobs again (or fail those out of re-runs) and start a
        replacement; return the failed results."""
        # A dead head takes its actors with it: say so instead of waiting for a replacement
        # that cannot start.
        self._check_cluster_alive()
        self._lost += 1
        self._actors.remove(actor)
        _kill(self._ray, actor.handle)
        reason = first_line(exc)
        failed: list[JobResult] = []
        for job, n in self._queue.requeue(jobs, self.max_retries):
            tried = (f"re-run {n} time(s) on other actors, which died too" if n
                     else "not re-run")
            failed.append(JobResult(job, None, (
                f"ray actor {actor.name} died while evaluating these coefficients ({reason}); "
                f"{tried} (max_retries={self.max_retries}): the evaluation may crash its "
                "process (out of memory, a native crash, os._exit)"
            ), 0.0, actor.name))
        replacement = self._spawn(self._gpus)
        self._setting_up[replacement.setup_ref] = replacement
        return failed


@dataclass
class _EvaluatorBug:
    """What an actor returns when the evaluator broke its contract (an
    :class:`~mapframe.errors.EvaluationError`) partway through a batch: the error's one-line
    message, naming the actor, and the results of the rows it finished before."""

    message: str
    done: list[JobResult]


@dataclass(eq=False)
class _Actor:
    """The driver's record of one actor."""

    index: int
    handle: Any
    name: str
    ready: bool = False
    jobs: list[Job] | None = None  # the batch in flight
    setup_ref: Any = None


class _RayWorker:
    """The body of each Ray actor (wrapped with ``ray.remote`` by the executor): one
    :class:`WorkerRuntime`, set up once."""

    def __init__(self, shared: list[Any], index: int) -> None:
        # ``shared`` is a list so that Ray hands the refs over unresolved: fetching them in
        # setup() turns a failure into an error naming this actor.
        self._shared = shared
        self._index = index
        self._runtime: WorkerRuntime | None = None

    def setup(self, threads: int) -> str:
        import ray

        name = f"ray-actor-{self._index}@{ray.util.get_node_ip_address()}:{os.getpid()}"
        try:
            evaluator, merge_spec = ray.get(self._shared)
        except Exception as exc:
            raise WorkerSetupError(
                f"worker {name} could not receive the evaluator: {first_line(exc)}; an "
                "objective given as a function must be importable on every node by its "
                "module path"
            ) from None
        if merge_spec is not None or "torch" in sys.modules:
            _torch_threads(threads, load=merge_spec is not None)
        self._runtime = WorkerRuntime(evaluator, merge_spec, name)
        self._runtime.setup()
        _torch_threads(threads, load=False)  # the evaluator's setup may have imported torch
        return name

    def run(self, jobs: list[Job], batch_size: int | None) -> list[JobResult] | _EvaluatorBug:
        assert self._runtime is not None, "setup() was not called"
        done: list[JobResult] = []
        try:
            for part in self._runtime.iter_run(jobs, batch_size):
                done += part
        except EvaluationError as exc:
            # An evaluator bug (wrong output shape): the same on every actor, so the driver
            # raises it, after storing the rows this batch finished before it.
            return _EvaluatorBug(f"ray actor {self._runtime.name}: {exc}", done)
        return done

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def _torch_threads(threads: int, load: bool) -> None:
    """Give torch ``threads`` threads; import it only when the actor merges (needs it)."""
    torch = sys.modules.get("torch")
    if torch is None and load:
        try:
            import torch
        except ImportError:
            return
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# -- helpers ------------------------------------------------------------------------------
def _kill(ray: Any, handle: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        ray.kill(handle, no_restart=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _positive_int(what: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer{' or null' * allow_none}, "
                          f"got {value!r}")
    return value


def _non_negative(what: str, value: Any, extra: str = "") -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise ConfigError(f"{what} must be a non-negative number{' ' + extra if extra else ''},"
                          f" got {value!r}")
    return float(value)


def _put_for_actors(ray: Any, evaluator: Evaluator, merge_spec: MergeSpec | None) -> list[Any]:
    """The evaluator and merge spec in Ray's object store, for every actor. One that cannot
    be serialised is a one-line :class:`ConfigError` naming cloudpickle's reason: Ray's own
    error inspects the object's members, and an evaluator's ``merger`` property, read
    before setup, made it say "was used before setup(merger)" instead."""
    try:
        return [ray.put(evaluator), ray.put(merge_spec)]
    except Exception as exc:
        import cloudpickle

        reason: BaseException = exc
        try:
            cloudpickle.dumps((evaluator, merge_spec))
        except Exception as pickling:
            reason = pickling
        raise unsendable_evaluator_error(evaluator.name, reason, to="Ray actors",
                                         serializer="cloudpickle") from None
