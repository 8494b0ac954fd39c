"""Nested MAP: the pairwise tournament, its evaluation count, resume, pairings, bad input."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from mapframe.cli import main  # noqa: E402
from mapframe.errors import BudgetError, ConfigError, EvaluationError  # noqa: E402
from mapframe.evaluators.base import Evaluator  # noqa: E402
from mapframe.merging.checkpoints import TaskVectors, load_state_dict  # noqa: E402
from mapframe.nested import (  # noqa: E402
    NestedMergeStudy,
    NestedNode,
    search_task_evaluations,
)
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.problem import Task  # noqa: E402


class DistanceEvaluator(Evaluator):
    """A real merging evaluator on a tiny state dict: task i scores exp(-||θ(c) − θ_i||²/s),
    in [0, 1], from the merged weights the merger writes (one merge per row)."""

    name: ClassVar[str] = "distance_test"
    needs_merger: ClassVar[bool] = True

    def __init__(self, targets: list[dict], names: list[str], scale: float = 2.0,
                 fail_after: int | None = None) -> None:
        self.targets = targets
        self.names = names
        self.scale = scale
        self._fail_after = fail_after
        self._calls = 0

    @property
    def tasks(self) -> list[Task]:
        return [Task(n, "max", 0.0, 1.0) for n in self.names]

    def evaluate(self, coefficients):
        C = np.atleast_2d(coefficients)
        out = np.empty((len(C), len(self.names)))
        for b, c in enumerate(C):
            self._calls += 1
            if self._fail_after is not None and self._calls > self._fail_after:
                raise RuntimeError("simulated crash")
            theta = self.merger.merged_state_dict(c)
            for i, t in enumerate(self.targets):
                d = sum(float(torch.sum((theta[k].float() - t[k].float()) ** 2)) for k in t)
                out[b, i] = math.exp(-d / self.scale)
        return out

    def describe(self):
        return {"name": self.name, "tasks": self.names, "scale": self.scale}


def make_problem(n: int, seed: int = 0, similar: tuple[tuple[int, int], ...] = ()):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(6, generator=g), "b": torch.randn(3, generator=g),
            "steps": torch.tensor(3)}
    fts = []
    for _ in range(n):
        fts.append({k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point()
                        else v.clone()) for k, v in base.items()})
    for i, j in similar:  # make model j a near copy of model i
        fts[j] = {k: (fts[i][k] + 0.05 * torch.randn(v.shape, generator=g)
                      if v.is_floating_point() else v.clone()) for k, v in base.items()}
    names = [f"t{i}" for i in range(n)]
    tv = TaskVectors(base, fts, names)
    return tv, DistanceEvaluator(fts, names), base, fts


def run(n: int, k: int = 6, **kw):
    tv, ev, base, _fts = make_problem(n, kw.pop("problem_seed", 0), kw.pop("similar", ()))
    kw.setdefault("preference", [1.0] * n)
    study = NestedMergeStudy(ev, task_vectors=tv, pair_budget=k, front_solver="grid", **kw)
    return study.run(), tv, ev, base


# -- the tournament ----------------------------------------------------------------------
@pytest.mark.slow  # 26 s of the core suite; CI runs the slow tests too
def test_eight_tasks_cost_k_n_log2_n_task_evaluations() -> None:
    res, *_ = run(8, k=20, pairing="in_order")
    # the paper's count: k · N · log2 N = 20 · 8 · 3 = 480
    assert res.evaluations["search_task_evaluations"] == 20 * 8 * 3 == 480
    assert search_task_evaluations(res) == 480
    assert res.evaluations["search_model_evaluations"] == 20 * 7
    assert res.evaluations["verify_model_evaluations"] == 7  # the chosen point of each pair
    assert res.evaluations["extra_model_evaluations"] == 1  # the final model on all tasks
    assert [len(r) for r in res.rounds] == [4, 2, 1]
    assert sorted(res.nodes[res.root].tasks) == list(range(8))


def test_four_tasks_in_order_structure() -> None:
    res, *_ = run(4, k=6, pairing="in_order")
    assert res.evaluations["search_task_evaluations"] == 6 * 4 * 2
    first = [(p.left, p.right) for p in res.rounds[0]]
    assert first == [("t0", "t1"), ("t2", "t3")]
    assert res.rounds[1][0].tasks_left == ["t0", "t1"]
    tree = res.tree()
    assert tree["tasks"] == ["t0", "t1", "t2", "t3"] and len(tree["children"]) == 2


def test_odd_number_of_tasks_gets_a_bye() -> None:
    res, *_ = run(5, k=6)
    assert [len(r) for r in res.rounds] == [2, 1, 1]
    assert len(res.byes[0]) == 1 and res.byes[1] and not res.byes[2]
    assert sorted(res.nodes[res.root].tasks) == list(range(5))
    expected = sum(6 * p.n_tasks for p in res.pairs)
    assert res.evaluations["search_task_evaluations"] == expected
    assert expected <= 6 * 5 * math.ceil(math.log2(5))


def test_pair_objectives_and_choice_follow_the_preference() -> None:
    p = [4.0, 1.0, 0.0, 0.0]
    res, *_ = run(4, k=8, pairing="in_order", preference=p)
    first = res.rounds[0][0]
    assert first.weights == pytest.approx((0.8, 0.2))
    # the choice maximises the weighted sum over the pair's predicted front
    F = first.result.front.predicted
    best = np.argmax(0.8 * F[:, 0] + 0.2 * F[:, 1])
    assert first.index == best
    assert first.coefficients[0] > first.coefficients[1]
    # a pair whose tasks have zero preference still merges (equal weights decide)
    zero = res.rounds[0][1]
    assert zero.weights == (0.0, 0.0) and zero.real is not None
    # the chosen point was evaluated for real
    assert first.real is not None and np.isfinite(first.score("real"))


def test_final_model_is_the_effective_task_arithmetic_merge() -> None:
    res, tv, ev, base = run(4, k=6, pairing="in_order")
    eff = np.array([res.effective_coefficients[f"t{i}"] for i in range(4)])
    merged = res.merged_state_dict()
    for key in tv.keys():
        expect = base[key].float() + torch.einsum("n,n...->...", torch.tensor(eff).float(),
                                                  tv.vectors(key).float())
        torch.testing.assert_close(merged[key].float(), expect, rtol=1e-5, atol=1e-5)
    assert torch.equal(merged["steps"], base["steps"])
    # the reported final metrics are the real metrics of that model
    from mapframe.merging.merger import Merger
    from mapframe.merging.task_arithmetic import TaskArithmetic

    ev.setup(Merger(TaskArithmetic(), tv))
    np.testing.assert_allclose(ev.evaluate(eff[None])[0], res.final_metrics, rtol=1e-5)
    signs = np.ones(4)
    assert res.final_score == pytest.approx(float(np.mean(signs * res.final_metrics)))


def test_nonlinear_strategy_has_no_effective_coefficients(tmp_path) -> None:
    res, *_ = run(4, k=6, merge_strategy={"name": "ties", "trim": 0.5})
    assert res.effective_coefficients is None
    path = res.export(tmp_path / "m.safetensors")
    loaded = load_state_dict(path)
    for k, v in res.merged_state_dict().items():
        assert torch.equal(loaded[k], v)


# -- pairing -------------------------------------------------------------------------------
def test_cosine_pairs_the_most_similar_task_vectors() -> None:
    res, *_ = run(4, k=6, similar=((0, 2), (1, 3)))
    assert sorted((p.left, p.right) for p in res.rounds[0]) == [("t0", "t2"), ("t1", "t3")]


def test_metric_profile_pairing_uses_and_counts_profiles() -> None:
    res, *_ = run(4, k=6, pairing="metric_profile", similar=((0, 3),))
    # profiles: the 4 leaves (the last merge of two models needs none); plus the final one
    assert res.evaluations["extra_model_evaluations"] == 4 + 1
    assert ("t0", "t3") in [(p.left, p.right) for p in res.rounds[0]]
    assert all(n.profile is not None for n in res.nodes.values() if n.round == 0)


def test_pairing_registry_and_bad_pairing() -> None:
    reg = get_registry()
    assert set(reg.names("pairing")) >= {"cosine", "metric_profile", "in_order"}
    from mapframe.nested import PairingStrategy

    class Broken(PairingStrategy):
        name: ClassVar[str] = "broken_test"

        def similarity(self, nodes):
            return np.zeros((len(nodes), len(nodes)))

        def pair(self, nodes):
            return [(0, 0)], []

    tv, ev, *_ = make_problem(4)
    study = NestedMergeStudy(ev, task_vectors=tv, preference=[1] * 4, pair_budget=6,
                             pairing=Broken(), front_solver="grid")
    with pytest.raises(EvaluationError, match="exactly once"):
        study.run()


def test_greedy_pair_leaves_the_model_left_over_out() -> None:
    # three models: the most similar pair merges first; the one left over gets the bye
    from mapframe.nested import CosinePairing

    vec = [{"w": torch.tensor(v)} for v in ([1.0, 0.0], [0.9, 0.1], [0.0, 1.0])]
    nodes = [NestedNode(f"n{i}", [i], v) for i, v in enumerate(vec)]
    pairs, byes = CosinePairing().pair(nodes)
    assert pairs == [(0, 1)] and byes == [2]


# -- store and resume ----------------------------------------------------------------------
def test_resume_mid_tournament(tmp_path) -> None:
    store = str(tmp_path / "nested.sqlite")
    tv, _ev, _, fts = make_problem(4)
    names = [f"t{i}" for i in range(4)]
    crashing = DistanceEvaluator(fts, names, fail_after=15)  # dies inside the second pair
    study = NestedMergeStudy(crashing, task_vectors=tv, preference=[1] * 4, pair_budget=6,
                             pairing="in_order", front_solver="grid", storage=store)
    with pytest.raises(EvaluationError):
        study.run()
    study = NestedMergeStudy(DistanceEvaluator(fts, names), task_vectors=tv,
                             preference=[1] * 4, pair_budget=6, pairing="in_order",
                             front_solver="grid", storage=store)
    res = study.run()
    total = res.evaluations["total_model_evaluations"]
    # the first pair (6 search + 1 verify) and part of the second were stored already
    assert res.evaluations["reused_from_store"] >= 7
    assert res.evaluations["new_this_run"] == total - res.evaluations["reused_from_store"]
    again = NestedMergeStudy(DistanceEvaluator(fts, names), task_vectors=tv,
                             preference=[1] * 4, pair_budget=6, pairing="in_order",
                             front_solver="grid", storage=store).run()
    assert again.evaluations["new_this_run"] == 0
    np.testing.assert_array_equal(again.final_metrics, res.final_metrics)
    assert again.tree() == res.tree()


def test_a_new_preference_reuses_the_pairs_it_shares_on_one_store(tmp_path) -> None:
    """docs/nested.md: a new preference is a new tournament whose pairs with the same side
    preferences reuse their stored evaluations. Its pair studies were named by the merge
    tree alone, so the second tournament stopped with "a different setup" (a StoreError
    whose fix, another name, reused nothing)."""
    store = tmp_path / "n.sqlite"
    counts = []
    for pref in ([1, 1, 1, 1], [4, 1, 1, 1], [1, 1, 1, 1], [4, 1, 1, 1]):
        tv, ev, _, _ = make_problem(4)
        res = NestedMergeStudy(ev, task_vectors=tv, preference=pref, pair_budget=6,
                               pairing="in_order", front_solver="grid", storage=store).run()
        counts.append((res.evaluations["new_this_run"], res.evaluations["reused_from_store"]))
    first, second, again, again2 = counts
    assert first[1] == 0 and first[0] > 0
    assert 0 < second[1] < sum(second)  # the (t2+t3) pair's sides weigh 1:1 in both
    assert again == (0, sum(first)) and again2 == (0, sum(second))


def test_save_writes_tree_fronts_and_pairs(tmp_path) -> None:
    res, *_ = run(4, k=6)
    paths = res.save(tmp_path / "out")
    for key in ("nested_json", "tree_png", "fronts_png"):
        assert paths[key].is_file(), key
    summary = json.loads(paths["nested_json"].read_text())
    assert summary["mode"] == "nested" and len(summary["rounds"]) == 2
    assert summary["evaluations"]["search_task_evaluations"] == 48
    pair_dirs = sorted((tmp_path / "out" / "pairs").iterdir())
    assert len(pair_dirs) == 3 and all((d / "front.png").is_file() for d in pair_dirs)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("pref, match", [
    ([1, 1, 1], "3 weights for 4 tasks"),
    ([1, -1, 1, 1], "non-negative"),
    ([0, 0, 0, 0], "not all zero"),
])
def test_bad_preference(pref, match) -> None:
    tv, ev, *_ = make_problem(4)
    with pytest.raises(ConfigError, match=match):
        NestedMergeStudy(ev, task_vectors=tv, preference=pref)


def test_tasks_named_twice() -> None:
    tv, _, _, fts = make_problem(3)
    ev = DistanceEvaluator(fts, ["a", "b", "a"])
    with pytest.raises(ConfigError, match=r"unique.*a"):
        NestedMergeStudy(ev, task_vectors=tv, preference=[1, 1, 1])


def test_models_must_match_tasks() -> None:
    tv, _, _, fts = make_problem(3)
    ev = DistanceEvaluator(fts[:2], ["a", "b"])
    with pytest.raises(ConfigError, match="one fine-tuned model per task"):
        NestedMergeStudy(ev, task_vectors=tv, preference=[1, 1])


def test_budget_and_verify_checks() -> None:
    tv, ev, *_ = make_problem(4)
    with pytest.raises(BudgetError, match="pair_budget 4"):  # the quadratic's 6 parameters
        NestedMergeStudy(ev, task_vectors=tv, preference=[1] * 4, pair_budget=4,
                         sampler="sobol", surrogate="quadratic")
    with pytest.raises(ConfigError, match="verify"):
        NestedMergeStudy(ev, task_vectors=tv, preference=[1] * 4, verify=0)


def test_python_and_yaml_run_the_same_pair_sampler_by_default(tmp_path) -> None:
    """The docs give the pairs' settings "as for MergeStudy" (sampler ``auto``): the YAML
    route did, while ``NestedMergeStudy(...)`` defaulted to ``sobol``, so the page's two
    versions of one study ran different searches and chose different models."""
    from mapframe.config import build_study

    tv, ev, *_ = make_problem(3)
    python = NestedMergeStudy(ev, task_vectors=tv, preference=[1, 1, 1])
    yaml_route, _ = build_study(yaml.safe_load(_digits_config(tmp_path).read_text()))
    assert isinstance(yaml_route, NestedMergeStudy)
    assert python.settings()["sampler"] == yaml_route.settings()["sampler"]
    assert python.settings()["sampler"] in ("auto", {"name": "auto"})


# -- YAML and CLI --------------------------------------------------------------------------
def _digits_config(tmp_path, **extra):
    from mapframe.examples import digits

    tasks = ["rot90", "flip", "vflip"]
    ck = digits.prepare_checkpoints(tasks=tasks)
    cfg = {"study": {"name": "nest", "preference": [0.5, 0.3, 0.2], "output": "out",
                     "export": True},
           "evaluator": {"name": "digits", "tasks": tasks},
           "checkpoints": {"pretrained": str(ck["pretrained"]),
                           "finetuned": {k: str(v) for k, v in ck["finetuned"].items()}},
           "nested": {"pair_budget": 6, "pairing": "cosine"}}
    for key, value in extra.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = tmp_path / "nested.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_runs_nested_config_and_resumes(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    path = _digits_config(tmp_path)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    for name in ("nested.json", "tree.png", "fronts.png", "merged.safetensors"):
        assert (out / name).is_file(), name
    text = capsys.readouterr().out
    assert "nested study 'nest'" in text and "final model:" in text
    assert main(["run", str(path), "--quiet"]) == 0
    assert "0 new this run" in capsys.readouterr().out
    # `mapframe export` on the folder said "is not a mapframe results folder" with no fix
    assert main(["export", str(out), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "holds a Nested MAP tournament" in err and "merged.safetensors" in err
    # `mapframe report` on it reported the store's last single-point study as if it were all
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    pair = sorted((out / "pairs").iterdir())[0]
    assert "holds a Nested MAP tournament" in err and str(pair) in err  # the folders to give
    assert main(["report", str(pair)]) == 0 and (pair / "report.html").is_file()


@pytest.mark.parametrize("change, match", [
    ({"study": {"name": "x", "budget": 10, "preference": [1, 1, 1]}}, "pair_budget"),
    ({"study": {"name": "x"}}, "needs study.preference"),
    ({"nested": {"pair_budget": 6, "pairs": 3}}, "unknown field 'pairs'"),
    ({"nested": {"pair_budget": "many"}}, "pair_budget must be int"),
])
def test_bad_nested_yaml(tmp_path, capsys, change, match) -> None:
    path = _digits_config(tmp_path, **change)
    assert main(["run", str(path), "--quiet"]) == 2
    assert match in capsys.readouterr().err


def test_the_tournament_runs_inside_one_executor_keep_alive_block(monkeypatch) -> None:
    """Every pair's study starts its executor afresh; the tournament holds one keep_alive()
    block around them all, so that a local Ray instance, Dask cluster or worker processes
    start once (tests/test_executor_dask.py counts the clusters)."""
    import contextlib

    from mapframe.executors.inprocess import InProcessExecutor

    blocks = []
    started = []

    @contextlib.contextmanager
    def keep_alive(self):
        blocks.append("enter")
        yield
        blocks.append("exit")

    real_start = InProcessExecutor.start

    def start(self, evaluator, merge_spec):
        started.append(list(blocks))
        return real_start(self, evaluator, merge_spec)

    monkeypatch.setattr(InProcessExecutor, "keep_alive", keep_alive)
    monkeypatch.setattr(InProcessExecutor, "start", start)
    run(3, k=4)
    assert blocks == ["enter", "exit"]
    assert len(started) == 3 and all(s == ["enter"] for s in started)  # 2 pairs + final
