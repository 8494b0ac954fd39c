"""The local process-pool executor (``process``): contract, same results as in-process,
workers killed mid-study, the driver killed and resumed, setup errors, bad settings."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import pytest
from objectives import SlowStudy, bug_below_half, kill_self_once, search_keys

from mapframe import MergeStudy
from mapframe.errors import ConfigError, EvaluationError
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors import ProcessExecutor, WorkerSetupError
from mapframe.executors.base import Job
from mapframe.history import coefficient_key
from mapframe.plugin import get_registry
from mapframe.testing import ExecutorContract

TESTS = Path(__file__).parent
MARKER_ENV = "MAPFRAME_POOL_TEST_MARKER"


# --- objectives, imported by name in the worker processes -----------------------------------


def quad(C):
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


_calls = 0


def quad_times(C, scale=1.0):
    return scale * quad(C)


def quad_killing_third_call(C):
    """quad, but the first worker to reach its 3rd call SIGKILLs itself (once in all)."""
    global _calls
    _calls += 1
    if _calls == 3:
        kill_self_once(os.environ[MARKER_ENV])
    return quad(C)


def quad_or_exit(C):
    """quad, but a negative coefficient makes the worker exit on the spot."""
    if np.any(np.asarray(C) < 0):
        os._exit(3)
    return quad(C)


def slow_quad(C):
    time.sleep(0.2 * len(C))
    return quad(C)


def torch_threads(C):
    import torch

    return np.column_stack([np.full(len(C), float(torch.get_num_threads())),
                            np.zeros(len(C))])


def three_columns(C):
    return np.zeros((len(C), 3))  # two tasks declared: a bug, not a failing point


class DiesInSetup(CallableEvaluator):
    def setup(self, merger):
        os._exit(7)


# --- helpers ---------------------------------------------------------------------------------


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie does not count)."""
    try:
        import psutil
    except ImportError:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def _exists(pid: int) -> bool:
    """Whether ``pid`` exists at all, zombies included (our children must be reaped)."""
    return Path(f"/proc/{pid}").exists() if Path("/proc").is_dir() else _running(pid)


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
        found, todo = [], [pid]
        while todo:
            kids = children.get(todo.pop(), [])
            found.extend(kids)
            todo.extend(kids)
        return found
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _worker_pids(ex: ProcessExecutor) -> list[int]:
    return [w.process.pid for w in ex._pool.workers.values()]


def _two_task_evaluator(fn=quad) -> CallableEvaluator:
    return CallableEvaluator(fn, ["a", "b"])


# --- 1. the contract every executor passes ---------------------------------------------------


class TestProcessExecutor(ExecutorContract):
    def make_executor(self):
        return ProcessExecutor(workers=2)


# --- 2. same results as in-process -----------------------------------------------------------


@pytest.fixture(scope="module")
def digits_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from mapframe.examples import digits

    return digits.prepare_checkpoints(tmp_path_factory.mktemp("digits-cache"), ["rot90", "flip"])


@pytest.mark.slow  # ~17 s: the executor contract tests cover the path in the core suite
def test_digits_study_gives_the_same_results_as_in_process(digits_checkpoints):
    import torch

    # Bit-identical results need identical float32 arithmetic on both sides. The digits
    # evaluator merges B models with one GEMM ((B, N) coefficients @ (N, P) task vectors, in
    # TaskVectors.combine_batch_into), and BLAS picks its kernel and its split by B and by
    # the thread count, so the last bit of a merged weight can depend on both: with two
    # threads, rows 0-9 merged in a batch of 20 differ from the same rows merged in a batch
    # of 10 (one thread: equal here, but that is the BLAS build's choice). The executor
    # changes neither the points nor their order; what it may change is the batch
    # composition and the threads. So both runs evaluate [0-9] and [10-19] with one thread:
    # in-process in batches of 10, the pool as ceil(20 / 2 workers) = 10 per worker. Loss,
    # not accuracy: accuracies are counts and would hide a last-bit difference.
    def study(executor):
        return MergeStudy(evaluator={"name": "digits", "tasks": ["rot90", "flip"],
                                     "metric": "loss"},
                          checkpoints=digits_checkpoints, budget=20, seed=0,
                          executor=executor).run()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = study({"name": "inprocess", "batch_size": 10})
    finally:
        torch.set_num_threads(threads)
    pool = study({"name": "process", "workers": 2, "threads_per_worker": 1})
    assert pool.settings["executor"]["name"] == "process"
    assert pool.n_evaluated == 20
    assert np.array_equal(here.history.X, pool.history.X)
    assert np.array_equal(here.history.Y, pool.history.Y)
    assert np.array_equal(here.front.coefficients, pool.front.coefficients)
    assert np.array_equal(here.front.predicted, pool.front.predicted)


