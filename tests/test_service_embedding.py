"""mapframe embedded in a long-lived service: many studies in one process, some at once in
threads, some failing. Nothing may grow with every study, and a failed study must leave
nothing open (the service audit of 2026-12-07)."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import mapframe.plugin.manager as manager
import mapframe.storage.base as base
from mapframe import MergeStudy
from mapframe.errors import SetupMismatchError
from mapframe.storage.base import driver_id, driver_is_gone, retire_driver


def _quadratic(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.stack([1 - ((C - 0.2) ** 2).sum(axis=1), 1 - ((C - 0.8) ** 2).sum(axis=1)], 1)


def _other(C: np.ndarray) -> np.ndarray:
    return _quadratic(C) * 0.5


def _open_files(path: Path) -> int:
    """How many of this process's descriptors point at ``path`` or its -wal/-shm."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") in names
        except OSError:
            continue
    return n


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc/self/fd")
def test_a_refused_study_keeps_no_file_of_its_store_open(tmp_path: Path) -> None:
    """A study refused by its store (another setup under the same name) kept the SQLite file
    and its -wal/-shm open for as long as the caller kept the error or the study: a service
    keeping failed jobs leaked two descriptors a failure (206 after 100)."""
    store = tmp_path / "s.sqlite"
    MergeStudy(objective=_quadratic, task_names=["a", "b"], budget=10, seed=0,
               sampler="sobol", surrogate="quadratic", storage=str(store),
               study_name="job").run()
    gc.collect()
    before = _open_files(store)
    kept: list[object] = []
    for _ in range(5):
        study = MergeStudy(objective=_other, task_names=["a", "b"], budget=10, seed=0,
                           sampler="sobol", surrogate="quadratic", storage=str(store),
                           study_name="job")
        with pytest.raises(SetupMismatchError) as info:
            study.run()
        kept.extend([study, info.value])  # a job table keeps both
    assert _open_files(store) == before
    # and the store serves the next study at once
    result = MergeStudy(objective=_quadratic, task_names=["a", "b"], budget=10, seed=0,
                        sampler="sobol", surrogate="quadratic", storage=str(store),
                        study_name="job").run()
    assert result.n_evaluated == 0  # every evaluation reused


def test_the_process_keeps_no_record_of_finished_drivers() -> None:
    """Every study's driver id stayed in a process-wide dict for good (about 330 B a study in
    a service running thousands a day); only the live ones are kept now, and a retired
    one is still known as this process's own, gone (its claims taken over at once)."""
    before = len(base._LIVE_DRIVERS)
    for _ in range(20):
        MergeStudy(objective=_quadratic, task_names=["a", "b"], budget=10, seed=0,
                   sampler="sobol", surrogate="quadratic").run()
    gc.collect()
    assert len(base._LIVE_DRIVERS) == before
    owner = driver_id()
    assert not driver_is_gone(owner)
    retire_driver(owner)
    assert driver_is_gone(owner) and owner not in base._LIVE_DRIVERS


def test_the_registry_is_read_under_its_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_registry and get_plugin_manager built the registry under the lock but read it
    after releasing it: a reset_plugins (or register_plugin) in another thread in between
    made them return None or fail with AttributeError (1 call in 3 000 under a race)."""
    real = manager._lock

    class ResetOnRelease:
        """The lock, and another thread's reset_plugins right after each release."""

        def __enter__(self) -> object:
            return real.__enter__()

        def __exit__(self, *exc: object) -> None:
            real.__exit__(*exc)
            manager._state["pm"] = manager._state["registry"] = None

    manager.get_registry()
    monkeypatch.setattr(manager, "_lock", ResetOnRelease())
    assert manager.get_registry().names("sampler")
    assert manager.get_plugin_manager() is not None
    monkeypatch.undo()
    manager.reset_plugins()


def test_many_threads_building_studies_while_plugins_reset() -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def reset() -> None:
        while not stop.is_set():
            manager.reset_plugins()

    def build() -> None:
        try:
            for _ in range(200):
                manager.get_registry().get("sampler", "sobol")
        except BaseException as exc:  # the failure is the finding
            errors.append(exc)

    t = threading.Thread(target=reset)
    t.start()
    try:
        workers = [threading.Thread(target=build) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        stop.set()
        t.join()
        manager.reset_plugins()
    assert not errors, errors[0]


def test_overlapping_single_thread_blas_blocks_put_the_process_count_back() -> None:
    """Each block saved the BLAS thread count on entry and restored it on exit: two studies
    overlapping in threads (A saves 2, B saves 1, A restores 2, B restores 1) ran B's fits
    multi-threaded and left numpy's BLAS on one thread for the rest of the process. The
    blocks' order is played here from one thread (OpenBLAS reads back a count set from
    another thread unreliably on some builds)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from mapframe.surrogates.quadratic import _one_blas_thread

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    controller = threadpoolctl.ThreadpoolController()

    def blas_threads() -> list[int]:
        return [m["num_threads"] for m in controller.info() if m["user_api"] == "blas"]

    before = blas_threads()
    if not before or min(before) < 2:
        pytest.skip("needs a BLAS library that threadpoolctl sees, on more than one thread")
    a, b = _one_blas_thread(), _one_blas_thread()
    a.__enter__()  # study A's fit
    b.__enter__()  # study B's, while A's runs
    assert set(blas_threads()) == {1}
    a.__exit__(None, None, None)  # A's ends first
    assert set(blas_threads()) == {1}  # B's fit still single-threaded
    b.__exit__(None, None, None)
    assert blas_threads() == before


def test_solving_a_front_leaves_the_process_warning_filters_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pymoo's NSGA-III normalisation calls warnings.simplefilter("ignore"): inside the
    solver's catch_warnings block that silenced every thread's warnings until the solve
    ended (a service lost 3 131 of another thread's 3 490 warnings, and 4 of 14 studies'
    NaN warnings), and the block's end dropped the filters other threads had added."""
    nsga3 = pytest.importorskip("pymoo.algorithms.moo.nsga3")
    real = nsga3.get_nadir_point
    seen: list[tuple[object, ...]] = []

    def watched(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)
        import warnings

        seen.append(warnings.filters[0] if warnings.filters else ())
        return out

    monkeypatch.setattr(nsga3, "get_nadir_point", watched)

    def three(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        return np.stack([1 - ((C - t) ** 2).sum(axis=1) for t in np.eye(3) * 0.8 + 0.1], 1)

    MergeStudy(objective=three, task_names=["a", "b", "c"], budget=20, seed=0,
               sampler="sobol", surrogate="quadratic",
               front_solver={"name": "nsga3", "n_gen": 5}).run()
    assert seen, "NSGA-III's normalisation did not run"
    assert all(f[:3] != ("ignore", None, Warning) for f in seen), seen[0]
