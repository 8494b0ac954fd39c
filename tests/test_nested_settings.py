"""Nested MAP's study settings: ``search_bounds`` per coefficient and ``seed: null``."""

from __future__ import annotations

import json

import pytest
import yaml

torch = pytest.importorskip("torch")

# the real merging evaluator of test_nested (task i: exp(-||θ(c) − θ_i||²/2), rows counted)
from test_nested import DistanceEvaluator, _digits_config, make_problem  # noqa: E402

from mapframe.cli import main  # noqa: E402
from mapframe.errors import ConfigError, EvaluationError  # noqa: E402
from mapframe.nested import NestedMergeStudy  # noqa: E402


def nested(ev, tv, **kw) -> NestedMergeStudy:
    kw.setdefault("preference", [1.0] * len(ev.names))
    kw.setdefault("pairing", "in_order")
    return NestedMergeStudy(ev, task_vectors=tv, pair_budget=6, front_solver="grid", **kw)


# -- search_bounds: one [low, high] per coefficient ---------------------------------------
@pytest.mark.parametrize("n, bounds, pairing", [
    # one pair per task: was refused only inside the first pair, after metric_profile had
    # evaluated every model, with "bounds must be [low, high] or 2 pairs [low, high]"
    (3, [[0, 1], [0, 1.5], [0.2, 2]], "metric_profile"),
    (4, [[0, 1], [0, 1.5], [0.2, 2], [0, 1]], "in_order"),
    # two pairs for four models: was refused with "or 4 pairs", a fix that failed next
    (4, [[0, 1], [0.2, 2]], "in_order"),
])
def test_per_coefficient_bounds_are_refused_before_any_evaluation(n, bounds, pairing) -> None:
    tv, ev, *_ = make_problem(n)
    with pytest.raises(ConfigError, match=r"^search_bounds for nested merging is one "
                                          r"\[low, high\].*search_bounds: \[0\.0, 2\.0\]$"
                       ) as exc:
        nested(ev, tv, search_bounds=bounds, pairing=pairing)  # at construction
    assert "\n" not in str(exc.value) and ev._calls == 0


def test_two_models_keep_their_per_coefficient_bounds() -> None:
    """With two models the one pair merges the two fine-tuned models: the rows bound their
    coefficients exactly as for a MergeStudy (in the models' order)."""
    tv, ev, *_ = make_problem(2)
    res = nested(ev, tv, search_bounds=[[0.0, 0.3], [0.6, 1.0]]).run()
    (pair,) = res.pairs
    assert pair.result.space.to_dict() == {"lower": [0.0, 0.6], "upper": [0.3, 1.0]}
    assert 0.0 <= pair.coefficients[0] <= 0.3 and 0.6 <= pair.coefficients[1] <= 1.0


def test_one_pair_of_bounds_applies_to_every_pair() -> None:
    tv, ev, *_ = make_problem(3)
    res = nested(ev, tv, search_bounds=[0.2, 1.5]).run()
    for pair in res.pairs:
        assert pair.result.space.to_dict() == {"lower": [0.2, 0.2], "upper": [1.5, 1.5]}


def test_per_coefficient_bounds_in_yaml_are_one_line_before_evaluating(tmp_path,
                                                                       capsys) -> None:
    pytest.importorskip("sklearn")
    path = _digits_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["study"]["search_bounds"] = [[0, 1], [0, 1.5], [0.2, 2]]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "search_bounds for nested merging is one [low, high]" in err
    assert "search_bounds: [0.0, 2.0]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "evaluations.sqlite").exists()


# -- seed: null ---------------------------------------------------------------------------
def _stored(store: str, study_name: str | None = None) -> tuple[object, int]:
    """The seed a stored study kept, and how many good evaluations it holds (all studies
    of the store: ``None``)."""
    import sqlite3

    conn = sqlite3.connect(store)
    try:
        row = conn.execute(
            "SELECT m.value FROM meta m JOIN studies s ON m.study_id = s.id "
            "WHERE s.name = ? AND m.key = 'seed'", (study_name,)).fetchone()
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM evaluations e JOIN studies s ON e.study_id = s.id "
            "WHERE (s.name = ? OR ? IS NULL) AND e.status = 'ok'",
            (study_name, study_name)).fetchone()
    finally:
        conn.close()
    return (None if row is None else json.loads(row[0])), int(n)


def test_seed_none_draws_one_seed_for_the_whole_tournament() -> None:
    tv, ev, *_ = make_problem(4)
    res = nested(ev, tv, seed=None).run()  # was "seed must be an integer ..., got None"
    assert isinstance(res.seed, int) and res.seed >= 0
    assert res.settings["seed"] == res.seed == res.summary()["settings"]["seed"]
    assert {p.result.seed for p in res.pairs} == {res.seed}
    tv, ev, *_ = make_problem(4)
    assert nested(ev, tv, seed=None).run().seed != res.seed  # a fresh one, not a constant


def test_seed_none_resumes_an_interrupted_tournament_with_its_seed(tmp_path) -> None:
    store = str(tmp_path / "nested.sqlite")
    tv, _ev, _, fts = make_problem(4)
    names = [f"t{i}" for i in range(4)]
    crashing = DistanceEvaluator(fts, names, fail_after=10)  # dies inside the second pair
    with pytest.raises(EvaluationError):
        nested(crashing, tv, seed=None, storage=store).run()
    drawn, first = _stored(store, "nested/(t0+t1)")
    second_seed, second = _stored(store, "nested/(t2+t3)")
    assert isinstance(drawn, int) and second_seed == drawn  # every pair used the one seed
    assert first == 7 and 0 < second < 7  # the first pair's 6 + 1, part of the second's
    assert _stored(store)[1] == first + second
    ev = DistanceEvaluator(fts, names)
    res = nested(ev, tv, seed=None, storage=store).run()
    assert res.seed == drawn and {p.result.seed for p in res.pairs} == {drawn}
    # the first pair and the second's stored points were reused: proposed again, so the
    # same seed (another would propose other points and reuse none of them)
    assert res.evaluations["reused_from_store"] == first + second
    assert res.evaluations["new_this_run"] == ev._calls
    again = nested(DistanceEvaluator(fts, names), tv, seed=None, storage=store).run()
    assert again.evaluations["new_this_run"] == 0 and again.seed == drawn
    assert again.tree() == res.tree()


def test_yaml_seed_null_runs_saves_its_seed_and_resumes(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    path = _digits_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["study"]["seed"] = None
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    seed = json.loads((out / "nested.json").read_text())["settings"]["seed"]
    assert isinstance(seed, int)
    assert yaml.safe_load((out / "config.yaml").read_text())["study"]["seed"] == seed
    capsys.readouterr()
    assert main(["run", str(path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "(0 new this run" in printed and f"; seed {seed})" in printed
    assert json.loads((out / "nested.json").read_text())["settings"]["seed"] == seed
