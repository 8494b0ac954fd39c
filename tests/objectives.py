"""Objectives used by CLI and subprocess tests (importable by module path)."""

from __future__ import annotations

import os
import time

import numpy as np


def two_quadratics(C):
    """Two concave tasks with optima at (0.8, 0.2) and (0.2, 0.8)."""
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def slow_logged(C):
    """Like two_quadratics, but slow, and it appends one line per evaluated row to a log."""
    log = os.environ["MAPFRAME_TEST_LOG"]
    out = two_quadratics(C)
    for row in np.atleast_2d(C):
        time.sleep(float(os.environ.get("MAPFRAME_TEST_DELAY", "0.3")))
        with open(log, "a") as fh:
            fh.write(",".join(f"{v!r}" for v in row) + "\n")
    return out


def bug_below_half(C):
    """Three metrics for two tasks (a bug in the evaluator) where the first coefficient is
    below 0.5, at once; elsewhere two_quadratics after 0.3 s, so that a batch elsewhere is
    still running when the bug is reported."""
    C = np.atleast_2d(C)
    if (C[:, 0] < 0.5).any():
        return np.ones((len(C), 3))
    time.sleep(0.3 * len(C))
    return two_quadratics(C)


def kill_self_once(marker) -> None:
    """SIGKILL this process, unless some process already did: the first caller creates the
    file ``marker`` (atomically) and dies; every later caller returns."""
    import signal

    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def search_keys(db) -> list[str]:
    """Keys of the search evaluations stored so far in the SQLite store ``db`` (a study
    running in another process may not have created the file or its table yet)."""
    import sqlite3
    from pathlib import Path

    if not Path(db).exists():
        return []
    try:
        with sqlite3.connect(str(db), timeout=5) as conn:
            rows = conn.execute("SELECT key FROM evaluations WHERE phase='search'").fetchall()
    except sqlite3.OperationalError:
        return []
    return [r[0] for r in rows]


class SlowStudy:
    """A slow two-task study (:func:`slow_logged`) run by the CLI in a subprocess, for the
    tests that kill its driver with SIGKILL and resume it from its SQLite store.

    ``executor``: the YAML ``executor`` entry (``None``: the default). ``sampler``: the
    YAML ``sampler`` (default ``sobol``, one design; ``auto`` is the library's default).
    Every call of the objective appends a line to :attr:`log`.
    """

    def __init__(self, tmp_path, budget: int, delay: float, executor=None,
                 evaluator_batch_size: int | None = None, sampler: str = "sobol") -> None:
        import sys
        from pathlib import Path

        import yaml

        evaluator = {"name": "callable", "function": "objectives:slow_logged",
                     "tasks": ["a", "b"]}
        if evaluator_batch_size is not None:
            evaluator["batch_size"] = evaluator_batch_size
        self.budget = budget
        self.cfg = {"study": {"name": "slow", "budget": budget, "seed": 0, "output": "out"},
                    "evaluator": evaluator, "front_solver": {"name": "nsga2", "n_gen": 30},
                    "sampler": sampler}  # sobol: one design, what a killed driver may lose
        if executor is not None:
            self.cfg["executor"] = executor
        self.dir = Path(tmp_path)
        self.path = self.dir / "slow.yaml"
        self.path.write_text(yaml.safe_dump(self.cfg))
        self.log = self.dir / "calls.log"
        tests = str(Path(__file__).resolve().parent)
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
                    "MAPFRAME_TEST_LOG": str(self.log), "MAPFRAME_TEST_DELAY": str(delay)}
        self.cmd = [sys.executable, "-m", "mapframe.cli", "run", str(self.path), "-q",
                    "--no-plot"]
        self.db = self.dir / "out" / "evaluations.sqlite"
        self.proc = None

    def start(self):
        """Start the study in the background (in its folder)."""
        import subprocess

        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self.proc

    def wait_stored(self, n: int, timeout: float = 120.0) -> None:
        """Wait until ``n`` search evaluations are stored; fail if the study ends first."""
        deadline = time.monotonic() + timeout
        while len(search_keys(self.db)) < n:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, f"the study never stored {n} evaluations"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the driver (nothing of it can run any clean-up) and reap it."""
        import signal

        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        finally:
            self.proc.wait()

    def stop(self) -> None:
        """Kill the driver if it still runs (for ``finally:`` blocks)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def calls(self) -> list[str]:
        """One line per objective call so far."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def rerun(self, executor=None, delay: float | None = None):
        """Run the study again to the end (optionally on another executor, which is not part
        of the store's identity); returns the finished process."""
        import subprocess

        import yaml

        if executor is not None:
            self.cfg["executor"] = executor
            self.path.write_text(yaml.safe_dump(self.cfg))
        env = dict(self.env)
        if delay is not None:
            env["MAPFRAME_TEST_DELAY"] = str(delay)
        return subprocess.run(self.cmd, env=env, cwd=self.dir, capture_output=True, text=True,
                              timeout=300)


def wrong_shape_below_half(C):
    """two_quadratics, but three metrics for two tasks where the first coefficient is below
    0.5 (at once, unlike :func:`bug_below_half`)."""
    C = np.atleast_2d(C)
    return np.ones((len(C), 3)) if (C[:, 0] < 0.5).any() else two_quadratics(C)


def good_bad_x_y_jobs() -> list:
    """Four jobs for an executor that sends them out as two batches of two: ``good`` then
    ``bad`` (where :func:`wrong_shape_below_half` breaks its contract), and ``x``, ``y``."""
    from mapframe.executors.base import Job

    return [Job("good", np.array([0.9, 0.1])), Job("bad", np.array([0.1, 0.9])),
            Job("x", np.array([0.8, 0.2])), Job("y", np.array([0.7, 0.3]))]
