"""The Ray cluster the ``ray`` executor runs on: where it is, whether it answers, what it holds.

- :func:`parse_address` and :func:`resolve_auto`: what an ``address`` setting names;
- :func:`probe`: a reachability check with a gRPC (HTTP/2) handshake, so that a wrong address
  fails within seconds rather than after ``ray.init``'s minutes of retries;
- :func:`connect` and :func:`release`: ``ray.init`` with those checks, shared by the
  concurrent studies of a process (the last one shuts Ray down and puts back the environment
  variables and signal handlers ``ray.init`` changed), and the watchdog that stops a local
  instance if the driver is killed;
- :func:`gpus_per_actor`, :func:`actors_to_fill` and :func:`check_fits`: GPU detection and
  how many actors the cluster's resources hold.

Ray is never imported here; the caller passes the ``ray`` module in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mapframe.errors import ConfigError, MapframeError, MapframeWarning
from mapframe.executors.base import call_with_deadline
from mapframe.executors.ray_errors import first_line

__all__ = [
    "HOW_TO_FIX",
    "Lease",
    "Target",
    "actors_to_fill",
    "check_fits",
    "connect",
    "gpus_per_actor",
    "kept",
    "parse_address",
    "probe",
    "release",
    "resolve_auto",
    "start_reaper",
    "users",
]

#: ``(kind, host, port)``; kind is ``local``, ``auto``, ``gcs`` or ``client``.
Target = tuple[str, str | None, int | None]

#: An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its
#: client server both are) answers with a SETTINGS frame of its own.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x04

HOW_TO_FIX = (
    "start a cluster with `ray start --head` (it prints the address to use), check the host "
    "and port, or leave address out to run a local Ray instance"
)


def parse_address(address: object) -> Target:
    """``(kind, host, port)``; kind is ``local``, ``auto``, ``gcs`` or ``client``."""
    if address is None:
        return "local", None, None
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(
            f"address must be 'auto', 'host:port' or 'ray://host:port' (or left out for a "
            f"local Ray instance), got {address!r}"
        )
    text = address.strip()
    if text == "auto":
        return "auto", None, None
    kind = "gcs"
    if text.startswith("ray://"):
        kind, text = "client", text[len("ray://"):]
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        default = 10001 if kind == "client" else 6379
        raise ConfigError(
            f"ray address {address!r} is not 'host:port' or 'ray://host:port' (e.g. "
            f"'{host or text or 'head-node'}:{default}'); use 'auto' for the cluster this "
            "machine belongs to, or leave address out for a local Ray instance"
        )
    return kind, host, int(port_text)


def resolve_auto() -> tuple[str, int] | None:
    """Where ``address="auto"`` leads (``RAY_ADDRESS`` or the last ``ray start`` here), to
    probe it first; ``None`` when unknown (``ray.init`` then reports it)."""
    addr = os.environ.get("RAY_ADDRESS") or None
    if addr is None:
        try:
            from ray._private.utils import read_ray_address  # private: best effort only

            addr = read_ray_address(None)
        except Exception:
            return None
    if not addr or addr == "auto":
        return None
    try:
        _, host, port = parse_address(addr)
    except ConfigError:
        return None
    return (host, port) if host is not None and port is not None else None


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe(host: str, port: int, address: str | None, timeout: float) -> None:
    """Fail fast where ``ray.init`` would retry for minutes: nothing listening at the
    address, or something other than a Ray (gRPC) server. ``address`` is the setting as the
    user gave it, for the message."""
    at = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise MapframeError(
            f"cannot reach the Ray cluster at {address!r} ({at}: {exc}); {HOW_TO_FIX}"
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        sock.close()
        return  # a TLS server does not answer a plain-text preface
    try:
        with sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)
            head = _recv(sock, 9)
    except OSError:
        head = b""
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        raise MapframeError(
            f"{at} (address {address!r}) is reachable but does not answer like a "
            f"Ray cluster (no gRPC reply within {timeout:g} s): check the "
            "port (the head node's GCS port, 6379 by default, or 10001 for ray://); "
            f"{HOW_TO_FIX}"
        )


@dataclass(eq=False)
class Lease:
    """One executor's use of the Ray connection mapframe initialised in this process (a local
    instance or a cluster connection). Give it back with :func:`release`."""

    owner: _Owned
    released: bool = False


@dataclass(eq=False)
class _Owned:
    """The Ray connection mapframe initialised in this process, and how many executors use
    it: the last :func:`release` shuts it down and puts back what ``ray.init`` changed."""

    target: Target
    address: str | None
    init: dict[str, Any]
    users: int = 0
    reaper: subprocess.Popen[bytes] | None = None
    env: dict[str, str | None] = field(default_factory=dict)  # key -> value before ray.init
    env_set: dict[str, str] = field(default_factory=dict)  # key -> value ray.init gave it
    handlers: dict[int, Any] = field(default_factory=dict)  # signal -> handler before
    handlers_set: dict[int, Any] = field(default_factory=dict)  # signal -> Ray's handler
    ray: Any = None  # the module that initialised it (shuts it down at a kept() block's end)


#: Serialises :func:`connect` and :func:`release` across the threads of this process (two
#: studies run concurrently by a service), so that one Ray instance is started, shared and
#: shut down once, by the last study using it.
_LOCK = threading.RLock()
_owned: _Owned | None = None
#: Open :func:`kept` blocks: while any is open, the last :func:`release` leaves mapframe's
#: Ray connection up (no user) for the next executor to :func:`connect` to.
_holds = 0
#: Environment variables as they were before mapframe first imported Ray (``import ray``
#: sets ``RAY_CLIENT_MODE=0``); put back with the rest when mapframe's Ray is shut down.
_before_import: dict[str, str | None] = {}
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None))
                 if s is not None)


def connect(ray: Any, target: Target, address: str | None, init: Mapping[str, Any],
            timeout: float) -> Lease | None:
    """Initialise Ray for the executor, unless this process already has.

    Returns a :class:`Lease` when the connection is mapframe's (started by this call, or by
    another executor of this process still running: concurrent studies share it), to be
    given back with :func:`release`; ``None`` when the user initialised Ray themselves (not
    ours to shut down). Call it from the executor's ``start`` (its warning points at
    ``start``'s caller).
    """
    global _owned
    with _LOCK:
        owned = _owned
        if owned is not None and not ray.is_initialized():
            _forget(owned)  # shut down behind mapframe's back (ray.shutdown()): start afresh
            owned = None
        if owned is not None and owned.users == 0 and not _shareable(owned, target, address,
                                                                      init):
            _shut_down(ray, owned)  # kept by a keep_alive() block, but set up otherwise
            owned = None
        if owned is not None:
            _check_shareable(owned, target, address, init)
            owned.users += 1
            return Lease(owned)
        if ray.is_initialized():
            ignored = [f"{k}=" for k, v in (("address", target[0] not in ("local", "auto")),
                                             ("init", bool(init))) if v]
            if ignored:
                warnings.warn(
                    "Ray is already initialised in this process: the ray executor uses that "
                    f"connection and ignores {' and '.join(ignored)} (call ray.shutdown() "
                    "first to use them)", MapframeWarning, stacklevel=3)
            return None
        owned = _Owned(target, address, dict(init), ray=ray)
        _init(ray, owned, timeout)
        owned.users = 1
        _owned = owned
        return Lease(owned)


def release(ray: Any, lease: Lease) -> None:
    """Give back an executor's use of mapframe's Ray connection; the last user shuts it down,
    stops its watchdog and puts back the environment variables and signal handlers
    ``ray.init`` changed."""
    global _owned
    with _LOCK:
        owned = lease.owner
        if lease.released or owned.users <= 0:
            return  # given back already
        lease.released = True
        owned.users -= 1
        if owned.users or (_holds and _owned is owned):
            return
        _shut_down(ray, owned)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """While the block lasts, mapframe's Ray connection (a local instance, or a cluster
    connection it initialised) stays up when its last executor releases it, for the next
    executor that connects alike (:meth:`RayExecutor.keep_alive
    <mapframe.executors.ray_executor.RayExecutor.keep_alive>`); the last block to end shuts
    it down unless an executor still uses it (then that executor's release does)."""
    global _holds
    with _LOCK:
        _holds += 1
    try:
        yield
    finally:
        with _LOCK:
            _holds -= 1
            owned = _owned
            if not _holds and owned is not None and owned.users == 0:
                _shut_down(owned.ray, owned)


def _shut_down(ray: Any, owned: _Owned) -> None:
    try:
        if _owned is owned:
            ray.shutdown()
    finally:
        _forget(owned)


def users() -> int:
    """How many executors of this process use mapframe's Ray connection (0: none open)."""
    with _LOCK:
        return _owned.users if _owned is not None else 0


def _shareable(owned: _Owned, target: Target, address: str | None,
               init: Mapping[str, Any]) -> bool:
    same_place = (target == owned.target and (target[0] != "auto" or address == owned.address))
    return same_place and (not init or dict(init) == owned.init)


def _check_shareable(owned: _Owned, target: Target, address: str | None,
                     init: Mapping[str, Any]) -> None:
    if _shareable(owned, target, address, init):
        return
    where = ("a local Ray instance" if owned.target[0] == "local"
             else f"the Ray cluster at {owned.address!r}")
    raise ConfigError(
        f"another ray study of this process runs on {where} that mapframe started with "
        f"init={owned.init!r}; concurrent ray studies of one process share it: give them the "
        f"same address and init (or no init), not address={address!r}, init={dict(init)!r}")


def _forget(owned: _Owned) -> None:
    """Stop the watchdog and put back what ``ray.init`` changed (after Ray is shut down)."""
    global _owned
    if _owned is owned:
        _owned = None
    owned.users = 0
    reaper, owned.reaper = owned.reaper, None
    if reaper is not None:  # Ray stopped cleanly: the watchdog has nothing to do
        with contextlib.suppress(OSError):
            reaper.kill()
        reaper.wait()
    _restore(owned)


def before_import() -> None:
    """Call before mapframe imports Ray: notes the environment variables ``import ray``
    sets, so that the last study on mapframe's Ray puts them back."""
    if "ray" not in sys.modules:
        _before_import.setdefault("RAY_CLIENT_MODE", os.environ.get("RAY_CLIENT_MODE"))


def _snapshot(owned: _Owned) -> None:
    owned.env = {k: os.environ.get(k) for k in os.environ}
    for key, value in _before_import.items():  # ``import ray`` set it, not the program
        if value is None and os.environ.get(key) == "0":
            owned.env.pop(key, None)
    if threading.current_thread() is threading.main_thread():
        owned.handlers = {s: signal.getsignal(s) for s in _SIGNALS}


def _note_changes(owned: _Owned) -> None:
    """What ``ray.init`` changed: environment variables and (main thread) signal handlers."""
    before, owned.env = owned.env, {}
    for key, value in os.environ.items():
        if before.get(key) != value:
            owned.env[key], owned.env_set[key] = before.get(key), value
    for key in before:
        if key not in os.environ:
            owned.env[key] = before[key]
    handlers, owned.handlers = owned.handlers, {}
    for sig, handler in handlers.items():
        now = signal.getsignal(sig)
        if now is not handler:
            owned.handlers[sig], owned.handlers_set[sig] = handler, now


def _restore(owned: _Owned) -> None:
    """Put back the environment variables and signal handlers that ``ray.init`` changed and
    nobody changed since (a later change is the program's own)."""
    env, owned.env = owned.env, {}
    for key, value in env.items():
        if key in owned.env_set and os.environ.get(key) != owned.env_set[key]:
            continue
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    handlers, owned.handlers = owned.handlers, {}
    if threading.current_thread() is threading.main_thread():
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is owned.handlers_set.get(sig) and handler is not None:
                with contextlib.suppress(ValueError, TypeError, OSError):
                    signal.signal(sig, handler)


def _init(ray: Any, owned: _Owned, timeout: float) -> None:
    """``ray.init`` for ``owned``; an error or an interrupt (Ctrl-C) while it starts a local
    instance shuts that partial instance down (its processes included) before it goes on."""
    kind, host, port = owned.target
    address = owned.address
    kwargs: dict[str, Any] = dict(owned.init)
    if kind == "local":
        kwargs = {"include_dashboard": False, **kwargs}
    else:
        if kind == "auto":
            resolved = resolve_auto()
            if resolved is not None:
                host, port = resolved
        if host is not None and port is not None:
            probe(host, port, address, timeout)
    children = _children()
    _snapshot(owned)
    try:
        try:
            if kind == "local":
                ray.init(address="local", **kwargs)
            else:
                _bounded_init(ray, address, kwargs, timeout)
        finally:
            _note_changes(owned)
        if kind == "local":
            owned.reaper = start_reaper(ray)
    except BaseException as exc:
        _abandon(ray, owned, children)
        if isinstance(exc, ConnectionError):
            token = ("" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else
                     "; a cluster started by `ray start` with token authentication (the "
                     "default of recent Ray, which then logs InvalidAuthToken) admits this "
                     "driver only with RAY_AUTH_MODE=token in its environment (the token "
                     "comes from ~/.ray/auth_token or RAY_AUTH_TOKEN)")
            raise MapframeError(
                f"cannot connect to the Ray cluster at {address!r}: {first_line(exc)}; "
                f"{HOW_TO_FIX}; if the cluster is up, check that this machine may join it "
                "(the same Ray and Python versions, and the cluster's authentication token "
                f"where it uses one){token}"
            ) from None
        if isinstance(exc, (TypeError, ValueError)):
            raise ConfigError(f"ray.init rejected init={owned.init!r}: {exc}") from None
        raise


def _abandon(ray: Any, owned: _Owned, children: set[int]) -> None:
    """After a failed or interrupted ``ray.init``: shut down what it started (``ray.shutdown``
    stops the processes Ray registered; those it had started but not yet registered are
    killed here), stop the watchdog and put back what it changed."""
    with contextlib.suppress(Exception):
        ray.shutdown()
    for pid in _children() - children:
        if _is_ray_process(pid):
            _kill_tree(pid)
    _forget(owned)


def _children() -> set[int]:
    """Pids of this process's children (Linux; empty elsewhere)."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
    return pids


def _is_ray_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ")
    except OSError:
        return False
    return b"ray" in cmdline and b"mapframe.executors._reaper" not in cmdline


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (Ray's workers are its raylet's children)."""
    tree, seen = [pid], set()
    while tree:
        p = tree.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError), open(f"/proc/{p}/task/{p}/children") as fh:
            tree.extend(int(c) for c in fh.read().split())
    for p in seen:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)


