"""MergeStudy end to end on black-box objectives and on tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import (
    BudgetError,
    CheckpointError,
    ConfigError,
    EvaluationError,
    MapframeWarning,
    MergeStudy,
    MetricError,
    StoreError,
)
from mapframe.metrics import hypervolume, pareto_mask

OPT_A, OPT_B = np.array([0.8, 0.2]), np.array([0.2, 0.8])


def quad(C):
    """Two concave quadratic tasks with optima at OPT_A and OPT_B: a real trade-off."""
    C = np.atleast_2d(C)
    a = 1.0 - ((C - OPT_A) ** 2).sum(axis=1)
    b = 1.0 - ((C - OPT_B) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def test_embedding_example_exactly_as_documented():
    f = quad
    study = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0)
    result = study.run()
    K = result.front.coefficients.shape[0]
    assert result.front.coefficients.shape == (K, 2) and K >= 10
    assert result.front.predicted.shape == (K, 2)
    # quadratic objective: the surrogate is exact, so predictions equal the truth
    np.testing.assert_allclose(result.front.predicted, f(result.front.coefficients), atol=1e-6)
    assert all(d["r2"] > 0.999999 for d in result.diagnostics.values())
    # the Pareto set of this problem is the segment between the two optima
    C = result.front.coefficients
    t = np.clip((C - OPT_B) @ (OPT_A - OPT_B) / np.sum((OPT_A - OPT_B) ** 2), 0, 1)
    seg = OPT_B + t[:, None] * (OPT_A - OPT_B)
    dist = np.linalg.norm(C - seg, axis=1)
    assert np.median(dist) < 0.02 and dist.max() < 0.08
    assert pareto_mask(result.front.predicted).all()
    # hypervolume close to that of the analytic front
    tt = np.linspace(0, 1, 501)[:, None]
    true_front = f(OPT_B + tt * (OPT_A - OPT_B))
    ref = np.array([0.0, 0.0])
    assert hypervolume(result.front.predicted, ref) >= 0.99 * hypervolume(true_front, ref)
    assert result.n_evaluated == 20 and len(result.history) == 20


def test_minimised_metrics_respect_direction():
    def loss(C):
        return 2.0 - quad(C)  # losses: lower is better, optimum where quad is best

    res = MergeStudy(objective=loss, task_names=["a", "b"], directions="min", budget=15,
                     seed=0).run()
    assert res.front.predicted[:, 0].min() < 1.0 + 1e-3
    assert pareto_mask(res.front.predicted, ["min", "min"]).all()
    best_a = res.front.coefficients[np.argmin(res.front.predicted[:, 0])]
    np.testing.assert_allclose(best_a, OPT_A, atol=0.05)


def test_seed_reproducibility():
    a = MergeStudy(objective=quad, task_names=["a", "b"], budget=12, seed=3).run()
    b = MergeStudy(objective=quad, task_names=["a", "b"], budget=12, seed=3).run()
    np.testing.assert_array_equal(a.history.X, b.history.X)
    np.testing.assert_allclose(a.front.coefficients, b.front.coefficients)
    c = MergeStudy(objective=quad, task_names=["a", "b"], budget=12, seed=4).run()
    assert not np.array_equal(a.history.X, c.history.X)


def test_store_reuses_every_evaluation(tmp_path):
    calls = []

    def f(C):
        calls.append(len(C))
        return quad(C)

    db = tmp_path / "s.sqlite"
    r1 = MergeStudy(objective=f, task_names=["a", "b"], budget=14, seed=0, storage=db).run()
    n_calls = sum(calls)
    assert n_calls == 14 and r1.n_evaluated == 14
    r2 = MergeStudy(objective=f, task_names=["a", "b"], budget=14, seed=0, storage=db).run()
    assert sum(calls) == n_calls, "a finished evaluation was redone"
    assert r2.n_evaluated == 0 and r2.n_reused == 14
    np.testing.assert_allclose(r1.front.coefficients, r2.front.coefficients)
    # a bigger budget evaluates only the new points
    r3 = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0, storage=db).run()
    assert r3.n_reused + r3.n_evaluated == 20 and r3.n_evaluated <= 20 - 14 + 14


def test_store_refuses_other_setup(tmp_path):
    db = tmp_path / "s.sqlite"
    MergeStudy(objective=quad, task_names=["a", "b"], budget=6, storage=db).run()
    with pytest.raises(StoreError, match="different setup"):
        MergeStudy(objective=quad, task_names=["a", "c"], budget=6, storage=db).run()


def test_nan_metrics_are_recorded_not_fitted():
    def f(C):
        out = quad(C)
        out[C[:, 0] > 0.9, 1] = np.nan
        return out

    with pytest.warns(MapframeWarning, match="NaN or infinite metric"):
        res = MergeStudy(objective=f, task_names=["a", "b"], budget=30, seed=0).run()
    bad = [e for e in res.history if e.status == "invalid"]
    assert bad and all(e.coefficients[0] > 0.9 for e in bad)
    assert res.history.X.shape[0] == 30 - len(bad)
    assert np.all(np.isfinite(res.front.predicted))


def test_infinite_metrics_everywhere_is_a_clear_error():
    with pytest.warns(MapframeWarning), pytest.raises(BudgetError, match="succeeded"):
        MergeStudy(objective=lambda C: np.full((len(C), 2), np.inf), task_names=["a", "b"],
                   budget=8).run()


def test_metric_outside_declared_range():
    with pytest.raises(MetricError, match=r"outside its declared range \[0, 1\]"):
        MergeStudy(objective=lambda C: 100 * quad(C), task_names=["a", "b"],
                   metric_ranges=[(0, 1), (0, 1)], budget=10).run()


def test_objective_wrong_shape():
    with pytest.raises(EvaluationError, match=r"must return shape \(\d+, 2\)"):
        MergeStudy(objective=lambda C: C.sum(axis=1), task_names=["a", "b"], budget=10).run()


def test_objective_exception_raise_and_record():
    def f(C):
        if np.any(C[:, 0] < 0.25):
            raise RuntimeError("bad merge")
        return quad(C)

    with pytest.raises(EvaluationError, match=r"bad merge.*on_error='record'"):
        MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0).run()
    res = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0,
                     on_error="record").run()
    failed = [e for e in res.history if e.status == "failed"]
    assert failed and all(e.coefficients[0] < 0.25 for e in failed)
    assert "bad merge" in failed[0].error


def test_budget_below_parameter_count():
    # The quadratic named explicitly (surrogate: auto takes the gp there: test_surrogate_choice).
    with pytest.raises(BudgetError, match=r"set budget >= 10"):
        MergeStudy(objective=quad, task_names=["a", "b", "c"], budget=9, surrogate="quadratic")


@pytest.mark.parametrize("bounds", [(0.0, np.inf), (np.nan, 1.0), (1.0, 0.0)])
def test_bad_search_bounds(bounds):
    with pytest.raises(ConfigError, match="search bounds"):
        MergeStudy(objective=quad, task_names=["a", "b"], search_bounds=bounds)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="exactly one of objective"):
        MergeStudy(task_names=["a"])
    with pytest.raises(ConfigError, match="task names must be unique"):
        MergeStudy(objective=quad, task_names=["a", "a"])
    with pytest.raises(ConfigError, match="preference has 3 weights"):
        MergeStudy(objective=quad, task_names=["a", "b"], preference=[1, 1, 1])
    with pytest.raises(ConfigError, match="non-negative"):
        MergeStudy(objective=quad, task_names=["a", "b"], preference=[-1, 1])
    with pytest.raises(ConfigError, match="budget must be a positive integer"):
        MergeStudy(objective=quad, task_names=["a", "b"], budget=0)


def test_verify_and_preference():
    res = MergeStudy(objective=quad, task_names=["a", "b"], budget=16, seed=0, verify=4,
                     preference=[1.0, 0.0]).run()
    ver = res.verification
    assert ver["n_verified"] == 4
    assert max(ver["mean_abs_error"].values()) < 1e-6  # exact surrogate
    assert res.front.verified.sum() == 4
    np.testing.assert_allclose(res.front.real[res.front.verified],
                               quad(res.front.coefficients[res.front.verified]))
    # all weight on task a: the selected point is task a's best
    assert res.selected == int(np.argmax(res.front.predicted[:, 0]))
    assert res.select([0, 1], measured_only=False) == int(np.argmax(res.front.predicted[:, 1]))
    # a new preference is chosen as the study chose: among the measured points
    measured = np.flatnonzero(res.front.measured)
    assert res.select([0, 1]) == measured[np.argmax(res.front.real[measured, 1])]


def test_progress_callback():
    events = []
    MergeStudy(objective=quad, task_names=["a", "b"], budget=8, progress=events.append).run()
    stages = [e.stage for e in events]
    # One event as the search starts (done 0), then one per stored evaluation.
    assert stages.count("evaluate") == 9 and stages[-1] == "done"
    assert [e.done for e in events if e.stage == "evaluate"] == list(range(0, 9))


# -- checkpoint-based studies ---------------------------------------------------------------
torch = pytest.importorskip("torch")


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)


def _write_checkpoints(tmp_path, n=2):
    from mapframe.merging.checkpoints import save_state_dict

    torch.manual_seed(0)
    base = TinyNet().state_dict()
    pre = save_state_dict(base, tmp_path / "pre.safetensors")
    ft = {}
    for i in range(n):
        sd = {k: v + 0.1 * (i + 1) * torch.randn_like(v) for k, v in base.items()}
        ft[f"t{i}"] = save_state_dict(sd, tmp_path / f"t{i}.safetensors")
    return pre, ft


def test_checkpoint_study_merges_and_exports(tmp_path):
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging.checkpoints import load_state_dict
    from mapframe.plugin import get_registry
    from mapframe.problem import Task

    pre, ft = _write_checkpoints(tmp_path)
    x = torch.linspace(-1, 1, 3)
    target = torch.tensor([0.3, -0.2])

    class DistanceEvaluator(ModelEvaluator):
        name = "distance-test"

        @property
        def tasks(self):
            return [Task("t0", "min", 0, np.inf), Task("t1", "min", 0, np.inf)]

        def build_model(self):
            return TinyNet()

        def score(self, model):
            y = model.lin(x)
            return [float(((y - target) ** 2).sum()), float(((y + target) ** 2).sum())]

    ev = DistanceEvaluator()
    study = MergeStudy(evaluator=ev, checkpoints={"pretrained": pre, "finetuned": ft},
                       budget=15, seed=0, verify=2, preference=[0.5, 0.5])
    assert get_registry().kind_of(DistanceEvaluator) == "evaluator"
    res = study.run()
    assert res.coefficient_names == ["t0", "t1"]
    path = res.export(tmp_path / "merged.safetensors")
    merged = load_state_dict(path)
    c = res.front.coefficients[res.selected]
    base = load_state_dict(pre)
    tvs = [load_state_dict(p) for p in ft.values()]
    for k in base:
        expect = base[k] + sum(ci * (tv[k] - base[k]) for ci, tv in zip(c, tvs))
        torch.testing.assert_close(merged[k], expect, rtol=1e-5, atol=1e-6)
    # the real metric of a front point (verified, or measured by the search: here the front
    # is the corner c = (1, 1), which the search evaluated) is the score of that exact merge
    i = int(np.flatnonzero(res.front.measured)[0])
    model = TinyNet()
    sd = {k: base[k] + sum(ci * (tv[k] - base[k]) for ci, tv in
                           zip(res.front.coefficients[i], tvs)) for k in base}
    model.load_state_dict(sd)
    with torch.no_grad():
        np.testing.assert_allclose(res.front.real[i], ev.score(model), rtol=1e-5)


def test_evaluator_prepares_checkpoints_before_task_vectors(tmp_path):
    """``Evaluator.prepare_checkpoint`` sees every file and its output is what is merged."""
    from mapframe.errors import CheckpointError
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging.checkpoints import save_state_dict
    from mapframe.problem import Task

    torch.manual_seed(0)
    base = TinyNet().state_dict()
    wrap = {f"wrapper.{k}": v for k, v in base.items()} | {"text.embed": torch.ones(5)}
    pre = save_state_dict(wrap, tmp_path / "pre.safetensors")
    ft = {"t0": save_state_dict({k: v + 1.0 for k, v in base.items()},
                                tmp_path / "t0.safetensors")}
    seen = []

    class Unwrap(ModelEvaluator):
        name = "unwrap-test"

        @property
        def tasks(self):
            return [Task("w")]

        def prepare_checkpoint(self, state, source):
            seen.append(source)
            if source.endswith("broken.safetensors"):
                raise CheckpointError(f"{source}: not my layout")
            return {k.removeprefix("wrapper."): v for k, v in state.items()
                    if not k.startswith("text.")}

        def build_model(self):
            return TinyNet()

        def score(self, model):
            return [float(model.lin.weight.sum())]

    ev = Unwrap()
    study = MergeStudy(evaluator=ev, checkpoints={"pretrained": pre, "finetuned": ft},
                       budget=3, seed=0)
    res = study.run()
    assert sorted(seen) == sorted([str(pre), str(ft["t0"])])
    # metric is linear in c: sum(W0) + c * (6 entries * 1.0)
    c = res.history.X[:, 0]
    assert len(c) == 3
    np.testing.assert_allclose(res.history.Y[:, 0],
                               float(base["lin.weight"].sum()) + 6.0 * c, rtol=1e-5)
    broken = save_state_dict(base, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="not my layout"):
        MergeStudy(evaluator=Unwrap(), checkpoints={"pretrained": broken, "finetuned": ft},
                   budget=3).run()


def test_checkpoint_errors(tmp_path):
    from mapframe.evaluators.callable import CallableEvaluator

    pre, ft = _write_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        MergeStudy(evaluator=CallableEvaluator(quad, ["a", "b"]),
                   checkpoints={"pretrained": tmp_path / "nope.safetensors", "finetuned": ft})
    with pytest.raises(ConfigError, match="checkpoints must be a mapping"):
        MergeStudy(evaluator=CallableEvaluator(quad, ["a", "b"]),
                   checkpoints={"base": pre, "finetuned": ft})


def test_export_needs_checkpoints():
    res = MergeStudy(objective=quad, task_names=["a", "b"], budget=8).run()
    with pytest.raises(ConfigError, match="no checkpoints to merge"):
        res.export("x.safetensors", 0)


def test_result_save_writes_everything(tmp_path):
    res = MergeStudy(objective=quad, task_names=["a", "b"], budget=10, verify=2,
                     sampler="sobol").run()  # the Sobol' design the rows below describe
    paths = res.save(tmp_path / "out")
    for key in ("front_csv", "front_json", "evaluations_csv", "surrogates_json",
                "summary_json", "front_png"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    import csv

    rows = list(csv.DictReader(paths["front_csv"].open()))
    assert len(rows) == len(res.front)
    assert {"c_a", "c_b", "predicted_a", "predicted_b", "real_a", "real_b"} <= set(rows[0])
    # Issue 20 (a front never worse than the measurements): besides the 2 verified points,
    # the search point c=(0.520, 0.485), measured a=0.840 b=0.799, lies in a gap of the
    # solved front (no front point dominates it), so it enters the front as "measured" and
    # carries real metrics too: 3 rows with real values, 2 of them verified.
    assert sum(1 for r in rows if r["source"] == "verified") == 2
    assert sum(1 for r in rows if r["real_a"]) == 3


def test_unidentifiable_design_is_refused_before_evaluating():
    from mapframe.samplers.base import Sampler

    class Corners(Sampler):
        """Only 0/1 coordinates: c_j**2 == c_j, so the quadratic's diagonal is lost."""

        name = "corners-test"

        def propose(self, n, space, history, rng):
            return rng.integers(0, 2, size=(n, space.n_dims)).astype(float)

    calls = []

    def f(C):
        calls.append(len(C))
        return quad(C)

    with pytest.raises(BudgetError, match="does not identify the quadratic"):
        MergeStudy(objective=f, task_names=["a", "b"], budget=12, sampler=Corners()).run()
    assert calls == [], "a useless design must not cost evaluations"


