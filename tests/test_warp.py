"""Metric warps for the Gaussian processes (``mapframe.surrogates.warp``)."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe.errors import ConfigError
from mapframe.problem import Task
from mapframe.surrogates.quadratic import AutoSurrogate
from mapframe.surrogates.warp import MetricWarp, WarpedGP, check_warp, range_link

pytest.importorskip("gpytorch")

ACCURACY = Task("acc", "max", 0.0, 1.0)
LOSS = Task("loss", "min", lower=0.0)
SCORE = Task("score", "max", upper=10.0)
FREE = Task("free", "max")


@pytest.mark.parametrize("task, kind", [(ACCURACY, "logit"), (LOSS, "softplus (lower bound)"),
                                        (SCORE, "softplus (upper bound)"), (FREE, "identity"),
                                        (None, "identity")])
def test_the_warp_follows_the_declared_range(task, kind):
    y = np.array([0.2, 0.5, 0.9])
    assert MetricWarp.for_task(task, y).describe() == kind
    assert MetricWarp.for_task(task, y, "none").describe() == "identity"


@pytest.mark.parametrize("task, link, model, bound", [
    (ACCURACY, "logit", "SigmoidQuadraticSurrogate", None),
    (LOSS, "softplus-lower", "SoftplusQuadraticSurrogate", "lower"),
    (SCORE, "softplus-upper", "SoftplusQuadraticSurrogate", "upper"),
    (FREE, "identity", "QuadraticSurrogate", None), (None, "identity", "QuadraticSurrogate", None)])
def test_the_auto_quadratic_and_the_gp_warp_read_the_range_alike(task, link, model, bound):
    assert range_link(task) == link
    chosen = AutoSurrogate().choose(task)
    assert type(chosen).__name__ == model and getattr(chosen, "bound", None) == bound


@pytest.mark.parametrize("task, y", [(ACCURACY, [0.01, 0.3, 0.77, 0.99]),
                                     (LOSS, [0.05, 1.0, 7.0]), (SCORE, [9.9, 5.0, -3.0]),
                                     (FREE, [-2.0, 0.0, 3.5])])
def test_round_trip_and_slope(task, y):
    y = np.array(y)
    warp = MetricWarp.for_task(task, y)
    g = warp.to_latent(y)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(warp.to_metric(g), y, rtol=1e-9, atol=1e-12)
    h = 1e-6
    numeric = (warp.to_metric(g + h) - warp.to_metric(g - h)) / (2 * h)
    np.testing.assert_allclose(warp.slope(g), np.abs(numeric), rtol=1e-5)


def test_values_at_the_bounds_are_clipped_inside():
    warp = MetricWarp.for_task(ACCURACY, np.array([0.0, 1.0]))
    g = warp.to_latent(np.array([0.0, 1.0]))
    assert np.all(np.isfinite(g)) and g[0] < -6 and g[1] > 6
    assert np.all((warp.to_metric(np.array([-50.0, 50.0])) >= 0)
                  & (warp.to_metric(np.array([-50.0, 50.0])) <= 1))
    loss = MetricWarp.for_task(LOSS, np.array([0.0, 2.0]))
    assert np.isfinite(loss.to_latent(np.array([0.0]))).all()


def test_bad_warp_setting_is_one_line():
    with pytest.raises(ConfigError, match="warp must be one of auto, none, got 'logit'"):
        check_warp("logit")


def _accuracy(X: np.ndarray) -> np.ndarray:
    """A saturating accuracy: near 1 over much of the box, falling steeply elsewhere."""
    return 1.0 / (1.0 + np.exp(-(8.0 - 14.0 * np.sum((X - 0.3) ** 2, axis=1))))


def test_warped_gp_stays_in_range_and_fits_a_saturating_metric_better():
    rng = np.random.default_rng(0)
    X, Xt = rng.random((14, 2)), rng.random((400, 2))
    y, yt = _accuracy(X), _accuracy(Xt)
    warped = WarpedGP.fit(X, y, ACCURACY)
    raw = WarpedGP.fit(X, y, ACCURACY, "none")
    assert warped.warp.kind == "logit" and raw.warp.kind == "identity"
    pw, pr = warped.mean(Xt), raw.mean(Xt)
    assert np.all((pw > 0) & (pw < 1))
    err_w, err_r = np.abs(pw - yt).mean(), np.abs(pr - yt).mean()
    assert err_w < err_r, (err_w, err_r)
    # shifted: z = 0 is the mean, larger z is higher, and the std is the delta method's
    np.testing.assert_allclose(warped.shifted(Xt, 0.0), pw)
    assert np.all(warped.shifted(Xt, 1.0) >= pw) and np.all(warped.shifted(Xt, -1.0) <= pw)
    m, v = warped.latent.mean_var(Xt)
    np.testing.assert_allclose(warped.std(Xt), warped.warp.slope(m) * np.sqrt(v))
    np.testing.assert_allclose(warped.loo_mean(),
                               warped.warp.to_metric(warped.latent.loo()[0]))


def test_gp_surrogate_reports_its_warp_in_metric_units():
    from mapframe.surrogates.gp import GPSurrogate

    rng = np.random.default_rng(1)
    X = rng.random((12, 2))
    y = _accuracy(X)
    s = GPSurrogate(warp="auto").fit(X, y, ACCURACY)
    d = s.diagnostics()
    assert d["warp"] == "logit"
    np.testing.assert_allclose(d["rmse"], np.sqrt(np.mean((s.predict(X) - y) ** 2)))
    assert np.all(s.predict(rng.random((50, 2)) * 3 - 1) <= 1.0)
    assert s.predict_std(X[:3]).shape == (3,)
    assert GPSurrogate().fit(X, y, ACCURACY).diagnostics()["warp"] == "identity"  # default
