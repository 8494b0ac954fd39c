"""``ProcessExecutor.keep_alive()``: worker processes parked between studies and reused by
the next executor configured alike, each study's evaluator dropped all the same; nothing
kept without a block, nor after it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors import pool
from mapframe.executors.base import Job
from mapframe.executors.pool import ProcessExecutor

LEAK_ENV = "MAPFRAME_KEEP_ALIVE_TEST_LEAK"
DRIVER_ENV = "MAPFRAME_KEEP_ALIVE_TEST_DRIVER"
BUDGET = 8


# --- objectives and evaluators, imported by name in the worker processes -------------------


def quad(C):
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def slow_above_half(C):
    """quad, but a first coefficient above 0.5 takes a minute."""
    if np.any(np.atleast_2d(C)[:, 0] > 0.5):
        time.sleep(60)
    return quad(C)


#: The Probe evaluators set up in this process and not freed yet.
_LIVE: weakref.WeakSet[Probe] = weakref.WeakSet()


class Probe(CallableEvaluator):
    """quad, writing to ``folder`` which process set it up (``setup-TAG-PID.json``, with the
    tags of the Probes still alive in that process, the value of ``LEAK_ENV`` it found,
    which each Probe sets, and of ``DRIVER_ENV``) and which process closed it
    (``close-TAG-PID``)."""

    def __init__(self, tag: str, folder: Path) -> None:
        super().__init__(quad, ["a", "b"])
        self.tag, self.folder = tag, str(folder)

    def setup(self, merger):
        super().setup(merger)
        found = {"alive": sorted(e.tag for e in _LIVE), "env": os.environ.get(LEAK_ENV),
                 "driver_env": os.environ.get(DRIVER_ENV)}
        _LIVE.add(self)
        os.environ[LEAK_ENV] = self.tag
        Path(self.folder, f"setup-{self.tag}-{os.getpid()}.json").write_text(json.dumps(found))

    def close(self):
        Path(self.folder, f"close-{self.tag}-{os.getpid()}").touch()
        super().close()


# --- helpers ---------------------------------------------------------------------------------

SPEC = {"name": "process", "workers": 2, "threads_per_worker": 1}


def _hold() -> contextlib.AbstractContextManager[None]:
    """A keep_alive block for SPEC's configuration (whatever the number of workers)."""
    return ProcessExecutor(workers=2, threads_per_worker=1).keep_alive()


def _study(tag: str, folder: Path, workers: int = 2):
    return MergeStudy(evaluator=Probe(tag, folder), budget=BUDGET, seed=0, sampler="sobol",
                      front_solver="grid", executor={**SPEC, "workers": workers}).run()


def _setups(folder: Path, tag: str) -> dict[int, dict]:
    """pid -> what the Probe ``tag`` found when it was set up in that process."""
    return {int(f.stem.rsplit("-", 1)[1]): json.loads(f.read_text())
            for f in Path(folder).glob(f"setup-{tag}-*.json")}


def _closed(folder: Path, tag: str) -> set[int]:
    return {int(f.name.rsplit("-", 1)[1]) for f in Path(folder).glob(f"close-{tag}-*")}


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _exists(pid: int) -> bool:
    """Whether ``pid`` exists at all, zombies included (our children must be reaped)."""
    return Path(f"/proc/{pid}").exists()


def _pids(ex: ProcessExecutor) -> set[int]:
    return {w.process.pid for w in ex._pool.workers.values()}


def _evaluate(ex: ProcessExecutor, n: int = 4) -> None:
    C = np.linspace(0.0, 1.0, 2 * n).reshape(n, 2)
    ex.submit([Job(str(i), c) for i, c in enumerate(C)])
    got = {r.job.key: r for r in ex.as_completed()}
    assert sorted(got) == [str(i) for i in range(n)]
    for i, c in enumerate(C):
        assert got[str(i)].error is None
        np.testing.assert_allclose(got[str(i)].metrics, quad(c)[0])


def _same_results(a, b) -> None:
    assert np.array_equal(a.history.X, b.history.X)
    assert np.array_equal(a.history.Y, b.history.Y)


@pytest.fixture(autouse=True)
def _nothing_kept_before_or_after():
    assert not pool._KEPT.parked(), "an earlier test left workers parked"
    yield
    parked = pool._KEPT.parked()
    pool._KEPT.stop_all()
    assert not parked, "workers stayed parked after their keep_alive block"


@pytest.fixture(scope="module")
def reference():
    """The study's results in-process."""
    return MergeStudy(quad, ["a", "b"], budget=BUDGET, seed=0, sampler="sobol",
                      front_solver="grid").run()


