"""The ``dask`` executor: evaluations run on Dask workers, each keeping its model resident.

Each worker of a Dask cluster (a local one this executor starts, or one whose scheduler
address you give) holds one :class:`~mapframe.executors.worker.WorkerRuntime`, built once by a
worker plugin: the evaluator and the merge spec travel to each worker once, inside the
plugin, and every task carries only its batch of coefficient vectors. ``distributed`` is
imported on first use, so ``executor: dask`` without it fails with an install hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mapframe._imports import optional_import
from mapframe._shared_setting import SharedSetting
from mapframe.errors import ClusterLostError, ConfigError, EvaluationError, MapframeError
from mapframe.executors.base import (
    Executor,
    ExecutorStatus,
    Job,
    JobResult,
    MergeSpec,
    call_with_deadline,
    take_batch,
    unsendable_evaluator_error,
)
from mapframe.executors.jobqueue import JobQueue
from mapframe.executors.worker import BatchTimer, WorkerRuntime, WorkerSetupError, batch_share

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator

log = logging.getLogger(__name__)

__all__ = ["DaskExecutor"]

#: Seconds without a finished batch after which the executor asks the scheduler whether any
#: worker is left to run the pending ones.
HEALTH_CHECK_S = 5.0
#: Seconds an interrupted study (Ctrl-C, SIGTERM) waits for the batches under way, whose
#: results are finished evaluations the study then stores.
FINISH_TIMEOUT_S = 5.0
#: The default of ``no_workers_timeout``: seconds a scheduler may go without any worker,
#: pending batches waiting, before the study stops with
#: :class:`~mapframe.errors.ClusterLostError` (an autoscaler or a restarted ``dask worker``
#: may bring one back meanwhile).
NO_WORKERS_TIMEOUT_S = 60.0

_INSTALL = ("distributed", "dask", "the 'dask' executor")


def _distributed() -> Any:
    return optional_import(*_INSTALL)


def _dask_config() -> Any:
    _distributed()
    import dask.config

    return dask.config


class DaskExecutor(Executor):
    """Runs evaluations on the workers of a Dask cluster, one resident model per worker.

    ``address=None`` starts a local cluster of ``workers`` processes (default: one per CPU)
    with one thread each, and closes it at :meth:`shutdown`; an address such as
    ``"tcp://host:8786"`` connects to a running scheduler (``dask scheduler``, with workers
    started by ``dask worker tcp://host:8786``, each with mapframe and the evaluator's code
    installed). There ``workers``, when given, is how many workers :meth:`start` waits for
    and the ``capacity`` reported before it (the study sizes its first adaptive round
    before it starts the executor); otherwise :meth:`start` waits for one.

    :meth:`start` sets the evaluator up on every worker (checkpoints loaded once per
    worker) and raises :class:`~mapframe.executors.worker.WorkerSetupError` naming the
    worker and the cause when that fails; workers that join later (a restarted one) set
    up as they join. Each worker has one batch under way; the next goes out when one comes
    back, ``ceil(queued / workers)`` jobs, capped by ``batch_size`` and the evaluator's
    ``max_batch_size`` (without either, batches are sized by time: one point first).

    A worker that dies mid-batch (out of memory, a crash) is replaced by its nanny on a
    local cluster, and its batch's points are re-run, each alone on another worker, up to
    ``max_retries`` times, so that only a point that kills its worker comes back as
    failed, saying so, not its batch-mates. On a cluster you started, its scheduler's
    ``distributed.scheduler.allowed-failures`` decides how often a batch is re-run whole;
    then its points go once more, each alone. ``max_retries``
    also re-runs a batch whose task raised unexpectedly. When the scheduler has had no
    worker for ``no_workers_timeout`` seconds (checked each :data:`HEALTH_CHECK_S`
    seconds without a finished batch), or a local cluster has none left to restart, the
    study stops with a :class:`~mapframe.errors.ClusterLostError` (what was stored is kept)
    instead of waiting for ever. ``no_workers_timeout`` (seconds, default
    :data:`NO_WORKERS_TIMEOUT_S`) is that wait: raise it where workers come from a batch
    queue (dask-jobqueue on SLURM or PBS) whose replacements may wait longer than a minute.

    ``resources`` (e.g. ``{"GPU": 1}``) are the Dask worker resources each evaluation
    holds; a local cluster gives each worker exactly that.

    An evaluator bug (:class:`~mapframe.errors.EvaluationError`: the wrong shape of
    metrics) stops the study as with the other executors: the workers are told to skip the
    batches that have not started, the batches under way finish and their results come out
    (the study stores them), as do the rows the failing batch finished before the bug, and
    then the error is raised.

    In-memory task vectors (``task_vectors=`` rather than checkpoint paths) travel inside
    the plugin, and the scheduler keeps that copy to set up workers that join later:
    prefer checkpoint paths. Every worker keeps a full model in memory, and Dask's nanny
    restarts a worker that passes 95 % of its memory limit (the machine's memory split
    between local workers): for large models use fewer workers.
    """

    name: ClassVar[str] = "dask"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        batch_size: int | None = None,
        max_retries: int = 2,
        resources: Mapping[str, float] | None = None,
        connect_timeout: float = 15,
        no_workers_timeout: float = NO_WORKERS_TIMEOUT_S,
    ) -> None:
        _distributed()  # fail at configuration time, with the install hint
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(
                f"address must be a Dask scheduler address such as 'tcp://host:8786' (or "
                f"left out for a local cluster), got {address!r}"
            )
        for pname, value in (("workers", workers), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{pname} must be a positive integer, got {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        if resources is not None and not (isinstance(resources, Mapping) and resources and all(
            isinstance(k, str) and k and isinstance(v, (int, float))
            and not isinstance(v, bool) and v > 0 for k, v in resources.items()
        )):
            raise ConfigError(
                "resources must map Dask worker resource names to positive amounts held by "
                f"each evaluation, e.g. {{'GPU': 1}}; got {resources!r}"
            )
        if (isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float))
                or not connect_timeout > 0 or not math.isfinite(connect_timeout)):
            raise ConfigError(
                f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}"
            )
        if (isinstance(no_workers_timeout, bool)
                or not isinstance(no_workers_timeout, (int, float))
                or not no_workers_timeout > 0 or not math.isfinite(no_workers_timeout)):
            raise ConfigError(
                "no_workers_timeout must be a positive number of seconds (how long a "
                f"scheduler may have no worker), got {no_workers_timeout!r}"
            )
        self.address = address.strip() if address is not None else None
        self.workers = workers
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.resources = dict(resources) if resources is not None else None
        self.connect_timeout = float(connect_timeout)
        self.no_workers_timeout = float(no_workers_timeout)

        self._client: Any = None
        self._cluster: Any = None  # the local cluster this executor started, if any
        self._holds_lost_worker_timeout = False  # _hold_lost_worker_timeout() while it lives
        self._ac: Any = None  # distributed.as_completed over the pending futures
        self._no_workers_since: float | None = None  # first seen with no worker, since then
        self._token = ""
        self._evaluator_cap: int | None = None
        self._timer = BatchTimer()
        self._queue = JobQueue()
        self._futures: dict[Any, list[Job]] = {}  # pending future -> its batch
        self._n_batches = 0
        self._plugin_sent = False
        # Kept up to date by events the scheduler pushes (no round trip per status()):
        self._lock = threading.Lock()
        self._batches: dict[str, int] = {}  # pending task key -> jobs in it
        self._running: set[str] = set()  # ... of those, evaluating now
        self._finished: set[str] = set()  # ... of those, evaluated (result not yet taken)
        self._workers_up: set[str] = set()
        self._workers_gone: set[str] = set()
        self._retried = 0
        self._lost_workers = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        if self._client is not None:
            raise MapframeError("DaskExecutor.start() was called twice without shutdown()")
        distributed = _distributed()
        payload = _pickle_payload(evaluator, merge_spec)
        self._evaluator_cap = evaluator.max_batch_size
        self._token = f"mapframe-{uuid.uuid4().hex[:12]}"
        self._queue.reset()
        self._no_workers_since = None
        with self._lock:
            self._workers_gone.clear()
            self._retried = self._lost_workers = 0
        try:
            self._connect(distributed)
            client: Any = self._client
            # The plugin is named after this driver's client, so that a later driver can
            # tell it from a live one when this one is killed (its client disconnects).
            self._token = f"{_PLUGIN_PREFIX}{client.id}"
            self._drop_stale_plugins()
            client.subscribe_topic("all", self._on_cluster_event)
            client.subscribe_topic(self._token, self._on_task_event)
            self._wait_for_workers()
            self._set_up_workers(payload)
            known = set(client.nthreads())
            with self._lock:
                self._workers_up |= known - self._workers_gone
            self._check_resources()
        except BaseException:
            self.shutdown()
            raise

    def _connect(self, distributed: Any) -> None:
        if self.address is None:
            n = self.workers or os.cpu_count() or 1
            kept = _KEPT.take(self._kept_key())
            if kept is not None:  # left up by a keep_alive() block, with its timeout hold
                self._cluster, self._holds_lost_worker_timeout = kept, True
                self._client = _loop_started(
                    lambda: distributed.Client(kept, set_as_default=False))
                return
            # The cluster closes for good the nanny of a worker that is not back this long
            # after its death (read at each death, so set while the cluster lives): 15 s by
            # default, which a worker that a point kills again while its successor starts
            # misses, and the study ran out of workers. The nannies restart them.
            _hold_lost_worker_timeout()
            self._holds_lost_worker_timeout = True
            try:
                self._cluster = _loop_started(lambda: distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True,
                    # The first death gives a batch up: _killed() re-runs its jobs alone. No
                    # dashboard, and its HTTP server on a free port: studies may run side by
                    # side.
                    scheduler_kwargs={"allowed_failures": 0,
                                      "dashboard": False, "dashboard_address": ":0"},
                    **({"resources": self.resources} if self.resources else {}),
                ))
            except MapframeError:
                raise
            except Exception as exc:
                cause = exc
                while cause.__cause__ is not None or cause.__context__ is not None:
                    cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
                # The usual cause: a script without a main guard, which each spawned worker
                # process re-runs (the error itself shows only in the worker's log).
                script = getattr(sys.modules.get("__main__"), "__file__", None)
                hint = ("; if this runs from a script, put the study under "
                        "`if __name__ == \"__main__\":` (Dask starts its workers as new "
                        "processes that import the script)"
                        if script and "Nanny failed" in f"{exc} {cause}" else "")
                raise MapframeError(
                    f"could not start a local Dask cluster of {n} worker(s): "
                    f"{_first_line(exc)} ({type(cause).__name__}: {_first_line(cause)}){hint}"
                ) from None
            cluster = self._cluster
            self._client = _loop_started(
                lambda: distributed.Client(cluster, set_as_default=False))
            return
        try:
            self._client = self._bounded_client(distributed)
        except TypeError as exc:
            if "identity" not in str(exc):
                raise
            raise MapframeError(
                f"{self.address!r} is a Dask worker's address, not the scheduler's; give the "
                "scheduler's address (`dask scheduler` prints it, port 8786 by default)"
            ) from None
        except MemoryError:
            # Another protocol's reply (an HTTP server's "HTTP/1.0 400 ..."): Dask reads its
            # first bytes as the length of a frame, exabytes, and fails to allocate it.
            raise MapframeError(
                f"no Dask scheduler answered at {self.address!r}: something there replied in "
                "another protocol (an HTTP server? the dashboard's port is 8787 by default, the "
                "scheduler listens on 8786); give the scheduler's address"
            ) from None
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            raise MapframeError(
                f"cannot reach the Dask scheduler at {self.address!r} within "
                f"{self.connect_timeout:g} s ({_first_line(exc)}); start one there with "
                f"`dask scheduler` (and workers with `dask worker {self.address}`), check the "
                "address, or leave address out to run a local cluster"
            ) from None

    def _bounded_client(self, distributed: Any) -> Any:
        """``distributed.Client(address)``, given up after ``connect_timeout`` (+2 s): its
        own timeout does not cover a port that accepts the connection and then says nothing
        (the dashboard's HTTP port, another program), where it waits for ever."""
        done, client = call_with_deadline(
            lambda: _loop_started(lambda: distributed.Client(
                self.address, timeout=self.connect_timeout, set_as_default=False)),
            self.connect_timeout + 2.0, "mapframe-dask-connect")
        if not done:
            raise MapframeError(
                f"no Dask scheduler answered at {self.address!r} within "
                f"{self.connect_timeout:g} s: something accepts connections there but does not "
                "speak Dask's protocol (the dashboard's HTTP port, 8787 by default? the "
                "scheduler listens on 8786); give the scheduler's address")
        return client

    def _wait_for_workers(self) -> None:
        if self._cluster is not None:
            n, timeout = len(self._cluster.workers), max(60.0, self.connect_timeout)
        else:
            n, timeout = self.workers or 1, self.connect_timeout
        try:
            self._client.wait_for_workers(n, timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError, OSError):
            where = (f"the Dask scheduler at {self.address!r}" if self.address
                     else "the local cluster")
            raise MapframeError(
                f"{where} has fewer than {n} worker(s) after {timeout:g} s; start workers "
                f"with `dask worker {self.address or '<scheduler address>'}`, or lower "
                "`workers`"
            ) from None

    def _drop_stale_plugins(self) -> None:
        """Unregister the runtime plugins of drivers that are gone (killed before they could
        remove theirs): each would otherwise stay on the scheduler and every worker, holding
        a resident model, and be set up again on every worker that joins."""
        if self._cluster is not None:
            return  # a private local cluster: nothing of anyone else's on it
        try:
            stale = self._client.run_on_scheduler(_stale_plugin_names)
        except Exception:  # the scheduler may refuse to run functions: leave them
            return
        for name in stale:
            with contextlib.suppress(Exception):
                self._client.unregister_worker_plugin(name)
        if stale:
            log.info("removed %d mapframe worker plugin(s) left by drivers that are gone",
                     len(stale))

    def _set_up_workers(self, payload: bytes) -> None:
        # The plugin carries the evaluator to each worker once (and to workers that join
        # later); registering it sets the evaluator up on every worker and reports failures.
        plugin = _runtime_plugin_class()(self._token, payload)
        self._plugin_sent = True  # the scheduler keeps it even when a worker's setup fails
        try:
            self._client.register_plugin(plugin, name=self._token)
        except WorkerSetupError as exc:
            raise WorkerSetupError(_first_line(exc)) from None
        except Exception as exc:
            raise WorkerSetupError(
                f"a Dask worker could not set up the evaluator: {type(exc).__name__}: "
                f"{_first_line(exc)} (mapframe and the evaluator's code must be importable "
                "on every worker)"
            ) from None

    def _check_resources(self) -> None:
        if not self.resources:
            return
        info = self._client.scheduler_info(n_workers=-1).get("workers", {})
        if not any(all(w.get("resources", {}).get(k, 0) >= v for k, v in self.resources.items())
                   for w in info.values()):
            spec = ",".join(f"{k}={v:g}" for k, v in self.resources.items())
            raise ConfigError(
                f"no Dask worker offers the resources {self.resources} that each evaluation "
                f"holds; start workers with `dask worker {self.address} --resources "
                f"\"{spec}\"`, or drop resources"
            )

    def shutdown(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = self._ac = None
        futures = list(self._futures)
        self._futures.clear()
        self._queue.clear()
        with self._lock:
            self._batches.clear()
            self._running.clear()
            self._finished.clear()
            self._workers_up.clear()
        # A local cluster a keep_alive() block keeps outlives us, as a shared one does.
        keep = (cluster is not None and not futures and _KEPT.held(self._kept_key())
                and _running(cluster))  # not with batches still running on it
        dropped = True
        if client is not None:
            for call in (
                lambda: client.cancel(futures) if futures else None,
                lambda: client.unsubscribe_topic("all"),
                lambda: client.unsubscribe_topic(self._token),
            ):
                with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                    call()
            if (cluster is None or keep) and self._plugin_sent:
                # A cluster that outlives us: drop the resident models (evaluator.close()).
                try:
                    client.unregister_worker_plugin(self._token)
                except Exception:
                    dropped = False
            with contextlib.suppress(Exception):
                client.close()
        self._plugin_sent = False
        if cluster is not None:
            if keep and dropped and _KEPT.park(self._kept_key(), cluster):
                self._holds_lost_worker_timeout = False  # the kept cluster holds it now
            else:
                _close_cluster(cluster)
        if self._holds_lost_worker_timeout:  # back to what it was, with the last cluster
            self._holds_lost_worker_timeout = False
            _release_lost_worker_timeout()

    def keep_alive(self) -> contextlib.AbstractContextManager[None]:
        """Keep the local cluster this executor starts (``address=None``: a few seconds to
        start its worker processes) up between studies while the block lasts, for the next
        local-cluster executor with the same ``workers`` and ``resources``; each study's
        evaluator and model are still dropped from the workers at its end. With an
        ``address`` there is nothing to keep (the cluster is not mapframe's)."""
        if self.address is not None:
            return contextlib.nullcontext()
        return _KEPT.hold(self._kept_key())

    def _kept_key(self) -> tuple[Any, ...]:
        """What makes two local clusters interchangeable."""
        return (self.workers or os.cpu_count() or 1,
                tuple(sorted((self.resources or {}).items())))

    # -- evaluation -----------------------------------------------------------------------
    def submit(self, jobs: Sequence[Job]) -> None:
        if self._client is None:
            raise MapframeError("DaskExecutor.submit() called before start()")
        self._queue.extend(jobs)

    def _flush(self) -> None:
        """Send queued jobs out while fewer batches than workers are under way, so that every
        worker has one: each an even share of the queue, capped by ``batch_size``, the
        evaluator's ``max_batch_size`` and, without either, by the batch timer, which learns
        from each batch that comes back (sending the whole queue at once sized every batch
        before any had come back: one point each)."""
        with self._lock:
            up = len(self._workers_up)
        # One per worker up (one at least, to wait for a worker to come): a batch sent
        # beyond would wait behind another on the same worker, and die with it.
        free = max(1, up) - len(self._futures)
        if not self._queue or free <= 0:
            return
        size = batch_share(len(self._queue), self.capacity, self.batch_size, self._evaluator_cap,
                           self._timer.cap(self.batch_size, self._evaluator_cap))
        for _ in range(free):
            if not self._queue:
                break
            batch = take_batch(self._queue, size)  # a job re-run after a death alone
            key = f"{self._token}-batch-{self._n_batches}"
            self._n_batches += 1
            with self._lock:
                self._batches[key] = len(batch)
            fut = self._client.submit(
                _run_jobs, self._token, key, batch, self.batch_size, key=key, pure=False,
                retries=self.max_retries, resources=self.resources)
            self._futures[fut] = batch
            if self._ac is None:
                self._ac = _distributed().as_completed([fut], loop=self._client.loop)
            else:
                self._ac.add(fut)

    def as_completed(self) -> Iterator[JobResult]:
        if self._client is None:
            raise MapframeError("DaskExecutor.as_completed() called before start()")
        self._flush()
        error: EvaluationError | None = None
        while self._futures or (self._queue and error is None):
            try:
                fut = self._next_done()
            except Exception:
                raise
            except BaseException:  # Ctrl-C (or SIGTERM) while waiting for the workers
                yield from self._finish_under_way()
                raise
            batch = self._futures.pop(fut)
            with self._lock:
                self._batches.pop(fut.key, None)
                self._running.discard(fut.key)
                self._finished.discard(fut.key)
            try:
                results, failed = self._results(fut, batch)
            except MapframeError:
                if error is None:
                    raise
                break  # the cluster went away meanwhile: the evaluator bug stopped the study
            if failed is not None and error is None:
                # An evaluator bug: no further batch starts, but the batches under way
                # finish: their results are finished evaluations, and the study stores them.
                error = failed
                self._queue.clear()
                self._skip_pending()
            yield from results
            if error is None:
                self._flush()  # jobs submitted while we were iterating
        if error is not None:
            raise error

    def _finish_under_way(self) -> Iterator[JobResult]:
        """After an interruption: the results of the batches under way that finish within
        :data:`FINISH_TIMEOUT_S` (the study stores them: a worker finishes its batch anyway,
        and they were finished evaluations thrown away); batches not started are cancelled,
        nothing new is sent."""
        self._queue.clear()
        with self._lock:
            running = set(self._running)
        started = [f for f in self._futures if f.key in running]
        for f in self._futures:
            if f.key not in running:
                f.cancel()
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        for f in started:
            try:
                outcome, value = f.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # failed, lost or not back in time: nothing to keep
                continue
            self._futures.pop(f)
            if outcome == "evaluation-error":
                yield from (value[1] if isinstance(value, tuple) else [])
            elif outcome != "skipped":
                yield from value

    def _next_done(self) -> Any:
        """The next pending future to finish, waited for (``next()`` on Dask's
        ``as_completed`` waits for ever); every :data:`HEALTH_CHECK_S` seconds meanwhile,
        :meth:`_check_workers`."""
        ac = self._ac
        checked = time.monotonic()
        while not ac.has_ready():
            self._flush()  # to a worker that came up meanwhile
            if time.monotonic() - checked >= HEALTH_CHECK_S:
                self._check_workers()
                checked = time.monotonic()
            with ac.thread_condition:  # notified as each future finishes
                ac.thread_condition.wait(timeout=0.1)
        return next(ac)

    def _check_workers(self) -> None:
        """Raise :class:`ClusterLostError` when the scheduler has had no worker for
        ``no_workers_timeout`` seconds, or at once on a local cluster with no worker
        left to restart: the pending batches would wait for ever."""
        client = self._client
        try:
            answered, nthreads = call_with_deadline(
                client.nthreads, max(10.0, self.connect_timeout), "mapframe-dask-workers")
        except Exception:  # a lost scheduler cancels the futures: that is reported then
            return
        if not answered or nthreads:
            self._no_workers_since = None
            return
        now = time.monotonic()
        if self._no_workers_since is None:
            self._no_workers_since = now
        waited = now - self._no_workers_since
        # Dask closes for good a nanny whose worker is not back within
        # distributed.deploy.lost-worker-timeout (15 s) of its death, say one still starting
        # after a point killed the one before: then none is left to restart a worker.
        none_left = self._cluster is not None and not self._cluster.workers
        if not none_left and waited < self.no_workers_timeout:
            return
        pending = sum(len(batch) for batch in self._futures.values()) + len(self._queue)
        why = ("every worker of the local cluster died and none was restarted (Dask stops "
               "restarting a worker that is not back within its lost-worker-timeout, 15 s: "
               "points that kill their worker, or workers slow to start)" if none_left else
               f"no worker has been up for {waited:.0f} s (no_workers_timeout = "
               f"{self.no_workers_timeout:g}; raise it in the executor's settings where "
               "workers take longer to come back)")
        where = (f"the Dask scheduler at {self.address!r}" if self.address
                 else "the local Dask cluster")
        raise ClusterLostError(f"{where} has no worker left to run {pending} pending "
                               f"evaluation(s): {why}")

    def _skip_pending(self) -> None:
        """Tell every worker to skip the pending batches that have not started: one that
        starts after this returns comes back with nothing evaluated, and one that started
        before runs to its end (each batch looks under the worker's evaluation lock)."""
        keys = [fut.key for fut in self._futures]
        if not keys:
            return
        client = self._client
        try:  # best effort: a batch not skipped runs, and its results are stored
            call_with_deadline(
                lambda: client.run(_skip_batches, self._token, keys),
                max(10.0, self.connect_timeout), "mapframe-dask-skip")
        except Exception as exc:
            log.debug("could not tell the Dask workers to skip %d batch(es): %s",
                      len(keys), _first_line(exc))

    def _results(self, fut: Any, batch: list[Job]
                 ) -> tuple[list[JobResult], EvaluationError | None]:
        """The results of a finished batch, and the evaluator bug that stopped it (the
        results then are those of the rows it finished before the bug)."""
        from distributed.scheduler import KilledWorker
        from distributed.utils import CancelledError

        try:
            outcome, value = fut.result()
        except CancelledError as exc:
            raise MapframeError(
                f"Dask cancelled the evaluations: the connection to the scheduler "
                f"{self._where()} was lost ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        except KilledWorker as exc:
            return self._killed(batch, exc), None
        except WorkerSetupError as exc:
            raise WorkerSetupError(_first_line(exc)) from None
        except Exception as exc:
            msg = (f"{type(exc).__name__}: {exc} (raised by the Dask task running this "
                   f"point, after {self.max_retries} retries)")
            return [JobResult(j, None, msg, 0.0, "dask") for j in batch], None
        if outcome == "skipped":  # not started after an evaluator bug: nothing evaluated
            return [], None
        if outcome == "evaluation-error":
            msg, done = value if isinstance(value, tuple) else (value, [])
            return list(done), EvaluationError(msg)
        self._timer.update(value)
        return list(value), None

    def _killed(self, batch: list[Job], exc: Any) -> list[JobResult]:
        """The scheduler gave ``batch`` up after its workers died: queue its jobs again, each
        to run alone (which of them kills its worker is unknown: alone, it takes none of
        the others down with it), and return the failed results of those out of re-runs.
        A local cluster of ours gives up at the first death (``allowed_failures=0``): each
        job then has ``max_retries`` re-runs. A scheduler of yours re-ran the batch its
        ``allowed-failures`` times already: each job of it goes once more, alone."""
        own = self._cluster is not None
        given_up = self._queue.requeue(batch, self.max_retries if own else int(len(batch) > 1))
        with self._lock:  # the last death was counted as a re-run of the whole batch
            self._retried = max(0, self._retried - len(given_up))
        last = getattr(exc.last_worker, "address", "?")
        failures = exc.allowed_failures + 1
        failed = []
        for job, n in given_up:
            if own:
                how = f"re-run {n} time(s) alone, max_retries={self.max_retries}"
            else:
                how = (f"Dask gives up after allowed-failures={exc.allowed_failures} re-runs"
                       + (", then again alone" if n else ""))
            failed.append(JobResult(job, None, (
                f"the Dask worker evaluating this point died, {failures * (n + 1)} time(s), "
                f"each time on another worker ({how}; last worker {last}): the evaluator "
                "probably crashes its process or runs out of memory"), 0.0,
                f"dask-worker@{last}"))
        return failed

    # -- status ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        with self._lock:
            up = len(self._workers_up)
        if up:
            return up
        if self.workers is not None:
            return self.workers
        if self.address is None:
            return os.cpu_count() or 1
        return 1

    def status(self) -> ExecutorStatus:
        with self._lock:
            busy = sum(self._batches.get(k, 0) for k in self._running)
            done = sum(self._batches.get(k, 0) for k in self._finished)
            queued = sum(self._batches.values()) - busy - done + len(self._queue)
            return ExecutorStatus(workers=len(self._workers_up), busy=busy, queued=queued,
                                  retried=self._retried, lost_workers=self._lost_workers,
                                  busy_workers=min(len(self._running),
                                                   len(self._workers_up)))

    def _on_cluster_event(self, event: Any) -> None:
        # Runs in the client's event-loop thread.
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if not isinstance(msg, dict):
            return
        action, worker = msg.get("action"), msg.get("worker")
        with self._lock:
            if self._client is None:  # shut down: a late event must not count a worker again
                return
            if action == "add-worker" and worker and worker not in self._workers_gone:
                self._workers_up.add(worker)
            elif action == "remove-worker" and worker:
                self._workers_up.discard(worker)
                self._workers_gone.add(worker)
                if not msg.get("expected"):
                    self._lost_workers += 1
                # Only what it was running is re-run because it died: the other batches
                # listed were merely assigned to it, waiting, and simply go elsewhere. A
                # process killed at once may die before its "started" event got out: then
                # the batch it ran is the first one sent of those it held.
                listed = set(msg.get("processing-tasks") or ())
                ours = [key for key in self._batches if key in listed]
                ran = [key for key in ours if key in self._running] or ours[:1]
                for key in ran:  # the scheduler runs it again elsewhere
                    self._running.discard(key)
                    self._retried += self._batches[key]

    def _on_task_event(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if not isinstance(msg, dict):
            return
        with self._lock:
            if self._client is None:  # shut down
                return
            key = msg.get("started")
            if key in self._batches and key not in self._finished:
                self._running.add(key)
            key = msg.get("finished")
            if key in self._batches:
                self._running.discard(key)
                self._finished.add(key)

    def _where(self) -> str:
        return f"at {self.address!r}" if self.address else "of the local cluster"

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "workers": self.workers,
                "batch_size": self.batch_size, "max_retries": self.max_retries,
                "resources": self.resources, "connect_timeout": self.connect_timeout,
                "no_workers_timeout": self.no_workers_timeout}


# -- what runs on the workers --------------------------------------------------------------
def _run_jobs(token: str, key: str, jobs: list[Job], batch_size: int | None
              ) -> tuple[str, Any]:
    """The Dask task: evaluate ``jobs`` with this worker's resident runtime."""
    from distributed import get_worker

    worker = get_worker()
    plugin: Any = worker.plugins.get(token)
    if plugin is None:
        raise WorkerSetupError(
            f"worker {_worker_name(worker)} has no mapframe runtime {token!r} (the plugin "
            "that sets the evaluator up did not reach it)"
        )
    runtime = plugin.runtime(worker)  # set up already, or now (raises WorkerSetupError)
    with plugin.run_lock:  # one evaluation at a time per resident model
        if key in plugin.skip:  # the driver stopped on an evaluator bug before it started
            return "skipped", None
        worker.log_event(token, {"started": key})
        _one_torch_thread()
        done: list[JobResult] = []
        try:
            for part in runtime.iter_run(jobs, batch_size):
                done += part
            return "ok", done
        except EvaluationError as exc:
            # An evaluator bug (wrong output shape): the same on every worker, so the driver
            # raises it rather than Dask retrying it, after storing the rows finished before.
            return "evaluation-error", (f"{exc} (on worker {runtime.name})", done)
        finally:
            worker.log_event(token, {"finished": key})


def _skip_batches(token: str, keys: list[str], dask_worker: Any = None) -> None:
    """(On a worker, through ``Client.run``.) Batches ``keys`` of runtime ``token`` that have
    not started are to come back unevaluated."""
    plugin: Any = dask_worker.plugins.get(token) if dask_worker is not None else None
    if plugin is not None:
        plugin.skip.update(keys)


def _worker_name(worker: Any) -> str:
    return f"dask-worker@{worker.address} (pid {os.getpid()})"


def _one_torch_thread() -> None:
    # Workers share the machine: one intra-op thread each (torch only when it is in use).
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _pickle_payload(evaluator: Evaluator, merge_spec: MergeSpec | None) -> bytes:
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps((evaluator, merge_spec)))
    except Exception as exc:
        raise unsendable_evaluator_error(evaluator.name, exc, to="Dask workers",
                                         serializer="cloudpickle") from None


def _build_runtime(payload: bytes, name: str) -> WorkerRuntime:
    import cloudpickle

    try:
        evaluator, merge_spec = cloudpickle.loads(payload)
    except Exception as exc:
        raise WorkerSetupError(
            f"worker {name} could not unpickle the evaluator: {type(exc).__name__}: {exc} "
            "(its code must be importable on every worker)"
        ) from exc
    runtime = WorkerRuntime(evaluator, merge_spec, name)
    runtime.setup()
    _one_torch_thread()
    return runtime


def _raise_lost_worker_timeout() -> Callable[[], object]:
    """Raise ``distributed.deploy.lost-worker-timeout`` to a day (see
    :meth:`DaskExecutor._connect`); returns what puts it back."""
    setting = _dask_config().set({"distributed.deploy.lost-worker-timeout": "1 day"})
    return lambda: setting.__exit__(None, None, None)


#: A process setting of Dask's, raised while a local cluster of ours lives: studies side by
#: side share one change, made by the first cluster and put back by the last.
_LOST_WORKER_TIMEOUT = SharedSetting(_raise_lost_worker_timeout)
_hold_lost_worker_timeout = _LOST_WORKER_TIMEOUT.hold
_release_lost_worker_timeout = _LOST_WORKER_TIMEOUT.release


def _running(cluster: Any) -> bool:
    """Whether a local cluster is still up (not closed, not closing)."""
    return getattr(getattr(cluster, "status", None), "name", "") == "running"


def _close_cluster(cluster: Any) -> None:
    with contextlib.suppress(Exception):  # best effort: it may be gone
        cluster.close()


class _KeptClusters:
    """Local clusters left up by :meth:`DaskExecutor.keep_alive` blocks, idle between
    studies, per key (:meth:`DaskExecutor._kept_key`). Each kept cluster holds its share of
    the lost-worker timeout (:data:`_LOST_WORKER_TIMEOUT`) until it is closed. Thread-safe:
    a kept cluster goes to exactly one executor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[tuple[Any, ...], int] = {}
        self._idle: dict[tuple[Any, ...], list[Any]] = {}

    def held(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            return self._holds.get(key, 0) > 0

    @contextlib.contextmanager
    def hold(self, key: tuple[Any, ...]) -> Iterator[None]:
        with self._lock:
            self._holds[key] = self._holds.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._holds[key] -= 1
                closing = [] if self._holds[key] else self._idle.pop(key, [])
                if not self._holds[key]:
                    del self._holds[key]
            for cluster in closing:
                _close_cluster(cluster)
                _release_lost_worker_timeout()

    def take(self, key: tuple[Any, ...]) -> Any:
        """An idle kept cluster for ``key`` that is still up (None: start one)."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                cluster = idle.pop()
            if _running(cluster):
                return cluster
            _close_cluster(cluster)  # closed meanwhile (its workers gone): not to be kept
            _release_lost_worker_timeout()

    def park(self, key: tuple[Any, ...], cluster: Any) -> bool:
        """Keep ``cluster`` for the next study while a block holds ``key``."""
        with self._lock:
            if not self._holds.get(key):
                return False
            self._idle.setdefault(key, []).append(cluster)
            return True


_KEPT = _KeptClusters()


#: How often a Dask client or local cluster is created again when its event loop thread
#: did not start (distributed waits 10 s for it, then fails an ``assert``).
LOOP_START_TRIES = 3


def _loop_started(create: Callable[[], Any]) -> Any:
    """``create()`` (a ``distributed.Client`` or ``LocalCluster``), tried again when
    distributed's event loop thread did not start in time: its ``LoopRunner`` waits 10 s
    for it and then fails a bare ``assert loop is not None``, which a loaded machine (every
    core busy) meets now and then. After :data:`LOOP_START_TRIES` such failures, a one-line
    :class:`MapframeError`."""
    for _ in range(LOOP_START_TRIES):
        try:
            return create()
        except AssertionError as exc:
            _close_failed_clients(exc)
            if not _from_loop_start(exc):
                raise
            log.warning("Dask's event loop thread did not start within 10 s; trying again")
        except BaseException as exc:
            _close_failed_clients(exc)
            raise
    raise MapframeError(
        f"Dask's event loop thread did not start within 10 s, {LOOP_START_TRIES} times: "
        "this machine is too busy to start a Dask client; free some cores (or use "
        "`executor: process`) and run again")


def _close_failed_clients(exc: BaseException) -> None:
    """Close the ``distributed.Client`` whose construction raised ``exc`` (found in its
    traceback), here and now. Left to the garbage collector, its ``__del__`` closes it
    wherever the collector happens to run: inside another client's start, which holds
    distributed's process-wide ``LoopRunner`` lock that closing takes again, the process
    deadlocks (seen in the test suite after a failed connection)."""
    client_type: Any = getattr(sys.modules.get("distributed"), "Client", None)
    if not isinstance(client_type, type):  # not imported, or replaced (a test's stand-in)
        return
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        client: Any = obj if isinstance(obj, client_type) else None
        if client is not None and client.status not in ("closed", "newly-created"):
            with contextlib.suppress(BaseException):  # best effort: it is half built
                client.close(timeout=5)
        tb = tb.tb_next


def _from_loop_start(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in distributed's ``LoopRunner`` starting its loop."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_start_unlocked":
            return True
        tb = tb.tb_next
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


#: Worker plugins of mapframe drivers are named this, then the driver's Dask client id.
_PLUGIN_PREFIX = "mapframe-"


def _stale_plugin_names(dask_scheduler: Any) -> list[str]:
    """(On the scheduler.) mapframe runtime plugins whose driver's client is gone."""
    live = set(dask_scheduler.clients)
    return [name for name in dask_scheduler.worker_plugins
            if name.startswith(_PLUGIN_PREFIX + "Client-")
            and name[len(_PLUGIN_PREFIX):] not in live]


def _runtime_plugin_class() -> type:
    """The worker plugin class, built on first use so that importing this module does not
    import distributed (workers unpickle it through the module ``__getattr__``)."""
    cls = globals().get("_RuntimePlugin")
    if cls is not None:
        return cls
    from distributed.diagnostics.plugin import WorkerPlugin

    class _RuntimePlugin(WorkerPlugin):
        """Holds one worker's :class:`WorkerRuntime`, set up when the plugin reaches the
        worker (at registration, or when a worker joins later)."""

        idempotent = False

        def __init__(self, token: str, payload: bytes) -> None:
            self.token = token
            self.payload: bytes | None = payload
            self._runtime: WorkerRuntime | None = None
            self._setup_lock = threading.Lock()
            self.run_lock = threading.Lock()
            #: Keys of batches not to start (the driver stopped on an evaluator bug).
            self.skip: set[str] = set()

        def __getstate__(self) -> dict[str, Any]:
            return {"token": self.token, "payload": self.payload}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__init__(state["token"], state["payload"])  # type: ignore[misc]

        async def setup(self, worker: Any) -> None:
            # Loading checkpoints can take long: off the event loop, so the worker stays
            # responsive to the scheduler meanwhile.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.runtime, worker)

        def runtime(self, worker: Any) -> WorkerRuntime:
            with self._setup_lock:
                if self._runtime is None:
                    assert self.payload is not None
                    self._runtime = _build_runtime(self.payload, _worker_name(worker))
                    self.payload = None  # the resident model replaces its pickled form
                return self._runtime

        def teardown(self, worker: Any) -> None:
            with self._setup_lock:
                if self._runtime is not None:
                    self._runtime.close()
                    self._runtime = None

    _RuntimePlugin.__module__ = __name__
    _RuntimePlugin.__qualname__ = "_RuntimePlugin"
    globals()["_RuntimePlugin"] = _RuntimePlugin
    return _RuntimePlugin


def __getattr__(name: str) -> Any:
    if name == "_RuntimePlugin":
        return _runtime_plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
