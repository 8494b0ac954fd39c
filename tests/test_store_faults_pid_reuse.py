"""A driver restarted under the PID of the driver it replaces (a container restarted: its
driver is PID 1 again) takes over the dead driver's claims at once, not after claim_ttl."""

from __future__ import annotations

import os
import socket
import time

import mapframe.storage.base as base
from mapframe.storage import SQLiteStore
from mapframe.storage.base import driver_id, driver_is_gone


def _pair(path):
    a, b = SQLiteStore(path, claim_ttl=3600), SQLiteStore(path, claim_ttl=3600)
    a.open("s", {"x": 1})
    b.open("s", {"x": 1})
    return a, b


def test_claims_of_an_earlier_process_with_this_pid_are_taken_over_at_once(tmp_path,
                                                                          monkeypatch):
    a, b = _pair(tmp_path / "s.sqlite")
    # the driver that ran before the restart: this host, this PID, its own random part
    ghost = f"{socket.gethostname()}:{os.getpid()}:0badf00d"
    assert a.claim("search", ["k1", "k2"], ghost) == ["k1", "k2"]
    mine = driver_id()
    # this process started after the ghost last renewed its claims
    monkeypatch.setattr(base, "_STARTED_AT", time.time() + 1, raising=False)
    start = time.monotonic()
    assert b.claim("search", ["k1", "k2"], mine) == ["k1", "k2"]
    assert time.monotonic() - start < 5  # no wait for claim_ttl (an hour here)
    a.close()
    b.close()


def test_this_processs_own_drivers_keep_their_claims(tmp_path, monkeypatch):
    a, b = _pair(tmp_path / "s.sqlite")
    first, second = driver_id(), driver_id()
    assert a.claim("search", ["k1"], first) == ["k1"]
    monkeypatch.setattr(base, "_STARTED_AT", time.time() + 1, raising=False)
    assert not driver_is_gone(first)
    assert b.claim("search", ["k1"], second) == []  # a live driver of this process
    # an owner with this PID renewed since this process started is taken as live too
    monkeypatch.undo()
    assert not driver_is_gone(f"{socket.gethostname()}:{os.getpid()}:12345678", time.time())
    a.close()
    b.close()
