"""A resumed study proposes the points it stored, whatever seed=None draws and however many
workers the resuming executor has: the drawn seed and the first run's round capacity are
kept in the store (and the CLI's saved config.yaml holds the seed)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mapframe import MergeStudy
from mapframe.cli import main as mapframe_main
from mapframe.errors import MapframeWarning
from mapframe.executors.inprocess import InProcessExecutor

_CUT_AFTER = {"calls": None}  # test_seed_none...: cut the run off at this call


def _two(C: np.ndarray) -> np.ndarray:
    if _CUT_AFTER["calls"] is not None:
        _CUT_AFTER["calls"] -= 1
        if _CUT_AFTER["calls"] < 0:
            _CUT_AFTER["calls"] = None
            raise KeyboardInterrupt  # the run is cut off (its earlier rounds are stored)
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - 0.2) ** 2).sum(1), 1 - ((C - 0.8) ** 2).sum(1)])


class _FourAtOnce(InProcessExecutor):
    """The in-process executor claiming four evaluations at once (as four workers would)."""

    @property
    def capacity(self) -> int:
        return 4


def _study(storage: object, executor: object = "inprocess", budget: int = 14,
           seed: int | None = 0) -> MergeStudy:
    return MergeStudy(objective=_two, task_names=["a", "b"], budget=budget, seed=seed,
                      sampler="bins", executor=executor, storage=storage)


def test_seed_none_resumes_the_seed_it_drew(tmp_path: Path) -> None:
    db = str(tmp_path / "s.sqlite")
    first = _study(db, seed=None)
    _CUT_AFTER["calls"] = 2
    with pytest.raises(KeyboardInterrupt):
        first.run()
    again = _study(db, seed=None)  # draws another seed when built ...
    with warnings.catch_warnings():
        warnings.simplefilter("error", MapframeWarning)  # (nothing stored goes unused)
        res = again.run()
    assert res.seed == first.seed  # ... but runs with the stored study's
    assert res.n_reused > 0 and res.n_reused + res.n_evaluated == 14
    whole = _study(None, seed=first.seed).run()  # as if never interrupted
    assert np.array_equal(res.history.X, whole.history.X)
    # a store written before the seed was kept: a finished run's summary holds it
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("DELETE FROM meta WHERE key = 'seed'").rowcount == 1
    assert _study(db, seed=None).run().seed == first.seed
    # an explicit seed is still the user's: another one does not take the stored seed
    other = _study(db, seed=first.seed + 1)
    assert other.seed == first.seed + 1


def test_a_resumed_study_keeps_its_round_size_with_more_workers(tmp_path: Path) -> None:
    db = str(tmp_path / "s.sqlite")
    alone = _study(db).run()
    assert alone.summary()["settings"]["round_capacity"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", MapframeWarning)
        same = _study(db, executor=_FourAtOnce()).run()  # nothing new to evaluate
    assert same.n_evaluated == 0 and same.n_reused == 14
    assert np.array_equal(same.history.X, alone.history.X)
    with pytest.warns(MapframeWarning, match="runs 4 evaluations at once.*1 at once"):
        more = _study(db, executor=_FourAtOnce(), budget=20).run()
    assert more.n_reused == 14 and more.n_evaluated == 6
    assert all(r["proposed"] <= 3 for r in more.rounds if r["new"])  # rounds stay as begun
    # a new study sizes its rounds for its executor, and says so in summary.json
    wide = _study(None, executor=_FourAtOnce()).run()
    assert wide.summary()["settings"]["round_capacity"] == 4
    assert max(r["proposed"] for r in wide.rounds[1:]) >= 4


def test_cli_saves_the_drawn_seed_and_prints_it(tmp_path: Path, capsys) -> None:
    cfg = {"evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "sampler": "sobol", "surrogate": "quadratic",
           "study": {"budget": 8, "seed": None, "output": str(tmp_path / "out")}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert mapframe_main(["run", str(path), "-q", "--no-plot", "--no-report"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert isinstance(summary["seed"], int) and saved["study"]["seed"] == summary["seed"]
    import numpy

    import mapframe

    versions = summary["settings"]["versions"]  # what the run's numbers came from
    assert versions["mapframe"] == mapframe.__version__
    assert versions["numpy"] == numpy.__version__ and "python" in versions
    assert f"seed {summary['seed']})" in capsys.readouterr().out
