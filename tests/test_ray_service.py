"""The ray executor in a long-lived process (a service): concurrent studies share the local
Ray instance mapframe started, the last one shuts it down, an interrupted ``ray.init``
leaves no Ray process behind, and what ``ray.init`` changed in the process (environment
variables, signal handlers) is put back.

The bookkeeping is checked with a stand-in for the ``ray`` module (no Ray started); the
slow tests run real studies in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from mapframe.errors import ConfigError
from mapframe.executors import ray_cluster

LOCAL = ray_cluster.parse_address(None)
#: What Ray 2.x leaves in the environment of a driver that started a local instance.
RAY_ENV = {"PYTHONBREAKPOINT": "ray.util.rpdb._driver_set_trace", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_CLIENT_MODE": "0"}


def _ray_sigterm(signum: int, frame: Any) -> None:  # what Ray installs: sys.exit
    raise SystemExit(signum)


class FakeRay:
    """``ray.init``/``is_initialized``/``shutdown`` as far as :func:`connect` uses them:
    ``init`` changes the environment and (main thread) SIGTERM's handler as Ray does, then
    raises ``fail`` if given."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.up = False
        self.fail = fail
        self.inits: list[dict[str, Any]] = []
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs: Any) -> None:
        self.inits.append(kwargs)
        os.environ.update(RAY_ENV)
        signal.signal(signal.SIGTERM, _ray_sigterm)
        if self.fail is not None:
            raise self.fail
        self.up = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.up = False


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch):
    for key in RAY_ENV:
        monkeypatch.delenv(key, raising=False)
    handler = signal.getsignal(signal.SIGTERM)
    yield
    leaked = getattr(ray_cluster, "_owned", None)
    ray_cluster._owned = None
    signal.signal(signal.SIGTERM, handler)
    assert leaked is None, "a test left mapframe's Ray connection open"


def test_concurrent_studies_share_mapframe_s_local_ray_until_the_last_ends() -> None:
    ray = FakeRay()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Ray is already initialised ... ignores init="
        a = ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5)
        b = ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5)
        # No init of its own: it takes the instance as it is.
        c = ray_cluster.connect(ray, LOCAL, None, {}, 5)
    assert a is not None and b is not None and c is not None
    assert len(ray.inits) == 1 and ray_cluster.users() == 3
    ray_cluster.release(ray, a)
    ray_cluster.release(ray, a)  # given back twice: counted once
    assert ray.up and ray.shutdowns == 0 and ray_cluster.users() == 2
    ray_cluster.release(ray, c)
    ray_cluster.release(ray, b)
    assert not ray.up and ray.shutdowns == 1 and ray_cluster.users() == 0
    d = ray_cluster.connect(ray, LOCAL, None, {}, 5)  # a later study starts a new instance
    assert d is not None and len(ray.inits) == 2
    ray_cluster.release(ray, d)
    assert ray.shutdowns == 2


def test_a_concurrent_study_with_other_ray_settings_is_a_one_line_error() -> None:
    ray = FakeRay()
    a = ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5)
    assert a is not None
    try:
        with pytest.raises(ConfigError, match="share it: give them the same address and init"):
            ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 4}, 5)
        with pytest.raises(ConfigError):
            cluster = ray_cluster.parse_address("10.0.0.1:6379")
            ray_cluster.connect(ray, cluster, "10.0.0.1:6379", {}, 5)
        assert ray_cluster.users() == 1
    finally:
        ray_cluster.release(ray, a)
    assert ray.shutdowns == 1


def test_ray_the_user_initialised_is_used_and_left_alone() -> None:
    ray = FakeRay()
    ray.up = True
    with pytest.warns(UserWarning, match="ignores init="):
        assert ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5) is None
    assert ray_cluster.users() == 0 and not ray.inits and ray.shutdowns == 0


@pytest.mark.parametrize("fail", [KeyboardInterrupt(), RuntimeError("gcs did not start")])
def test_an_interrupted_ray_init_shuts_its_partial_instance_down(fail: BaseException) -> None:
    ray = FakeRay(fail)
    with pytest.raises(type(fail)):
        ray_cluster.connect(ray, LOCAL, None, {}, 5)
    assert ray.shutdowns == 1 and ray_cluster.users() == 0
    assert not any(k in os.environ for k in RAY_ENV)


