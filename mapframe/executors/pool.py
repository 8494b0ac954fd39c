"""The local process-pool executor: evaluator replicas in worker processes on this machine.

Each worker is a ``multiprocessing`` process with its own pipe. It receives the pickled
evaluator and merge spec once, builds a :class:`~mapframe.executors.worker.WorkerRuntime`
(loading the checkpoints itself), reports ready, then evaluates one batch of jobs at a time.
The driver waits on every pipe and every process sentinel at once, so a worker that dies
mid-evaluation (killed, out of memory, a crash in native code) is noticed at once: its jobs
are re-queued on the other workers and a replacement is started. ``concurrent.futures`` is
not used on purpose: its pool marks itself broken, with every pending future, when one
worker dies.

Protocol (driver <-> worker, over the worker's pipe)::

    worker: ("hello",)                       driver: ("setup", payload)
    worker: ("ready", name, setup_seconds)   or ("setup_error", message), then exits
    driver: ("run", jobs, batch_size)        worker: ("partial", [JobResult, ...]) per
                                             evaluated batch, as each finishes, then
                                             ("results", []) when all are done,
                                             or ("evaluation_error" | "crash", message)
    driver: ("stop",)                        worker: closes the evaluator and exits
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # its exit hook must be registered before ours (see _stop_all)
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, ClassVar

from mapframe._bootstrapping import refuse_study_in_bootstrapping_worker
from mapframe.errors import ConfigError, EvaluationError, MapframeError
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
from mapframe.executors.worker import (
    WorkerRuntime,
    WorkerSetupError,
    batch_share,
    default_worker_name,
)

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from mapframe.evaluators.base import Evaluator

__all__ = ["ProcessExecutor"]

START_METHODS = ("spawn", "forkserver", "fork")
#: Seconds a stopped worker gets to finish its batch and close its evaluator before it is
#: terminated (then killed).
STOP_TIMEOUT = 5.0
#: How often a worker checks that the driver that started it is still alive.
_PARENT_POLL_S = 0.5
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive(name: str, value: object, allow_none: bool = True, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}{' or null' if allow_none else ''}, "
                          f"got {value!r}")


# ----------------------------------------------------------------------------------------
# inside a worker process


def _limit_threads(threads: int) -> None:
    """Give this worker ``threads`` compute threads: OpenMP and BLAS, here and in the
    libraries it loads later (torch's OpenMP reads the environment when it starts)."""
    for var in _THREAD_ENV:
        os.environ[var] = str(threads)
    try:  # BLAS libraries loaded already (numpy's, imported with mapframe)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


def _limit_torch_threads(threads: int, merges: bool) -> None:
    """``torch.set_num_threads`` where torch is (or, for merging, will be) in use; torch is
    not imported for objectives that do not need it."""
    if not merges and "torch" not in sys.modules:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def _exit_with_parent(parent: int) -> None:
    """Exit as soon as the process that started this worker is gone (``kill -9`` of the
    driver), even in the middle of an evaluation: nobody would read its results."""

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="mapframe-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, index: int, threads: int) -> None:
    """A worker's life: set up once, evaluate batches until told to stop."""
    # Ctrl-C reaches the whole process group: the driver stops its workers itself. SIGINT
    # was blocked since the driver started this process (see _sigint_blocked): a Ctrl-C
    # while it started up is dropped here, not raised as a traceback from its imports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent(os.getppid())
    name = default_worker_name(f"process-worker-{index}")
    try:
        conn.send(("hello",))
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if msg[0] != "setup":
        return
    _limit_threads(threads)
    try:
        evaluator, merge_spec = pickle.loads(msg[1])
    except BaseException as exc:
        hint = ""
        if "__main__" in str(exc):
            hint = ("; a function defined in a notebook or an interactive session needs "
                    "start_method='fork' (Linux), or a module the workers can import, or "
                    "executor 'inprocess', 'ray' or 'dask'")
        conn.send(("setup_error", f"worker {name} could not unpickle the evaluator it was "
                                  f"sent ({type(exc).__name__}: {exc}); its classes and "
                                  f"functions must be importable in a new process{hint}"))
        return
    _limit_torch_threads(threads, merges=merge_spec is not None)
    runtime = WorkerRuntime(evaluator, merge_spec, name)
    try:
        seconds = runtime.setup()
    except WorkerSetupError as exc:
        conn.send(("setup_error", str(exc)))
        return
    conn.send(("ready", name, seconds))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the driver is gone
            if msg[0] != "run":
                break
            _, jobs, batch_size = msg
            reply: tuple[Any, ...]
            try:
                for part in runtime.iter_run(jobs, batch_size):
                    conn.send(("partial", part))  # stored by the driver as it arrives
                reply = ("results", [])
            except (BrokenPipeError, OSError):
                break  # the driver is gone
            except EvaluationError as exc:
                reply = ("evaluation_error", str(exc))
            except Exception as exc:
                reply = ("crash", f"{type(exc).__name__}: {exc}\n"
                                  f"{traceback.format_exc(limit=-3)}")
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                break
    finally:
        runtime.close()


# ----------------------------------------------------------------------------------------
# in the driver

@contextlib.contextmanager
def _sigint_blocked(start_method: str) -> Iterator[None]:
    """SIGINT blocked in the calling thread while a worker process is started: the worker
    inherits the blocked signal and drops it once it ignores SIGINT (:func:`_worker_main`),
    so a Ctrl-C to the terminal's process group while it imports Python, numpy and the
    evaluator's modules (a second or more under spawn) does not end it with a
    KeyboardInterrupt traceback. In the driver the signal stays pending and is raised as
    KeyboardInterrupt when it is unblocked, a moment later: no Ctrl-C is lost."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    if start_method != "fork":
        # Started by the first spawn/forkserver start, the resource tracker unblocks SIGINT
        # in the caller once it runs (multiprocessing.resource_tracker.ensure_running):
        # started now, it leaves the block below alone.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    name: str
    #: Whether it said hello (it got past multiprocessing's start-up: unpickling its
    #: arguments and, under spawn/forkserver, re-importing the main script).
    started: bool = False
    ready: bool = False
    #: The jobs it was sent and has not returned yet (at most one batch in flight).
    batch: list[Job] = field(default_factory=list)
    #: Whether it is working on a batch (until its final "results" message).
    running: bool = False


class _Pool:
    """The live workers of one executor; stoppable at exit without the executor."""

    def __init__(self) -> None:
        self.workers: dict[int, _Worker] = {}

    def stop(self) -> None:
        workers = list(self.workers.values())
        self.workers.clear()
        for w in workers:
            with contextlib.suppress(OSError, ValueError):  # dead, or pipe closed already
                w.conn.send(("stop",))
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.process.is_alive():
                w.process.terminate()
        for w in workers:
            w.process.join(1.0)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


_POOLS: weakref.WeakSet[_Pool] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # multiprocessing's own exit hook joins every non-daemonic child and would wait forever
    # for idle workers; exit hooks run last-registered first, so this one runs before it.
    for pool in list(_POOLS):
        pool.stop()


def _exit_description(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"exit code {code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"exit code {code}"
    return f"exit code {code}"


class ProcessExecutor(Executor):
    """Evaluates jobs in ``workers`` local processes, each holding its own evaluator.

    Args:
        workers: worker processes (default: the CPUs this process may use).
        batch_size: most jobs sent to a worker at once (the evaluator's ``max_batch_size``
            also caps). Queued jobs are spread so that every worker is busy:
            ``min(cap, ceil(queued / workers))`` per idle worker.
        start_method: ``"spawn"`` (default, safest with torch and CUDA), ``"forkserver"``
            or ``"fork"``.
        threads_per_worker: torch/OpenMP/BLAS threads in each worker (default: the CPUs
            divided among the workers, at least 1), set before the evaluator is set up.
        max_retries: times a job is re-run on another worker after its worker died while
            evaluating it; after that it comes back as a failed result saying so.

    The evaluator and merge spec are pickled once and sent to each worker, which loads the
    checkpoints itself. A worker that dies is replaced (set up again), so capacity stays;
    a job re-run after a death is sent alone, so that a point that kills its worker cannot
    take its batch-mates' retries with it. Workers exit by themselves when the driver dies.
    """

    name: ClassVar[str] = "process"

    def __init__(
        self,
        workers: int | None = None,
        batch_size: int | None = None,
        start_method: str = "spawn",
        threads_per_worker: int | None = None,
        max_retries: int = 2,
    ) -> None:
        _positive("workers", workers)
        _positive("batch_size", batch_size)
        _positive("threads_per_worker", threads_per_worker)
        _positive("max_retries", max_retries, allow_none=False, minimum=0)
        if start_method not in START_METHODS:
            raise ConfigError(f"start_method must be one of {', '.join(START_METHODS)}, "
                              f"got {start_method!r}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError(f"start_method {start_method!r} is not available on this "
                              f"platform; use one of "
                              f"{', '.join(multiprocessing.get_all_start_methods())}")
        cpus = usable_cpus()
        self.workers: int = workers if workers is not None else cpus
        self.batch_size = batch_size
        self.start_method = start_method
        self.threads_per_worker: int = (threads_per_worker if threads_per_worker is not None
                                        else max(1, cpus // self.workers))
        self.max_retries = max_retries
        self._pool = _Pool()
        self._queue = JobQueue()
        self._payload: bytes | None = None
        self._evaluator_name = ""
        self._cap: int | None = None
        self._next_index = 0
        self._lost = 0
        self._host = socket.gethostname()
        self._finalizer: weakref.finalize | None = None

    # -- Executor -----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.workers

    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        """Start the workers and wait until each has set the evaluator up.

        Raises :class:`WorkerSetupError` naming the worker (and, for a checkpoint it cannot
        read, the file) when one fails, after stopping them all.
        """
        refuse_study_in_bootstrapping_worker()
        self.shutdown()
        try:
            payload = pickle.dumps((evaluator, merge_spec), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise unsendable_evaluator_error(evaluator.name, exc, to="worker processes",
                                             serializer="pickle") from None
        self._payload = payload
        self._evaluator_name = evaluator.name
        caps = [c for c in (self.batch_size, evaluator.max_batch_size) if c]
        self._cap = min(caps) if caps else None
        self._lost = 0
        self._queue.reset()
        _POOLS.add(self._pool)
        self._finalizer = weakref.finalize(self, self._pool.stop)
        try:
            for _ in range(self.workers):
                self._launch()
            while not all(w.ready for w in self._pool.workers.values()):
                _, error = self._poll()
                if error is not None:
                    raise error
        except BaseException:
            self.shutdown()
            raise

    def submit(self, jobs: Sequence[Job]) -> None:
        self._queue.extend(jobs)

    def as_completed(self) -> Iterator[JobResult]:
        if self._payload is None:
            raise EvaluationError("the process executor was not started: call start() first")
        error: MapframeError | None = None
        while ((self._queue and error is None)
               or any(w.running for w in self._pool.workers.values())):
            try:
                if error is None:
                    self._dispatch()
                results, failed = self._poll()
            except Exception:
                raise
            except BaseException:  # Ctrl-C (or SIGTERM) while waiting for the workers
                yield from self._finish_under_way()
                raise
            yield from results  # stored by the study before an error stops it
            if failed is not None and error is None:
                # Stop handing out work, but let the batches under way finish: their
                # results are finished evaluations, and the study stores them.
                error = failed
                self._queue.clear()
        if error is not None:
            raise error

    def status(self) -> ExecutorStatus:
        workers = list(self._pool.workers.values())
        return ExecutorStatus(workers=sum(w.ready for w in workers),
                              busy=sum(len(w.batch) for w in workers),
                              queued=len(self._queue), retried=self._queue.retried,
                              lost_workers=self._lost,
                              busy_workers=sum(1 for w in workers if w.running))

    def shutdown(self) -> None:
        """Stop every worker (a stop message, then terminate, then kill); idempotent."""
        self._queue.clear()
        self._payload = None
        if self._finalizer is not None:
            self._finalizer()  # calls self._pool.stop() once
            self._finalizer = None
        _POOLS.discard(self._pool)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "workers": self.workers, "batch_size": self.batch_size,
                "start_method": self.start_method,
                "threads_per_worker": self.threads_per_worker,
                "max_retries": self.max_retries}

    # -- workers ------------------------------------------------------------------------------
    def _launch(self) -> _Worker:
        ctx: Any = multiprocessing.get_context(self.start_method)
        index = self._next_index
        self._next_index += 1
        here, there = ctx.Pipe()
        # Not daemonic: evaluators may start processes of their own (data loaders).
        proc = ctx.Process(target=_worker_main, args=(there, index, self.threads_per_worker),
                           name=f"mapframe-process-worker-{index}", daemon=False)
        with _sigint_blocked(self.start_method):
            proc.start()
        there.close()  # the worker's end lives in the worker only: EOF when it dies
        w = _Worker(index, proc, here, f"process-worker-{index}@{self._host}:{proc.pid}")
        self._pool.workers[index] = w
        return w

    def _dispatch(self) -> None:
        idle = [w for w in self._pool.workers.values() if w.ready and not w.running]
        if not idle or not self._queue:
            return
        size = batch_share(len(self._queue), self.workers, self._cap)
        for w in idle:
            if not self._queue:
                break
            w.batch = take_batch(self._queue, size)
            w.running = True
            with contextlib.suppress(OSError):  # died: its sentinel fires, its batch re-queued
                w.conn.send(("run", w.batch, self.batch_size))

    def _finish_under_way(self) -> Iterator[JobResult]:
        """After an interruption: the results of the batches under way, as the workers
        finish them within :data:`STOP_TIMEOUT` (what they sent before included), for the
        study to store; then the workers still busy are terminated. A stopped worker
        finishes its batch anyway before it reads the stop message: its results were
        finished evaluations, and were thrown away."""
        self._queue.clear()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(w.running for w in self._pool.workers.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            results, _ = self._poll(timeout=left)
            yield from results
        for w in self._pool.workers.values():
            if w.running:  # nothing more of it is read: shutdown need not wait for it
                w.process.terminate()

    def _poll(self, timeout: float | None = None
              ) -> tuple[list[JobResult], MapframeError | None]:
        """Wait (up to ``timeout`` seconds) for the next messages or deaths; handle them;
        return the results and the first error a worker reported. Every ready worker is
        handled even after an error, so that the results other workers delivered in the
        same wait are not lost."""
        workers = list(self._pool.workers.values())
        handles: dict[Any, _Worker] = {}
        for w in workers:
            handles[w.conn] = w
            handles[w.process.sentinel] = w
        ready = set(wait(list(handles)) if timeout is None else wait(list(handles), timeout))
        results: list[JobResult] = []
        error: MapframeError | None = None
        # Messages first: a worker may have sent its results just before it died.
        for w in workers:
            if w.conn in ready and w.index in self._pool.workers:
                try:
                    results.extend(self._receive(w))
                except MapframeError as exc:
                    error = error or exc
        for w in workers:
            if w.process.sentinel in ready and w.index in self._pool.workers:
                try:
                    results.extend(self._lost_worker(w))
                except MapframeError as exc:
                    error = error or exc
        return results, error

    def _receive(self, w: _Worker) -> list[JobResult]:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            return self._lost_worker(w)
        return self._handle(w, msg)

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> list[JobResult]:
        kind = msg[0]
        if kind == "hello":
            w.started = True
            assert self._payload is not None
            with contextlib.suppress(OSError):  # died: its sentinel says so
                w.conn.send(("setup", self._payload))
            return []
        if kind == "ready":
            w.name, w.ready = msg[1], True
            return []
        if kind == "setup_error":
            raise WorkerSetupError(msg[1])
        if kind == "partial":
            finished = {r.job.key for r in msg[1]}
            done = [j for j in w.batch if j.key in finished]
            w.batch = [j for j in w.batch if j.key not in finished]  # a death re-runs the rest
            self._queue.done(done)
            return list(msg[1])
        batch, w.batch, w.running = w.batch, [], False
        if kind == "results":
            self._queue.done(batch)
            return list(msg[1])
        if kind == "evaluation_error":
            raise EvaluationError(f"worker {w.name}: {msg[1]}")
        raise EvaluationError(f"worker {w.name} failed while evaluating a batch of "
                              f"{len(batch)} job(s): {msg[1]}")

    def _lost_worker(self, w: _Worker) -> list[JobResult]:
        """``w`` died (or closed its pipe): re-queue or fail its jobs, start a replacement."""
        results: list[JobResult] = []
        while True:  # what it sent before dying still counts
            try:
                if not w.conn.poll():
                    break
                msg = w.conn.recv()
            except (EOFError, OSError):
                break
            results.extend(self._handle(w, msg))
        del self._pool.workers[w.index]
        w.process.join(STOP_TIMEOUT)
        if w.process.is_alive():  # closed its pipe but did not exit
            w.process.kill()
            w.process.join()
        code = w.process.exitcode
        w.conn.close()
        how = _exit_description(code)
        if not w.ready:
            hint = ""
            if not w.started and self.start_method in ("spawn", "forkserver"):
                # It died before its first message: while multiprocessing set it up, which
                # under spawn/forkserver re-imports the main script.
                hint = (f" before it started (start method {self.start_method!r}); if the "
                        "study runs from a script, guard it with "
                        "`if __name__ == '__main__':`")
            raise WorkerSetupError(
                f"worker {w.name} died while setting up evaluator {self._evaluator_name!r} "
                f"({how}){hint}"
            )
        self._lost += 1
        for job, n in self._queue.requeue(w.batch, self.max_retries):
            results.append(JobResult(
                job, None,
                f"worker {w.name} died ({how}) while evaluating this point; it was "
                f"retried {n} time(s) (max_retries={self.max_retries}) and its worker "
                "died each time", worker=w.name))
        w.batch, w.running = [], False
        self._launch()  # set up again: capacity stays
        return results
