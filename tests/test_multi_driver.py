"""Several drivers on one study: the SQLite store is the coordination point (issue 21, item 5).

Drivers claim points before evaluating them; the others skip claimed points, read their
results when they land, and take over the claims of a driver that was killed. The tests run
real processes on one store file and count every objective call in a log.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mapframe.history import Evaluation, FailureReason
from mapframe.storage import SQLiteStore

# ---------------------------------------------------------------------------- the store


def _ev(key: str, value: float = 0.5, status: str = "ok") -> Evaluation:
    return Evaluation(coefficients=np.array([value]), metrics=np.array([value]),
                      status=status, phase="search", round=0, duration=0.0, key=key,
                      error=None if status == "ok" else "boom",
                      reason=None if status == "ok" else FailureReason.RAISED)


def _pair(path: Path, ttl: float = 60.0) -> tuple[SQLiteStore, SQLiteStore]:
    a, b = SQLiteStore(path, claim_ttl=ttl), SQLiteStore(path, claim_ttl=ttl)
    a.open("s", {"x": 1})
    b.open("s", {"x": 1})
    return a, b


def test_claimed_points_are_skipped_by_another_driver(tmp_path):
    a, b = _pair(tmp_path / "s.sqlite")
    assert a.claim("search", ["k1", "k2", "k3"], "A", limit=2) == ["k1", "k2"]
    assert b.claim("search", ["k1", "k2", "k3"], "B") == ["k3"]
    assert b.claim("search", ["k1", "k2", "k3"], "B") == ["k3"]  # its own claim again
    a.add(_ev("k1"))
    assert set(b.stored("search", ["k1", "k2", "k3"])) == {"k1"}
    assert b.claim("search", ["k1", "k2"], "B") == []  # k1 stored, k2 still A's
    a.release_claims("A")
    assert b.claim("search", ["k2"], "B") == ["k2"]


def test_a_dead_drivers_claims_expire_and_a_live_ones_are_renewed(tmp_path):
    a, b = _pair(tmp_path / "s.sqlite", ttl=0.3)
    assert a.claim("search", ["k1", "k2"], "A") == ["k1", "k2"]
    time.sleep(0.2)
    a.renew_claims("A")  # A is alive
    time.sleep(0.2)
    assert b.claim("search", ["k1", "k2"], "B") == []
    time.sleep(0.4)  # A stopped renewing: gone
    assert b.claim("search", ["k1", "k2"], "B") == ["k1", "k2"]


def test_failed_points_can_be_claimed_again(tmp_path):
    a, b = _pair(tmp_path / "s.sqlite")
    a.claim("search", ["k1"], "A")
    a.add(_ev("k1", status="failed"))
    assert b.stored("search", ["k1"]) == {}
    assert b.claim("search", ["k1"], "B") == ["k1"]


def test_claim_ttl_must_be_positive(tmp_path):
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError, match="claim_ttl must be a positive number"):
        SQLiteStore(tmp_path / "s.sqlite", claim_ttl=0)


def test_a_store_with_claims_reopens_as_a_mapframe_store(tmp_path):
    a, _ = _pair(tmp_path / "s.sqlite")
    a.claim("search", ["k1"], "A")
    a.close()
    c = SQLiteStore(tmp_path / "s.sqlite")
    c.open("s", {"x": 1})  # the claims table is one of the store's own
    assert c.load() == []


# ---------------------------------------------------------------------------- drivers

OBJECTIVE = '''
import os, time
import numpy as np

LOG = os.environ["MULTI_DRIVER_LOG"]
# After this many finished calls, the next one never returns (a driver to be killed inside
# an evaluation, with no race between the test's kill and the evaluation's end); 0: never.
HANG_AFTER = int(os.environ.get("MULTI_DRIVER_HANG_AFTER", "0"))
done = 0


def f(c):
    global done
    key = ",".join(f"{v:.6f}" for v in c)
    with open(LOG, "a") as fh:
        fh.write(f"start {key} {os.getpid()}\\n")
    if HANG_AFTER and done >= HANG_AFTER:
        time.sleep(3600)
    time.sleep(float(os.environ.get("MULTI_DRIVER_SLEEP", "0.05")))
    a = 1 - (c[0] - 0.8) ** 2 - 0.5 * (c[1] - 0.2) ** 2
    b = 1 - (c[0] - 0.2) ** 2 - 0.5 * (c[1] - 0.8) ** 2
    with open(LOG, "a") as fh:
        fh.write(f"end {key} {os.getpid()}\\n")
    done += 1
    return np.array([a, b])
'''

DRIVER = '''
import json, os, sys, time
from mapframe import MergeStudy
from mapframe.storage import SQLiteStore
import multi_driver_objective as m

store, out = sys.argv[1], sys.argv[2]
study = MergeStudy(budget=24, verify=3, sampler=os.environ["MULTI_DRIVER_SAMPLER"],
                   storage=SQLiteStore(store, claim_ttl=1.0), study_name="shared",
                   evaluator={"name": "callable", "function": "multi_driver_objective:f",
                              "tasks": ["a", "b"], "vectorized": False})
go = os.environ.get("MULTI_DRIVER_GO")
if go:  # start together: a slow start (imports on a loaded machine) must not leave no work
    open(f"{go}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
res = study.run()
with open(out, "w") as fh:
    json.dump({"X": res.front.coefficients.tolist(), "F": res.front.predicted.tolist(),
               "n_evaluated": res.n_evaluated, "n_reused": res.n_reused}, fh)
'''


@pytest.fixture
def drivers(tmp_path):
    (tmp_path / "multi_driver_objective.py").write_text(OBJECTIVE)
    (tmp_path / "driver.py").write_text(DRIVER)
    log = tmp_path / "calls.log"

    def start(store: Path, out: Path, sleep: float = 0.05, hang_after: int = 0,
              sampler: str = "sobol", go: Path | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MULTI_DRIVER_LOG": str(log), "MULTI_DRIVER_SLEEP": str(sleep),
               "MULTI_DRIVER_SAMPLER": sampler, "MULTI_DRIVER_GO": str(go or ""),
               "MULTI_DRIVER_HANG_AFTER": str(hang_after),
               "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(store),
                                 str(out)], env=env, stderr=subprocess.PIPE)

    return start, log


def _ends(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [(w[1], w[2]) for w in (line.split() for line in log.read_text().splitlines())
            if w[0] == "end"]


def _release(go: Path, procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    """Let drivers started with ``go`` run once every one of them is ready (imported, its
    study built): otherwise, on a loaded machine, the first ones may finish the whole budget
    before a slow starter proposes anything."""
    deadline = time.monotonic() + timeout
    while len(list(go.parent.glob(go.name + ".ready.*"))) < len(procs):
        for p in procs:
            assert p.poll() is None, p.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the drivers never got ready"
        time.sleep(0.01)
    go.touch()


def _wait(procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err.decode()[-2000:]


@pytest.mark.parametrize("sampler", ["sobol", pytest.param("auto", marks=pytest.mark.slow)])
def test_three_drivers_evaluate_each_point_once_with_one_killed(drivers, tmp_path, sampler):
    # sobol: one design; auto (the default; with gpytorch the gp sampler here): rounds that
    # each driver proposes from the same stored history, so they share the points too.
    start, log = drivers
    # One driver alone, on its own store: the reference front.
    solo = start(tmp_path / "solo.sqlite", tmp_path / "solo.json", sleep=0.0, sampler=sampler)
    _wait([solo])
    log.unlink()
    ref = json.loads((tmp_path / "solo.json").read_text())

    store = tmp_path / "shared.sqlite"
    # The third driver hangs inside its second evaluation (it can never finish it between the
    # check below and the kill: that race once let it log an end it did not store).
    go = tmp_path / "go"
    procs = [start(store, tmp_path / f"d{i}.json", sleep=0.15, hang_after=1 if i == 2 else 0,
                   sampler=sampler, go=go) for i in range(3)]
    _release(go, procs)
    victim = procs[2]
    # Kill the third driver with SIGKILL while it is inside an evaluation, after it finished
    # at least one: its finished ones must stay stored, its running point must be taken over.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        mine = [w for w in (line.split() for line in lines) if w[2] == str(victim.pid)]
        if sum(w[0] == "end" for w in mine) >= 1 and mine and mine[-1][0] == "start":
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    else:
        pytest.fail("the third driver never got to evaluate a point")
    victim.wait()
    _wait(procs[:2])

    ends = _ends(log)
    keys = [k for k, _ in ends]
    assert len(keys) == len(set(keys)), "a point was evaluated twice"
    assert len({pid for _, pid in ends}) == 3, "the work was not shared by the drivers"
    with sqlite3.connect(store) as conn:  # every finished evaluation is stored, once
        stored = conn.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'ok'").fetchone()
    assert stored[0] == len(keys)
    for i in (0, 1):
        got = json.loads((tmp_path / f"d{i}.json").read_text())
        np.testing.assert_allclose(got["X"], ref["X"], atol=1e-9)
        np.testing.assert_allclose(got["F"], ref["F"], atol=1e-9)
    # 24 search points and 3 verified ones, each evaluated once in all.
    assert len(keys) == 27


def test_a_driver_started_later_takes_only_what_is_left(drivers, tmp_path):
    start, log = drivers
    store = tmp_path / "shared.sqlite"
    first = start(store, tmp_path / "a.json", sleep=0.1)
    while len(_ends(log)) < 5:
        assert first.poll() is None
        time.sleep(0.02)
    second = start(store, tmp_path / "b.json", sleep=0.1)
    _wait([first, second])
    keys = [k for k, _ in _ends(log)]
    assert len(keys) == len(set(keys)) == 27
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    np.testing.assert_allclose(a["F"], b["F"], atol=1e-9)
    assert b["n_reused"] >= 5  # what the first driver had done when it started


def test_claims_of_a_process_that_is_gone_are_taken_over_at_once(tmp_path):
    import socket

    a, b = _pair(tmp_path / "s.sqlite", ttl=3600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ghost = f"{socket.gethostname()}:{dead}:abcd1234"
    assert a.claim("search", ["k1"], ghost) == ["k1"]
    assert b.claim("search", ["k1"], "B") == ["k1"]  # no hour-long wait after a crash
    live = f"{socket.gethostname()}:{os.getpid()}:abcd1234"
    assert a.claim("search", ["k2"], live) == ["k2"]
    assert b.claim("search", ["k2"], "B") == []  # a live process keeps its claims


def test_a_result_and_its_claim_change_together(tmp_path):
    """While a driver stores a result, another driver never sees the point both unclaimed
    and not done (it would evaluate it again): the claim's deletion and the result's insert
    commit as one. Checked from a third connection at the moment the insert starts; in
    autocommit the deletion had committed by then (two drivers evaluated the first design
    point twice in test_three_drivers_evaluate_each_point_once_with_one_killed, 1 run in
    about 10)."""
    path = tmp_path / "s.sqlite"
    a, _ = _pair(path)
    assert a.claim("search", ["k1"], "A") == ["k1"]
    seen: list[tuple[bool, bool]] = []

    def watch(statement: str) -> None:
        if statement.startswith("INSERT OR REPLACE INTO evaluations"):
            with sqlite3.connect(path) as other:
                claimed = other.execute("SELECT COUNT(*) FROM claims WHERE key = 'k1'"
                                        ).fetchone()[0] > 0
                done = other.execute("SELECT COUNT(*) FROM evaluations WHERE key = 'k1'"
                                     ).fetchone()[0] > 0
            seen.append((claimed, done))

    a._connect().set_trace_callback(watch)
    a.add(_ev("k1"))
    a._connect().set_trace_callback(None)
    assert seen == [(True, False)]  # still A's claim: nobody may take it
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
        assert other.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 1