def test_the_last_study_puts_back_the_environment_and_signal_handlers() -> None:
    def service_sigterm(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGTERM, service_sigterm)
    os.environ["RAY_CLIENT_MODE"] = "mine"
    try:
        ray = FakeRay()
        a = ray_cluster.connect(ray, LOCAL, None, {}, 5)
        b = ray_cluster.connect(ray, LOCAL, None, {}, 5)
        assert signal.getsignal(signal.SIGTERM) is _ray_sigterm
        assert os.environ["PYTHONBREAKPOINT"] == RAY_ENV["PYTHONBREAKPOINT"]
        assert a is not None and b is not None
        ray_cluster.release(ray, a)
        assert signal.getsignal(signal.SIGTERM) is _ray_sigterm  # b still runs on Ray
        ray_cluster.release(ray, b)
        assert signal.getsignal(signal.SIGTERM) is service_sigterm
        assert os.environ["RAY_CLIENT_MODE"] == "mine"
        assert not any(k in os.environ for k in RAY_ENV if k != "RAY_CLIENT_MODE")
    finally:
        os.environ.pop("RAY_CLIENT_MODE", None)


def _run_child(tmp_path: Path, body: str, timeout: float) -> subprocess.CompletedProcess[str]:
    (tmp_path / "service_objective.py").write_text(textwrap.dedent('''
        import time
        import numpy as np

        def f(C):
            C = np.asarray(C, float)
            time.sleep(0.1 * len(C))
            return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(axis=1),
                                    1 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)])
        '''))
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent('''
        import os, signal, sys, threading, time
        from mapframe import MergeStudy
        from service_objective import f  # actors import it by its module path

        def children():
            out = []
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as fh:
                    out += fh.read().split()
            return out
        ''') + textwrap.dedent(body))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


