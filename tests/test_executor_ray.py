"""The ray executor: the executor contract, the same study as in-process, actors that die,
and errors that name the address or the actor."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from objectives import (
    SlowStudy,
    bug_below_half,
    good_bad_x_y_jobs,
    kill_self_once,
    search_keys,
    wrong_shape_below_half,
)

from mapframe import MergeStudy
from mapframe.errors import ConfigError, EvaluationError, MapframeError
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors.base import Job, MergeSpec
from mapframe.executors.worker import WorkerSetupError
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.plugin import create_component
from mapframe.testing import ExecutorContract

ray = pytest.importorskip("ray")

from mapframe.executors.ray_executor import RayExecutor  # noqa: E402

# One Ray instance for the whole module, in one xdist worker (pytest runs --dist loadgroup).
pytestmark = pytest.mark.xdist_group("ray")

TASKS = ("rot90", "flip")
#: Where the actors' objectives leave marker files (set in the actors' environment).
SHARED_DIR = "MAPFRAME_RAY_TEST_DIR"


@pytest.fixture(scope="module", autouse=True)
def shared_dir(tmp_path_factory: pytest.TempPathFactory):
    """Start Ray once (2 CPUs); actors import this module's objectives from tests/."""
    shared = tmp_path_factory.mktemp("ray-shared")
    path = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    # "local": a private instance, even where `ray start` runs a cluster on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join(p for p in path if p), SHARED_DIR: str(shared)}})
    yield shared
    ray.shutdown()


def quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


_calls = 0


def quad_killed_once(C: np.ndarray) -> np.ndarray:
    """quad, but the first actor to reach its 3rd call SIGKILLs itself (once in all)."""
    global _calls
    _calls += 1
    if _calls == 3:
        kill_self_once(Path(os.environ[SHARED_DIR]) / "killed")
    return quad(C)


def quad_dies_at_half(C: np.ndarray) -> np.ndarray:
    """quad, but the process dies (os._exit) whenever a coefficient is exactly 0.5."""
    if np.any(np.atleast_2d(C) == 0.5):
        os._exit(3)
    return quad(C)


def wrong_shape(C: np.ndarray) -> np.ndarray:
    return np.zeros((len(C), 3))


def quad_slowly(C: np.ndarray) -> np.ndarray:
    time.sleep(1.0)
    return quad(C)




class TestRayExecutor(ExecutorContract):
    def make_executor(self) -> RayExecutor:
        return RayExecutor(workers=2)