@pytest.fixture(scope="module")
def two_in_a_row(tmp_path_factory):
    """Studies A and B in a row under one keep_alive block, observed between the two, at
    the block's end and after it."""
    folder = tmp_path_factory.mktemp("keep-alive")
    seen: dict = {"folder": folder}
    with _hold():
        seen["A"] = _study("A", folder)
        pids = set(_setups(folder, "A"))
        seen["between"] = {"running": {p for p in pids if _running(p)},
                           "closed": _closed(folder, "A"),
                           "parked": {w.process.pid for w in pool._KEPT.parked()}}
        seen["B"] = _study("B", folder)
        pids |= set(_setups(folder, "B"))
        seen["at_end"] = {p for p in pids if _running(p)}
    seen["after"] = {p for p in pids if _exists(p)}
    seen["parked_after"] = pool._KEPT.parked()
    return seen


# --- 1-3. studies in a row under one block ---------------------------------------------------


def test_studies_in_a_row_run_on_the_same_worker_processes(two_in_a_row):
    folder = two_in_a_row["folder"]
    first, second = _setups(folder, "A"), _setups(folder, "B")
    assert len(first) == 2
    assert set(second) == set(first), "the second study started new worker processes"


def test_they_give_the_same_results_as_without_keep_alive(two_in_a_row, reference):
    for tag in "AB":
        assert two_in_a_row[tag].n_evaluated == BUDGET
        _same_results(two_in_a_row[tag], reference)


def test_the_block_keeps_the_workers_and_its_end_stops_them(two_in_a_row):
    pids = set(_setups(two_in_a_row["folder"], "A"))
    between = two_in_a_row["between"]
    assert between["running"] == pids and between["parked"] == pids, (
        "the workers were not kept between the studies")
    assert two_in_a_row["at_end"] == pids
    assert not two_in_a_row["after"], "the end of the block left worker processes behind"
    assert not two_in_a_row["parked_after"]


def test_a_reused_worker_holds_nothing_of_the_earlier_study(two_in_a_row):
    folder = two_in_a_row["folder"]
    # the first study's evaluator was closed in every worker when it ended
    assert two_in_a_row["between"]["closed"] == set(_setups(folder, "A"))
    for pid, found in _setups(folder, "B").items():
        assert found["alive"] == [], f"worker {pid} still held evaluator(s) {found['alive']}"
        assert found["env"] is None, f"worker {pid} kept the first study's environment"
    assert _closed(folder, "B") == set(_setups(folder, "B"))


# --- 4. without a block ----------------------------------------------------------------------


def test_without_keep_alive_nothing_is_parked(tmp_path):
    # a block of another configuration (threads per worker) keeps nothing of this one
    with ProcessExecutor(workers=1, threads_per_worker=2).keep_alive():
        ex = ProcessExecutor(workers=1, threads_per_worker=1)
        ex.start(Probe("A", tmp_path), None)
        first = _pids(ex)
        _evaluate(ex)
        ex.shutdown()
        assert not pool._KEPT.parked()
        assert not any(_exists(p) for p in first)
    ex = ProcessExecutor(workers=1, threads_per_worker=1)
    ex.start(Probe("B", tmp_path), None)
    second = _pids(ex)
    ex.shutdown()
    assert len(first) == len(second) == 1 and not first & second
    assert not pool._KEPT.parked()
    assert not any(_exists(p) for p in second)


# --- 5. a parked worker killed ---------------------------------------------------------------