def test_threads_per_worker_reaches_torch():
    pytest.importorskip("torch")
    ex = ProcessExecutor(workers=2, threads_per_worker=1)
    ex.start(_two_task_evaluator(torch_threads), None)
    try:
        ex.submit([Job(str(i), np.full(2, 0.1 * i)) for i in range(4)])
        seen = {float(r.metrics[0]) for r in ex.as_completed()}
    finally:
        ex.shutdown()
    assert seen == {1.0}


# --- 3. a worker killed mid-study ------------------------------------------------------------


def test_worker_killed_mid_study_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "killed"))
    db = tmp_path / "s.sqlite"
    study = MergeStudy(quad_killing_third_call, ["a", "b"], budget=16, seed=0,
                       storage={"name": "sqlite", "path": str(db)}, front_solver="grid",
                       executor={"name": "process", "workers": 2, "batch_size": 2})
    res = study.run()
    assert (tmp_path / "killed").exists(), "no worker was killed"
    st = study.executor.status()
    assert st.retried >= 1 and st.lost_workers >= 1
    assert res.n_evaluated == 16 and len(res.history) == 16
    keys = search_keys(db)
    assert len(keys) == 16 and len(set(keys)) == 16
    # exactly what in-process evaluation gives, in the same order
    ref = MergeStudy(quad, ["a", "b"], budget=16, seed=0, front_solver="grid").run()
    assert np.array_equal(ref.history.X, res.history.X)
    assert np.array_equal(ref.history.Y, res.history.Y)
    assert len(res.history.failures) == 0