#: Slow (about 20 s each of the one worker that runs every Ray test): the executor
#: contract tests cover the Ray path in the core suite; CI runs the slow tests too.
@pytest.mark.slow
@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_digits_study_matches_inprocess(tmp_path_factory: pytest.TempPathFactory,
                                        metric: str) -> None:
    """The built-in digits example gives bit-identical histories and fronts on both, although
    the jobs are batched differently; the loss would show any last-bit difference in the
    merged weights (accuracy mostly rounds it away)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from mapframe.examples import digits

    ckpts = digits.prepare_checkpoints(tmp_path_factory.getbasetemp() / "digits", TASKS)

    def study(executor: object) -> MergeStudy:
        return MergeStudy(evaluator={"name": "digits", "tasks": list(TASKS), "metric": metric},
                          checkpoints=ckpts, budget=12, seed=0, verify=3,
                          executor=executor)  # type: ignore[arg-type]

    local = study("inprocess").run()
    on_ray = study({"name": "ray", "workers": 2})
    remote = on_ray.run()  # batches of 6 + 6 and 2 + 1 there, of 12 and 3 here
    assert isinstance(on_ray.executor, RayExecutor) and on_ray.executor.capacity == 2
    np.testing.assert_array_equal(local.history.X, remote.history.X)
    np.testing.assert_array_equal(local.history.Y, remote.history.Y)
    np.testing.assert_array_equal(local.front.coefficients, remote.front.coefficients)
    np.testing.assert_array_equal(local.front.predicted, remote.front.predicted)
    np.testing.assert_array_equal(local.front.real, remote.front.real)


def test_killed_actor_is_replaced_and_nothing_lost(shared_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    ex = RayExecutor(workers=2, batch_size=1)
    res = MergeStudy(objective=quad_killed_once, task_names=["a", "b"], budget=12, seed=0,
                     storage=db, executor=ex).run()
    assert (shared_dir / "killed").exists()
    assert res.n_evaluated == 12 and len(res.history) == 12
    st = ex.status()
    assert st.retried >= 1 and st.lost_workers >= 1
    assert st.workers == 0 and st.busy == 0 and st.queued == 0  # shut down
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, status FROM evaluations WHERE phase = 'search'"
                           ).fetchall()
    assert len(rows) == 12 and len({r[0] for r in rows}) == 12
    assert {r[1] for r in rows} == {"ok"}
    np.testing.assert_array_equal(res.history.Y, quad(res.history.X))


def test_point_that_always_kills_its_actor_fails_after_retries() -> None:
    ex = RayExecutor(workers=2, batch_size=1, max_retries=1)
    ex.start(CallableEvaluator(quad_dies_at_half, ["a", "b"]), None)
    C = np.array([[0.1, 0.2], [0.5, 0.5], [0.3, 0.4], [0.7, 0.9]])
    try:
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        results = {r.job.key: r for r in ex.as_completed()}
        st = ex.status()
    finally:
        ex.shutdown()
    assert sorted(results) == ["0", "1", "2", "3"]
    bad = results["1"]
    assert bad.metrics is None and bad.error is not None
    assert "died" in bad.error and "ray-actor-" in bad.error and "re-run 1 time" in bad.error
    for key in "023":
        got = results[key].metrics
        assert got is not None
        np.testing.assert_allclose(got, quad(C[int(key)])[0])
        assert results[key].worker.startswith("ray-actor-")
    assert st.lost_workers == 2 and st.retried == 1


@pytest.mark.slow  # ~10-20 s of the core suite; CI runs the slow tests too
def test_batch_mates_of_a_point_that_kills_its_actor_are_re_run_alone() -> None:
    """A dead actor's jobs are re-run each alone: only the point that kills its actor fails,
    not the healthy points of its batch (they went back in one batch and died with it every
    time: all four failed)."""
    ex = RayExecutor(workers=2, batch_size=4, max_retries=1)
    ex.start(CallableEvaluator(quad_dies_at_half, ["a", "b"]), None)
    C = np.array([[0.1, 0.2], [0.5, 0.5], [0.3, 0.4], [0.7, 0.9],
                  [0.2, 0.1], [0.6, 0.3], [0.8, 0.7], [0.9, 0.6]])
    try:
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        results = {r.job.key: r for r in ex.as_completed()}
    finally:
        ex.shutdown()
    assert sorted(results) == [str(i) for i in range(len(C))]
    assert [k for k, r in results.items() if r.metrics is None] == ["1"]
    assert "re-run 1 time" in (results["1"].error or "")
    for key, r in results.items():
        if key != "1":
            np.testing.assert_allclose(r.metrics, quad(C[int(key)])[0])


def test_a_ctrl_c_keeps_the_results_of_the_batches_under_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while it waits for its actors, the executor hands over the batches under
    way as they finish (the study stores them), then re-raises: they were finished
    evaluations, thrown away and evaluated again on the rerun (6 finished, 4 stored)."""
    ex = RayExecutor(workers=2, batch_size=2)
    ex.start(CallableEvaluator(quad_slowly, ["a", "b"]), None)
    C = np.random.default_rng(0).random((8, 2))
    real_wait = ray.wait
    under_way: list[str] = []

    def interrupted(*args: object, **kwargs: object) -> object:
        if not under_way and ex._in_flight:  # the first wait with batches under way
            under_way.extend(j.key for a in ex._in_flight.values() for j in a.jobs or [])
            raise KeyboardInterrupt
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(ray, "wait", interrupted)
    got = []
    try:
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        with pytest.raises(KeyboardInterrupt):
            for r in ex.as_completed():
                got.append(r)
    finally:
        monkeypatch.setattr(ray, "wait", real_wait)
        ex.shutdown()
    assert under_way and sorted(r.job.key for r in got) == sorted(under_way)
    for r in got:
        np.testing.assert_allclose(r.metrics, quad(C[int(r.job.key)])[0])


