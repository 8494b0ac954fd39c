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

    worker: ("hello",)                       driver: ("setup", payload, index, env)
    worker: ("ready", name, setup_seconds)   or ("setup_error", message), then exits
    driver: ("run", jobs, batch_size)        worker: ("partial", [JobResult, ...]) per
                                             evaluated batch, as each finishes, then
                                             ("results", []) when all are done,
                                             or ("evaluation_error" | "crash", message)
    driver: ("stop",)                        worker: closes the evaluator and exits
    driver: ("release",)                     worker: closes the evaluator, drops it (and
                                             the merge spec), resets its per-study state,
                                             then ("hello",) again: parked, waiting for the
                                             next study's ("setup", payload, index)

``index`` is the driver's number for the worker (in its name): a parked worker reused by
another executor gets a new one. ``env``: the environment variables the driver gained since
it started the worker (none for a new one), which the worker sets before the evaluator's.

Parked workers (:meth:`ProcessExecutor.keep_alive`): while a ``keep_alive()`` block of some
configuration lasts (start method and threads per worker; ``fork`` keeps nothing), an
executor of that configuration that shuts down releases its healthy idle workers instead of
stopping them and parks them in a module-level registry; the next one to start takes them
(each parked worker goes to exactly one executor), sends them its setup payload and spawns
only the rest. A worker is parked only if it is set up, idle and its last batch ended
without an error, and only if it answers the release with ``("hello",)`` within
:data:`STOP_TIMEOUT`; any other is stopped as without a block. One found dead when taken is
dropped; one that dies before it is set up again is replaced by a new one. A parked worker
is reused only where a new one would start alike: same start method, threads per worker,
Python executable, ``sys.path``, ``sys.argv``, working directory and main script in the
driver as when it started the worker, and, under ``spawn``, no environment variable of the
driver's changed or removed since (a variable the driver gained is passed on with the
setup: libraries set their defaults so when they are imported; but not one of
:data:`_STARTUP_ENV`, read once when a process or its GPU runtime starts). The end of the
last block of a configuration stops its parked workers (so does the interpreter's exit, and
a worker exits by itself when its driver dies).

What a reused worker keeps from its earlier studies: the modules it imported (their
module-level state and caches included; code edited since is not reloaded), the CUDA
context, torch settings other than those below, warnings and logging configuration. What
it does not keep: the evaluator, its merged model and the merge spec (closed and freed, with
a garbage collection and, where CUDA is in use, ``torch.cuda.empty_cache()``); environment
variables, ``sys.path`` entries and the working directory an evaluator set or changed
(restored to the worker's own at its start); the random state of ``random`` and numpy's
global generator (both re-seeded from the OS, as a new process is) and torch's (re-seeded
with torch's default seed, as a new process is); torch's grad mode (on); torch, OpenMP and
BLAS threads (set again at each setup).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import multiprocessing.util  # its exit hook must be registered before ours (see _stop_all)
import os
import pickle
import random
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import spawn
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
#: Environment variables read once, when a process or its GPU runtime starts: a parked
#: worker is not reused once the driver's differ from those it was started with, even
#: where the driver only gained them (other variables gained are passed on at setup).
_STARTUP_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES",
                "ROCR_VISIBLE_DEVICES", "PYTHONHASHSEED", "PYTHONPATH", "LD_PRELOAD",
                "LD_LIBRARY_PATH")


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
    """A worker's life: set up, evaluate batches until told to stop; released instead (see
    :meth:`ProcessExecutor.keep_alive`), drop the study and wait for the next setup."""
    # Ctrl-C reaches the whole process group: the driver stops its workers itself. SIGINT
    # was blocked since the driver started this process (see _sigint_blocked): a Ctrl-C
    # while it started up is dropped here, not raised as a traceback from its imports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent(os.getppid())
    start = (dict(os.environ), list(sys.path), os.getcwd())  # restored between studies
    while _serve_study(conn, index, threads):
        _forget_study(*start)