def test_job_whose_worker_always_dies_fails_after_its_retries():
    ex = ProcessExecutor(workers=2, max_retries=1)
    ex.start(_two_task_evaluator(quad_or_exit), None)
    try:
        C = np.array([[-0.5, 0.5], [0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
        ex.submit([Job(str(i), C[i]) for i in range(4)])
        results = {}
        for r in ex.as_completed():
            assert r.job.key not in results, "a result came back twice"
            results[r.job.key] = r
        st = ex.status()
        pids_at_end = _worker_pids(ex)
    finally:
        ex.shutdown()
    assert set(results) == {"0", "1", "2", "3"}
    err = results["0"].error
    assert err is not None and results["0"].metrics is None
    assert "died" in err and "exit code 3" in err and "retried 1 time" in err
    assert "process-worker" in err
    for k in "123":
        assert results[k].error is None
        np.testing.assert_allclose(results[k].metrics, quad(C[int(k)])[0])
    # the poison point killed a worker twice (first run, one re-run alone); both replaced
    # (the last replacement may still be setting up: ``workers`` counts ready ones)
    assert st.lost_workers == 2 and st.busy == 0 and st.queued == 0
    assert len(pids_at_end) == 2
    assert st.retried >= 1


# --- 4. the driver killed with kill -9, then resumed -----------------------------------------


@pytest.mark.slow  # about 25 s of the core suite; CI runs the slow tests too
def test_an_adaptive_study_killed_mid_round_resumes_without_redoing_anything(tmp_path):
    # The default sampler (auto: the gp sampler at 2 tasks with gpytorch): killed after its
    # initial design and one round, the rerun evaluates only what was not stored and
    # reaches the budget; the rounds go on from the stored history.
    pytest.importorskip("gpytorch")
    study = SlowStudy(tmp_path, budget=15, delay=0.2, sampler="auto")
    study.start()
    try:
        study.wait_stored(8)  # past the 6-point initial design
        study.kill()
    finally:
        study.stop()
    stored = set(search_keys(study.db))
    assert 8 <= len(stored) < study.budget
    _rerun_evaluates_only_the_rest(study, stored, delay=0.0)


def _rerun_evaluates_only_the_rest(study: SlowStudy, stored: set[str],
                                   delay: float | None = None) -> None:
    """Rerun the killed ``study``: it ends, reports ``stored`` as reused, reaches its budget
    and evaluates exactly the points that were not stored."""
    budget = study.budget
    calls_before = len(study.calls())
    done = study.rerun(delay=delay)
    assert done.returncode == 0, done.stderr
    assert f"{budget - len(stored)} new this run, {len(stored)} reused" in done.stdout
    keys = search_keys(study.db)
    assert len(keys) == budget and len(set(keys)) == budget and stored <= set(keys)
    again = [coefficient_key([float(v.removeprefix("np.float64(").removesuffix(")"))
                              for v in line.split(",")])
             for line in study.calls()[calls_before:]]
    assert len(again) == budget - len(stored)
    assert not stored & set(again), "a stored evaluation was evaluated again"


def test_driver_killed_then_resumed_reuses_what_was_stored(tmp_path):
    # 13 points (about 2 s) left after the 3rd is stored: time to kill
    study = SlowStudy(tmp_path, budget=16, delay=0.3,
                      executor={"name": "process", "workers": 2, "batch_size": 1})
    study.start()
    try:
        study.wait_stored(3)
        children = _descendants(study.proc.pid)
        study.kill()
    finally:
        study.stop()
    assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    # The workers notice that the driver is gone and exit by themselves.
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in children):
        assert time.monotonic() < deadline, (
            f"worker processes survived the driver: {[p for p in children if _running(p)]}")
        time.sleep(0.1)
    stored = set(search_keys(study.db))
    assert 3 <= len(stored) < study.budget
    _rerun_evaluates_only_the_rest(study, stored)


# --- 5. setup errors ------------------------------------------------------------------------


def test_unreadable_checkpoint_names_the_worker_and_the_file(tmp_path):
    pytest.importorskip("torch")
    import torch

    from mapframe.merging.checkpoints import save_state_dict

    pre = save_state_dict({"fc1.weight": torch.zeros(2, 2)}, tmp_path / "pre.safetensors")
    broken = tmp_path / "broken-rot90.safetensors"
    broken.write_bytes(b"\x00garbage, not a safetensors file" * 8)
    study = MergeStudy(evaluator={"name": "digits", "tasks": ["rot90"]},
                       checkpoints={"pretrained": pre, "finetuned": {"rot90": broken}},
                       budget=6, executor={"name": "process", "workers": 2})
    with pytest.raises(WorkerSetupError, match="process-worker") as info:
        study.run()
    assert "broken-rot90.safetensors" in str(info.value)
    assert study.executor.status().workers == 0


def test_worker_dying_during_setup_is_a_setup_error():
    ex = ProcessExecutor(workers=2)
    with pytest.raises(WorkerSetupError, match=r"process-worker-\d+@.* died while setting up"
                                               r".*exit code 7"):
        ex.start(DiesInSetup(quad, ["a", "b"]), None)
    assert ex.status().workers == 0 and not ex._pool.workers


def test_a_study_started_while_a_worker_imports_the_main_script_is_a_config_error(
        monkeypatch, tmp_path):
    # Under spawn/forkserver every worker re-imports the main script; an unguarded study in
    # it ran again there (and, with a shared store, waited forever for the driver's points).
    import multiprocessing

    from mapframe.storage import MemoryStore, SQLiteStore

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    ex = ProcessExecutor(workers=1)
    with pytest.raises(ConfigError, match=r"if __name__ == '__main__':") as info:
        ex.start(CallableEvaluator(quad, ["a", "b"]), None)
    assert "\n" not in str(info.value) and not ex._pool.workers
    for store in (MemoryStore(), SQLiteStore(tmp_path / "never-made.sqlite")):
        with pytest.raises(ConfigError, match=r"if __name__ == '__main__':"):
            store.open("s", {})
    assert not (tmp_path / "never-made.sqlite").exists()


_UNGUARDED = """
import sys, warnings
warnings.simplefilter("ignore")
from objmod import f
from mapframe import MergeStudy
r = MergeStudy(objective=f, task_names=["a", "b"], budget=6, seed=0, sampler="sobol",
               executor={"name": "process", "workers": 1}, storage=STORAGE).run()
print("finished", r.n_evaluated)
"""


@pytest.mark.parametrize("storage", ["'unguarded.sqlite'", "None"])
def test_an_unguarded_script_fails_fast_naming_the_guard(tmp_path, storage):
    # Without `if __name__ == "__main__":` the workers ran the script's study themselves: with
    # a SQLite store the driver waited forever; without one, a long traceback ended in a
    # WorkerSetupError that did not say why.
    import subprocess
    import sys

    (tmp_path / "objmod.py").write_text(
        "import numpy as np\n\ndef f(C):\n"
        "    return np.column_stack([-(C**2).sum(1), -((C - 1)**2).sum(1)])\n")
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED.replace("STORAGE", storage))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a study in a script without `if __name__ == '__main__':` hangs")
    assert proc.returncode != 0 and "finished" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert "WorkerSetupError" in last and "if __name__ == '__main__':" in last, last
    assert "a study started while a worker process was importing the main script" in (
        proc.stderr)


# --- 6. settings, evaluator bugs, clean shutdown ----------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, "workers"),
    ({"workers": True}, "workers"),
    ({"workers": "2"}, "workers"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1.5}, "batch_size"),
    ({"start_method": "threads"}, "start_method"),
    ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"max_retries": -1}, "max_retries"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ProcessExecutor(**kwargs)
    with pytest.raises(ConfigError, match=match):
        get_registry().create("executor", {"name": "process", **kwargs})