def _bounded_init(ray: Any, address: str | None, kwargs: Mapping[str, Any],
                  timeout: float) -> None:
    """``ray.init(address=...)`` given up after ``timeout`` seconds: Ray retries a port that
    speaks gRPC but is not the head's GCS (a raylet's, another service's) for over 20 s
    whatever ``connect_timeout`` says, then fails with a generic message."""
    done, _ = call_with_deadline(lambda: ray.init(address=address, **kwargs), timeout,
                                 "mapframe-ray-connect")
    if not done:
        raise MapframeError(
            f"no Ray cluster answered at {address!r} within {timeout:g} s (connect_timeout): "
            "the port speaks gRPC but is not a head node's GCS port; give the head's address "
            "as `ray start --head` printed it (port 6379 by default), or raise "
            "connect_timeout for a slow network")


def start_reaper(ray: Any) -> subprocess.Popen[bytes] | None:
    """A watchdog that stops the local Ray instance this driver started if the driver is
    killed before it can (see :mod:`mapframe.executors._reaper`); ``None`` off Linux or
    when Ray does not say where its session lives."""
    if not os.path.isdir("/proc"):
        return None
    try:
        session = str(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # a private API: without it, no watchdog
        return None
    if not session:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "mapframe.executors._reaper", str(os.getpid()), session],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


