"""A finished study's front kept in its store (study meta ``front``, beside ``summary``):
``load_results(store, study=...)``, ``mapframe report STORE --study``, the dashboard, and
``mapframe store list|copy|rename``. Before, the front lived only in the results folder: a
study run in Python without ``save`` (or whose folder was gone) could not be read back."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import mapframe
from mapframe import MergeStudy
from mapframe.cli import main
from mapframe.errors import ConfigError, StoreError
from mapframe.results_folder import SavedResults
from mapframe.storage import copy_study, list_studies, rename_study


def quad(C):
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(axis=1),
                            1 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)])


def run(db: Path, name: str = "alpha", objective=quad, budget: int = 8, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("sampler", "sobol")
    return MergeStudy(objective=objective, task_names=kw.pop("tasks", ["a", "b"]),
                      budget=budget, storage=str(db), study_name=name, **kw).run()


def same_front(saved: SavedResults, result) -> None:
    f, g = saved.front, result.front
    assert saved.coefficient_names == result.coefficient_names
    assert saved.task_names == result.task_names
    np.testing.assert_allclose(f.coefficients, g.coefficients)
    np.testing.assert_allclose(f.predicted, g.predicted)
    np.testing.assert_allclose(f.real, g.real)  # NaN where not measured, in both
    assert f.source == g.source
    assert f.directions == g.directions


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A study run in Python with a store and never saved: the store is all there is."""
    db = tmp_path_factory.mktemp("py") / "s.sqlite"
    return db, run(db, verify=3, preference=[0.3, 0.7])


def test_a_study_never_saved_loads_back_from_its_store(finished):
    db, result = finished
    assert not (db.parent / "front.json").exists()
    saved = mapframe.load_results(db)
    same_front(saved, result)
    assert saved.front.measured.any()  # verified points kept their real metrics
    assert saved.selected == result.selected
    for pref in ([0.3, 0.7], [0.9, 0.1], [0.5, 0.5]):
        assert saved.select(pref) == result.select(pref)
    assert saved.summary == json.loads(json.dumps(result.summary(), default=str))
    assert saved.config is None and saved.store == db
    # the study's name works too, and the stored front is exactly front.json's content
    same_front(mapframe.load_results(db, study="alpha"), result)
    out = db.parent / "saved"
    result.save(out, plot=False)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT value FROM meta WHERE key = 'front'").fetchone()[0]
    assert json.loads(stored) == json.loads((out / "front.json").read_text())


def test_export_from_a_store_names_the_fix(finished, tmp_path):
    db, _ = finished
    saved = mapframe.load_results(db)
    with pytest.raises(ConfigError, match="black-box objective"):
        saved.export(tmp_path / "m.safetensors", index=0)
    # a checkpoint study read from its store: no config to rebuild the merge from
    merged = SavedResults(saved.directory, saved.tasks, saved.coefficient_names, saved.front,
                          {**saved.summary, "settings": {"merge": {"name": "linear"}}},
                          None, db)
    with pytest.raises(ConfigError) as exc:
        merged.export(tmp_path / "m.safetensors", index=0)
    text = one_line(exc)
    assert "keeps no config" in text and "results folder" in text and "MergeStudy" in text


def test_a_store_of_several_finished_studies_needs_study(tmp_path):
    db = tmp_path / "s.sqlite"
    first = run(db, "first")
    second = run(db, "second", objective=lambda C: 2 * quad(C), budget=10, seed=1)
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(db)
    text = one_line(exc)
    assert "'first'" in text and "'second'" in text and "study=" in text
    same_front(mapframe.load_results(db, study="first"), first)
    same_front(mapframe.load_results(db, study="second"), second)
    with pytest.raises(StoreError, match="no study named 'third'"):
        mapframe.load_results(db, study="third")


def test_a_results_folder_checks_study(tmp_path):
    out = tmp_path / "out"
    result = run(out / "evaluations.sqlite")
    result.save(out, plot=False)
    same_front(mapframe.load_results(out, study="alpha"), result)
    assert mapframe.load_results(out).store is None  # the folder, as before
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(out, study="beta")
    assert "'alpha', not 'beta'" in one_line(exc)