def test_unreachable_address_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        ex = RayExecutor(address=address, connect_timeout=5)
        with pytest.raises(MapframeError, match=f"127.0.0.1:{port}.*ray start --head"):
            ex.start(CallableEvaluator(quad, ["a", "b"]), None)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # where "auto" leads
    with pytest.raises(MapframeError, match=f"'auto' \\(127.0.0.1:{port}: .*ray start --head"):
        RayExecutor(address="auto").start(CallableEvaluator(quad, ["a", "b"]), None)
    # Something listens there, but it is not Ray: no answer to a gRPC handshake.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        ex = RayExecutor(address=address, connect_timeout=1)
        with pytest.raises(MapframeError, match=f"{address}.*does not answer like a Ray"):
            ex.start(CallableEvaluator(quad, ["a", "b"]), None)
    assert time.monotonic() - t0 < 30


def test_importing_the_executor_does_not_import_ray() -> None:
    code = ("import sys; import mapframe.executors.ray_executor; "
            "from mapframe.plugin import get_registry; get_registry().get('executor', 'ray'); "
            "assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MapframeError, match=r"pip install 'mapframe\[ray\]'"):
        create_component("executor", {"name": "ray", "workers": 2})
    with pytest.raises(MapframeError, match=r"pip install 'mapframe\[ray\]'"):
        MergeStudy(objective=quad, task_names=["a", "b"], executor="ray")


def test_unreadable_checkpoint_names_the_actor_and_file(tmp_path: Path) -> None:
    pre, ft = tmp_path / "pretrained.safetensors", tmp_path / "ft.safetensors"
    pre.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    ft.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    spec = MergeSpec(TaskArithmetic(), str(pre), {"a": str(ft)})
    ex = RayExecutor(workers=2)
    with pytest.raises(WorkerSetupError, match=r"ray-actor-\d+@.*pretrained\.safetensors"):
        ex.start(CallableEvaluator(quad, ["a", "b"]), spec)
    assert ex.status().workers == 0
    ex.shutdown()  # idempotent


def test_wrong_output_shape_names_the_actor() -> None:
    ex = RayExecutor(workers=2)
    ex.start(CallableEvaluator(wrong_shape, ["a", "b"]), None)
    try:
        ex.submit([Job(str(i), np.array([0.1 * i, 0.2])) for i in range(4)])
        with pytest.raises(EvaluationError, match=r"ray actor ray-actor-\d+@.*shape \(\d+, 3\)"):
            list(ex.as_completed())
    finally:
        ex.shutdown()
        ex.shutdown()


def test_an_evaluator_bug_keeps_the_rows_its_batch_finished_before_it() -> None:
    """A batch the actor evaluates in several calls (time-sized: an actor's runtime starts
    at one point per call, the driver here at two per batch): the rows evaluated before the
    call that broke the evaluator's contract are finished evaluations and come out before
    the error, as do the other actor's batch (the whole failing batch was dropped)."""
    ex = RayExecutor(workers=2)
    ex.start(CallableEvaluator(wrong_shape_below_half, ["a", "b"]), None)
    got: list[str] = []
    try:
        assert ex.capacity == 2
        ex._timer.step = 2  # four jobs go out in two batches of two: good+bad, x+y
        ex.submit(good_bad_x_y_jobs())
        with pytest.raises(EvaluationError,
                           match=r"ray actor ray-actor-\d+@.*shape \(1, 3\)") as info:
            for result in ex.as_completed():
                assert result.error is None
                got.append(result.job.key)
    finally:
        ex.shutdown()
    assert "\n" not in str(info.value)
    assert sorted(got) == ["good", "x", "y"]


def test_an_objective_that_cannot_be_serialised_is_a_one_line_error() -> None:
    """Ray's own error inspected the evaluator's members and tripped on its ``merger``
    property: "evaluator 'callable' was used before setup(merger)", naming neither the
    problem nor the fix."""
    import threading

    lock = threading.Lock()

    def locked(C):
        with lock:
            return quad(C)

    ex = RayExecutor(workers=1)
    with pytest.raises(ConfigError, match=r"cannot be serialised to send to Ray actors "
                                          r"\(TypeError: cannot pickle '_thread.lock'") as info:
        ex.start(CallableEvaluator(locked, ["a", "b"]), None)
    assert "setup(merger)" not in str(info.value) and "\n" not in str(info.value)
    assert ex.status().workers == 0
    ex.shutdown()


def test_after_an_actor_error_the_batches_under_way_finish_and_are_kept(tmp_path) -> None:
    """One point breaks the evaluator's contract while the other actor evaluates another:
    that result is a finished evaluation, stored before the error stops the study (it was
    dropped), and no further point is started."""
    db = tmp_path / "s.sqlite"
    with pytest.raises(EvaluationError, match=r"shape \(1, 3\)"):
        MergeStudy(objective=bug_below_half, task_names=["a", "b"], budget=12, seed=0,
                   sampler="sobol", storage=db,
                   executor={"name": "ray", "workers": 2, "batch_size": 1}).run()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 1


def test_settings_are_checked_and_described() -> None:
    ex = RayExecutor(workers=3, num_cpus=0.5, num_gpus=0, batch_size=4, max_retries=0,
                     init={"num_cpus": 4}, address="head:6379")
    assert ex.capacity == 3 and RayExecutor().capacity == 1
    assert ex.describe() == {
        "name": "ray", "address": "head:6379", "workers": 3, "num_cpus": 0.5, "num_gpus": 0.0,
        "batch_size": 4, "max_retries": 0, "init": {"num_cpus": 4}, "connect_timeout": 15.0,
        "wait_for_resources": False}
    assert ex.status().workers == 0
    for bad in ({"workers": 0}, {"workers": True}, {"num_cpus": -1}, {"num_gpus": "all"},
                {"batch_size": 0}, {"max_retries": -1}, {"init": ["x"]},
                {"init": {"address": "auto"}}, {"connect_timeout": 0}, {"address": ""},
                {"address": "head"}, {"address": "ray://head:port"}, {"address": 6379},
                {"wait_for_resources": "yes"}):
        with pytest.raises(ConfigError):
            RayExecutor(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'head:6379'"):
        RayExecutor(address="head")


#: Slow (about 20 s on the one worker that runs every Ray test): the core suite keeps the
#: Ray kill below (at most one short batch lost) and the process pool's kill-and-resume
#: (tests/test_executor_pool.py); this adds the watchdog and the rerun on Ray.
@pytest.mark.slow
def test_driver_killed_stops_its_local_ray_and_the_rerun_resumes(tmp_path):
    # A driver killed with kill -9 cannot call ray.shutdown(): the watchdog the executor
    # started beside its local instance stops every process of that Ray session.
    from mapframe.executors._reaper import session_processes

    study = SlowStudy(tmp_path, budget=12, delay=1.0,
                      executor={"name": "ray", "workers": 2, "batch_size": 1})
    study.start()
    try:
        study.wait_stored(2, timeout=180)
        sessions = [str(p) for p in Path("/tmp/ray").glob(f"session_*_{study.proc.pid}")]
        assert sessions, "no Ray session of the driver found"
        assert session_processes(sessions[0])  # Ray's processes are up
        study.kill()
    finally:
        study.stop()
    deadline = time.monotonic() + 60
    while session_processes(sessions[0]):
        assert time.monotonic() < deadline, (
            f"Ray processes survived the driver: {session_processes(sessions[0])}")
        time.sleep(0.5)
    budget = study.budget
    stored = len(search_keys(study.db))
    assert 2 <= stored < budget
    # The rerun (here in process: the executor is not part of the store's identity) reuses
    # every stored evaluation.
    done = study.rerun(executor="inprocess", delay=0)
    assert done.returncode == 0, done.stderr
    assert f"{budget - stored} new this run, {stored} reused" in done.stdout
    assert len(search_keys(study.db)) == budget


@pytest.mark.slow  # ~10-20 s of the core suite; CI runs the slow tests too
def test_a_killed_driver_loses_at_most_one_short_batch_per_actor(tmp_path):
    """Default settings (no batch_size), a vectorised objective with no batch limit: calls
    carry time-sized batches (1 point, then 2 while under 2 s), so killing the driver loses
    at most each actor's running call, not ceil(design / actors) points each."""
    from mapframe.executors.worker import BATCH_TARGET_S

    delay, budget = 1.0, 16
    study = SlowStudy(tmp_path, budget=budget, delay=delay,
                      executor={"name": "ray", "workers": 2})
    study.start()
    try:
        study.wait_stored(4, timeout=180)
        study.kill()
    finally:
        study.stop()
    time.sleep(2 * delay)
    stored = len(search_keys(study.db))
    lost = len(study.calls()) - stored
    assert stored < budget
    assert lost * delay <= 2 * (2 * BATCH_TARGET_S + delay), (lost, stored)
    assert lost <= 2 * 2, (lost, stored)  # two actors, at most two points a call
