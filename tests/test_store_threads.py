"""One store instance used from several threads: two concurrent studies on one instance are
refused with a one-line StoreError (their results used to mix, or a raw sqlite3 error came
up); sequential use of one instance from several threads keeps working."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.storage import MemoryStore, SQLiteStore
from mapframe.storage.base import EvaluationStore

STORES = ["memory", "sqlite"]


def _store(kind: str, tmp_path: Any) -> EvaluationStore:
    return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "shared.sqlite")


def _in_thread(fn: Any) -> Any:
    """``fn()`` run in a new thread: its value, or the exception it raised."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["value"] = exc

    t = threading.Thread(target=call)
    t.start()
    t.join(30)
    assert not t.is_alive()
    return box["value"]


@pytest.mark.parametrize("kind", STORES)
def test_open_for_another_study_in_another_thread_is_refused(kind, tmp_path):
    store = _store(kind, tmp_path)
    store.open("A", {})
    store.add(Evaluation(np.array([0.5, 0.5]), np.array([1.0, 2.0])))
    for name in ("B", "A"):  # another study, or the same study from another thread
        got = _in_thread(lambda name=name: store.open(name, {}))
        assert isinstance(got, StoreError), got
        text = str(got)
        assert "\n" not in text and "another thread" in text
        assert "own store instance" in text
    # The refused thread's cleanup (a close in a finally block) leaves A's study open.
    _in_thread(store.close)
    rows = store.load()
    assert len(rows) == 1 and rows[0].metrics is not None
    np.testing.assert_array_equal(rows[0].metrics, [1.0, 2.0])
    store.close()


@pytest.mark.parametrize("kind", STORES)
def test_use_from_a_thread_that_did_not_open_it_is_a_store_error(kind, tmp_path):
    store = _store(kind, tmp_path)
    store.open("A", {})
    for call in (store.load, lambda: store.get_meta("x"),
                 lambda: store.add(Evaluation(np.array([0.1]), np.array([1.0])))):
        got = _in_thread(call)
        assert isinstance(got, StoreError), got
        assert "\n" not in str(got) and "another thread" in str(got)
    assert store.load() == []
    store.close()


@pytest.mark.parametrize("kind", STORES)
def test_sequential_use_from_several_threads_still_works(kind, tmp_path):
    store = _store(kind, tmp_path)

    def study(name: str, value: float) -> list[Evaluation]:
        store.open(name, {"n": name})
        try:
            store.add(Evaluation(np.array([value]), np.array([value])))
            return store.load()
        finally:
            store.close()

    assert len(_in_thread(lambda: study("x", 0.1))) == 1
    assert len(_in_thread(lambda: study("y", 0.2))) == 1
    assert len(_in_thread(lambda: study("x", 0.3))) == 2
    assert len(study("y", 0.4)) == 2
    # A thread that opened it and ended without closing it does not hold it any more.
    _in_thread(lambda: store.open("x", {"n": "x"}))
    assert len(study("x", 0.5)) == 3


def _fa(C):
    return np.column_stack([-(C**2).sum(1), -((C - 1) ** 2).sum(1)])


_B_DONE = threading.Event()


def _fa_waiting(C):
    _B_DONE.wait(20)  # A evaluates while B's study starts on the same store
    return _fa(C)


def _fb(C):
    return np.column_stack([100 + C.sum(1), 100 - C.sum(1)])


@pytest.mark.parametrize("kind", STORES)
def test_two_concurrent_studies_on_one_instance_never_mix(kind, tmp_path):
    """The audit's repro: study A evaluates while study B starts on the same instance. B is
    refused with a one-line StoreError; every row of A comes from A's objective."""
    store = _store(kind, tmp_path)
    _B_DONE.clear()
    kw: dict[str, Any] = dict(task_names=["a", "b"], budget=8, seed=0, sampler="sobol",
                              storage=store)
    errors: dict[str, BaseException | None] = {}

    def run(name: str, fn: Any) -> None:
        try:
            MergeStudy(objective=fn, study_name=name, **kw).run()
            errors[name] = None
        except BaseException as exc:
            errors[name] = exc
        finally:
            if name == "B":
                _B_DONE.set()

    ta = threading.Thread(target=run, args=("A", _fa_waiting))
    ta.start()
    time.sleep(0.5)
    tb = threading.Thread(target=run, args=("B", _fb))
    tb.start()
    ta.join(60)
    tb.join(60)
    assert errors["A"] is None, errors["A"]
    assert isinstance(errors["B"], StoreError), errors["B"]
    assert "\n" not in str(errors["B"]) and "own store instance" in str(errors["B"])
    result = MergeStudy(objective=_fa_waiting, study_name="A", **kw).run()
    assert result.n_evaluated == 0 and result.n_reused > 0
    X = np.array([e.coefficients for e in result.history])
    Y = np.array([e.metrics for e in result.history])
    np.testing.assert_allclose(Y, _fa(X))