def _serve_study(conn: Connection, index: int, threads: int) -> bool:
    """One study: say hello, set up what the driver sends, evaluate batches. Returns
    ``True`` when released (the evaluator closed, ready for another study), ``False`` when
    the worker must exit (told to stop, a setup error, the driver gone)."""
    try:
        conn.send(("hello",))
        msg = conn.recv()
    except (EOFError, OSError):
        return False
    if msg[0] != "setup":
        return False
    if len(msg) > 3:
        index = msg[2]
        os.environ.update(msg[3])  # what the driver gained since it started this worker
    name = default_worker_name(f"process-worker-{index}")
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
        return False
    del msg  # the pickled payload: the evaluator alone is kept
    _limit_torch_threads(threads, merges=merge_spec is not None)
    runtime = WorkerRuntime(evaluator, merge_spec, name)
    del evaluator, merge_spec  # the runtime holds them, and frees them with itself
    try:
        seconds = runtime.setup()
    except WorkerSetupError as exc:
        conn.send(("setup_error", str(exc)))
        return False
    conn.send(("ready", name, seconds))
    released = False
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the driver is gone
            if msg[0] != "run":
                released = msg[0] == "release"
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
        runtime.close()  # one that raises ends the worker, released or not
    return released


def _forget_study(environ: dict[str, str], path: list[str], cwd: str) -> None:
    """After a release, before the next study: free what the last one left (its evaluator
    is unreferenced now) and reset the process-wide state a new worker would start with
    (see the module docs for what stays)."""
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    gc.collect()
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    with contextlib.suppress(Exception):  # a partial or broken torch install
        torch.set_grad_enabled(True)
        torch.manual_seed(torch.Generator().initial_seed())  # torch's default seed
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


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
    #: What it was started with (:class:`_Spawn`): a parked worker is reused only where a
    #: new one would start alike.
    spawn: _Spawn | None = None
    #: The variables passed on to it at its setups (:meth:`_Spawn.gained`), last values.
    given: dict[str, str] = field(default_factory=dict)
    #: False once it reported an evaluation error or a crash: not parked, in doubt.
    clean: bool = True
    #: Whether it was parked, then taken by this executor (see keep_alive).
    reused: bool = False


def _stop_workers(workers: Sequence[_Worker]) -> None:
    """Stop ``workers``: a stop message, then terminate, then kill; each joined, its pipe
    closed. Dead ones are only joined."""
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


class _Pool:
    """The live workers of one executor; stoppable at exit without the executor."""

    def __init__(self) -> None:
        self.workers: dict[int, _Worker] = {}

    def stop(self) -> None:
        workers = list(self.workers.values())
        self.workers.clear()
        _stop_workers(workers)


_POOLS: weakref.WeakSet[_Pool] = weakref.WeakSet()


@dataclass(frozen=True)
class _Spawn:
    """What a worker started now bakes in: its configuration ``group`` (start method,
    threads per worker), what multiprocessing hands a new process of this driver (the
    Python executable, ``sys.path``, ``sys.argv``, the working directory, the main script)
    and, under spawn, the environment it inherits (a forkserver's workers inherit the fork
    server's). A parked worker that would not start alike (a module it cannot import, a
    variable it does not see) is not reused."""

    key: tuple[Any, ...]
    env: dict[str, str]

    @classmethod
    def now(cls, group: tuple[Any, ...]) -> _Spawn:
        try:
            cwd: str | None = os.getcwd()
        except OSError:  # removed
            cwd = None
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        env = dict(os.environ) if group[0] == "spawn" else {}
        return cls((*group, spawn.get_executable(), tuple(sys.path), tuple(sys.argv), cwd,
                    main), env)

    def serves(self, now: _Spawn, given: dict[str, str]) -> bool:
        """Whether a worker started under ``self``, then passed the variables ``given``,
        may stand for one started ``now``: the same key, none of the variables it has seen
        changed or removed, none of :data:`_STARTUP_ENV` gained."""
        return (self.key == now.key
                and all(now.env.get(k) == v for k, v in {**self.env, **given}.items())
                and all(now.env.get(k) == self.env.get(k) for k in _STARTUP_ENV))

    def gained(self, now: _Spawn) -> dict[str, str]:
        """The variables ``now`` has that a worker started under ``self`` lacks."""
        return {k: v for k, v in now.env.items() if k not in self.env}


