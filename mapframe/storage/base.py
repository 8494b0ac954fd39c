"""The :class:`EvaluationStore` component: where every evaluation is kept as it finishes."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from mapframe.component import Component
from mapframe.errors import SetupMismatchError, StoreError
from mapframe.history import Evaluation

__all__ = ["EvaluationStore", "driver_id", "driver_is_gone", "fingerprint_changes",
           "fingerprint_diff", "retire_driver"]


#: The driver ids this process made (:func:`driver_id`) whose session is still open
#: (:func:`retire_driver` removes one when it closes or is garbage collected: a long-lived
#: process runs many studies, and the set holds only the live ones). A retired driver's
#: claims are taken over at once (a study whose release of its claims failed, say on a locked
#: store, must not hold up the next study of this process for ``claim_ttl``): its id carries
#: :data:`_PROCESS_TOKEN`, so it is known as this process's own. An owner with this host and
#: this process's PID without that token, whose claims were last renewed before this process
#: started, belongs to an earlier process that had the same PID (a container restarted, its
#: driver PID 1 again), which is gone.
_LIVE_DRIVERS: set[str] = set()
_LIVE_DRIVERS_LOCK = threading.Lock()
#: Begins the random part of every driver id this process makes (new in a forked child too:
#: see :func:`_process_token`).
_PROCESS_TOKEN: tuple[int, str] = (os.getpid(), uuid.uuid4().hex[:8])
#: When this process started (at the latest): a claim renewed before it is not one of its own.
_STARTED_AT = time.time()


def _process_token() -> str:
    """This process's token (a forked child, whose PID differs, draws its own)."""
    global _PROCESS_TOKEN
    if _PROCESS_TOKEN[0] != os.getpid():
        _PROCESS_TOKEN = (os.getpid(), uuid.uuid4().hex[:8])
    return _PROCESS_TOKEN[1]


