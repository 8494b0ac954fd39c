"""The ``dask`` executor: the executor contract, same results as in-process, a worker killed
mid-study, and the errors a user meets (no scheduler, no distributed, bad checkpoint, bad
evaluator output)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from objectives import good_bad_x_y_jobs, kill_self_once, wrong_shape_below_half

from mapframe import EvaluationError, MapframeError, MergeStudy
from mapframe.errors import ClusterLostError, ConfigError
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors.base import Job, MergeSpec
from mapframe.executors.worker import WorkerSetupError
from mapframe.testing import ExecutorContract

distributed = pytest.importorskip("distributed")

from mapframe.executors.dask_executor import DaskExecutor  # noqa: E402

pytestmark = pytest.mark.xdist_group("dask")

TASKS = ("rot90", "flip")


@pytest.fixture(autouse=True)
def _quiet_dask():
    """Dask logs every worker death and failed setup with a traceback: keep tests readable."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of two workers that most tests' executors connect to."""
    cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.CRITICAL,
                                  scheduler_kwargs={"dashboard": False})
    yield cl
    cl.close()


@pytest.fixture
def address(cluster) -> str:
    return cluster.scheduler_address


class TestDaskExecutor(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _address(self, address: str) -> None:
        self._scheduler = address

    def make_executor(self) -> DaskExecutor:
        return DaskExecutor(address=self._scheduler)


class TestDaskExecutorBatched(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _address(self, address: str) -> None:
        self._scheduler = address

    def make_executor(self) -> DaskExecutor:
        return DaskExecutor(address=self._scheduler, batch_size=1)

    def test_is_registered(self) -> None:  # once is enough
        pass


# -- objectives the workers import by name (module level, so that they pickle) -------------
def quad(C):
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def quad_slowly(C):
    time.sleep(1.0)
    return quad(C)


def kills_its_worker_on_third_call(C):
    """``quad``, except that the third call overall kills its own process, once."""
    root = Path(os.environ["MAPFRAME_DASK_TEST_DIR"])
    with open(root / "calls", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    n_calls = len((root / "calls").read_text().split())
    if n_calls >= 3:
        kill_self_once(root / "killed")
    return quad(C)


def batch_size_metric(C):
    """Both metrics are the number of rows in the call: what batch the point came in."""
    n = len(np.atleast_2d(C))
    return np.full((n, 2), float(n))


def always_kills_its_worker(C):
    os.kill(os.getpid(), signal.SIGKILL)


def kills_its_worker_at_half(C):
    """``quad``, except that a row with a coefficient of exactly 0.5 kills the process."""
    if np.any(np.atleast_2d(C) == 0.5):
        os.kill(os.getpid(), signal.SIGKILL)
    return quad(C)


def wrong_shape(C):
    return np.zeros((len(np.atleast_2d(C)), 3))


def bug_once_another_call_runs(C):
    """An evaluator bug (three metrics for two tasks) on the first call overall, reported once
    another call is evaluating; every other call logs its start, finishes 1 s later and logs
    its rows (``MAPFRAME_DASK_BUG_DIR`` holds the logs)."""
    root = Path(os.environ["MAPFRAME_DASK_BUG_DIR"])
    C = np.atleast_2d(C)
    try:
        os.close(os.open(root / "bug", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # not the first call
        with open(root / "started", "a") as fh:
            fh.write(f"{len(C)}\n")
        time.sleep(1.0)
        with open(root / "finished", "a") as fh:
            fh.write(f"{len(C)}\n")
        return quad(C)
    deadline = time.monotonic() + 30
    while not (root / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return np.ones((len(C), 3))




def _jobs(n: int, seed: int = 0) -> list[Job]:
    C = np.random.default_rng(seed).uniform(0, 1, (n, 2))
    return [Job(str(i), C[i]) for i in range(n)]


# -- settings --------------------------------------------------------------------------------
def test_parameters_are_validated_and_described() -> None:
    ex = DaskExecutor(address="tcp://h:8786", workers=3, batch_size=4, max_retries=0,
                      resources={"GPU": 1}, connect_timeout=2, no_workers_timeout=600)
    assert ex.describe() == {"name": "dask", "address": "tcp://h:8786", "workers": 3,
                             "batch_size": 4, "max_retries": 0, "resources": {"GPU": 1},
                             "connect_timeout": 2.0, "no_workers_timeout": 600.0}
    assert DaskExecutor().no_workers_timeout == 60.0
    assert ex.capacity == 3 and ex.status().workers == 0
    assert DaskExecutor(address="tcp://h:8786").capacity == 1
    assert DaskExecutor().capacity == (os.cpu_count() or 1)
    for bad in ({"address": ""}, {"workers": 0}, {"workers": True}, {"batch_size": 1.5},
                {"max_retries": -1}, {"resources": {"GPU": 0}}, {"resources": []},
                {"connect_timeout": 0}, {"no_workers_timeout": 0},
                {"no_workers_timeout": float("inf")}, {"no_workers_timeout": "60"}):
        with pytest.raises(ConfigError):
            DaskExecutor(**bad)  # type: ignore[arg-type]


def test_importing_does_not_import_dask() -> None:
    code = ("import sys, mapframe.executors.dask_executor; from mapframe.plugin import "
            "get_registry; assert get_registry().get('executor', 'dask'); "
            "assert not {'dask', 'distributed'} & set(sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_missing_distributed_gives_the_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MapframeError, match=r"pip install 'mapframe\[dask\]'"):
        DaskExecutor()
    with pytest.raises(MapframeError, match=r"pip install 'mapframe\[dask\]'"):
        MergeStudy(objective=quad, task_names=["a", "b"], executor="dask")


def test_unpicklable_evaluator_is_a_one_line_config_error() -> None:
    """cloudpickle sends a lambda by value but not a lock it captures: the same one-line
    error as the process and Ray executors, with cloudpickle's advice (no cluster starts)."""
    import threading

    lock = threading.Lock()

    def locked(C):
        with lock:
            return C.sum(axis=1, keepdims=True)

    ex = DaskExecutor(workers=1)
    with pytest.raises(ConfigError, match=r"cannot be serialised to send to Dask workers "
                                          r"\(TypeError: cannot pickle '_thread.lock'.*not a "
                                          r"lambda capturing a lock") as info:
        ex.start(CallableEvaluator(locked, ["a"]), None)
    assert "\n" not in str(info.value)
    ex.shutdown()


def test_unreachable_scheduler_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = f"tcp://127.0.0.1:{port}"
    ex = DaskExecutor(address=where, connect_timeout=1)
    with pytest.raises(MapframeError, match="dask scheduler") as info:
        ex.start(CallableEvaluator(quad, ["a", "b"]), None)
    assert where in str(info.value) and "leave address out" in str(info.value)
    ex.shutdown()


def test_resources_no_worker_offers(address: str) -> None:
    ex = DaskExecutor(address=address, resources={"GPU": 1})
    with pytest.raises(ConfigError, match=r"--resources \"GPU=1\""):
        ex.start(CallableEvaluator(quad, ["a", "b"]), None)
    ex.shutdown()


# -- errors on the workers -----------------------------------------------------------------------
def test_checkpoint_a_worker_cannot_load(address: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mapframe.merging.task_arithmetic import TaskArithmetic

    bad = tmp_path / "pretrained.safetensors"
    bad.write_bytes(b"not a checkpoint")
    spec = MergeSpec(TaskArithmetic(), str(bad), {"a": str(bad), "b": str(bad)})
    ex = DaskExecutor(address=address)
    with pytest.raises(WorkerSetupError) as info:
        ex.start(CallableEvaluator(quad, ["a", "b"]), spec)
    msg = str(info.value)
    assert "dask-worker@tcp://" in msg and str(bad) in msg and "\n" not in msg
    assert ex.status().workers == 0  # start() cleaned up after itself
    ex.shutdown()


def test_wrong_output_shape_is_an_evaluation_error_naming_the_worker(address: str) -> None:
    ex = DaskExecutor(address=address)
    ex.start(CallableEvaluator(wrong_shape, ["a", "b"]), None)
    try:
        ex.submit(_jobs(4))
        with pytest.raises(EvaluationError, match=r"shape \(\d, 3\).*dask-worker@tcp://"):
            list(ex.as_completed())
    finally:
        ex.shutdown()


def test_an_evaluator_bug_keeps_the_rows_its_batch_finished_before_it(address: str) -> None:
    """A batch the worker evaluates in several calls (time-sized: a worker's runtime starts
    at one point per call, the driver here at two per batch): the rows evaluated before the
    call that broke the evaluator's contract are finished evaluations and come out before
    the error (the whole batch was dropped)."""
    ex = DaskExecutor(address=address)
    ex.start(CallableEvaluator(wrong_shape_below_half, ["a", "b"]), None)
    got: list[str] = []
    try:
        assert ex.capacity == 2
        ex._timer.step = 2  # four jobs go out in two batches of two: good+bad, x+y
        ex.submit(good_bad_x_y_jobs())
        with pytest.raises(EvaluationError, match=r"shape \(1, 3\).*dask-worker@tcp://"):
            for result in ex.as_completed():
                got.append(result.job.key)
    finally:
        ex.shutdown()
    assert "good" in got and "bad" not in got and len(got) == len(set(got))


# -- studies ---------------------------------------------------------------------------------------
def test_after_an_evaluator_bug_the_batches_under_way_finish_and_are_kept(address, tmp_path):
    """One call breaks the evaluator's contract while another worker evaluates another
    batch: that batch is a finished evaluation, stored before the error stops the study (the
    error stopped it at once: a rerun evaluated it again), and the batches queued with the
    scheduler are not started."""
    db = tmp_path / "s.sqlite"
    env = {"MAPFRAME_DASK_BUG_DIR": str(tmp_path)}
    with distributed.Client(address) as probe:
        workers = len(probe.nthreads())
        probe.run(lambda: os.environ.update(env))  # the workers run the objective
        try:
            with pytest.raises(EvaluationError,
                               match=r"shape \(1, 3\).*dask-worker@tcp://") as info:
                MergeStudy(objective=bug_once_another_call_runs, task_names=["a", "b"],
                           budget=12, seed=0, sampler="sobol", storage=db,
                           executor=DaskExecutor(address=address, batch_size=1)).run()
        finally:
            probe.run(lambda: [os.environ.pop(k, None) for k in env])
    assert "\n" not in str(info.value)
    finished = tmp_path / "finished"
    deadline = time.monotonic() + 10  # (a study that did not wait for it: let it finish)
    while not finished.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    evaluated = len(finished.read_text().split())
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert stored == evaluated >= 1  # every finished evaluation is stored
    # Besides the bug and the batch under way, at most one batch per worker started before
    # the stop reached it; the rest of the design was not evaluated.
    assert len((tmp_path / "started").read_text().split()) <= 1 + workers


@pytest.mark.slow  # ~10-20 s of the core suite; CI runs the slow tests too
def test_worker_killed_mid_study(tmp_path: Path, monkeypatch) -> None:
    """The executor's own local cluster: a worker SIGKILLed mid-batch is replaced, its batch
    re-run elsewhere; nothing is lost or stored twice, and no worker process outlives it."""
    psutil = pytest.importorskip("psutil")
    from multiprocessing import resource_tracker

    monkeypatch.setenv("MAPFRAME_DASK_TEST_DIR", str(tmp_path))
    # multiprocessing's resource tracker, started by the first spawned process of this test
    # process, lives as long as it does: not a worker left behind (the test failed when it
    # was the first to spawn, e.g. run alone or first in CI's slow step)
    resource_tracker.ensure_running()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ex = DaskExecutor(workers=2, batch_size=2)
    retried: list[int] = []
    db = tmp_path / "study.sqlite"
    res = MergeStudy(objective=kills_its_worker_on_third_call, task_names=["a", "b"],
                     budget=12, seed=0, storage=db, executor=ex,
                     progress=lambda e: retried.append(e.retried)).run()
    assert (tmp_path / "killed").exists()
    assert res.n_evaluated == 12 and len(res.history) == 12
    st = ex.status()
    assert st.lost_workers >= 1 and st.retried >= 1 and max(retried) >= 1
    assert st.workers == 0 and st.busy == 0 and st.queued == 0  # shut down

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT seq, key, status FROM evaluations WHERE phase = 'search'"
                           ).fetchall()
    seqs = sorted(r[0] for r in rows)
    assert len(rows) == 12 and len({r[1] for r in rows}) == 12
    assert {r[2] for r in rows} == {"ok"}
    assert seqs == list(range(seqs[0], seqs[0] + 12))  # each stored once, none replaced
    np.testing.assert_array_equal(res.history.Y, quad(res.history.X))

    ex.shutdown()  # again: a no-op
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(left, timeout=10)
    assert not alive, f"worker processes left behind: {alive}"


@pytest.mark.slow  # ~10 s: the executor contract tests cover the path in the core suite
def test_digits_study_matches_inprocess(address: str, tmp_path_factory) -> None:
    """The built-in digits example gives bit-identical histories and fronts on both."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from mapframe.examples import digits

    ckpts = digits.prepare_checkpoints(tmp_path_factory.mktemp("digits"), TASKS)

    def run(executor):
        return MergeStudy(evaluator={"name": "digits", "tasks": list(TASKS)},
                          checkpoints=ckpts, budget=12, seed=0, verify=3,
                          executor=executor).run()

    local = run("inprocess")
    remote = run(DaskExecutor(address=address))
    np.testing.assert_array_equal(local.history.X, remote.history.X)
    np.testing.assert_array_equal(local.history.Y, remote.history.Y)
    np.testing.assert_array_equal(local.front.coefficients, remote.front.coefficients)
    np.testing.assert_array_equal(local.front.predicted, remote.front.predicted)
    np.testing.assert_array_equal(local.front.real, remote.front.real)


@pytest.mark.slow  # ~10-20 s of the core suite; CI runs the slow tests too
def test_workers_that_keep_dying_give_failed_results() -> None:
    """With max_retries=0 the first death of a batch's worker fails its points, saying so."""
    ex = DaskExecutor(workers=1, max_retries=0)
    ex.start(CallableEvaluator(always_kills_its_worker, ["a", "b"]), None)
    try:
        ex.submit(_jobs(2))
        results = list(ex.as_completed())
        st = ex.status()
    finally:
        ex.shutdown()
    assert sorted(r.job.key for r in results) == ["0", "1"]
    assert all(r.metrics is None and r.error and "died, 1 time(s)" in r.error
               and "re-run 0 time(s) alone, max_retries=0" in r.error for r in results)
    # One point at a time on the one worker: each killed it once.
    assert st.lost_workers == 2 and st.retried == 0 and st.busy == 0 and st.queued == 0


@pytest.mark.slow  # ~10-20 s of the core suite; CI runs the slow tests too
def test_batch_mates_of_a_point_that_kills_its_worker_are_re_run_alone() -> None:
    """The points of a batch whose worker died are re-run each alone: only the point that
    kills its worker fails, not the healthy points of its batch (the whole batch failed),
    and it kills max_retries + 1 workers, not twice as many (the batch re-run whole, then
    alone). Meanwhile the local cluster does not give up on a worker that is slow to come
    back, killed again (its nanny was closed 15 s after a death: no worker was left)."""
    import dask.config

    timeout = "distributed.deploy.lost-worker-timeout"
    before = dask.config.get(timeout)
    ex = DaskExecutor(workers=1, batch_size=4, max_retries=1)
    ex.start(CallableEvaluator(kills_its_worker_at_half, ["a", "b"]), None)
    C = np.array([[0.1, 0.2], [0.5, 0.5], [0.3, 0.4], [0.7, 0.9],
                  [0.2, 0.1], [0.6, 0.3], [0.8, 0.7], [0.9, 0.6]])
    try:
        assert dask.config.get(timeout) == "1 day"
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        results = {r.job.key: r for r in ex.as_completed()}
        st = ex.status()
    finally:
        ex.shutdown()
    assert sorted(results) == [str(i) for i in range(len(C))]
    assert [k for k, r in results.items() if r.metrics is None] == ["1"]
    assert "died, 2 time(s)" in (results["1"].error or "")
    assert "re-run 1 time(s) alone, max_retries=1" in (results["1"].error or "")
    for key, r in results.items():
        if key != "1":
            np.testing.assert_allclose(r.metrics, quad(C[int(key)])[0])
    assert st.lost_workers == 2 and st.retried == 4  # its batch, then it alone
    assert dask.config.get(timeout) == before


def slow_quad(C):
    time.sleep(0.3 * len(np.atleast_2d(C)))
    return quad(C)


def test_a_cluster_left_without_workers_stops_the_study_instead_of_hanging(monkeypatch):
    """Pending batches on a scheduler that has lost every worker waited for ever (a local
    cluster's nannies stop restarting workers that keep dying). Now, after
    no_workers_timeout seconds without a worker, a one-line ClusterLostError naming that
    setting; the results that came back before it stand."""
    import threading

    from mapframe.executors import dask_executor

    monkeypatch.setattr(dask_executor, "HEALTH_CHECK_S", 0.2)
    cl = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.CRITICAL,
                                  scheduler_kwargs={"dashboard": False})
    ex = DaskExecutor(address=cl.scheduler_address, batch_size=1, no_workers_timeout=1)
    got: list = []
    raised: list[BaseException] = []

    def drain() -> None:
        try:
            for r in ex.as_completed():
                got.append(r)
                if len(got) == 1:
                    cl.scale(0)  # the only worker goes, and no other comes
        except BaseException as exc:
            raised.append(exc)

    try:
        ex.start(CallableEvaluator(slow_quad, ["a", "b"]), None)
        ex.submit(_jobs(6))
        # A thread: where the executor does not stop, the test fails instead of hanging.
        waiter = threading.Thread(target=drain, daemon=True)
        waiter.start()
        waiter.join(120)
        assert not waiter.is_alive(), "as_completed() still waiting with no worker left"
    finally:
        ex.shutdown()
        cl.close()
    assert len(raised) == 1 and isinstance(raised[0], ClusterLostError), raised
    msg = str(raised[0])
    assert "\n" not in msg and "no worker left" in msg and "no_workers_timeout = 1;" in msg
    assert 1 <= len(got) < 6 and all(r.metrics is not None for r in got)


def test_plugins_left_by_a_killed_driver_are_removed_at_start_up(address):
    """A driver killed with SIGKILL cannot unregister its runtime plugin: it stayed on the
    scheduler and on every worker (and was set up on every worker that joined). The next
    driver removes the plugins whose driver's client is gone, and leaves live ones."""
    driver = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            from mapframe.evaluators.callable import CallableEvaluator
            from mapframe.executors.dask_executor import DaskExecutor
            ex = DaskExecutor(address={address!r})
            ex.start(CallableEvaluator("objectives:two_quadratics", ["a", "b"]), None)
            print(ex._token, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    dead = driver.stdout.strip().splitlines()[-1]
    assert dead.startswith("mapframe-Client-")
    with distributed.Client(address) as probe:
        assert dead in probe.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.worker_plugins))
        live = DaskExecutor(address=address)
        live.start(CallableEvaluator("objectives:two_quadratics", ["a", "b"]), None)
        try:
            on_scheduler = probe.run_on_scheduler(
                lambda dask_scheduler: list(dask_scheduler.worker_plugins))
            on_workers = probe.run(lambda dask_worker: list(dask_worker.plugins))
            assert dead not in on_scheduler and live._token in on_scheduler
            assert all(dead not in names for names in on_workers.values())
            other = DaskExecutor(address=address)  # a second live driver keeps the first's
            other.start(CallableEvaluator("objectives:two_quadratics", ["a", "b"]), None)
            other.shutdown()
            assert live._token in probe.run_on_scheduler(
                lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        finally:
            live.shutdown()


@pytest.mark.slow  # about 25 s of the core suite; CI runs the slow tests too
def test_a_killed_driver_loses_at_most_one_short_batch_per_worker(address, tmp_path):
    """Default settings, a vectorised objective with no batch limit: each call carries a
    time-sized batch (one point at first), so a driver killed mid-study loses at most what
    its workers were running (a few seconds of work each), not ceil(design / workers)
    points each."""
    from objectives import SlowStudy, search_keys

    from mapframe.executors.worker import BATCH_TARGET_S

    delay, budget = 0.5, 30
    study = SlowStudy(tmp_path, budget=budget, delay=delay,
                      executor={"name": "dask", "address": address})
    env = {"MAPFRAME_TEST_LOG": str(study.log), "MAPFRAME_TEST_DELAY": str(delay)}
    with distributed.Client(address) as probe:
        probe.run(lambda: os.environ.update(env))  # the workers run the objective
        try:
            study.start()
            study.wait_stored(4, timeout=120)
            study.kill()
            time.sleep(4 * delay)  # what the workers were running finishes, unstored
            stored = len(search_keys(study.db))
            lost = len(study.calls()) - stored
            assert stored < budget
            workers = len(probe.nthreads())
            # One batch under way per worker, sized by time (one point first, doubled while
            # under BATCH_TARGET_S): each worker lost at most the batch it was running.
            assert lost * delay <= workers * (2 * BATCH_TARGET_S + delay), (lost, stored)
            done = study.rerun()
            assert done.returncode == 0, done.stderr
            assert len(set(search_keys(study.db))) == budget
        finally:
            study.stop()
            probe.run(lambda: [os.environ.pop(k, None) for k in env])


def test_a_workers_address_is_named_as_such(cluster):
    worker_address = next(iter(cluster.scheduler.workers))
    ex = DaskExecutor(address=worker_address, connect_timeout=5)
    try:
        with pytest.raises(MapframeError, match="is a Dask worker's address, not the "
                                                "scheduler's"):
            ex.start(CallableEvaluator("objectives:two_quadratics", ["a", "b"]), None)
    finally:
        ex.shutdown()


def test_cluster_events_after_shutdown_change_nothing() -> None:
    """A worker event that the client's thread delivers after shutdown() cleared the state
    (a replacement worker coming up while the study ends) must not count a worker again:
    status() of a shut-down executor reads 0 workers, 0 busy (a race that failed
    test_worker_killed_mid_study once in six full runs of the core suite)."""
    ex = DaskExecutor(workers=2)
    ex._client = object()  # as if started: events count
    ex._on_cluster_event(("all", {"action": "add-worker", "worker": "tcp://a:1"}))
    ex._batches["k"] = 2
    ex._on_task_event(("t", {"started": "k"}))
    assert ex.status().workers == 1 and ex.status().busy == 2
    ex._client = None
    ex.shutdown()
    ex._on_cluster_event(("all", {"action": "add-worker", "worker": "tcp://b:1"}))
    ex._batches["k"] = 2
    ex._on_task_event(("t", {"started": "k"}))
    st = ex.status()
    assert st.workers == 0 and st.busy == 0


def test_a_dead_worker_counts_as_retried_only_the_batch_it_was_running() -> None:
    """The scheduler lists every task assigned to a dead worker, the ones waiting there as
    well as the one it ran; only that one is re-run because of the death (it counted both:
    retried=2 after one death with batches of one point)."""
    ex = DaskExecutor(workers=2)
    ex._client = object()  # as if started: events count
    ex._batches.update({"running": 3, "waiting": 2})
    ex._on_task_event(("t", {"started": "running"}))
    ex._on_cluster_event(("all", {"action": "remove-worker", "worker": "tcp://a:1",
                                  "processing-tasks": {"running", "waiting"}}))
    st = ex.status()
    assert st.retried == 3 and st.lost_workers == 1 and st.busy == 0
    # Killed before its "started" event got out: the first batch sent of those it held.
    ex._batches.update({"first": 1, "second": 4})
    ex._on_cluster_event(("all", {"action": "remove-worker", "worker": "tcp://b:1",
                                  "processing-tasks": {"second", "first"}}))
    assert ex.status().retried == 3 + 1
    ex._client = None


def test_a_vectorised_objective_gets_batches_that_grow(address: str) -> None:
    """Without batch_size or max_batch_size batches are sized by time: one point first, then
    twice as many while a batch is quick. The whole queue went out at once, sized before
    any batch had come back: 40 calls of one point."""
    ex = DaskExecutor(address=address)
    ex.start(CallableEvaluator(batch_size_metric, ["a", "b"]), None)
    try:
        ex.submit(_jobs(40))
        results = list(ex.as_completed())
    finally:
        ex.shutdown()
    assert sorted(int(r.job.key) for r in results) == list(range(40))
    sizes = [r.metrics[0] for r in results if r.metrics is not None]
    assert len(sizes) == 40 and min(sizes) == 1  # one point at first
    assert max(sizes) >= 4  # then more (1, 2, 4, ... unless a call took over 2 s)


def test_a_ctrl_c_keeps_the_results_of_the_batches_under_way(
        address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while it waits for its workers, the executor hands over the batches
    under way as they finish (the study stores them), cancels the rest, then re-raises:
    they were finished evaluations, thrown away and evaluated again on the rerun."""
    ex = DaskExecutor(address=address, batch_size=2)
    ex.start(CallableEvaluator(quad_slowly, ["a", "b"]), None)
    C = np.random.default_rng(0).random((8, 2))
    real = ex._next_done
    under_way: list[str] = []

    def interrupted() -> object:
        if under_way:
            return real()
        deadline = time.monotonic() + 60
        while not ex._running and time.monotonic() < deadline:
            time.sleep(0.02)
        with ex._lock:
            running = set(ex._running)
        under_way.extend(j.key for f, batch in ex._futures.items() if f.key in running
                         for j in batch)
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "_next_done", interrupted)
    got = []
    try:
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        with pytest.raises(KeyboardInterrupt):
            for r in ex.as_completed():
                got.append(r)
    finally:
        ex.shutdown()
    assert under_way and sorted(r.job.key for r in got) == sorted(under_way)
    for r in got:
        np.testing.assert_allclose(r.metrics, quad(C[int(r.job.key)])[0])


def _start_unlocked() -> None:
    """Named as distributed's ``LoopRunner._start_unlocked``: its bare ``assert`` when the
    event loop thread does not start within 10 s on a busy machine."""
    loop = None
    assert loop is not None


def test_a_client_whose_event_loop_did_not_start_is_created_again(
        address: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """distributed waits 10 s for its client's event loop thread, then fails a bare assert
    (met under the coverage run, every core busy): a raw AssertionError stopped the study.
    The client is created again."""
    real = distributed.Client
    calls: list[object] = []

    def flaky_client(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            _start_unlocked()
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "Client", flaky_client)
    ex = DaskExecutor(address=address)
    with caplog.at_level(logging.WARNING, logger="mapframe"):
        ex.start(CallableEvaluator(batch_size_metric, ["a", "b"]), None)
    try:
        ex.submit(_jobs(3))
        assert sorted(int(r.job.key) for r in ex.as_completed()) == [0, 1, 2]
    finally:
        ex.shutdown()
    assert len(calls) == 2
    assert "did not start within 10 s; trying again" in caplog.text


def test_an_event_loop_that_never_starts_is_a_one_line_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mapframe.executors import dask_executor

    tries: list[int] = []

    def never() -> object:
        tries.append(1)
        _start_unlocked()
        return None

    with pytest.raises(MapframeError, match=r"did not start within 10 s, 3 times.*"
                       r"executor: process") as info:
        dask_executor._loop_started(never)
    assert "\n" not in str(info.value) and len(tries) == dask_executor.LOOP_START_TRIES


def test_another_assertion_error_is_not_retried() -> None:
    from mapframe.executors import dask_executor

    tries: list[int] = []

    def broken() -> object:
        tries.append(1)
        raise AssertionError("something else")

    with pytest.raises(AssertionError, match="something else"):
        dask_executor._loop_started(broken)
    assert tries == [1]


def test_overlapping_local_clusters_share_the_lost_worker_timeout() -> None:
    """Each local cluster raised Dask's process-wide lost-worker-timeout and its shutdown put
    back the value it found: two studies overlapping in threads restored each other's
    values in the wrong order (15 s under the running study, then "1 day" for good)."""
    import dask.config

    from mapframe.executors import dask_executor

    key = "distributed.deploy.lost-worker-timeout"
    before = dask.config.get(key)
    dask_executor._hold_lost_worker_timeout()  # study A's cluster
    dask_executor._hold_lost_worker_timeout()  # study B's, while A runs
    assert dask.config.get(key) == "1 day"
    dask_executor._release_lost_worker_timeout()  # A ends
    assert dask.config.get(key) == "1 day"  # B's cluster keeps it
    dask_executor._release_lost_worker_timeout()  # B ends
    assert dask.config.get(key) == before


# -- keep_alive(): one local cluster for studies in a row (Nested MAP's pairs) --------------
def pid_metric(C):
    """The worker's process id, and the first coefficient."""
    C = np.atleast_2d(C)
    return np.column_stack([np.full(len(C), float(os.getpid())), C[:, 0]])


def pid_metric_doubled(C):
    """Another evaluator: the worker's process id, and twice the first coefficient."""
    out = pid_metric(C)
    out[:, 1] *= 2
    return out


def _one_local_study(fn, workers: int = 1):
    """Four points on a local cluster: (worker pids, second metrics by key, the cluster)."""
    ex = DaskExecutor(workers=workers)
    ex.start(CallableEvaluator(fn, ["pid", "x"]), None)
    cluster = ex._cluster
    try:
        ex.submit(_jobs(4))
        results = list(ex.as_completed())
    finally:
        ex.shutdown()
    return ({int(r.metrics[0]) for r in results},
            {r.job.key: float(r.metrics[1]) for r in results}, cluster)


def _mapframe_plugins(cluster) -> list[str]:
    from mapframe.executors.dask_executor import _PLUGIN_PREFIX

    return [p for p in cluster.scheduler.worker_plugins if p.startswith(_PLUGIN_PREFIX)]


def test_keep_alive_runs_studies_in_a_row_on_one_local_cluster() -> None:
    """Each study started (and closed) a local cluster of its own: Nested MAP on a local
    Dask cluster paid its start-up once per pair (a 4-model tournament 22.9 s against 11.2 s
    with one cluster). Inside keep_alive() the next study starts on the cluster the last
    one left, without the last one's evaluator, and the block's end closes it."""
    import dask.config

    from mapframe.executors import dask_executor

    key = "distributed.deploy.lost-worker-timeout"
    before = dask.config.get(key)
    with DaskExecutor(workers=1).keep_alive():
        pids1, x1, c1 = _one_local_study(pid_metric)
        assert c1.status.name == "running"  # kept for the next study ...
        assert _mapframe_plugins(c1) == []  # ... without this study's evaluator on it
        assert dask.config.get(key) == "1 day"  # the kept cluster still needs its timeout
        pids2, x2, c2 = _one_local_study(pid_metric_doubled)
        assert c2 is c1 and pids2 == pids1  # the same cluster, the same worker process
        assert x2 == {k: 2 * v for k, v in x1.items()}  # the second study's own evaluator
    assert c1.status.name == "closed"
    assert dask.config.get(key) == before
    assert not dask_executor._KEPT._idle and not dask_executor._KEPT._holds


def test_without_keep_alive_a_study_s_local_cluster_closes_with_it() -> None:
    from mapframe.executors import dask_executor

    _, _, cluster = _one_local_study(pid_metric)
    assert cluster.status.name == "closed" and not dask_executor._KEPT._idle
    # Connecting to a scheduler of one's own: nothing of mapframe's to keep.
    assert isinstance(DaskExecutor(address="tcp://127.0.0.1:1").keep_alive(),
                      type(contextlib.nullcontext()))


@pytest.mark.slow  # three local clusters (~15 s)
def test_a_kept_cluster_serves_only_executors_set_up_alike_and_a_closed_one_is_replaced(
) -> None:
    with DaskExecutor(workers=1).keep_alive():
        _, _, c1 = _one_local_study(pid_metric)
        _, _, c2 = _one_local_study(pid_metric, workers=2)  # another key: its own cluster
        assert c2 is not c1 and c2.status.name == "closed"  # not kept: no block holds it
        c1.close()  # gone while kept (its workers lost)
        _, _, c3 = _one_local_study(pid_metric)
        assert c3 is not c1 and c3.status.name == "running"
    assert c3.status.name == "closed"


@pytest.mark.slow  # a Nested MAP tournament on local Dask clusters (~15 s)
def test_nested_map_starts_one_local_cluster_for_all_its_pairs(monkeypatch) -> None:
    from test_nested import run as run_nested

    started = []
    real = distributed.LocalCluster

    def counting(*args, **kwargs):
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", counting)
    res, *_ = run_nested(3, k=4, executor={"name": "dask", "workers": 1})
    inproc, *_ = run_nested(3, k=4)
    assert len(started) == 1  # two pairs and the final model's evaluation: one cluster
    np.testing.assert_allclose(res.final_metrics, inproc.final_metrics)
