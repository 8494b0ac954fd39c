"""Studies in threads leave the process's warning filters as they were: mapframe's blocks that
change warning filters (``warnings.catch_warnings`` is not thread-safe: overlapping blocks in
two threads restore each other's filters) never overlap across threads."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import qmc

from mapframe import MapframeWarning, MergeStudy
from mapframe.samplers import space_filling

ROOT = Path(__file__).resolve().parents[1]


def test_overlapping_blocks_in_two_threads_leave_the_filters_as_they_were(monkeypatch):
    # Thread A is inside sobol_unit's block (its "ignore" filter added) when thread B enters
    # the same block; A leaves first. Unguarded, A's exit restored the filters B had saved
    # (with A's filter in them) when B left: A's "ignore" stayed for the whole process.
    b_entered, a_left = threading.Event(), threading.Event()
    real = qmc.Sobol.random

    def random(self, n=1, **kw):
        if threading.current_thread().name == "A":
            b_entered.wait(2)  # with the lock B cannot enter until A has left: times out
        else:
            b_entered.set()
            a_left.wait(5)
        return real(self, n, **kw)

    monkeypatch.setattr(qmc.Sobol, "random", random)
    before = list(warnings.filters)

    def run() -> None:
        space_filling.sobol_unit(8, 2, np.random.default_rng(0))
        if threading.current_thread().name == "A":
            a_left.set()

    ta = threading.Thread(target=run, name="A")
    ta.start()
    while not any("Sobol" in str(f[1]) for f in warnings.filters) and ta.is_alive():
        pass  # A's filter is in place
    tb = threading.Thread(target=run, name="B")
    tb.start()
    ta.join(30)
    tb.join(30)
    assert warnings.filters == before, [f for f in warnings.filters if f not in before]


def _three(C):
    return np.column_stack([-(C**2).sum(1), -((C - 1) ** 2).sum(1), -((C - 0.5) ** 2).sum(1)])


def _poor(C):  # a task the quadratic cannot fit: the study warns that it fits poorly
    return np.column_stack([np.sin(25 * C[:, 0]), -((C - 1) ** 2).sum(1)])


def test_studies_in_threads_keep_later_warnings():
    # Three coefficients: the front solver runs pymoo's NSGA-III, which calls
    # warnings.simplefilter("ignore") inside mapframe's block.
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            MergeStudy(objective=_three, task_names=["a", "b", "c"], n_coefficients=3,
                       budget=12, seed=i, sampler="sobol", study_name=f"s{i}").run()
        except BaseException as exc:
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MapframeWarning)  # these studies' own warnings
        inner = list(warnings.filters)
        for _ in range(2):
            threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert warnings.filters == inner, [f for f in warnings.filters if f not in inner]
    assert not errors, errors
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as got:
        warnings.filters[:] = list(before)
        MergeStudy(objective=_poor, task_names=["p", "q"], budget=10, seed=0,
                   sampler="sobol").run()
    assert any("fits poorly" in str(w.message) for w in got
               if issubclass(w.category, MapframeWarning))


def test_every_block_that_changes_warning_filters_takes_the_lock():
    # A new warnings.catch_warnings() block elsewhere would overlap the guarded ones again.
    allowed = {"mapframe/_warning_filters.py",
               # the CLI's block spans the one study it runs, in the main thread
               "mapframe/cli.py"}
    offenders = []
    for path in sorted((ROOT / "mapframe").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        if re.search(r"warnings\.catch_warnings\(", path.read_text(encoding="utf-8")):
            offenders.append(rel)
    assert not offenders, (
        f"{offenders} change warning filters without mapframe._warning_filters."
        "warning_filters() (overlapping blocks in threads leak filters)")


def test_a_filter_another_thread_adds_during_a_block_outlives_the_block():
    """A block's end put back the whole filter list as it was at its start: a filter the
    program added in another thread while a study fitted a GP or drew Sobol' points (the
    audit's F3b) was dropped. Now the block takes out only what it added."""
    from mapframe._warning_filters import warning_filters

    before = list(warnings.filters)
    added = threading.Event()

    def program() -> None:  # not mapframe: no lock
        warnings.filterwarnings("error", message="the program's own filter")
        added.set()

    try:
        with warning_filters() as filters:
            filters.ignore(message="mapframe's block filter", category=UserWarning)
            t = threading.Thread(target=program)
            t.start()
            assert added.wait(5)
            t.join(5)
        messages = [f[1].pattern for f in warnings.filters if f[1] is not None]
        assert "the program's own filter" in messages
        assert "mapframe's block filter" not in messages
    finally:
        warnings.filters[:] = before
        warnings._filters_mutated()


def test_a_block_leaves_a_filter_the_process_already_had():
    from mapframe._warning_filters import warning_filters

    before = list(warnings.filters)
    try:
        warnings.filterwarnings("ignore", message="already there", category=UserWarning)
        with warning_filters() as filters:
            filters.ignore(message="already there", category=UserWarning)
        assert any(f[1] is not None and f[1].pattern == "already there"
                   for f in warnings.filters)
        with warnings.catch_warnings(record=True) as got:
            warnings.warn("already there, still ignored", UserWarning, stacklevel=2)
        assert not got
    finally:
        warnings.filters[:] = before
        warnings._filters_mutated()
