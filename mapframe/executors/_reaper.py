"""Stops a local Ray instance whose driver died without shutting it down.

``ray.init(address="local")`` starts the Ray processes (GCS server, raylet, workers) in the
background; a driver killed with ``kill -9`` leaves them running, and its actors' models in
memory. The ``ray`` executor therefore starts this watchdog beside every local instance it
starts: ``python -m mapframe.executors._reaper DRIVER_PID SESSION_DIR``. It waits for the
driver to exit, then kills every process whose command line names that Ray session (and
nothing else). A driver that shuts down normally stops the watchdog first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie driver is gone for our purpose
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _has_open_file_in(proc: Path, folder: str) -> bool:
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).startswith(folder):
                return True
        except OSError:
            continue
    return False


def session_processes(session_dir: str) -> list[int]:
    """Pids of the processes that name ``session_dir`` on their command line or hold a file
    in it open (Ray's agents rename themselves but keep their logs there), and of all their
    descendants."""
    me = os.getpid()
    named: set[int] = set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
        if session_dir.encode() in cmdline or _has_open_file_in(entry, session_dir):
            named.add(pid)
    found, todo = set(), list(named)
    while todo:
        pid = todo.pop()
        if pid in found or pid == me:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return sorted(found)


def main(argv: list[str]) -> int:
    driver, session_dir = int(argv[0]), argv[1]
    if not session_dir or not Path("/proc").is_dir():
        return 0
    while _alive(driver):
        time.sleep(1.0)
    for _ in range(3):  # workers may still be forking while the first ones die
        pids = session_processes(session_dir)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
