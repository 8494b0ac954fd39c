"""The front sampler's pilot script (benchmarks/pilot_front.py): its own pieces.

What is checked: the quadratic-prior-mean variant reproduces a quadratic from as many points
as it has parameters and leaves the sampler's GP fit as it was afterwards, the reported
seeds 0-2 are refused, and seed ranges parse; the quadratic-trend and mean ± std variants
change the fits only while they run, as does the BoTorch-Matérn variant; the variants added
on 2026-12-06 and later run the shipped surrogate rule; and the reference-gap diagnostic
(benchmarks/pilot_reference_gap.py) refuses the reported seeds and task counts without a
dense reference; the GP variants of benchmarks/pilot_gp_variants.py follow a smooth
function and are deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

pytest.importorskip("gpytorch")

from benchmarks import pilot_front


def test_quadratic_mean_variant_follows_a_quadratic_and_is_undone_afterwards():
    import mapframe.surrogates.gp as front  # the fit the front sampler's rounds call

    plain = front.fit_gp
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(12, 2))
    quad = lambda C: 0.3 + C[:, 0] - 2 * (C[:, 1] - 0.4) ** 2 + C[:, 0] * C[:, 1]  # noqa: E731
    box = (np.zeros(2), np.ones(2))
    with pilot_front._quadratic_mean(ridge=0.0):
        assert front.fit_gp is not plain
        gp = front.fit_gp(X, quad(X), bounds=box)
        few = front.fit_gp(X[:5], quad(X[:5]), bounds=box)  # fewer points than parameters
    assert front.fit_gp is plain
    Z = rng.uniform(size=(50, 2))
    np.testing.assert_allclose(gp.mean(Z), quad(Z), atol=1e-6)
    mean, var = gp.mean_var(Z)
    np.testing.assert_allclose(mean, quad(Z), atol=1e-6)
    assert np.all(var >= 0)
    assert not isinstance(few, pilot_front._QuadraticMeanGP)


def test_reported_seeds_are_refused_and_ranges_parse(capsys):
    assert pilot_front._seeds("100-103") == [100, 101, 102, 103]
    assert pilot_front._seeds("7,9") == [7, 9]
    with pytest.raises(SystemExit):
        pilot_front.main(["base", "--seeds", "0-3"])
    assert "reported seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the close cells' more seeds are reported too
        pilot_front.main(["base", "--seeds", "5"])
    assert "reported seeds" in capsys.readouterr().err


def test_select_variants_hand_the_front_solver_and_surrogate_to_the_study(monkeypatch):
    import benchmarks.bench_peers as bp

    seen = {}

    def fake_job(job):
        seen["mode"] = dict(bp.MAP_MODES[job["mode"]])
        seen["surrogate"] = bp.surrogate_for(50, 3)
        return [{"hv_fraction": 0.5, "overhead_s": 1.0}]

    monkeypatch.setattr(bp, "_map_job", fake_job)
    plain_rule = bp.surrogate_for
    out = pilot_front._one(("select-hv-gp", 3, 50, 100, True))
    assert out == ("select-hv-gp", 3, 50, 100, 0.5, 1.0)
    assert seen["mode"]["front_solver"] == {"name": "auto", "select": "hypervolume"}
    assert seen["mode"]["sampler"] == {"name": "front"}
    assert seen["surrogate"] == "gp"
    assert bp.surrogate_for is plain_rule  # restored afterwards
    pilot_front._one(("select-hv", 3, 50, 100, True))
    # 50 >= (N+1)(N+2) = 20: the benchmark's rule says auto; variants keep the quadratic
    assert seen["surrogate"] == {"name": "auto"}
    pilot_front._one(("base", 3, 50, 100, True))
    assert seen["surrogate"] == "auto"  # as shipped: the study resolves it
    pilot_front._one(("select-solver", 3, 50, 100, True))
    assert seen["mode"]["front_solver"] == {"name": "auto", "select": "solver"}


def test_no_warp_variant_turns_the_warp_off_in_the_rounds_and_the_gp_surrogate(monkeypatch):
    import benchmarks.bench_peers as bp

    seen = {}

    def fake_job(job):
        seen["mode"] = dict(bp.MAP_MODES[job["mode"]])
        seen["small"], seen["large"] = bp.surrogate_for(10, 3), bp.surrogate_for(50, 3)
        return [{"hv_fraction": 0.5, "overhead_s": 1.0}]

    monkeypatch.setattr(bp, "_map_job", fake_job)
    plain_rule = bp.surrogate_for
    pilot_front._one(("no-warp", 3, 10, 100, False))
    assert seen["mode"]["sampler"] == {"name": "front", "warp": "none"}
    assert seen["small"] == {"name": "gp", "warp": "none"}  # the rule picks gp there
    assert seen["large"] == {"name": "auto"}
    assert bp.surrogate_for is plain_rule


def test_small_start_variant_starts_with_n_plus_2_points_at_every_budget(monkeypatch):
    import benchmarks.bench_peers as bp
    from mapframe.samplers.front import FrontSampler

    seen = {}

    def fake_job(job):
        seen["mode"] = dict(bp.MAP_MODES[job["mode"]])
        return [{"hv_fraction": 0.5, "overhead_s": 1.0}]

    monkeypatch.setattr(bp, "_map_job", fake_job)
    pilot_front._one(("small-start", 4, 30, 100, False))
    assert seen["mode"]["sampler"] == {"name": "front", "initial": 6}
    # As built by the study: 6 Sobol' points where `auto` would start with 2 (N + 1) = 10.
    assert FrontSampler(initial=6).initial_size(4, 27) == 6
    assert FrontSampler().initial_size(4, 27) == 10


def _seen(monkeypatch, variant, n, budget, searches, rule_n):
    """What the peers benchmark's job sees when ``pilot_front._one`` runs ``variant`` (the
    job itself faked): the mode's settings, its verify share, and the surrogate rule at each
    of ``searches`` search evaluations for ``rule_n`` tasks."""
    import benchmarks.bench_peers as bp

    seen = {}

    def fake_job(job):
        seen["mode"] = dict(bp.MAP_MODES[job["mode"]])
        seen["share"] = bp.VERIFY_SHARE_OF[job["mode"]]
        seen["rule"] = [bp.surrogate_for(s, rule_n) for s in searches]
        return [{"hv_fraction": 0.5, "overhead_s": 1.0}]

    monkeypatch.setattr(bp, "_map_job", fake_job)
    pilot_front._one((variant, n, budget, 100, False))
    return seen


@pytest.mark.parametrize("name, share, sampler", [("gp-sampler-gp-final", 0.3, "gp"),
                                                  ("gp-sampler-share-0.2", 0.2, "gp"),
                                                  ("gp-sampler-share-0.1", 0.1, "gp"),
                                                  ("botorch-sampler-gp-final", 0.3, "botorch")])
def test_gp_sampler_variants_verify_their_share_with_the_gp_surrogate_at_every_budget(
        monkeypatch, name, share, sampler):
    import benchmarks.bench_peers as bp

    # At 50 search evaluations for 3 tasks the benchmark's rule says auto: these say gp.
    seen = _seen(monkeypatch, name, 4, 30, (50,), 3)
    k = round(share * 30)
    assert seen["mode"] == {"sampler": {"name": sampler}}
    assert seen["share"] == share and seen["rule"] == ["gp"]
    assert bp.map_split(30, 4, seen["share"])[:2] == (30 - k, k)


def test_shipped_variant_keeps_the_benchmarks_surrogate_rule_as_shipped(monkeypatch):
    # pick-expected changes the rounds only: where the benchmark's rule says `auto` it stays
    # "auto" (which the study resolves), not the mapping that keeps the quadratic.
    import benchmarks.bench_peers as bp

    plain = bp.surrogate_for
    seen = _seen(monkeypatch, "pick-expected", 3, 20, (5, 50), 3)
    assert seen["mode"] == {"sampler": {"name": "front", "pick": "expected"}}
    assert seen["share"] == bp.VERIFY_SHARE_OF[pilot_front.FRONT_MODE]
    assert seen["rule"] == [plain(5, 3), plain(50, 3)] and "auto" in seen["rule"]
    # The botorch sampler as the peers benchmark's mode runs it.
    seen = _seen(monkeypatch, "botorch-sampler", 3, 20, (5, 50), 3)
    assert seen["mode"] == {"sampler": {"name": "botorch"}}
    assert seen["share"] == bp.VERIFY_SHARE_OF.get(bp.BOTORCH_MODE, bp.VERIFY_SHARE)
    assert seen["rule"] == [plain(5, 3), plain(50, 3)]


@pytest.mark.parametrize("name, sampler, share, small, large", [
    ("plain", {"name": "sobol"}, 0.3, "auto", "auto"),
    ("plain-gp", {"name": "sobol"}, 0.3, "gp", "gp"),
    ("plain-quadratic", {"name": "sobol"}, 0.3, {"name": "auto"}, {"name": "auto"}),
    ("quadratic-final", {"name": "front"}, None, "gp", {"name": "auto"}),
    ("quadratic-always", {"name": "front"}, None, {"name": "auto"}, {"name": "auto"})])
def test_surrogate_rule_variants(monkeypatch, name, sampler, share, small, large):
    # plain: Plain MAP as the benchmark runs it ("auto", which the study resolves); plain-gp
    # the gp at every budget; plain-quadratic and quadratic-always keep the quadratic at
    # every budget; a variant not marked shipped (quadratic-final) the benchmark's rule until
    # 2026-12-06 (gp below (N+1)(N+2) = 30 search evaluations at 4 tasks, the quadratic above).
    import benchmarks.bench_peers as bp

    seen = _seen(monkeypatch, name, 4, 30, (10, 30), 4)
    assert seen["mode"] == {"sampler": sampler}
    assert seen["share"] == (share if share is not None
                             else bp.VERIFY_SHARE_OF[pilot_front.FRONT_MODE])
    assert seen["rule"] == [small, large]


def test_trend_and_bound_variants_change_the_fits_and_are_undone_afterwards():
    import mapframe.surrogates.gp as gp
    from mapframe.problem import Task

    plain_fit, plain_predict = gp.fit_gp, gp.GPSurrogate.predict
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(15, 2))
    y = 1.0 - ((X - 0.3) ** 2).sum(axis=1)
    with pilot_front._quadratic_trend():
        assert "trend_scale" in gp.fit_gp(X, y).hyperparameters()
    assert gp.fit_gp is plain_fit
    s = gp.GPSurrogate().fit(X, y, Task("t"))
    Z = rng.uniform(size=(8, 2)) + 0.5  # partly outside the data: a visible std
    mean, std = s.predict(Z), s.predict_std(Z)
    with pilot_front._final_bound(1.0):
        np.testing.assert_allclose(s.predict(Z), mean - std)
    with pilot_front._final_bound(-0.5):
        np.testing.assert_allclose(s.predict(Z), mean + 0.5 * std)
    assert gp.GPSurrogate.predict is plain_predict
    np.testing.assert_allclose(s.predict(Z), mean)


def test_botorch_matern_variant_builds_the_gp_kernel_and_is_undone_afterwards():
    pytest.importorskip("botorch")
    from unittest import mock

    import botorch.models
    import torch
    from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel

    from mapframe.samplers.botorch_sampler import botorch_batch

    plain = botorch.models.SingleTaskGP
    rng = np.random.default_rng(2)
    X = rng.uniform(size=(8, 2))
    Y = np.column_stack([1 - ((X - 0.3) ** 2).sum(axis=1), 1 - ((X - 0.7) ** 2).sum(axis=1)])
    built = []
    with pilot_front._botorch_matern():
        patched = botorch.models.SingleTaskGP
        assert patched is not plain

        def spy(X, Y, **kw):
            model = patched(X, Y, **kw)
            built.append(model.covar_module)
            return model

        with mock.patch.object(botorch.models, "SingleTaskGP", spy):
            C = botorch_batch(X, Y, 2, "qlognehvi", mc_samples=16, num_restarts=2,
                              raw_samples=16, seed=0)  # the sampler's own call
    assert C.shape == (2, 2) and len(built) == 2  # one model per task, each Matérn-5/2
    for covar in built:
        assert isinstance(covar, ScaleKernel) and isinstance(covar.base_kernel, MaternKernel)
        assert covar.base_kernel.nu == 2.5
    assert botorch.models.SingleTaskGP is plain
    default = plain(torch.tensor(X), torch.tensor(Y[:, :1])).covar_module
    assert isinstance(default, RBFKernel)  # BoTorch's own default, back in place


def test_variants_added_later_run_the_shipped_surrogate_rule(monkeypatch):
    import benchmarks.bench_peers as bp

    seen = {}

    def fake_job(job):
        seen["surrogate"] = bp.surrogate_for(50, 3)
        seen["share"] = bp.VERIFY_SHARE_OF[job["mode"]]
        return [{"hv_fraction": 0.5, "overhead_s": 1.0}]

    monkeypatch.setattr(bp, "_map_job", fake_job)
    for name in ("trend", "final-lcb-0.5", "botorch-sampler-matern",
                 "botorch-sampler-share-0.1"):
        pilot_front._one((name, 3, 50, 100, False))
        assert seen["surrogate"] == "auto"  # the study resolves it, as for a user
    assert seen["share"] == 0.1


def test_reference_gap_refuses_reported_seeds_and_other_task_counts(capsys):
    from benchmarks import pilot_reference_gap

    for argv in (["--seeds", "1-3"], ["--cells", "2:10", "--seeds", "100"]):
        with pytest.raises(SystemExit):
            pilot_reference_gap.main(argv)
    err = capsys.readouterr().err
    assert "reported seeds" in err and "N = 3 and 4 only" in err


@pytest.mark.parametrize("name, sampler, share", [
    ("lhs-start", {"name": "front", "design": "lhs"}, 0.1),
    ("sobol-start", {"name": "front", "design": "sobol"}, 0.1),
    ("gp-sampler-shipped", {"name": "gp"}, 0.3),
    ("gp-sampler-lhs", {"name": "gp", "design": "lhs"}, 0.3),
    ("plain-lhs", {"name": "lhs", "optimization": "random-cd"}, 0.3),
    ("small-start-lhs", {"name": "front", "initial": 6}, 0.1),
    ("botorch-sampler-lhs", {"name": "botorch", "design": "lhs"}, 0.3)])
def test_initial_design_variants_name_their_design(monkeypatch, name, sampler, share):
    seen = _seen(monkeypatch, name, 4, 30, [20, 27], 4)
    assert seen["mode"]["sampler"] == sampler and seen["share"] == share
    assert seen["rule"] == ["auto", "auto"]  # the shipped rule: the study resolves it


def test_design_pilot_draws_each_design_within_the_cube():
    from benchmarks import pilot_design_hv

    for kind in pilot_design_hv.DESIGNS:
        X = pilot_design_hv.design(kind, 10, 4, seed=3)
        assert X.shape == (10, 4) and np.all((X >= 0) & (X <= 1))
        np.testing.assert_array_equal(X, pilot_design_hv.design(kind, 10, 4, seed=3))
    strata = np.sort(np.floor(pilot_design_hv.design("lhs-cd", 10, 4, 3) * 10), axis=0)
    assert (strata == np.arange(10)[:, None]).all()  # a Latin hypercube
    with pytest.raises(ValueError, match="unknown design 'grid'"):
        pilot_design_hv.design("grid", 10, 4, 3)


@pytest.mark.parametrize("variant", ["input-warp", "additive"])
def test_gp_variant_pilot_fits_follow_a_smooth_function(variant):
    """Each GP variant of benchmarks/pilot_gp_variants.py, fitted to 40 points of a smooth
    function, predicts 200 others with a tenth of the constant predictor's error, and the
    fit is a deterministic function of its data."""
    from benchmarks import pilot_gp_variants

    rng = np.random.default_rng(4)
    X, Xh = rng.uniform(size=(40, 3)), rng.uniform(size=(200, 3))

    def f(Z):
        return np.tanh(4 * Z[:, 0] - 2) + Z[:, 1] * Z[:, 2] - 0.5 * Z[:, 2] ** 2

    mean = pilot_gp_variants.fit(X, f(X), variant)
    rmse = np.sqrt(np.mean((mean(Xh) - f(Xh)) ** 2))
    assert rmse < 0.1 * np.std(f(Xh))
    np.testing.assert_allclose(pilot_gp_variants.fit(X, f(X), variant)(Xh), mean(Xh))
    with pytest.raises(ValueError, match="unknown variant 'rbf'"):
        pilot_gp_variants.fit(X, f(X), "rbf")


def test_shared_lengthscale_pilot_fit_follows_every_task():
    """The shared-lengthscales variant of benchmarks/pilot_gp_variants.py, fitted jointly to
    two smooth functions of the same inputs, predicts each with a tenth of the constant
    predictor's error; the fit is deterministic."""
    from benchmarks import pilot_gp_variants

    rng = np.random.default_rng(5)
    X, Xh = rng.uniform(size=(40, 3)), rng.uniform(size=(200, 3))

    def f(Z):
        return np.column_stack([np.tanh(4 * Z[:, 0] - 2) + Z[:, 1] * Z[:, 2],
                                3 * np.sin(2 * Z[:, 1]) - Z[:, 0] ** 2 + 10])

    mean = pilot_gp_variants.fit_shared(X, f(X))
    got = mean(Xh)
    assert got.shape == (200, 2)
    rmse = np.sqrt(np.mean((got - f(Xh)) ** 2, axis=0))
    assert np.all(rmse < 0.1 * np.std(f(Xh), axis=0))
    np.testing.assert_allclose(pilot_gp_variants.fit_shared(X, f(X))(Xh), got)