# -- resources ----------------------------------------------------------------------------
def gpus_per_actor(num_gpus: float | str, resources: Mapping[str, float]) -> float:
    """GPUs each actor reserves: ``num_gpus``, or for ``"auto"`` 1 when the cluster has GPUs."""
    if num_gpus == "auto":
        return 1.0 if resources.get("GPU", 0.0) > 0 else 0.0
    return float(num_gpus)


def actors_to_fill(resources: Mapping[str, float], num_cpus: float, gpus: float) -> int:
    """How many actors of ``num_cpus`` CPUs and ``gpus`` GPUs the cluster holds (at least 1)."""
    counts = []
    if num_cpus > 0:
        counts.append(int(resources.get("CPU", 0.0) // num_cpus))
    if gpus > 0:
        counts.append(int(resources.get("GPU", 0.0) // gpus))
    if not counts:
        counts.append(int(resources.get("CPU", 1.0)))
    return max(1, min(counts))


def check_fits(resources: Mapping[str, float], n_actors: int, num_cpus: float, gpus: float,
               own_local: bool, wait: bool = False) -> int:
    """How many of ``n_actors`` actors to start; says so when they need more than the
    cluster has. A local instance this executor started (``own_local``) cannot grow: a
    ``ConfigError``. Elsewhere, with ``wait`` (an autoscaler will add nodes), a warning and
    all of them (they wait for room); without, the actors that fit, with a warning, or a
    ``ConfigError`` when none fits (Ray would wait for ever, saying nothing).
    Call it from the executor's ``start``."""
    short = [
        f"{need:g} {res} ({n_actors} x {per:g}) but the cluster has "
        f"{resources.get(res, 0.0):g}"
        for res, per in (("CPU", float(num_cpus)), ("GPU", gpus))
        if (need := per * n_actors) > resources.get(res, 0.0) + 1e-9
    ]
    if not short:
        return n_actors
    msg = f"ray executor: {n_actors} actor(s) need {'; '.join(short)}"
    if own_local:
        raise ConfigError(
            f"{msg}: lower workers, num_cpus or num_gpus, or give the local instance more "
            "with init={'num_cpus': ..., 'num_gpus': ...}"
        )
    if wait:
        warnings.warn(f"{msg}; the actors wait until the cluster has room "
                      "(wait_for_resources: true)", MapframeWarning, stacklevel=3)
        return n_actors
    fits = [int((resources.get(res, 0.0) + 1e-9) // per)
            for res, per in (("CPU", float(num_cpus)), ("GPU", gpus)) if per > 0]
    n_fit = min(fits) if fits else n_actors
    if n_fit < 1:
        raise ConfigError(
            f"{msg}, so not one actor fits: lower num_cpus or num_gpus, add nodes, or set "
            "wait_for_resources: true if an autoscaler adds them")
    warnings.warn(f"{msg}; starting the {n_fit} that fit (set wait_for_resources: true to "
                  "wait for the cluster to grow instead)", MapframeWarning, stacklevel=3)
    return n_fit
