"""Nested MAP faults found by the audit: model names, strategies per pair, stale pair folders."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

# the real merging evaluator of test_nested (task i: exp(-||θ(c) − θ_i||²/2), rows counted)
from test_nested import DistanceEvaluator  # noqa: E402

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.merging.checkpoints import TaskVectors  # noqa: E402
from mapframe.nested import NestedMergeStudy  # noqa: E402


def problem(task_names: list[str], model_names: list[str] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(5, generator=g)}
    fts = [{"w": base["w"] + 0.7 * torch.randn(5, generator=g)} for _ in task_names]
    tv = TaskVectors(base, fts, model_names or task_names)
    return tv, DistanceEvaluator(fts, task_names)


def study(tv, ev, **kw) -> NestedMergeStudy:
    kw.setdefault("preference", [1.0] * len(ev.names))
    kw.setdefault("pairing", "in_order")
    return NestedMergeStudy(ev, task_vectors=tv, pair_budget=6, front_solver="grid", **kw)


# -- fault 1: model names ----------------------------------------------------------------
def test_duplicate_model_names_are_refused_up_front() -> None:
    tv, ev = problem(["t0", "t1", "t2", "t3"], ["t0", "t2", "t0", "t3"])
    with pytest.raises(ConfigError, match=r"repeated: t0: give every") as exc:
        study(tv, ev)
    assert "\n" not in str(exc.value) and ev._calls == 0


def test_model_names_with_label_syntax_are_refused_up_front() -> None:
    tv, ev = problem(["a", "b+c", "a+b", "c"])
    with pytest.raises(ConfigError, match=r"must not contain '\+'.*'b\+c', 'a\+b'") as exc:
        study(tv, ev)
    assert "\n" not in str(exc.value) and ev._calls == 0
    tv, ev = problem(["a", "(b)", "c"])
    with pytest.raises(ConfigError, match=r"'\(b\)'"):
        study(tv, ev)


def test_distinct_model_names_matched_by_position_keep_every_leaf() -> None:
    tv, ev = problem(["t0", "t1", "t2", "t3"], ["m0", "m1", "m2", "m3"])
    res = study(tv, ev).run()
    assert res.effective_coefficients is not None
    assert list(res.effective_coefficients) == ["m0", "m1", "m2", "m3"]
    assert {"m0", "m1", "m2", "m3"} <= set(res.nodes)


# -- fault 2: the merge strategy merges pairs, not all N ---------------------------------
def test_slerp_runs_for_more_than_two_models() -> None:
    tv, ev = problem(["t0", "t1", "t2"])
    res = study(tv, ev, merge_strategy="slerp").run()
    assert len(res.pairs) == 2 and sorted(res.nodes[res.root].tasks) == [0, 1, 2]
    assert res.effective_coefficients is None  # slerp is not linear


def test_a_strategy_that_cannot_merge_a_pair_stops_before_any_evaluation() -> None:
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(4, 4, generator=g)}
    fts = [{"w": base["w"] + torch.randn(4, 4, generator=g)} for _ in range(3)]
    ev = DistanceEvaluator(fts, ["t0", "t1", "t2"])
    st = study(TaskVectors(base, fts, ev.names), ev, pairing="metric_profile",
               merge_strategy={"name": "tsv_m", "rank_fraction": 0.75})
    with pytest.raises(ConfigError, match="rank_fraction"):
        st.run()
    assert ev._calls == 0


# -- fault 3: a save over an earlier one keeps nothing of its tree -----------------------
def test_save_over_an_earlier_tournament_removes_its_pair_folders(tmp_path) -> None:
    tv, ev = problem(["t0", "t1", "t2"])
    study(tv, ev, study_name="first").run().save(tmp_path, plot=False)
    first = sorted(p.name for p in (tmp_path / "pairs").iterdir())
    assert len(first) == 2
    (tmp_path / "tree.png").write_bytes(b"an earlier tree")
    (tmp_path / "pairs" / first[0] / "notes.txt").write_text("mine")
    (tmp_path / "pairs" / "round9-mine").mkdir()
    (tmp_path / "pairs" / "round9-mine" / "summary.json").write_text('{"study": "x"}')
    tv, ev = problem(["u0", "u1"])
    res = study(tv, ev).run()
    res.save(tmp_path, plot=False)
    left = sorted(p.name for p in (tmp_path / "pairs").iterdir())
    assert left == sorted([first[0], "round1-_u0_u1_", "round9-mine"])
    assert [p.name for p in (tmp_path / "pairs" / first[0]).iterdir()] == ["notes.txt"]
    assert not (tmp_path / "tree.png").exists()  # the earlier tree is not this one


def test_merges_whose_folder_names_coincide_get_their_own_folders(tmp_path) -> None:
    tv, ev = problem(["a", "b_c", "a_b", "c"])
    res = study(tv, ev).run()
    assert [p.merged for p in res.rounds[0]] == ["(a+b_c)", "(a_b+c)"]
    res.save(tmp_path, plot=False)
    studies = sorted(json.loads((d / "summary.json").read_text())["study"]
                     for d in (tmp_path / "pairs").iterdir())
    assert studies == ["nested/((a+b_c)+(a_b+c))", "nested/(a+b_c)", "nested/(a_b+c)"]


def test_pair_folders_differ_by_more_than_case() -> None:
    """Model names A, B, a, b gave the folders round1-_A_B_ and round1-_a_b_: one folder on
    a case-insensitive file system (macOS's and Windows' defaults), where the second pair's
    results replaced the first's."""
    from types import SimpleNamespace

    from mapframe.nested import _pair_folders

    pairs = [SimpleNamespace(round=1, merged="(A+B)"), SimpleNamespace(round=1, merged="(a+b)"),
             SimpleNamespace(round=1, merged="(c+d)")]
    names = _pair_folders(pairs)  # type: ignore[arg-type]
    assert len({n.casefold() for n in names}) == 3
    assert names[2] == "round1-_c_d_"  # a slug no other pair shares keeps its plain name