def test_settings_and_describe():
    ex = get_registry().create("executor", {"name": "process", "workers": 3,
                                            "max_retries": 0})
    assert isinstance(ex, ProcessExecutor) and ex.capacity == 3
    desc = ex.describe()
    assert desc["name"] == "process" and desc["workers"] == 3 and desc["max_retries"] == 0
    assert desc["start_method"] == "spawn" and desc["threads_per_worker"] >= 1
    assert ProcessExecutor().workers >= 1
    assert ProcessExecutor(workers=2, threads_per_worker=3).describe()["threads_per_worker"] == 3


def test_unpicklable_evaluator_is_a_config_error():
    ex = ProcessExecutor(workers=1)
    with pytest.raises(ConfigError, match=r"cannot be serialised to send to worker processes "
                                          r"\((PicklingError|AttributeError): .*not a lambda or "
                                          r"a nested function") as info:
        ex.start(CallableEvaluator(lambda C: quad(C), ["a", "b"]), None)
    assert "\n" not in str(info.value)
    assert not ex._pool.workers


class ScaledQuad:
    """A callable instance: its class name resolves to the class, not to this object."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, C):
        return self.scale * quad(C)


@pytest.mark.parametrize("fn,name", [
    (functools.partial(quad_times, scale=3.0), "<functools.partial(test_executor_pool:quad_times, "
                                               "scale=3.0)>"),
    (ScaledQuad(3.0), "<test_executor_pool.ScaledQuad instance>")])
def test_partial_and_callable_instance_travel_to_workers_whole(fn, name):
    """Their ``module:name`` would re-import the class (``functools:partial``, ``ScaledQuad``),
    and calling that on the coefficients would build objects instead of metrics: they are
    named ``<...>`` and sent pickled."""
    ev = CallableEvaluator(fn, ["a", "b"])
    assert ev.function == name
    C = np.array([[0.2, 0.7], [0.5, 0.1]])
    ex = ProcessExecutor(workers=1)
    ex.start(ev, None)
    try:
        ex.submit([Job(str(i), c) for i, c in enumerate(C)])
        got = {r.job.key: r.metrics for r in ex.as_completed()}
    finally:
        ex.shutdown()
    np.testing.assert_allclose(np.array([got["0"], got["1"]]), 3.0 * quad(C))


def test_wrong_shape_is_an_evaluation_error_naming_the_worker():
    ex = ProcessExecutor(workers=2)
    ex.start(_two_task_evaluator(three_columns), None)
    pids = _worker_pids(ex)
    ex.submit([Job(str(i), np.full(2, 0.1 * i)) for i in range(4)])
    with pytest.raises(EvaluationError, match=r"worker process-worker-\d+@.*returned shape"):
        list(ex.as_completed())
    ex.shutdown()
    ex.shutdown()  # idempotent
    assert not any(_exists(pid) for pid in pids), "shutdown left worker processes behind"


def test_abandoned_results_then_shutdown_leaves_no_process():
    ex = ProcessExecutor(workers=2, batch_size=1)
    ex.start(_two_task_evaluator(slow_quad), None)
    pids = _worker_pids(ex)
    assert len(pids) == 2
    ex.submit([Job(str(i), np.full(2, 0.1 * i)) for i in range(8)])
    it = ex.as_completed()
    first = next(it)
    assert first.error is None
    st = ex.status()
    assert st.workers == 2 and st.busy + st.queued >= 1
    ex.shutdown()  # the study does this when it raises mid-way
    assert not any(_exists(pid) for pid in pids), "shutdown left worker processes behind"
    assert ex.status() == type(st)(workers=0, busy=0, queued=0, busy_workers=0)


def test_a_worker_error_keeps_the_results_other_workers_sent_in_the_same_wait(monkeypatch):
    """Two workers ready at once, the first reporting an evaluator bug: the second's
    results were dropped with the raised error; now they reach the study (which stores
    them) before the error stops it."""
    from mapframe.executors import pool as pool_mod
    from mapframe.executors.base import JobResult

    class Conn:
        def __init__(self, msg):
            self.msg = msg

        def recv(self):
            return self.msg

    class Process:
        sentinel = object()

    jobs = [Job("k0", np.array([0.1, 0.2])), Job("k1", np.array([0.3, 0.4]))]
    msgs = [("evaluation_error", "returned shape (1, 3) for 1 coefficient vector(s)"),
            ("results", [JobResult(jobs[1], np.array([0.5, 0.6]))])]
    ex = ProcessExecutor(workers=2)
    ex._payload = b"started"
    for i, msg in enumerate(msgs):
        ex._pool.workers[i] = pool_mod._Worker(i, Process(), Conn(msg), f"w{i}", ready=True,
                                               batch=[jobs[i]], running=True)
    monkeypatch.setattr(pool_mod, "wait", lambda handles: [w.conn for w in
                                                           ex._pool.workers.values()])
    got = []
    with pytest.raises(EvaluationError, match="worker w0: returned shape"):
        for result in ex.as_completed():
            got.append(result.job.key)
    assert got == ["k1"]
    ex._pool.workers.clear()


def test_after_a_worker_error_the_batches_under_way_finish_and_are_kept(tmp_path):
    """One point breaks the evaluator's contract (three metrics for two tasks) while the
    other worker evaluates another batch: that batch's results are finished evaluations,
    stored before the error stops the study, and the queue is not run further."""
    import sqlite3

    db = tmp_path / "s.sqlite"
    with pytest.raises(EvaluationError, match=r"shape \(1, 3\)"):
        MergeStudy(objective=bug_below_half, task_names=["a", "b"],
                   budget=12, seed=0, sampler="sobol", storage=db,
                   executor={"name": "process", "workers": 2, "batch_size": 1}).run()
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert stored == 1  # the good point under way; nothing more was started


# --- Ctrl-C and finished results ------------------------------------------------------------


def test_a_ctrl_c_while_workers_start_up_does_not_kill_them(monkeypatch):
    # A terminal's Ctrl-C goes to the whole process group. A worker ignored SIGINT only from
    # its first line of _worker_main on; one still importing Python, numpy and mapframe
    # (a second or more under spawn) died of it, printing a KeyboardInterrupt traceback
    # each. Here SIGINT reaches each worker right after it is started (the old code: the
    # start failed with a WorkerSetupError, worker died while setting up).
    import signal

    launch = ProcessExecutor._launch

    def launch_then_sigint(self):
        w = launch(self)
        os.kill(w.process.pid, signal.SIGINT)
        return w

    monkeypatch.setattr(ProcessExecutor, "_launch", launch_then_sigint)
    ex = ProcessExecutor(workers=2, start_method="spawn")
    try:
        ex.start(_two_task_evaluator(quad), None)
        ex.submit([Job(str(i), np.full(2, 0.1 * i)) for i in range(4)])
        results = {r.job.key: r for r in ex.as_completed()}
        assert ex.status().lost_workers == 0
    finally:
        ex.shutdown()
    assert sorted(results) == ["0", "1", "2", "3"]
    assert all(r.error is None for r in results.values())
    # and the driver's own SIGINT is not left blocked
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def marked_slow_quad(C):
    """quad, after writing the file named by MARKER_ENV and a second's sleep."""
    Path(os.environ[MARKER_ENV]).write_text("started")
    time.sleep(1.0)
    return quad(C)