def test_in_memory_task_vectors_are_part_of_the_store_identity(tmp_path):
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging import TaskVectors
    from mapframe.problem import Task

    class Norm(ModelEvaluator):
        name = "norm-test"

        @property
        def tasks(self):
            return [Task("w"), Task("b")]

        def build_model(self):
            return TinyNet()

        def score(self, model):
            return [float(model.lin.weight.sum()), float(model.lin.bias.sum())]

    torch.manual_seed(0)
    base = TinyNet().state_dict()
    fts = [{k: v + torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    db = tmp_path / "s.sqlite"
    MergeStudy(evaluator=Norm(), task_vectors=TaskVectors(base, fts, ["x", "y"]), budget=6,
               storage=db).run()
    other = [{k: v + 2 * torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    with pytest.raises(StoreError, match="merge"):
        MergeStudy(evaluator=Norm(), task_vectors=TaskVectors(base, other, ["x", "y"]),
                   budget=6, storage=db).run()
    # Same norms, other weights: a negated task vector (task negation) and the two tasks'
    # vectors swapped used to pass as the original (norms only).
    tv = TaskVectors(base, fts, ["x", "y"])
    negated = TaskVectors.from_vectors(
        base, [{k: -v for k, v in tv.vector(i).items()} for i in range(2)], ["x", "y"])
    swapped = TaskVectors.from_vectors(base, [tv.vector(1), tv.vector(0)], ["x", "y"])
    norms = tv.fingerprint()["task_sq_norms"]
    assert negated.fingerprint()["task_sq_norms"] == norms
    assert swapped.fingerprint()["task_sq_norms"] == norms[::-1]
    for tvs in (negated, swapped):
        with pytest.raises(StoreError, match="merge"):
            MergeStudy(evaluator=Norm(), task_vectors=tvs, budget=6, storage=db).run()
    again = MergeStudy(evaluator=Norm(), task_vectors=TaskVectors(base, fts, ["x", "y"]),
                       budget=6, storage=db).run()
    assert again.n_evaluated == 0 and again.n_reused == 6


def test_task_vectors_digest_follows_in_place_changes():
    from mapframe.merging import TaskVectors

    base = {"w": torch.zeros(3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    tv = TaskVectors(base, [{"w": torch.ones(3), "b": torch.ones(2, dtype=torch.bfloat16)},
                            {"w": 2 * torch.ones(3), "b": torch.zeros(2, dtype=torch.bfloat16)}],
                     ["x", "y"])
    first = tv.fingerprint()["digest"]
    assert tv.fingerprint()["digest"] == first  # the cached digest
    tv._vectors["w"][0, 1] += 1  # an in-place edit is seen, not served from the cache
    assert tv.fingerprint()["digest"] != first


def test_task_vectors_stored_before_their_digest_still_resume():
    from mapframe.storage.base import fingerprint_diff

    weights = {"tasks": ["x", "y"], "task_sq_norms": [1.0, 2.0]}
    old = {"merge": {"strategy": "ta", "in_memory": weights}}
    assert fingerprint_diff(old, {"merge": {"strategy": "ta",
                                            "in_memory": {**weights, "digest": "d"}}}) == []
    assert fingerprint_diff(old, {"merge": {"strategy": "ta", "in_memory": {
        **weights, "task_sq_norms": [1.0, 3.0], "digest": "d"}}}) == ["merge"]
    new = {"merge": {"strategy": "ta", "in_memory": {**weights, "digest": "d"}}}
    assert fingerprint_diff(new, {"merge": {"strategy": "ta", "in_memory": {
        **weights, "digest": "e"}}}) == ["merge"]


def test_out_of_range_metrics_stop_a_resumed_study_too(tmp_path):
    db = tmp_path / "s.sqlite"
    kwargs = dict(task_names=["a", "b"], metric_ranges=[(0, 1), (0, 1)], budget=10,
                  storage=db)
    with pytest.raises(MetricError):
        MergeStudy(objective=lambda C: 100 * quad(C), **kwargs).run()
    with pytest.raises(MetricError, match="outside its declared range"):
        MergeStudy(objective=lambda C: 100 * quad(C), **kwargs).run()


def test_an_out_of_range_row_keeps_the_rest_of_its_batch(tmp_path):
    """A metric outside its range stops the study, but every row the evaluator finished in
    that batch is stored first (before, the rows after the bad one were lost)."""
    import sqlite3

    evaluated: list[tuple[float, ...]] = []

    def f(C):
        C = np.atleast_2d(C)
        out = quad(C) / 2
        out[C[:, 0] > 0.7, 0] = -1e-6  # a rounding just below the declared 0
        evaluated.extend(map(tuple, C))
        return out

    db = tmp_path / "s.sqlite"
    with pytest.raises(MetricError, match="outside its declared range"):
        MergeStudy(objective=f, task_names=["a", "b"], metric_ranges=[(0, 1), (0, 1)],
                   budget=12, seed=0, sampler="sobol",
                   executor={"name": "inprocess", "batch_size": 12}, storage=db).run()
    bad = sum(c[0] > 0.7 for c in evaluated)
    assert 0 < bad < len(evaluated) == 12
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 12


def test_poor_surrogate_fit_warns():
    rng = np.random.default_rng(0)

    def noise(C):
        return rng.uniform(0, 1, (len(C), 2))

    with pytest.warns(MapframeWarning, match="fits poorly"):
        MergeStudy(objective=noise, task_names=["a", "b"], budget=40).run()


def test_retrained_checkpoint_is_not_confused_with_the_old_one(tmp_path):
    import os

    from mapframe.evaluators.callable import CallableEvaluator

    pre, ft = _write_checkpoints(tmp_path)
    db = tmp_path / "s.sqlite"

    def study():
        return MergeStudy(evaluator=CallableEvaluator("objectives:two_quadratics", ["a", "b"]),
                          checkpoints={"pretrained": pre, "finetuned": ft}, budget=6,
                          storage=db)

    study().run()
    st = os.stat(ft["t0"])
    os.utime(ft["t0"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten in place
    with pytest.raises(StoreError, match="merge"):
        study().run()


def test_selected_point_is_verified():
    res = MergeStudy(objective=quad, task_names=["a", "b"], budget=12, seed=0, verify=2,
                     preference=[0.3, 0.7]).run()
    assert res.front.verified[res.selected]
    assert res.verification["n_verified"] == 2
    np.testing.assert_allclose(res.front.real[res.selected],
                               quad(res.front.coefficients[res.selected])[0])


@pytest.mark.parametrize("strategy", ["task_arithmetic", "task_arithmetic_scalar",
                                      "task_arithmetic_preference", "ties",
                                      "dare_task_arithmetic", "dare_ties", "slerp", "soup"])
def test_map_runs_over_every_merge_strategy_by_name(tmp_path, strategy):
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging.checkpoints import load_state_dict
    from mapframe.problem import Task

    pre, ft = _write_checkpoints(tmp_path)
    x = torch.linspace(-1, 1, 3)

    class Outputs(ModelEvaluator):
        name = "outputs-test"

        @property
        def tasks(self):
            return [Task("y0"), Task("y1")]

        def build_model(self):
            return TinyNet()

        def score(self, model):
            y = model.lin(x)
            return [float(y[0]), float(-y[1])]

    res = MergeStudy(evaluator=Outputs(), checkpoints={"pretrained": pre, "finetuned": ft},
                     merge_strategy=strategy, search_bounds=(0.05, 1.0), budget=8, seed=0,
                     verify=1, preference=[0.5, 0.5]).run()
    assert res.settings["merge"]["strategy"]["name"] == strategy
    merged = load_state_dict(res.export(tmp_path / "m.safetensors"))
    model = TinyNet()
    model.load_state_dict(merged)
    with torch.no_grad():
        np.testing.assert_allclose(Outputs().score(model), res.front.real[res.selected],
                                   rtol=1e-5, atol=1e-6)


def test_evaluator_loads_checkpoint_folders_itself(tmp_path):
    """``Evaluator.load_task_vectors`` reads folders mapframe cannot; folders are part of the
    store's identity through every file in them; without a loader a folder is an error."""
    import os

    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging.checkpoints import TaskVectors, load_state_dict, save_state_dict
    from mapframe.problem import Task

    pre, ft = _write_checkpoints(tmp_path)
    folders = {}
    for name, path in [("pre", pre), *ft.items()]:
        folder = tmp_path / f"{name}-folder"
        folder.mkdir()
        save_state_dict(load_state_dict(path), folder / "weights.safetensors")
        folders[name] = folder
    calls = []

    class FolderEvaluator(ModelEvaluator):
        name = "folder-test"

        @property
        def tasks(self):
            return [Task("w")]

        def load_task_vectors(self, pretrained, finetuned):
            calls.append((pretrained, dict(finetuned)))

            def read(p):
                return load_state_dict(os.path.join(p, "weights.safetensors"))

            return TaskVectors(read(pretrained), [read(p) for p in finetuned.values()],
                               list(finetuned))

        def build_model(self):
            return TinyNet()

        def score(self, model):
            return [float(model.lin.weight.sum())]

    def run(checkpoints, evaluator, db=None):
        return MergeStudy(evaluator=evaluator, checkpoints=checkpoints, budget=6, seed=0,
                          storage=db).run()

    by_folder = {"pretrained": folders["pre"], "finetuned": {k: folders[k] for k in ft}}
    db = tmp_path / "s.sqlite"
    res = run(by_folder, FolderEvaluator(), db)
    assert calls and calls[0][0] == str(folders["pre"])
    class FileEvaluator(FolderEvaluator):
        name = "file-test"

        def load_task_vectors(self, pretrained, finetuned):
            return None  # mapframe's own loader reads the files

    by_file = run({"pretrained": pre, "finetuned": ft}, FileEvaluator())
    np.testing.assert_allclose(res.history.Y, by_file.history.Y, rtol=1e-6)
    # A file rewritten inside a folder changes the study's identity.
    w = folders["t0"] / "weights.safetensors"
    st = os.stat(w)
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StoreError, match="merge"):
        run(by_folder, FolderEvaluator(), db)
    # Evaluators without a loader read files only.
    class NoLoader(FolderEvaluator):
        name = "no-loader-test"
        load_task_vectors = ModelEvaluator.load_task_vectors

    with pytest.raises(CheckpointError, match="is a folder"):
        MergeStudy(evaluator=NoLoader(), checkpoints=by_folder, budget=4)


def test_evaluator_with_changing_public_state_finishes_and_resumes(tmp_path):
    """An evaluator counting its calls in a public attribute changes its description while
    it runs: the finished study must still be stored (it raised StoreError at the end), and
    a fresh evaluator resumes it without evaluating again."""
    from mapframe.evaluators import Evaluator
    from mapframe.problem import Task

    class Counting(Evaluator):
        name = "counting"

        def __init__(self):
            self.calls = 0

        @property
        def tasks(self):
            return [Task("a"), Task("b")]

        def evaluate_tasks(self, coefficients, tasks):
            self.calls += 1
            return quad(coefficients)[:, list(tasks)]

    db = tmp_path / "store.sqlite"
    first = MergeStudy(evaluator=Counting(), budget=8, seed=0, storage=db).run()
    assert first.n_evaluated == 8
    again = MergeStudy(evaluator=Counting(), budget=8, seed=0, storage=db).run()
    assert again.n_evaluated == 0 and again.n_reused == 8


@pytest.mark.parametrize("name", ["error", "status", "phase", "round", "duration_s"])
def test_a_task_named_like_a_column_of_evaluations_csv_is_a_one_line_error(name, tmp_path):
    """Its metric column overwrote that column: a task named "error" left its metrics
    empty in evaluations.csv, "status" hid every successful point from the report."""
    with pytest.raises(ConfigError, match=rf"'{name}' are also columns of the results' "
                                          r"evaluations.csv.*rename the task"):
        MergeStudy(objective=quad, task_names=[name, "b"], budget=6)
    # a coefficient's column too (c_<coefficient>), with coefficients named apart from tasks
    from mapframe.results import check_task_columns

    with pytest.raises(ConfigError, match="'c_x'"):
        check_task_columns(["c_x", "b"], ["x", "y"])
    check_task_columns(["loss", "acc"], ["loss", "acc"])
