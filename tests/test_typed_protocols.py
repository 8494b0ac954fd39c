"""Components talk through types, not strings: evaluation failure reasons, store locations,
surrogate diagnostics and the default surrogate of samplers."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import typing

import numpy as np
import pytest
import yaml

from mapframe.cli import main
from mapframe.errors import StoreError
from mapframe.history import Evaluation, FailureReason, History
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.bins import BinSampler
from mapframe.samplers.space_filling import LatinHypercubeSampler
from mapframe.storage import EvaluationStore, MemoryStore, SQLiteStore
from mapframe.surrogates.base import (
    DEFAULT_SURROGATE,
    Surrogate,
    SurrogateDiagnostics,
    default_surrogate,
)
from mapframe.surrogates.quadratic import (
    AutoSurrogate,
    QuadraticSurrogate,
    SigmoidQuadraticSurrogate,
    SoftplusQuadraticSurrogate,
)

FP = {"tasks": ["a", "b"]}
OUT_OF_RANGE_TEXT = ("out of range: task 'a' metric 7 is outside its declared range [0, 1]; "
                     "fix the evaluator's scale (e.g. accuracy as a fraction) or the task's "
                     "range")


def _evaluations() -> list[Evaluation]:
    """One evaluation of each kind, each at its own point."""
    return [
        Evaluation(np.array([0.1, 0.2]), np.array([0.5, 0.6])),
        Evaluation(np.array([0.2, 0.2]), None, "failed", "ValueError: boom"),
        Evaluation(np.array([0.3, 0.2]), np.array([0.5, math.nan]), "invalid",
                   "NaN or infinite metric for task(s) b"),
        Evaluation(np.array([0.4, 0.2]), np.array([7.0, 0.5]), "invalid", OUT_OF_RANGE_TEXT,
                   reason=FailureReason.OUT_OF_RANGE),
        Evaluation(np.array([0.5, 0.2]), np.array([0.5, 0.5]), "invalid", "whatever text",
                   phase="verify", reason=FailureReason.NON_FINITE),
    ]


EXPECTED = [None, FailureReason.RAISED, FailureReason.NON_FINITE, FailureReason.OUT_OF_RANGE,
            FailureReason.NON_FINITE]


# ---------------------------------------------------------------- the failure reason
def test_failure_reason_is_a_string_enum_with_stable_values():
    assert {r.value for r in FailureReason} == {"raised", "non_finite", "out_of_range"}
    assert FailureReason("out_of_range") is FailureReason.OUT_OF_RANGE
    assert FailureReason.RAISED == "raised" and str(FailureReason.RAISED) == "raised"
    assert json.dumps({"r": FailureReason.NON_FINITE}) == '{"r": "non_finite"}'


def test_evaluation_reason_defaults_from_structure_not_text():
    assert [e.reason for e in _evaluations()] == EXPECTED
    ok, failed, nan, oor, _ = _evaluations()
    assert ok.reason is None and ok.ok and not ok.out_of_range
    assert failed.reason is FailureReason.RAISED and not failed.out_of_range
    assert nan.reason is FailureReason.NON_FINITE and not nan.out_of_range
    assert oor.out_of_range and not oor.ok
    # the text is never parsed: an "out of range" message alone does not make the reason
    text_only = Evaluation(np.array([0.4, 0.2]), np.array([7.0, 0.5]), "invalid",
                           OUT_OF_RANGE_TEXT)
    assert text_only.reason is None and not text_only.out_of_range
    # a failed evaluation says it raised whatever its text
    assert Evaluation(np.zeros(2), None, "failed", "out of range: x").reason is \
        FailureReason.RAISED


def test_evaluation_reason_accepts_its_value_and_rejects_nonsense():
    ev = Evaluation(np.zeros(2), np.array([2.0, 0.0]), "invalid", "x", reason="out_of_range")
    assert ev.reason is FailureReason.OUT_OF_RANGE
    with pytest.raises(ValueError, match="unknown evaluation failure reason 'sideways'"):
        Evaluation(np.zeros(2), None, "failed", "x", reason="sideways")
    with pytest.raises(ValueError, match="status 'ok' has no failure reason"):
        Evaluation(np.zeros(2), np.zeros(2), reason=FailureReason.RAISED)


def test_positional_construction_is_unchanged():
    ev = Evaluation(np.zeros(2), None, "failed", "boom", "verify", 3, 1.5, "k")
    assert (ev.status, ev.error, ev.phase, ev.round, ev.duration, ev.key) == (
        "failed", "boom", "verify", 3, 1.5, "k")
    assert ev.reason is FailureReason.RAISED


def test_history_failures_keep_their_reason():
    h = History(2, 2, _evaluations())
    assert [e.reason for e in h.failures] == EXPECTED[1:]
    assert [e.key for e in h if e.out_of_range] == [_evaluations()[3].key]


# ---------------------------------------------------------------- stores persist it
def _round_trip(store: EvaluationStore) -> list[Evaluation]:
    store.open("s", FP)
    for ev in _evaluations():
        store.add(ev)
    store.close()
    store.open("s", FP)
    try:
        return store.load()
    finally:
        store.close()


@pytest.mark.parametrize("make", [lambda p: MemoryStore(), lambda p: SQLiteStore(p / "e.db")],
                         ids=["memory", "sqlite"])
def test_store_round_trip_keeps_the_reason(tmp_path, make):
    rows = _round_trip(make(tmp_path))
    assert [r.reason for r in rows] == EXPECTED
    assert all(r.reason is None or type(r.reason) is FailureReason for r in rows)
    assert [r.out_of_range for r in rows] == [False, False, False, True, False]
    # the explicit NON_FINITE reason of the verify row survives although its metrics are
    # finite (so it could not be derived again)
    assert rows[4].phase == "verify" and rows[4].reason is FailureReason.NON_FINITE


def test_sqlite_writes_the_reason_column(tmp_path):
    path = tmp_path / "e.db"
    _round_trip(SQLiteStore(path))
    with sqlite3.connect(path) as conn:
        got = conn.execute("SELECT reason FROM evaluations ORDER BY seq").fetchall()
    assert [r[0] for r in got] == [None, "raised", "non_finite", "out_of_range", "non_finite"]


def test_sqlite_rejects_an_unknown_stored_reason(tmp_path):
    path = tmp_path / "e.db"
    _round_trip(SQLiteStore(path))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE evaluations SET reason = 'cosmic_ray' WHERE status = 'failed'")
    store = SQLiteStore(path)
    store.open("s", FP)
    with pytest.raises(StoreError, match="unknown failure reason 'cosmic_ray'"):
        store.load()
    store.close()


# The evaluations table as mapframe wrote it before evaluations carried a reason.
_OLD_SCHEMA = """
CREATE TABLE studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    phase TEXT NOT NULL,
    key TEXT NOT NULL,
    coefficients TEXT NOT NULL,
    metrics TEXT,
    status TEXT NOT NULL,
    error TEXT,
    round INTEGER NOT NULL,
    duration REAL NOT NULL,
    created REAL NOT NULL,
    UNIQUE (study_id, phase, key)
);
CREATE TABLE meta (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (study_id, key)
);
"""


def _old_database(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.execute("INSERT INTO studies (name, fingerprint, created) VALUES (?, ?, 0)",
                 ("s", json.dumps(FP, sort_keys=True)))
    rows = [
        ("[0.1, 0.2]", "[0.5, 0.6]", "ok", None),
        ("[0.2, 0.2]", None, "failed", "Traceback ...\nValueError: boom"),
        ("[0.3, 0.2]", "[0.5, NaN]", "invalid", "NaN or infinite metric for task(s) b"),
        ("[0.4, 0.2]", "[7.0, 0.5]", "invalid", OUT_OF_RANGE_TEXT),
    ]
    for coef, metrics, status, error in rows:
        key = Evaluation(np.array(json.loads(coef)), None).key
        conn.execute(
            "INSERT INTO evaluations (study_id, phase, key, coefficients, metrics, status, "
            "error, round, duration, created) VALUES (1, 'search', ?, ?, ?, ?, ?, 0, 0.5, 0)",
            (key, coef, metrics, status, error))
    conn.execute("INSERT INTO meta (study_id, key, value) VALUES (1, 'result', '{\"a\": 1}')")
    conn.commit()
    conn.close()


def test_old_sqlite_file_opens_and_derives_reasons_once(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path)
    store = SQLiteStore(path)
    store.open("s", FP)  # same fingerprint: the old study is reopened, not rejected
    rows = store.load()
    assert [r.status for r in rows] == ["ok", "failed", "invalid", "invalid"]
    assert [r.reason for r in rows] == EXPECTED[:4]
    assert rows[3].out_of_range and rows[3].error == OUT_OF_RANGE_TEXT
    assert np.isnan(rows[2].metrics[1]) and rows[0].duration == 0.5
    assert store.get_meta("result") == {"a": 1}
    # the migrated file takes new evaluations
    store.add(Evaluation(np.array([0.9, 0.9]), np.array([2.0, 0.0]), "invalid", "x",
                         reason=FailureReason.OUT_OF_RANGE))
    store.close()
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(evaluations)")]
        assert cols.count("reason") == 1
        stored = [r[0] for r in conn.execute("SELECT reason FROM evaluations ORDER BY seq")]
        assert stored == [None, "raised", "non_finite", "out_of_range", "out_of_range"]
        # the text is read once, at migration: rewriting it later changes nothing
        conn.execute("UPDATE evaluations SET error = ? WHERE status = 'invalid'",
                     (OUT_OF_RANGE_TEXT,))
        conn.execute("UPDATE evaluations SET reason = 'non_finite' WHERE seq = 5")
    store = SQLiteStore(path)
    store.open("s", FP)
    assert [r.reason for r in store.load()] == [*EXPECTED[:4], FailureReason.NON_FINITE]
    store.close()


def test_old_sqlite_file_migration_is_idempotent_across_stores(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path)
    a, b = SQLiteStore(path), SQLiteStore(path)
    a.open("s", FP)
    b.open("s", FP)  # the second connection finds the column already added
    assert [r.reason for r in a.load()] == [r.reason for r in b.load()] == EXPECTED[:4]
    a.close()
    b.close()


# ---------------------------------------------------------------- store location
def test_store_location(tmp_path):
    path = tmp_path / "sub" / "e.sqlite"
    assert SQLiteStore(path).location == str(path)
    # absolute from the start: the working directory may change during the run
    assert SQLiteStore("rel/e.sqlite").location == os.path.abspath("rel/e.sqlite")
    assert MemoryStore().location is None
    # location is not a setting: describe() (and so the study fingerprint) is unchanged
    assert "location" not in SQLiteStore(path).describe()
    assert MemoryStore().describe() == {"name": "memory"}


def test_store_location_defaults_to_none_for_third_party_stores():
    class ListStore(EvaluationStore):
        """A minimal store that says nothing about where it keeps evaluations."""

        name = "list"

        def open(self, study_name, fingerprint):
            self.rows = []

        def load(self):
            return list(self.rows)

        def add(self, evaluation):
            self.rows.append(evaluation)

        def set_meta(self, key, value):
            pass

        def get_meta(self, key, default=None):
            return default

    assert ListStore().location is None
    assert isinstance(EvaluationStore.__dict__["location"], property)


def _config(tmp_path, **study):
    cfg = {
        "study": {"name": "quad", "budget": 12, "seed": 0, "verify": 2,
                  "preference": [0.5, 0.5], **study},
        "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                      "tasks": ["a", "b"]},
        "sampler": "lhs",
        "front_solver": {"name": "nsga2", "n_gen": 30},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _store_lines(text: str) -> list[str]:
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.startswith("  store ")]


def test_cli_prints_the_store_location(tmp_path, capsys):
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--no-plot"]) == 0
    lines = _store_lines(capsys.readouterr().out)
    assert lines == [str(tmp_path / "out" / "evaluations.sqlite")]


def test_cli_reads_the_location_not_the_store_name(tmp_path, capsys, monkeypatch):
    elsewhere = str(tmp_path / "elsewhere" / "kept-here.sqlite")
    monkeypatch.setattr(SQLiteStore, "location", property(lambda self: elsewhere))
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--no-plot"]) == 0
    assert _store_lines(capsys.readouterr().out) == [elsewhere]
    # a store without a location prints no store line
    monkeypatch.setattr(SQLiteStore, "location", property(lambda self: None))
    assert main(["run", str(cfg), "--quiet", "--no-plot"]) == 0
    assert _store_lines(capsys.readouterr().out) == []


# ---------------------------------------------------------------- typed diagnostics
QUADRATICS = [QuadraticSurrogate, SigmoidQuadraticSurrogate, SoftplusQuadraticSurrogate,
              AutoSurrogate]


def _gp_class() -> type[Surrogate] | None:
    try:
        from mapframe.surrogates.gp import GPSurrogate
    except ImportError:  # pragma: no cover - gp extras missing
        return None
    return GPSurrogate


@pytest.mark.parametrize("cls", [Surrogate, *QUADRATICS, "gp"])
def test_diagnostics_are_annotated_as_surrogate_diagnostics(cls):
    if cls == "gp":
        cls = _gp_class()
        if cls is None:
            pytest.skip("the gp surrogate is not importable")
    hints = typing.get_type_hints(cls.diagnostics)
    assert hints["return"] is SurrogateDiagnostics


def test_surrogate_diagnostics_is_an_open_typed_dict():
    assert typing.is_typeddict(SurrogateDiagnostics)
    assert SurrogateDiagnostics.__required_keys__ == frozenset()
    keys = set(SurrogateDiagnostics.__optional_keys__)
    assert {"model", "r2", "rmse", "loo_r2", "loo_rmse", "loo_method", "n_samples",
            "n_params"} <= keys
    # a plain dict at runtime: read by key, written to JSON as before
    d = SurrogateDiagnostics(r2=0.5, model="quadratic")
    assert type(d) is dict and d["r2"] == 0.5 and json.loads(json.dumps(d)) == d


def _check_declared(diag: dict, expected_model: str | None = None) -> None:
    hints = typing.get_type_hints(SurrogateDiagnostics)
    assert set(diag) <= set(hints), set(diag) - set(hints)
    for key, value in diag.items():
        tp = hints[key]
        origin = typing.get_origin(tp) or tp
        if origin is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        else:
            assert isinstance(value, origin), (key, value)
    if expected_model is not None:
        assert diag["model"] == expected_model


def _data(n_dims: int = 2, k: int = 30):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (k, n_dims))
    y = 0.2 + 0.5 * X[:, 0] - 0.3 * (X[:, 1] - 0.5) ** 2 + 0.01 * rng.standard_normal(k)
    return X, np.clip(y, 0.01, 0.99)


@pytest.mark.parametrize("cls", QUADRATICS)
def test_builtin_quadratic_diagnostics_keys_are_declared(cls):
    X, y = _data()
    s = cls()
    assert s.diagnostics() == {}
    s.fit(X, y, Task("a", lower=0.0, upper=1.0))
    diag = s.diagnostics()
    _check_declared(diag)
    assert {"model", "r2", "loo_r2", "loo_rmse", "n_samples"} <= set(diag)


def test_builtin_gp_diagnostics_keys_are_declared():
    cls = _gp_class()
    if cls is None:
        pytest.skip("the gp surrogate is not importable")
    pytest.importorskip("gpytorch")
    X, y = _data(k=12)
    s = cls().fit(X, y, Task("a", lower=0.0, upper=1.0))
    diag = s.diagnostics()
    _check_declared(diag, "gp")
    assert {"lengthscales", "log_likelihood", "loo_rmse"} <= set(diag)


# ---------------------------------------------------------------- the default surrogate
class _Marker(QuadraticSurrogate):
    """A surrogate that tells the registry lookup apart from a hard-coded class."""

    name = "marker"


class _Registry:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def create(self, kind, spec, **defaults):
        self.calls.append((kind, spec))
        return _Marker()


def test_default_surrogate_name_is_auto():
    from mapframe.plugin import get_registry

    assert DEFAULT_SURROGATE == "auto"
    assert type(get_registry().create("surrogate", DEFAULT_SURROGATE)) is AutoSurrogate
    a, b = default_surrogate(), default_surrogate()
    assert type(a) is AutoSurrogate and a is not b  # a fresh prototype each time


def test_sampler_default_context_gets_the_surrogate_from_the_registry(monkeypatch):
    import mapframe.plugin.manager as manager

    reg = _Registry()
    monkeypatch.setattr(manager, "get_registry", lambda strict=True: reg)
    space = SearchSpace.box(2)
    ctx = LatinHypercubeSampler().context_for(space, History(2, 3))
    assert isinstance(ctx.surrogate, _Marker)
    assert reg.calls == [("surrogate", DEFAULT_SURROGATE)]
    assert [t.name for t in ctx.tasks] == ["task0", "task1", "task2"]


def test_sampler_default_context_is_still_auto_without_a_study():
    ctx = LatinHypercubeSampler().context_for(SearchSpace.box(2), History(2, 2))
    assert type(ctx.surrogate) is AutoSurrogate


def test_bin_sampler_without_a_surrogate_asks_the_registry(monkeypatch):
    import mapframe.plugin.manager as manager

    space = SearchSpace.box(2)
    s = BinSampler()
    s.setup(SamplerContext(space=space, tasks=(Task("a"), Task("b")), surrogate=None))
    before = s.resolved_initial(space, History(2, 2))
    assert before == AutoSurrogate().n_params(2) + 1
    reg = _Registry()
    monkeypatch.setattr(manager, "get_registry", lambda strict=True: reg)
    proto, tasks = s._surrogate(space, History(2, 2))
    assert isinstance(proto, _Marker) and [t.name for t in tasks] == ["a", "b"]
    assert reg.calls == [("surrogate", DEFAULT_SURROGATE)]