def test_a_ctrl_c_keeps_the_results_of_the_batches_under_way(tmp_path, monkeypatch):
    # Interrupted while it waited for its workers, the driver stopped them: each finished
    # its batch before it read the stop message and sent the results, which nobody read.
    # A study interrupted so lost every evaluation its workers were finishing (a vectorised
    # evaluator: whole batches), and its rerun evaluated them again.
    import signal
    import threading

    from mapframe.executors import pool

    monkeypatch.setattr(pool, "STOP_TIMEOUT", 120.0)  # a loaded machine finishes in time
    marker = tmp_path / "started"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    ex = ProcessExecutor(workers=1, batch_size=2)
    ex.start(_two_task_evaluator(marked_slow_quad), None)

    def ctrl_c_once_the_batch_runs():
        while not marker.exists():
            time.sleep(0.01)
        # to the main thread, waiting for the workers (a signal to the process may land in
        # another thread, and the main thread would see it only once its wait returns)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    got = []
    thread = threading.Thread(target=ctrl_c_once_the_batch_runs)
    # Ctrl-C raises KeyboardInterrupt here, whatever an earlier test in this process (Ray,
    # Dask, a test runner's worker) made of SIGINT
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ex.submit([Job(str(i), np.full(2, 0.1 * i)) for i in range(4)])
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            for r in ex.as_completed():
                got.append(r)
    finally:
        thread.join()
        ex.shutdown()
        signal.signal(signal.SIGINT, previous)
    assert sorted(r.job.key for r in got) == ["0", "1"]  # the batch under way; no other
    assert all(r.error is None for r in got)