@pytest.mark.slow  # three Ray studies in a child process (~30 s)
def test_two_concurrent_studies_in_threads_share_ray_and_both_finish(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    done = _run_child(tmp_path, '''
        import ray

        def graceful(signum, frame):
            pass

        signal.signal(signal.SIGTERM, graceful)
        env0 = dict(os.environ)
        out = {}

        def run(name, budget):
            try:
                r = MergeStudy(objective=f, task_names=["a", "b"], budget=budget, seed=len(name),
                               sampler="lhs", front_solver={"name": "nsga2", "n_gen": 5},
                               executor={"name": "ray", "workers": 1,
                                         "init": {"num_cpus": 2}}).run()
                out[name] = len(r.history)
            except BaseException as exc:
                out[name] = f"{type(exc).__name__}: {exc}"

        a = threading.Thread(target=run, args=("A", 8))
        b = threading.Thread(target=run, args=("B", 24))
        a.start()
        deadline = time.monotonic() + 60
        while not ray.is_initialized() and a.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        b.start()
        a.join(); b.join()
        run("C", 4)  # from the main thread, where Ray installs its SIGTERM handler
        print("OUT", out)
        print("INIT", ray.is_initialized())
        print("SIGTERM", signal.getsignal(signal.SIGTERM) is graceful)
        print("ENV", sorted(k for k in os.environ if os.environ[k] != env0.get(k)
                            and (k.startswith("RAY_") or k == "PYTHONBREAKPOINT")))
        time.sleep(1)
        print("CHILDREN", children())
        ''', timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("OUT {'A': 8, 'B': 24, 'C': 4}" in done.stdout
            or "OUT {'B': 24, 'A': 8, 'C': 4}" in done.stdout), done.stdout + done.stderr[-3000:]
    assert "INIT False" in done.stdout
    assert "ENV []" in done.stdout
    assert "CHILDREN []" in done.stdout
    assert "SIGTERM True" in done.stdout


@pytest.mark.slow  # starts Ray in a child process and interrupts it (~10 s)
def test_ctrl_c_while_ray_starts_leaves_no_ray_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    done = _run_child(tmp_path, '''
        import ray
        from mapframe.executors import ray_cluster

        real = ray.init

        def interrupted_init(*args, **kwargs):
            # Ctrl-C as ray.init ends: its processes are up, it has not returned (a timed
            # SIGINT landed after ray.init on a faster machine: deterministic here)
            real(*args, **kwargs)
            raise KeyboardInterrupt

        ray.init = interrupted_init
        try:
            MergeStudy(objective=f, task_names=["a", "b"], budget=8, seed=0, sampler="lhs",
                       executor={"name": "ray", "workers": 1, "init": {"num_cpus": 2}}).run()
            print("NOT INTERRUPTED")
        except KeyboardInterrupt:
            pass
        time.sleep(3)
        users = getattr(ray_cluster, "users", lambda: 0)()
        print("INIT", ray.is_initialized(), "USERS", users)
        print("CHILDREN", children())
        ''', timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NOT INTERRUPTED" not in done.stdout, "the interrupt came after ray.init"
    assert "INIT False USERS 0" in done.stdout, done.stdout
    assert "CHILDREN []" in done.stdout, done.stdout + done.stderr[-3000:]


# -- keep_alive(): one Ray instance for studies in a row (Nested MAP's pairs) --------------
def test_a_keep_alive_block_keeps_mapframe_s_ray_up_between_studies() -> None:
    ray = FakeRay()
    with ray_cluster.kept():
        a = ray_cluster.connect(ray, LOCAL, None, {}, 5)
        assert a is not None
        ray_cluster.release(ray, a)
        assert ray.up and ray.shutdowns == 0 and ray_cluster.users() == 0  # kept, unused
        b = ray_cluster.connect(ray, LOCAL, None, {}, 5)  # the next study: no new instance
        assert b is not None and len(ray.inits) == 1 and ray_cluster.users() == 1
        ray_cluster.release(ray, b)
        assert ray.up
    assert not ray.up and ray.shutdowns == 1  # the block's end shuts it down
    assert os.environ.get("PYTHONBREAKPOINT") is None  # and puts back what ray.init changed


def test_nested_keep_alive_blocks_and_a_study_still_running_at_the_block_s_end() -> None:
    ray = FakeRay()
    with ray_cluster.kept():
        with ray_cluster.kept():
            a = ray_cluster.connect(ray, LOCAL, None, {}, 5)
            assert a is not None
        assert ray.up  # the outer block still holds it
    assert ray.up and ray.shutdowns == 0  # a study still uses it: its release shuts it down
    ray_cluster.release(ray, a)
    assert not ray.up and ray.shutdowns == 1
    assert ray_cluster._holds == 0


def test_a_kept_instance_set_up_otherwise_is_replaced_not_refused() -> None:
    ray = FakeRay()
    with ray_cluster.kept():
        a = ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5)
        assert a is not None
        ray_cluster.release(ray, a)
        # Nobody uses the kept instance: a study with another init gets its own, no error.
        b = ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 4}, 5)
        assert b is not None and ray.shutdowns == 1 and len(ray.inits) == 2
        assert ray.inits[-1].get("num_cpus") == 4
        # ... but one that would share it while it is used is still refused.
        with pytest.raises(ConfigError, match="share it"):
            ray_cluster.connect(ray, LOCAL, None, {"num_cpus": 2}, 5)
        ray_cluster.release(ray, b)
    assert not ray.up and ray.shutdowns == 2


def test_ray_shut_down_by_the_program_inside_a_block_is_started_afresh() -> None:
    ray = FakeRay()
    with ray_cluster.kept():
        a = ray_cluster.connect(ray, LOCAL, None, {}, 5)
        assert a is not None
        ray_cluster.release(ray, a)
        ray.shutdown()  # behind mapframe's back
        b = ray_cluster.connect(ray, LOCAL, None, {}, 5)
        assert b is not None and len(ray.inits) == 2 and ray.up
        ray_cluster.release(ray, b)
    assert not ray.up