class _Kept:
    """Worker processes kept between studies (see :meth:`ProcessExecutor.keep_alive`): how
    many ``keep_alive()`` blocks hold each configuration (``(start_method,
    threads_per_worker)``), and the released idle workers parked for each, waiting for an
    executor of that configuration to start. Thread-safe: a parked worker is handed to one
    executor only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[tuple[Any, ...], int] = {}
        self._parked: dict[tuple[Any, ...], list[_Worker]] = {}

    @contextlib.contextmanager
    def holding(self, group: tuple[Any, ...]) -> Iterator[None]:
        with self._lock:
            self._holds[group] = self._holds.get(group, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._holds[group] - 1
                if left:
                    self._holds[group] = left
                    workers = []
                else:
                    del self._holds[group]
                    workers = self._parked.pop(group, [])
            _stop_workers(workers)

    def held(self, group: tuple[Any, ...]) -> bool:
        with self._lock:
            return group in self._holds

    def park(self, group: tuple[Any, ...], now: _Spawn,
             workers: list[_Worker]) -> list[_Worker]:
        """Park ``workers`` (released: idle, no evaluator) while ``group`` is held; returns
        those the caller must stop: ``workers`` when no block holds ``group`` any longer,
        and the workers (parked or not) that a new executor would not reuse, the driver
        being as it is ``now`` (its environment, path or directory changed since)."""
        if not workers:
            return []
        with self._lock:
            if group not in self._holds:
                return workers
            parked = self._parked.setdefault(group, [])
            stale = [w for w in parked + workers if not _serves(w, now)]
            parked[:] = [w for w in parked + workers if w not in stale]
            return stale

    def take(self, group: tuple[Any, ...], now: _Spawn, n: int) -> list[_Worker]:
        """Up to ``n`` workers parked that may stand for new ones started ``now``, no longer
        parked (alive or not)."""
        with self._lock:
            parked = self._parked.get(group, [])
            taken = [w for w in parked if _serves(w, now)][:n]
            parked[:] = [w for w in parked if w not in taken]
        return taken

    def parked(self, group: tuple[Any, ...] | None = None) -> list[_Worker]:
        """The workers parked now (for ``group`` only, when given)."""
        with self._lock:
            return [w for g, ws in self._parked.items() if group in (None, g) for w in ws]

    def stop_all(self) -> None:
        with self._lock:
            workers = [w for ws in self._parked.values() for w in ws]
            self._parked.clear()
        _stop_workers(workers)


_KEPT = _Kept()


def _serves(w: _Worker, now: _Spawn) -> bool:
    return w.spawn is not None and w.spawn.serves(now, w.given)


def _release(workers: Sequence[_Worker]) -> list[_Worker]:
    """Tell the idle, set-up workers among ``workers`` whose last batch ended well to drop
    their evaluator; return those that did (they said hello again within
    :data:`STOP_TIMEOUT`), ready for another study's setup."""
    pending: dict[Any, _Worker] = {}
    for w in workers:
        if not (w.ready and w.clean and not w.running and not w.batch):
            continue
        try:
            w.conn.send(("release",))
        except (OSError, ValueError):
            continue
        pending[w.conn] = w
    released: list[_Worker] = []
    deadline = time.monotonic() + STOP_TIMEOUT
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for conn in wait(list(pending), left):
            w = pending.pop(conn)
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                continue  # died
            if msg == ("hello",):
                w.ready, w.batch, w.running = False, [], False
                released.append(w)
    return released


