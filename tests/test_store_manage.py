"""``mapframe store list|delete|rename|copy|export`` and their Python functions, on stores
made by running small black-box studies; the fixes to ``store check``/``salvage`` and to the
setup-mismatch error."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy, SetupMismatchError, StoreError
from mapframe.cli import main
from mapframe.storage import (
    copy_study,
    delete_study,
    export_study,
    list_studies,
    rename_study,
)
from mapframe.storage.repair import check_store, salvage_store


def quad(C):
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def other(C):
    return quad(C) * 2.0


def flaky(C):
    """``quad``, but it raises for points whose first coefficient is above 0.7."""
    C = np.atleast_2d(C)
    if (C[:, 0] > 0.7).any():
        raise RuntimeError("crash")
    return quad(C)


def run(db, name="alpha", budget=8, objective=quad, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("sampler", "sobol")
    return MergeStudy(objective=objective, task_names=kw.pop("tasks", ["a", "b"]),
                      budget=budget, storage=str(db), study_name=name, **kw).run()


def cli(capsys, *argv):
    rc = main(["store", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def rows(db, sql, *args):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    """A store with two finished studies: 'alpha' (8 search evaluations) and 'flaky'
    (12 search evaluations, some failed, plus 2 verified points)."""
    db = tmp_path / "s.sqlite"
    run(db, "alpha", 8)
    run(db, "flaky", 12, objective=flaky, on_error="record", verify=2, tasks=["x", "y"])
    return db


def test_list_studies_counts_times_and_finished_runs(store, capsys):
    alpha, fl = list_studies(store)
    assert (alpha.name, alpha.task_names, fl.name, fl.task_names) == (
        "alpha", ["a", "b"], "flaky", ["x", "y"])
    assert alpha.counts == {"search": {"ok": 8}} and alpha.n_evaluations == 8
    stored = dict(((p, s), n) for p, s, n in rows(
        store, "SELECT phase, status, COUNT(*) FROM evaluations e JOIN studies s ON "
        "s.id = e.study_id WHERE s.name = 'flaky' GROUP BY phase, status"))
    assert stored[("search", "failed")] > 0 and stored[("verify", "ok")] > 0
    assert {(p, s): n for p, by in fl.counts.items() for s, n in by.items()} == stored
    for s in (alpha, fl):
        assert s.created <= s.first_evaluation <= s.last_evaluation <= time.time()
        assert s.finished and s.finished_at >= s.last_evaluation
        assert not s.running and s.live_claims == 0 and s.pending == 0
    assert (alpha.budget, alpha.seed, fl.budget) == (8, 0, 12)

    rc, out, _ = cli(capsys, "list", store)
    assert rc == 0 and "2 studies" in out
    assert "study 'flaky': tasks x, y; " in out and "failed" in out and "verify" in out
    assert "budget 8, seed 0" in out
    rc, out, _ = cli(capsys, "list", store, "--json")
    data = json.loads(out)
    assert [s["name"] for s in data["studies"]] == ["alpha", "flaky"]
    assert data["studies"][1]["counts"] == fl.counts
    datetime.fromisoformat(data["studies"][0]["last_evaluation"])


def test_store_help_lists_every_action(capsys):
    with pytest.raises(SystemExit):
        main(["store", "--help"])
    out = capsys.readouterr().out
    for action in ("list", "check", "salvage", "delete", "rename", "copy", "export"):
        assert f"    {action} " in out, action


class _Blocked:
    """A study running in a thread whose objective waits (after its first batch) until
    released: it holds claims on its points meanwhile."""

    def __init__(self, db, name):
        self.release, self.waiting = threading.Event(), threading.Event()
        self.error = None

        def objective(C):
            if len(C) and not self.release.is_set():
                self.waiting.set()
                assert self.release.wait(60)
            return quad(C)

        def go():
            try:
                MergeStudy(objective=objective, task_names=["a", "b"], budget=6, seed=0,
                           sampler="sobol", storage=str(db), study_name=name).run()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        assert self.waiting.wait(60)

    def finish(self):
        self.release.set()
        self.thread.join(60)
        assert self.error is None, self.error


def test_a_running_study_is_listed_and_never_deleted_or_renamed(store, capsys):
    blocked = _Blocked(store, "live")
    try:
        live = {s.name: s for s in list_studies(store)}["live"]
        assert live.running and live.live_claims > 0 and live.drivers
        with pytest.raises(StoreError, match=r"'live' .* is running now .*nothing was "
                           r"deleted; stop it"):
            delete_study(store, "live")
        with pytest.raises(StoreError, match=r"is running now .*nothing was renamed"):
            rename_study(store, "live", "other")
        rc, out, err = cli(capsys, "list", store)
        assert "RUNNING now" in out
        for argv in (("delete", store, "live", "--yes"), ("delete", store, "live")):
            rc, _, err = cli(capsys, *argv)
            assert rc == 2 and "is running now" in err and len(err.strip().splitlines()) == 1
        assert rows(store, "SELECT COUNT(*) FROM studies WHERE name = 'live'") == [(1,)]
    finally:
        blocked.finish()
    assert not {s.name: s for s in list_studies(store)}["live"].running
    assert delete_study(store, "live") == 6


def test_delete_study_removes_everything_of_it_and_only_it(store, capsys, monkeypatch):
    sid = rows(store, "SELECT id FROM studies WHERE name = 'alpha'")[0][0]
    # a dead driver's claim and a pending evaluation of the study, one of another study
    conn = sqlite3.connect(store)
    conn.execute("INSERT INTO claims VALUES (?, 'search', 'k', 'gone-host:1:x', 0)", (sid,))
    conn.commit()
    conn.close()
    pending = Path(str(store) + ".pending")
    pending.mkdir()
    (pending / "1-a.json").write_text(json.dumps({"study": "alpha", "fingerprint": "{}"}))
    (pending / "2-b.json").write_text(json.dumps({"study": "flaky", "fingerprint": "{}"}))

    with pytest.raises(StoreError, match=r"no study named 'alfa' in .*; the store holds "
                       r"'alpha', 'flaky'"):
        delete_study(store, "alfa")
    # not a terminal, no --yes: refused, with the fix
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    rc, _, err = cli(capsys, "delete", store, "alpha")
    assert rc == 2 and "add --yes" in err and len(err.strip().splitlines()) == 1
    # a terminal: asked; "n" keeps it, "y" deletes it
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    rc, out, _ = cli(capsys, "delete", store, "alpha")
    assert rc == 1 and "nothing was deleted" in out
    assert [s.name for s in list_studies(store)] == ["alpha", "flaky"]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    rc, out, _ = cli(capsys, "delete", store, "alpha")
    assert rc == 0 and "deleted study 'alpha' (8 evaluations)" in out

    for table in ("evaluations", "meta", "claims"):
        assert rows(store, f"SELECT COUNT(*) FROM {table} WHERE study_id = ?", sid) == [(0,)]
    assert [p.name for p in pending.iterdir()] == ["2-b.json"]
    assert [s.name for s in list_studies(store)] == ["flaky"]
    # the name is free again: a new study of that name starts from nothing
    again = run(store, "alpha", 8)
    assert again.n_evaluated == 8 and again.n_reused == 0
    monkeypatch.undo()
    rc, out, _ = cli(capsys, "delete", store, "alpha", "--yes")
    assert rc == 0


def test_the_setup_mismatch_names_the_values_and_the_delete_command(store, capsys):
    with pytest.raises(SetupMismatchError) as info:
        run(store, "alpha", 8, objective=other)
    text = str(info.value)
    assert "\n" not in text and "evaluator." in text and " -> " in text
    assert f"'mapframe store delete {store} alpha'" in text
    # many differences: one line, capped, saying how many more
    with pytest.raises(SetupMismatchError) as info:
        run(store, "alpha", 8, tasks=["long_task_name_number_one", "long_task_name_two"],
            objective=other)
    text = str(info.value)
    assert "\n" not in text and len(text) < 700 and "more" in text
    # the command it names works, and the study then runs with the new setup
    rc, _, _ = cli(capsys, "delete", store, "alpha", "--yes")
    assert rc == 0 and run(store, "alpha", 8, objective=other).n_evaluated == 8


def test_rename_study_resumes_under_the_new_name(store, capsys):
    with pytest.raises(StoreError, match=r"already holds a study named 'flaky'.*nothing was "
                       r"renamed"):
        rename_study(store, "alpha", "flaky")
    with pytest.raises(StoreError, match=r"no study named 'nope'.*holds 'alpha', 'flaky'"):
        rename_study(store, "nope", "x")
    pending = Path(str(store) + ".pending")
    pending.mkdir()
    (pending / "1-a.json").write_text(json.dumps({"study": "alpha", "fingerprint": "{}"}))
    before = rows(store, "SELECT created FROM evaluations ORDER BY seq")
    rc, out, _ = cli(capsys, "rename", store, "alpha", "beta")
    assert rc == 0 and "'beta'" in out
    assert json.loads((pending / "1-a.json").read_text())["study"] == "beta"
    assert rows(store, "SELECT created FROM evaluations ORDER BY seq") == before
    (pending / "1-a.json").unlink()
    again = run(store, "beta", 8)
    assert again.n_evaluated == 0 and again.n_reused == 8
    rc, _, err = cli(capsys, "rename", store, "beta", "flaky")
    assert rc == 2 and "already holds" in err


def _study_rows(db, name):
    return rows(db, "SELECT s.fingerprint, s.created, e.phase, e.key, e.status, e.metrics, "
                "e.created, e.round, e.duration, e.reason FROM evaluations e JOIN studies s "
                "ON s.id = e.study_id WHERE s.name = ? ORDER BY e.seq", name)


def test_copy_study_keeps_times_and_fingerprint_and_resumes(store, tmp_path, capsys):
    dst = tmp_path / "other.sqlite"
    run(dst, "gamma", 6)  # an existing store with a study of its own
    rc, out, _ = cli(capsys, "copy", store, dst, "--study", "alpha")
    assert rc == 0 and "'alpha': 8 evaluations copied" in out
    assert _study_rows(dst, "alpha") == _study_rows(store, "alpha")
    assert [s.name for s in list_studies(dst)] == ["gamma", "alpha"]
    summary = {s.name: s for s in list_studies(dst)}["alpha"]
    assert summary.finished and summary.budget == 8
    # a clash: refused, nothing copied, --as suggested
    with pytest.raises(StoreError, match=r"already holds a study named 'alpha'.*nothing was "
                       r"copied.*--as"):
        copy_study(store, dst)
    assert [s.name for s in list_studies(dst)] == ["gamma", "alpha"]
    rc, _, err = cli(capsys, "copy", store, dst, "--study", "alpha")
    assert rc == 2 and "--as" in err
    rc, _, err = cli(capsys, "copy", store, dst, "--as", "x")
    assert rc == 2 and "--study" in err
    rc, _, err = cli(capsys, "copy", store, dst, "--study", "nope")
    assert rc == 2 and "holds 'alpha', 'flaky'" in err
    assert copy_study(store, dst, "alpha", "alpha2") == {"alpha2": 8}
    assert [r[1:] for r in _study_rows(dst, "alpha2")] == [
        r[1:] for r in _study_rows(store, "alpha")]
    # every study into a new store
    new = tmp_path / "new.sqlite"
    assert copy_study(store, new) == {"alpha": 8, "flaky": len(export_study(store, "flaky"))}
    assert _study_rows(new, "flaky") == _study_rows(store, "flaky")
    # the copies resume: every evaluation is reused
    for db, name in ((dst, "alpha"), (dst, "alpha2"), (new, "alpha")):
        again = run(db, name, 8)
        assert again.n_evaluated == 0 and again.n_reused == 8, (db, name)
    flaky_again = run(new, "flaky", 12, objective=flaky, on_error="record", verify=2,
                      tasks=["x", "y"])
    failed = rows(store, "SELECT COUNT(*) FROM evaluations e JOIN studies s ON s.id = "
                  "e.study_id WHERE s.name = 'flaky' AND status = 'failed'")[0][0]
    assert flaky_again.n_evaluated == failed  # only the failed points are retried


def test_copy_includes_the_evaluations_the_journal_keeps(store, tmp_path):
    # a kept evaluation of 'alpha' (as a locked store leaves it) travels with the copy
    fp, = rows(store, "SELECT fingerprint FROM studies WHERE name = 'alpha'")[0]
    row = rows(store, "SELECT phase, key, coefficients, metrics, status, error, round, "
               "duration, created, reason FROM evaluations ORDER BY seq LIMIT 1")[0]
    conn = sqlite3.connect(store)
    conn.execute("DELETE FROM evaluations WHERE key = ?", (row[1],))
    conn.commit()
    conn.close()
    pending = Path(str(store) + ".pending")
    pending.mkdir()
    names = ("phase", "key", "coefficients", "metrics", "status", "error", "round",
             "duration", "created", "reason")
    (pending / "1-a.json").write_text(json.dumps(
        {"study": "alpha", "fingerprint": fp, **dict(zip(names, row))}))
    dst = tmp_path / "c.sqlite"
    assert copy_study(store, dst, "alpha") == {"alpha": 8}
    assert run(dst, "alpha", 8).n_evaluated == 0


def test_export_study_rows_and_csv(store, tmp_path, capsys):
    out = export_study(store, "flaky")
    assert len(out) == rows(store, "SELECT COUNT(*) FROM evaluations e JOIN studies s ON "
                            "s.id = e.study_id WHERE s.name = 'flaky'")[0][0]
    first = out[0]
    assert list(first) == ["key", "phase", "status", "reason", "round", "c_0", "c_1", "x",
                           "y", "duration_s", "created", "error"]
    failed = [r for r in out if r["status"] == "failed"]
    assert failed and all(r["x"] is None and "crash" in r["error"] and r["reason"] == "raised"
                          for r in failed)
    assert {r["phase"] for r in out} == {"search", "verify"}
    stored = rows(store, "SELECT e.created FROM evaluations e JOIN studies s ON s.id = "
                  "e.study_id WHERE s.name = 'flaky' ORDER BY e.seq")
    assert np.allclose([datetime.fromisoformat(r["created"]).timestamp() for r in out],
                       [t for t, in stored], rtol=0, atol=0.001)
    ok = next(r for r in out if r["status"] == "ok")
    assert np.allclose([ok["x"], ok["y"]], quad(np.array([[ok["c_0"], ok["c_1"]]]))[0])

    rc, text, _ = cli(capsys, "export", store, "--study", "flaky")
    assert rc == 0
    read = list(csv.DictReader(io.StringIO(text)))
    assert len(read) == len(out) and read[0]["key"] == first["key"]
    assert next(r["error"] for r in read if r["status"] == "failed").startswith("RuntimeError")
    target = tmp_path / "flaky.csv"
    rc, msg, _ = cli(capsys, "export", store, "--study", "flaky", "-o", target)
    assert rc == 0 and f"{len(out)} evaluations" in msg
    assert target.read_text() == text
    rc, _, err = cli(capsys, "export", store, "--study", "nope")
    assert rc == 2 and "no study named 'nope'" in err
    rc, _, err = cli(capsys, "export", store, "--study", "flaky", "-o", store)
    assert rc == 2 and "the store itself" in err


def test_salvage_keeps_every_time(store, tmp_path, capsys):
    out = tmp_path / "salvaged.sqlite"
    time.sleep(0.05)
    assert salvage_store(store, out) == {"alpha": 8, "flaky": len(export_study(store, "flaky"))}
    for name in ("alpha", "flaky"):
        assert _study_rows(out, name) == _study_rows(store, name)
    assert rows(out, "SELECT key, value, updated FROM meta ORDER BY study_id, key") == rows(
        store, "SELECT key, value, updated FROM meta ORDER BY study_id, key")
    assert run(out, "alpha", 8).n_evaluated == 0


def test_check_counts_by_phase_and_status_and_names_what_is_not_a_store(store, tmp_path,
                                                                          capsys):
    report = check_store(store)
    flaky = next(s for s in report.studies if s.name == "flaky")
    assert flaky.counts == {s.name: s for s in list_studies(store)}["flaky"].counts
    rc, out, _ = cli(capsys, "check", store)
    assert rc == 0 and "failed" in out and "verify" in out

    results = tmp_path / "res"
    results.mkdir()
    (results / "evaluations.sqlite").write_bytes(store.read_bytes())
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    bare = tmp_path / "bare.sqlite"
    sqlite3.connect(bare).execute("PRAGMA user_version = 1").fetchall()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    expected = {results: rf"{results} is a folder .*its store is "
                         rf"{results / 'evaluations.sqlite'}: give that path",
                empty: "an empty file, not a mapframe store",
                foreign: "another program .*not a mapframe store",
                bare: "without tables, not a mapframe store",
                notes: "is not an evaluation store",
                tmp_path / "absent.sqlite": "no store at"}
    for path, message in expected.items():
        for action in ("check", "list", "export", "delete", "rename", "copy"):
            argv = {"export": (action, path, "--study", "a"), "delete": (action, path, "a"),
                    "rename": (action, path, "a", "b"),
                    "copy": (action, path, tmp_path / "dst.sqlite")}.get(action, (action, path))
            rc, out, err = cli(capsys, *argv)
            assert rc == 2 and len(err.strip().splitlines()) == 1, (action, path, err)
            assert "DAMAGED" not in out + err and "Traceback" not in err
            assert re.search(message, err), (action, path, err)
    # opening a foreign or non-SQLite file as a store says the same
    for path in (foreign, notes):
        with pytest.raises(StoreError, match=r"another program|not an evaluation store"):
            run(path, "a", 4)
    assert not (tmp_path / "dst.sqlite").exists()


def test_a_results_folder_points_at_the_store_its_summary_names(store, tmp_path, capsys):
    """A results folder whose store lives elsewhere (``storage:`` in its config): the error
    names the store its summary.json records, relative to the folder or absolute; a store
    that is no longer there is said to be missing."""
    folder = tmp_path / "res"
    folder.mkdir()
    for where, expected in ((str(store), f"its store is {store}: give that path"),
                            ("../s.sqlite", f"its store is {folder / '..' / 's.sqlite'}"),
                            ("gone.sqlite", "names the store .*gone.sqlite, which is not "
                                            r"there \(moved\?\)")):
        (folder / "summary.json").write_text(json.dumps(
            {"settings": {"storage": {"name": "sqlite", "path": where}}}))
        rc, _, err = cli(capsys, "list", folder)
        assert rc == 2 and re.search(expected, err), err
