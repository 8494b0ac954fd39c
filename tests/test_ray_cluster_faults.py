"""A Ray cluster that dies under a running study (issue 21, item 14).

The test starts its own Ray head with ``ray start`` (its own temp folder and port), runs a
slow study on it from the CLI, kills every process of that head mid-study, and checks that
the driver stops within seconds with a one-line error saying what is stored; without the
check Ray's core aborted the driver about a minute later with nothing useful.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from objectives import SlowStudy, search_keys

pytest.importorskip("ray")


from mapframe.executors._reaper import session_processes

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_session(temp: Path, spare: int | None = None) -> None:
    """SIGKILL every process of the Ray head started in ``temp`` (the driver, which holds
    files there open too, is spared)."""
    for session in temp.glob("session_*"):
        if session.is_symlink():
            continue
        for pid in session_processes(str(session)):
            if pid == spare:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_head(env: dict[str, str], temp: Path, port: int) -> None:
    """`ray start --head` on ``port`` with one CPU, its files under ``temp``; skips when the
    ray command is not installed beside this Python."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed beside this Python")
    started = subprocess.run(
        [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]


def test_a_cluster_that_dies_mid_study_stops_the_driver_with_one_line(tmp_path):
    # A short folder: Ray's socket paths must stay under the 107-character limit.
    temp = Path(tempfile.mkdtemp(prefix="mfray", dir="/tmp"))
    port = _free_port()
    study = SlowStudy(tmp_path, budget=60, delay=1.0, evaluator_batch_size=1,
                      executor={"name": "ray", "address": f"127.0.0.1:{port}", "workers": 1})
    # The driver joins a cluster that `ray start` set up with token authentication.
    study.env["RAY_AUTH_MODE"] = "token"
    try:
        _start_head(study.env, temp, port)
        study.start()
        study.wait_stored(3, timeout=180)
        t0 = time.monotonic()
        _kill_session(temp, spare=study.proc.pid)
        rc = study.proc.wait(timeout=100)  # Ray itself would abort the driver after ~56 s
        took = time.monotonic() - t0
        err = study.proc.stderr.read().decode()
        last = [line for line in err.splitlines() if line.startswith("mapframe: error:")]
        assert rc == 2 and last, err[-3000:]
        assert "the Ray cluster stopped answering" in last[-1]
        stored = len(search_keys(study.db))
        assert f"{stored} evaluations of study 'slow' are stored" in last[-1]
        assert "run the study again to resume" in last[-1]
        assert took < 45
    finally:
        study.stop()
        _kill_session(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_cluster_too_small_starts_the_actors_that_fit_and_says_so(tmp_path):
    """workers: 3 on a one-CPU cluster waited for ever after one warning; now the one actor
    that fits runs the study, and the warning says so. num_gpus: 1 on a cluster without
    GPUs is an error at once, naming what the cluster has."""
    temp = Path(tempfile.mkdtemp(prefix="mfray", dir="/tmp"))
    port = _free_port()
    study = SlowStudy(tmp_path, budget=6, delay=0.0,
                      executor={"name": "ray", "address": f"127.0.0.1:{port}", "workers": 3})
    study.env["RAY_AUTH_MODE"] = "token"
    try:
        _start_head(study.env, temp, port)
        done = study.rerun()
        assert done.returncode == 0, done.stderr[-3000:]
        assert "starting the 1 that fit" in done.stderr
        assert len(search_keys(study.db)) == 6
        study.cfg["study"]["budget"] = 8  # something new to evaluate: the executor starts
        done = study.rerun(executor={"name": "ray", "address": f"127.0.0.1:{port}",
                                     "num_gpus": 1})
        assert done.returncode == 2
        assert "not one actor fits" in done.stderr and "cluster has 0" in done.stderr
    finally:
        _kill_session(temp)
        shutil.rmtree(temp, ignore_errors=True)