def driver_id() -> str:
    """A new name for one driver in a store's claims: ``host:pid:token-random``."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{_process_token()}-{uuid.uuid4().hex[:8]}"
    with _LIVE_DRIVERS_LOCK:
        _LIVE_DRIVERS.add(owner)
    return owner


def retire_driver(owner: str) -> None:
    """Mark ``owner`` (a :func:`driver_id` of this process) as ended: whatever claims it
    left in a store (its release failed) are taken over at once by this process's next
    driver, as those of a driver whose process is gone."""
    with _LIVE_DRIVERS_LOCK:
        _LIVE_DRIVERS.discard(owner)


def driver_is_gone(owner: str, heartbeat: float | None = None) -> bool:
    """Whether ``owner`` (a :func:`driver_id`) was a process on this host that no longer
    runs, or a driver of this process whose session ended (:func:`retire_driver`): its
    claims can be taken over at once instead of after ``claim_ttl``. An owner with this
    process's PID that this process did not make, whose claim was last renewed
    (``heartbeat``, a ``time.time()``; ``None``: unknown) before this process started, was
    an earlier process with the same PID (a restarted container's PID 1): gone too."""
    host, _, rest = owner.partition(":")
    pid_text, _, random_part = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        if random_part.startswith(_process_token() + "-"):
            with _LIVE_DRIVERS_LOCK:
                return owner not in _LIVE_DRIVERS
        return heartbeat is None or heartbeat < _STARTED_AT
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Top-level fields whose values differ between two study fingerprints.

    Fields added to the fingerprint since a study was stored are left out of the comparison
    with it (it resumes as it was checked then): a study stored before functions defined in
    a script (``__main__:...``) were digested has no ``code`` for its objective (it is
    compared by the function's name), one stored before in-memory task vectors were
    digested no ``digest`` for them (compared by their norms).

    In-memory task vectors (``merge.in_memory``) are known by the SHA-256 ``digest`` of their
    bytes when both fingerprints carry one, and their squared norms are left out: they are
    float sums whose last digits depend on how they were summed (torch's thread count, a
    float32 sum in an older mapframe), so the same weights gave different norms and the
    study was refused. Without a digest on either side the norms are compared with a
    relative tolerance (:data:`NORM_RTOL`). Every other field is compared exactly.
    """
    old, new = _comparable(old, new)
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any],
                        width: int = 40) -> list[str]:
    """What differs between two study fingerprints, for people: one entry per differing
    value, as ``path 'old' -> 'new'`` (``evaluator.function 'objs:f' -> 'objs:g'``,
    ``tasks[1].name 'b' -> 'c'``), each value shortened to ``width`` characters; a value
    only one side has shows ``(none)`` on the other. Compared as :func:`fingerprint_diff`
    compares them (the same fields differ)."""
    old, new = _comparable(old, new)
    out: list[str] = []
    for key in fingerprint_diff(old, new):
        _changes(key, old.get(key, _ABSENT), new.get(key, _ABSENT), width, out)
    return out


#: A value one of two fingerprints does not have (:func:`fingerprint_changes`).
_ABSENT = object()


def _changes(path: str, a: Any, b: Any, width: int, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _changes(f"{path}.{key}", a.get(key, _ABSENT), b.get(key, _ABSENT), width, out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _changes(f"{path}[{i}]", x, y, width, out)
        return
    if _dumps(a) != _dumps(b):
        out.append(f"{path} {_short(a, width)} -> {_short(b, width)}")


def _dumps(value: Any) -> str:
    return "" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, width: int) -> str:
    """``value`` on one line, at most ``width`` characters (``(none)`` when absent)."""
    if value is _ABSENT:
        return "(none)"
    text = repr(value) if isinstance(value, str) else _dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


#: Relative tolerance of squared norms of in-memory task vectors compared without a digest
#: (:func:`fingerprint_diff`): a float32 sum (mapframe before the digest) and a float64 one
#: of the same weights agree to about 1e-7; different weights practically never do.
NORM_RTOL = 1e-6
#: The fields of ``TaskVectors.fingerprint()`` that are float sums (see :data:`NORM_RTOL`).
_NORM_FIELDS = ("base_sq_norm", "task_sq_norms")


def _comparable(old: dict[str, Any],
                new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``old`` and ``new`` as :func:`fingerprint_diff` compares them: without the fields
    ``old`` predates, and the in-memory task vectors' norms left out or matched within
    tolerance."""
    evaluator, old_evaluator = new.get("evaluator"), old.get("evaluator")
    if (isinstance(old_evaluator, dict) and isinstance(evaluator, dict)
            and str(old_evaluator.get("function", "")).startswith("__main__:")
            and "code" not in old_evaluator):
        new = {**new, "evaluator": {k: v for k, v in evaluator.items() if k != "code"}}
    elif (isinstance(old_evaluator, dict) and isinstance(evaluator, dict)
          and old_evaluator.get("code") != evaluator.get("code")):
        from mapframe.evaluators.identity import legacy_digest_matches

        if legacy_digest_matches(old_evaluator.get("code"), evaluator.get("code")):
            # the same function's code digest as an earlier mapframe computed it
            new = {**new, "evaluator": {**evaluator, "code": old_evaluator["code"]}}
    merge, old_merge = new.get("merge"), old.get("merge")
    if isinstance(old_merge, dict) and isinstance(merge, dict):
        weights, old_weights = merge.get("in_memory"), old_merge.get("in_memory")
        if isinstance(old_weights, dict) and isinstance(weights, dict):
            old_weights, weights = _comparable_weights(old_weights, weights)
            old = {**old, "merge": {**old_merge, "in_memory": old_weights}}
            new = {**new, "merge": {**merge, "in_memory": weights}}
    return old, new


def _comparable_weights(old: dict[str, Any],
                        new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two ``TaskVectors.fingerprint()`` dicts as :func:`fingerprint_diff` compares them."""
    if "digest" in old and "digest" in new:  # the bytes decide; the norms are for people
        return ({k: v for k, v in old.items() if k not in _NORM_FIELDS},
                {k: v for k, v in new.items() if k not in _NORM_FIELDS})
    old = {k: v for k, v in old.items() if k != "digest"}
    new = {k: v for k, v in new.items() if k != "digest"}
    for field in _NORM_FIELDS:
        if field in old and field in new and _close(old[field], new[field]):
            new[field] = old[field]
    return old, new


def _close(a: Any, b: Any) -> bool:
    """Whether two norms (numbers, or lists of them of one length) agree within
    :data:`NORM_RTOL`."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if number(a) and number(b):
        return math.isclose(a, b, rel_tol=NORM_RTOL)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(number(x) and number(y) and math.isclose(x, y, rel_tol=NORM_RTOL)
                   for x, y in zip(a, b))
    return False


#: Guards the check-and-take of a store instance's holder (see ``EvaluationStore._opening``).
_HOLDERS_LOCK = threading.Lock()


def _thread_alive(ident: int) -> bool:
    return any(t.ident == ident for t in threading.enumerate())


class EvaluationStore(Component):
    """Persists evaluations so that nothing is lost and nothing is evaluated twice.

    Call order::

        store.open(study_name, fingerprint)   # create, or reopen and check the setup matches
        store.load()                          # evaluations stored by earlier runs
        store.add(evaluation)                 # after each evaluation; durable on return
        store.set_meta(key, value)            # study-level JSON values (results, settings)
        store.close()

    ``fingerprint`` describes what gives the metrics their meaning (tasks, evaluator, merge
    strategy, checkpoints). Reopening a study whose fingerprint differs raises
    :class:`~mapframe.errors.StoreError` naming the differing fields, so results of one setup
    are never reused for another. Evaluations are keyed by (phase, coefficient key): adding
    the same key again replaces the old row (used to retry failed evaluations).

    A store keeps every field of an :class:`~mapframe.history.Evaluation`, its
    :attr:`~mapframe.history.Evaluation.reason` included, so :meth:`load` returns evaluations
    equal field by field to those given to :meth:`add`. :attr:`location` says where the
    evaluations live (a file path, a URL) or is ``None`` when they live only in this process.

    **Several drivers on one study.** A store that other processes can open (``shared`` is
    true) is also where drivers running the same study coordinate, as Optuna's storage does
    for trials: a driver claims (:meth:`claim`) points before evaluating them, skips points another
    live driver holds, reads their results with :meth:`stored` when they land, keeps its own
    claims alive with :meth:`renew_claims` and drops them with :meth:`release_claims`. A claim
    whose owner stopped renewing it for ``claim_ttl`` seconds (a killed driver) is taken over.
    The defaults suit a store only one process uses: every point can be claimed.

    **One study, one thread per instance.** An instance is open for one study in one thread
    at a time (the thread that opened it; reopening from that thread switches study, as
    sequential studies do). Opening it from another thread while it is open there, or using
    it from a thread that did not open it, raises a one-line
    :class:`~mapframe.errors.StoreError`: two concurrent studies on one instance would
    otherwise read and write each other's rows. A thread that ended without closing it does
    not hold it. Built-in stores do this with :meth:`_opening` (around :meth:`open`),
    :meth:`_check_thread` (in every other method) and :meth:`_release` (in :meth:`close`).
    """

    kind: ClassVar[str] = "storage"
    #: Whether other processes can open this store (then drivers coordinate through claims).
    shared: ClassVar[bool] = False
    #: Seconds after which an owner's claims count as abandoned unless renewed.
    claim_ttl: float = 60.0

    @property
    def location(self) -> str | None:
        """Where the evaluations are kept, for people to find them again (a file path, a
        database URL), or ``None`` when they are kept in this process only. Default: ``None``.
        """
        return None

    @abstractmethod
    def open(self, study_name: str, fingerprint: dict[str, Any]) -> None:
        """Create or reopen the study ``study_name``."""

    @abstractmethod
    def load(self) -> list[Evaluation]:
        """All evaluations stored for the open study, in insertion order."""

    @abstractmethod
    def add(self, evaluation: Evaluation) -> None:
        """Store one evaluation; it must be durable when this returns."""

    @abstractmethod
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-compatible study-level value."""

    @abstractmethod
    def get_meta(self, key: str, default: Any = None) -> Any:
        """Read a value stored with :meth:`set_meta`."""

    def close(self) -> None:
        """Release the store. Default: no-op."""

    def claim(self, phase: str, keys: Sequence[str], owner: str,
              limit: int | None = None) -> list[str]:
        """Claim for ``owner`` up to ``limit`` of ``keys`` (in their order) that are neither
        stored (other than as failed) nor held by another owner whose claim is alive; returns
        the keys claimed. Default: the first ``limit`` keys (no other driver can exist)."""
        return list(keys)[:limit]

    def renew_claims(self, owner: str) -> None:
        """Mark ``owner``'s claims as alive now. Default: no-op. May be called from another
        thread than the one that opened the store."""

    def release_claims(self, owner: str) -> None:
        """Drop every claim ``owner`` holds. Default: no-op."""

    def stored(self, phase: str, keys: Sequence[str]) -> dict[str, Evaluation]:
        """The evaluations (other than failed ones) stored in ``phase`` for ``keys``, by key,
        including those other drivers stored since :meth:`load`. Default: from :meth:`load`."""
        wanted = set(keys)
        return {e.key: e for e in self.load()
                if e.phase == phase and e.key in wanted and e.status != "failed"}

    # -- one study, one thread per instance ------------------------------------------------
    def _holder_now(self) -> tuple[int, str] | None:
        """``(thread ident, study name)`` of the live thread that holds this instance open."""
        held: tuple[int, str] | None = self.__dict__.get("_holder")
        if held is None or not _thread_alive(held[0]):
            return None
        return held

    def _in_use_error(self, study_name: str, doing: str) -> StoreError:
        where = f" ({self.location})" if self.location else ""
        return StoreError(
            f"this {self.name} store instance{where} is already open for study "
            f"{study_name!r} in another thread, so it cannot {doing} here; give each "
            "concurrent study its own store instance, or a path")

    @contextmanager
    def _opening(self, study_name: str) -> Iterator[None]:
        """Around :meth:`open`: take this instance for ``study_name`` in the calling thread,
        or raise :class:`~mapframe.errors.StoreError` when another live thread holds it; a
        failed open leaves the holder as it was."""
        from mapframe._bootstrapping import refuse_study_in_bootstrapping_worker

        refuse_study_in_bootstrapping_worker()  # an unguarded script, re-imported by a worker
        me = threading.get_ident()
        with _HOLDERS_LOCK:
            held = self._holder_now()
            if held is not None and held[0] != me:
                raise self._in_use_error(held[1], f"open study {study_name!r}")
            before = self.__dict__.get("_holder")
            self.__dict__["_holder"] = (me, study_name)
        try:
            yield
        except BaseException:
            with _HOLDERS_LOCK:
                self.__dict__["_holder"] = before
            raise

    def _check_thread(self) -> None:
        """Raise :class:`~mapframe.errors.StoreError` when another live thread holds this
        instance open (the calling thread would read or write that thread's study)."""
        held = self.__dict__.get("_holder")
        if held is None or held[0] == threading.get_ident():
            return
        held = self._holder_now()
        if held is not None:
            raise self._in_use_error(held[1], "be used from a thread that did not open it")

    def _release(self) -> bool:
        """In :meth:`close`: whether the calling thread may close this instance (it holds
        it, or no live thread does); then it holds it no more. A close from another thread
        while one holds it (a refused study's cleanup) leaves it open there."""
        with _HOLDERS_LOCK:
            held = self._holder_now()
            if held is not None and held[0] != threading.get_ident():
                return False
            self.__dict__["_holder"] = None
            return True

    def _check_fingerprint(
        self, study_name: str, old: dict[str, Any], new: dict[str, Any], where: str
    ) -> None:
        diff = fingerprint_diff(old, new)
        if diff:
            raise SetupMismatchError(
                f"{where} already holds a study named {study_name!r} with a different setup "
                f"({_changed(old, new, diff)}); use another study name or another store, or "
                f"delete the old study{self._delete_hint(study_name)}"
            )

    def _delete_hint(self, study_name: str) -> str:
        """`` ('mapframe store delete PATH NAME')`` for a store that command handles."""
        location = self.location
        if self.name != "sqlite" or not location:
            return ""
        import shlex

        return (f" ('mapframe store delete {shlex.quote(location)} "
                f"{shlex.quote(study_name)}')")


#: The most characters of the differences :meth:`EvaluationStore._check_fingerprint` shows.
MISMATCH_WIDTH = 240


def _changed(old: dict[str, Any], new: dict[str, Any], fields: list[str]) -> str:
    """The differences of a setup mismatch on one line: the differing fields, then the
    changed values (:func:`fingerprint_changes`), as many as fit in :data:`MISMATCH_WIDTH`
    characters, then how many more (``evaluator differ: evaluator.function 'objs:f' ->
    'objs:g'``)."""
    try:
        changes = fingerprint_changes(old, new)
    except (TypeError, ValueError, RecursionError):
        changes = []
    head = f"{', '.join(fields)} differ"
    if not changes:
        return head
    shown: list[str] = []
    for i, change in enumerate(changes):
        rest = len(changes) - i - 1
        more = f"; and {rest} more" if rest else ""
        if shown and len("; ".join([*shown, change])) + len(more) > MISMATCH_WIDTH:
            shown.append(f"and {len(changes) - i} more")
            break
        shown.append(change)
    return f"{head}: {'; '.join(shown)}"