def test_an_unfinished_study_is_a_one_line_error(tmp_path):
    calls = [0]

    def interrupted(C):
        calls[0] += 1
        if calls[0] > 3:
            raise KeyboardInterrupt
        return quad(C)

    db = tmp_path / "s.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run(db, "cut", objective=interrupted)
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(db)
    text = one_line(exc)
    assert "no finished run" in text and "'cut'" in text and "run the study to its end" in text
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(db, study="cut")
    assert "has no finished run" in one_line(exc)
    # a finished study beside it is the default, the unfinished one is not counted
    done = run(db, "done")
    same_front(mapframe.load_results(db), done)
    assert main(["report", str(db), "--study", "cut", "--out", str(tmp_path / "r.html")]) == 2


def test_a_store_from_before_stored_fronts_is_a_one_line_error(tmp_path, capsys):
    db = tmp_path / "s.sqlite"
    run(db)
    with sqlite3.connect(db) as conn:  # what a mapframe that stored only the summary left
        conn.execute("DELETE FROM meta WHERE key = 'front'")
    conn.close()
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(db)
    text = one_line(exc)
    assert "predates stored fronts" in text and "rerun the study" in text
    assert "results folder" in text
    assert list_studies(db)[0].finished and list_studies(db)[0].front_size is None
    assert main(["store", "list", str(db)]) == 0
    assert "no front stored" in capsys.readouterr().out


def test_a_front_older_than_the_summary_is_not_used(tmp_path):
    """A store whose study a mapframe storing only the summary finished again: the front
    left there is the older run's."""
    db = tmp_path / "s.sqlite"
    run(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET updated = updated + 60 WHERE key = 'summary'")
    conn.close()
    with pytest.raises(ConfigError) as exc:
        mapframe.load_results(db)
    assert "older run's" in one_line(exc)


def _bundle(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="mapframe-bundle">(.*?)</script>',
                  html, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


def test_report_of_a_store_alone(finished, tmp_path, capsys):
    pytest.importorskip("plotly")
    db, result = finished
    out = tmp_path / "r.html"
    assert main(["report", str(db), "--study", "alpha", "--out", str(out)]) == 0
    data = _bundle(out.read_text(encoding="utf-8"))["data"]
    assert data["study"] == "alpha" and data["store"] == str(db)
    np.testing.assert_allclose(data["front"]["coefficients"], result.front.coefficients)
    assert data["front"]["source"] == result.front.source
    assert data["selection"]["selected"] == result.selected
    assert len(data["evaluations"]["phase"]) == len(result.history) + 3  # and verified
    # the store's folder is not the study's results folder: --out is needed
    capsys.readouterr()
    assert main(["report", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and len(err.splitlines()) == 1
    assert not (db.parent / "report.html").exists()


def test_dashboard_of_a_store_shows_its_stored_front(finished):
    from mapframe.report import assemble, locate

    db, result = finished
    data = assemble(locate(db))
    assert data.front is not None
    np.testing.assert_allclose(data.front["coefficients"], result.front.coefficients)


def test_store_copy_rename_and_list_carry_the_front(finished, tmp_path, capsys):
    db, result = finished
    copy = tmp_path / "copy.sqlite"
    copy_study(db, copy, "alpha")
    same_front(mapframe.load_results(copy), result)
    rename_study(copy, "alpha", "renamed")
    same_front(mapframe.load_results(copy, study="renamed"), result)
    (summary,) = list_studies(copy)
    assert summary.front_size == len(result.front)
    assert summary.to_dict()["front_size"] == len(result.front)
    assert main(["store", "list", str(copy)]) == 0
    assert f"front of {len(result.front)} points stored" in capsys.readouterr().out


def test_dashboard_of_a_store_from_before_stored_fronts_says_so(tmp_path):
    from mapframe.report import assemble, locate

    db = tmp_path / "s.sqlite"
    run(db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'front'")
    conn.close()
    data = assemble(locate(db))
    assert data.front is None and len(data.notes) == 1
    assert "stored only its summary" in data.notes[0] and "rerun" in data.notes[0]