@atexit.register
def _stop_all() -> None:
    # multiprocessing's own exit hook joins every non-daemonic child and would wait forever
    # for idle workers; exit hooks run last-registered first, so this one runs before it.
    for pool in list(_POOLS):
        pool.stop()
    _KEPT.stop_all()


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

    Within a :meth:`keep_alive` block, :meth:`shutdown` parks the healthy idle workers
    (without their evaluator) instead of stopping them, and the next executor configured
    alike starts on them: see the module docs.
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
        #: What a parked worker must share with this executor's: see keep_alive.
        self._group: tuple[Any, ...] = (self.start_method, self.threads_per_worker)

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
            self._adopt_parked()
            for _ in range(self.workers - len(self._pool.workers)):
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
        """Stop every worker (a stop message, then terminate, then kill); idempotent.
        Within a :meth:`keep_alive` block, park the healthy idle ones instead, their
        evaluator closed and dropped."""
        self._queue.clear()
        self._payload = None
        if self._finalizer is not None:
            self._finalizer.detach()  # the pool is stopped (or parked) here
            self._finalizer = None
            workers = list(self._pool.workers.values())
            self._pool.workers.clear()
            stop = workers
            try:
                if self.start_method != "fork" and _KEPT.held(self._group):
                    released = _release(workers)
                    refused = _KEPT.park(self._group, _Spawn.now(self._group), released)
                    stop = [w for w in workers if w not in released] + refused
            finally:
                _stop_workers(stop)
        _POOLS.discard(self._pool)

    def keep_alive(self) -> contextlib.AbstractContextManager[None]:
        """Keep worker processes running between studies while the ``with`` block lasts:
        an executor with this one's start method and ``threads_per_worker`` (whatever its
        ``workers``) parks its healthy idle workers at :meth:`shutdown`, their evaluator
        closed and dropped, and the next one starts on them (sends them its evaluator)
        instead of spawning new processes. The block's end stops the parked workers (the
        last block's, where blocks of one configuration nest or overlap).

        Under ``start_method="fork"`` nothing is kept: a forked worker is a copy of the
        driver as it was then, which a later study's evaluator may not find in it; and a
        fork costs little. See the module docs for what a reused worker keeps.
        """
        if self.start_method == "fork":
            return contextlib.nullcontext()
        return _KEPT.holding(self._group)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "workers": self.workers, "batch_size": self.batch_size,
                "start_method": self.start_method,
                "threads_per_worker": self.threads_per_worker,
                "max_retries": self.max_retries}

    # -- workers ------------------------------------------------------------------------------
    def _adopt_parked(self) -> None:
        """Take the workers parked for this configuration and the driver's state now (see
        :meth:`keep_alive`), up to ``workers``, and send them the setup payload; those that
        died while parked are joined and dropped."""
        if self.start_method == "fork":
            return
        now = _Spawn.now(self._group)
        taken = _KEPT.take(self._group, now, self.workers)
        dead: list[_Worker] = []
        try:
            while taken:
                w = taken.pop()
                try:  # anything to read is an EOF (it died) or a message nobody expects
                    usable = w.process.is_alive() and not w.conn.poll()
                except (OSError, ValueError):
                    usable = False
                if not usable:
                    dead.append(w)
                    continue
                w.index = self._next_index
                self._next_index += 1
                w.name = f"process-worker-{w.index}@{self._host}:{w.process.pid}"
                w.started, w.ready, w.batch, w.running = True, False, [], False
                w.clean = w.reused = True
                self._pool.workers[w.index] = w
                with contextlib.suppress(OSError):  # died: its sentinel says so
                    w.conn.send(self._setup_message(w, now))
        finally:
            _stop_workers(dead + taken)

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
        w = _Worker(index, proc, here, f"process-worker-{index}@{self._host}:{proc.pid}",
                    spawn=_Spawn.now(self._group))
        self._pool.workers[index] = w
        return w

    def _setup_message(self, w: _Worker, now: _Spawn) -> tuple[Any, ...]:
        assert self._payload is not None and w.spawn is not None
        gained = w.spawn.gained(now)
        w.given.update(gained)
        return ("setup", self._payload, w.index, gained)

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
            with contextlib.suppress(OSError):  # died: its sentinel says so
                w.conn.send(self._setup_message(w, _Spawn.now(self._group)))
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
        w.clean = False  # not parked: see _release
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
        if not w.ready and w.reused:
            # A parked worker that died while it was parked (or as it was taken): a new one
            # takes its place; a new one that dies setting up is a setup error, below.
            self._launch()
            return results
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