def test_a_worker_killed_while_parked_is_replaced(tmp_path):
    with _hold():
        ex = ProcessExecutor(workers=2, threads_per_worker=1)
        ex.start(Probe("A", tmp_path), None)
        first = _pids(ex)
        ex.shutdown()
        killed, kept = sorted(first)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 10
        # until it can be reaped (left to the executor: WNOWAIT), all its threads ended
        while os.waitid(os.P_PID, killed, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        ex = ProcessExecutor(workers=2, threads_per_worker=1)
        ex.start(Probe("B", tmp_path), None)
        try:
            second = _pids(ex)
            assert len(second) == 2 and kept in second and killed not in second
            assert not _exists(killed), "the dead parked worker was not reaped"
            _evaluate(ex)
            assert ex.status().lost_workers == 0
        finally:
            ex.shutdown()
    assert not any(_exists(p) for p in first | second)


# --- 6. blocks nested and overlapping --------------------------------------------------------


def test_blocks_nest_and_overlap_and_the_last_to_end_stops_the_workers(tmp_path):
    a, b, c = _hold(), _hold(), _hold()
    with contextlib.ExitStack() as cleanup:
        for block in (a, b, c):
            block.__enter__()
            cleanup.callback(block.__exit__, None, None, None)
        ex = ProcessExecutor(workers=1, threads_per_worker=1)
        ex.start(Probe("A", tmp_path), None)
        pids = _pids(ex)
        ex.shutdown()
        cleanup.pop_all()
        a.__exit__(None, None, None)  # overlapping: ends before b and c, entered after it
        assert all(_running(p) for p in pids), "a block ended while others held the workers"
        c.__exit__(None, None, None)  # nested in b
        assert all(_running(p) for p in pids), "a block ended while another held the workers"
        assert {w.process.pid for w in pool._KEPT.parked()} == pids
        b.__exit__(None, None, None)
    assert not any(_exists(p) for p in pids)


# --- 7. two studies at once --------------------------------------------------------------------


def test_two_studies_in_two_threads_under_one_hold(tmp_path, reference):
    # one worker each: the one parked goes to one of them, the other starts a new one
    with _hold():
        ex = ProcessExecutor(workers=1, threads_per_worker=1)
        ex.start(Probe("P", tmp_path), None)
        parked = _pids(ex)
        ex.shutdown()
        results: dict[str, object] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def run(tag: str) -> None:
            try:
                barrier.wait()
                results[tag] = _study(tag, tmp_path, workers=1)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(tag,)) for tag in "XY"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        x, y = set(_setups(tmp_path, "X")), set(_setups(tmp_path, "Y"))
        assert len(x) == len(y) == 1
        assert not x & y, "a parked worker was handed to both studies"
        assert parked <= x | y
        assert {w.process.pid for w in pool._KEPT.parked()} == x | y
    for tag in "XY":
        _same_results(results[tag], reference)
    assert not any(_exists(p) for p in parked | x | y)


# --- the driver's environment ---------------------------------------------------------------


def test_a_variable_the_driver_gained_is_passed_on_one_it_changed_starts_anew(
        tmp_path, monkeypatch):
    # Libraries add variables to the driver's environment when they are imported (torch's
    # inductor, scikit-learn): the workers are reused, and see them. A variable changed
    # may have been read where it was set before: new workers.
    monkeypatch.delenv(DRIVER_ENV, raising=False)

    def run(tag: str) -> dict[int, dict]:
        ex = ProcessExecutor(workers=1, threads_per_worker=1)
        ex.start(Probe(tag, tmp_path), None)
        ex.shutdown()
        return _setups(tmp_path, tag)

    with _hold():
        (first,) = run("A")
        monkeypatch.setenv(DRIVER_ENV, "gained")
        b = run("B")
        assert list(b) == [first] and b[first]["driver_env"] == "gained"
        monkeypatch.setenv(DRIVER_ENV, "changed")
        c = run("C")
        (second,) = c
        assert second != first and c[second]["driver_env"] == "changed"
        assert not _exists(first), "a parked worker no new executor would take was kept"
        assert {w.process.pid for w in pool._KEPT.parked()} == {second}
    assert not _exists(second)


# --- what is not parked --------------------------------------------------------------------------


def test_a_busy_worker_is_stopped_not_parked(monkeypatch):
    monkeypatch.setattr(pool, "STOP_TIMEOUT", 0.5)
    with _hold():
        ex = ProcessExecutor(workers=2, threads_per_worker=1, batch_size=1)
        ex.start(CallableEvaluator(slow_above_half, ["a", "b"]), None)
        ex.submit([Job("fast", np.array([0.1, 0.2])), Job("slow", np.array([0.9, 0.2]))])
        first = next(ex.as_completed())
        assert first.job.key == "fast"
        idle = int(first.worker.rsplit(":", 1)[1])
        (busy,) = _pids(ex) - {idle}
        # its batch's results came first, then it says it is done: let the driver read that
        (fast,) = [w for w in ex._pool.workers.values() if w.process.pid == idle]
        deadline = time.monotonic() + 30
        while fast.running:
            assert time.monotonic() < deadline
            assert ex._poll(timeout=1.0) == ([], None)
        ex.shutdown()  # as a study does when it stops mid-way
        assert {w.process.pid for w in pool._KEPT.parked()} == {idle}
        assert not _exists(busy)
    assert not _exists(idle)


def test_fork_keeps_nothing(tmp_path):
    if "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork here")
    with ProcessExecutor(workers=1, start_method="fork").keep_alive():
        ex = ProcessExecutor(workers=1, start_method="fork")
        ex.start(CallableEvaluator(quad, ["a", "b"]), None)
        pids = _pids(ex)
        ex.shutdown()
        assert not pool._KEPT.parked()
        assert not any(_exists(p) for p in pids)
