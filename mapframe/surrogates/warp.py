"""Metric warps: the map between a task's metric and the unbounded scale a GP is fitted on.

A Gaussian process is a model of an unbounded function; an accuracy lives in ``[0, 1]`` and
flattens towards its bounds. :class:`MetricWarp` picks, from the task's declared metric range,
the same link the ``auto`` quadratic surrogate uses (MAP's cases 2 and 3):

* both bounds finite (``[l, u]``, e.g. accuracy): ``g = logit((y − l) / (u − l))``, the
  targets clipped ``eps`` inside the range; back: ``y = l + (u − l) · sigmoid(g)``;
* only the lower bound ``l`` (e.g. a loss ``>= 0``): ``g = softplus⁻¹(y − l)``, the targets
  kept ``eps · max(y − l)`` above it; back: ``y = l + softplus(g)`` (mirrored for an upper
  bound only);
* unbounded, or ``warp="none"``: the identity.

:class:`WarpedGP` is a :class:`~mapframe.surrogates.gp.FittedGP` fitted on the warped targets,
queried in the metric's units: its :meth:`~WarpedGP.mean` is the warp of the latent posterior
mean (the posterior *median* of the metric, since the warp is monotone), its
:meth:`~WarpedGP.shifted` the warp of the latent mean shifted by a number of latent standard
deviations (a posterior quantile), and its :meth:`~WarpedGP.std` the latent standard deviation
times the warp's slope at the mean (the delta method).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from mapframe.errors import ConfigError
from mapframe.problem import Task

__all__ = ["WARPS", "MetricWarp", "WarpedGP", "check_warp", "range_link", "softplus",
           "softplus_inverse"]

#: Accepted ``warp`` settings: from the task's range, or none.
WARPS = ("auto", "none")
WarpName = Literal["auto", "none"]
#: How far inside the range targets are clipped before the logit / softplus inverse.
WARP_EPS = 1e-3


def softplus(q: np.ndarray) -> np.ndarray:
    """``log(1 + exp(q))``, finite for every ``q``."""
    return np.logaddexp(0.0, q)


def softplus_inverse(v: np.ndarray) -> np.ndarray:
    """``log(exp(v) − 1)`` for ``v > 0``, written to stay finite for large ``v``."""
    return v + np.log(-np.expm1(-v))


def check_warp(value: Any) -> WarpName:
    """``value`` if it is one of :data:`WARPS`, else a one-line :class:`ConfigError`."""
    if value not in WARPS:
        raise ConfigError(f"warp must be one of {', '.join(WARPS)}, got {value!r}: 'auto' "
                          "follows the task's metric range, 'none' fits the raw metric")
    return value  # type: ignore[no-any-return]


def range_link(task: Task | None) -> str:
    """The link a task's declared metric range calls for: ``"logit"`` (both bounds finite),
    ``"softplus-lower"`` / ``"softplus-upper"`` (one bound) or ``"identity"`` (none, or no
    task). The warped GPs and the ``auto`` quadratic choose by it."""
    lo = task is not None and math.isfinite(task.lower)
    hi = task is not None and math.isfinite(task.upper)
    if lo and hi:
        return "logit"
    if lo or hi:
        return "softplus-lower" if lo else "softplus-upper"
    return "identity"


class MetricWarp:
    """The link between one task's metric ``y`` and the latent ``g`` a GP models.

    Build it with :meth:`for_task` (the fitted targets fix the one-sided floor); ``kind`` is
    ``"logit"``, ``"softplus"`` or ``"identity"``. The warped quadratic surrogates
    (:mod:`mapframe.surrogates.quadratic`) use the same links, with their own ``eps``.
    """

    def __init__(self, kind: str, lower: float = 0.0, upper: float = 1.0, side: float = 1.0,
                 floor: float = 0.0, eps: float = WARP_EPS) -> None:
        self.kind, self.lower, self.upper = kind, float(lower), float(upper)
        self.side, self.floor, self.eps = float(side), float(floor), float(eps)

    @classmethod
    def softplus_from(cls, anchor: float, side: float, y: np.ndarray,
                      eps: float = WARP_EPS) -> MetricWarp:
        """The softplus link on ``anchor`` (``side`` ``1``: a lower bound, ``-1``: an upper
        one), its targets ``y`` kept ``eps · max|y − anchor|`` off the bound."""
        gap = side * (np.asarray(y, dtype=float) - anchor)
        top = float(gap.max()) if gap.size and gap.max() > 0 else 1.0
        return cls("softplus", lower=anchor, side=side, floor=eps * top, eps=eps)

    @classmethod
    def for_task(cls, task: Task | None, y: np.ndarray, warp: WarpName = "auto") -> MetricWarp:
        """The warp for ``task``'s declared range (identity for ``warp="none"``, no task or
        an unbounded metric), its one-sided floor set from the targets ``y``."""
        kind = range_link(task)
        if check_warp(warp) == "none" or task is None or kind == "identity":
            return cls("identity")
        if kind == "logit":
            return cls("logit", task.lower, task.upper)
        side, anchor = (1.0, task.lower) if kind == "softplus-lower" else (-1.0, task.upper)
        return cls.softplus_from(anchor, side, y)

    def to_latent(self, y: np.ndarray) -> np.ndarray:
        """Metric values → the latent scale (clipped inside the range first)."""
        y = np.asarray(y, dtype=float)
        if self.kind == "logit":
            from scipy.special import logit  # imported when first needed

            p = (y - self.lower) / (self.upper - self.lower)
            return np.asarray(logit(np.clip(p, self.eps, 1.0 - self.eps)))
        if self.kind == "softplus":
            return softplus_inverse(np.maximum(self.side * (y - self.lower), self.floor))
        return y

    def to_metric(self, g: np.ndarray) -> np.ndarray:
        """Latent values → the metric's units (inside its range)."""
        from scipy.special import expit

        g = np.asarray(g, dtype=float)
        if self.kind == "logit":
            return self.lower + (self.upper - self.lower) * expit(g)
        if self.kind == "softplus":
            return self.lower + self.side * softplus(g)
        return g

    def derivative(self, g: np.ndarray) -> np.ndarray:
        """``d metric / d g`` at the latent values ``g`` (negative for the mirrored softplus)."""
        from scipy.special import expit

        g = np.asarray(g, dtype=float)
        if self.kind == "logit":
            s = expit(g)
            return (self.upper - self.lower) * s * (1.0 - s)
        if self.kind == "softplus":
            return self.side * expit(g)
        return np.ones_like(g)

    def slope(self, g: np.ndarray) -> np.ndarray:
        """``|d metric / d g|`` at the latent values ``g``."""
        return np.abs(self.derivative(g))

    def describe(self) -> str:
        """``"logit"``, ``"softplus"`` (with its side) or ``"identity"``, for diagnostics."""
        if self.kind == "softplus":
            return "softplus (lower bound)" if self.side > 0 else "softplus (upper bound)"
        return self.kind


class WarpedGP:
    """A fitted GP on warped targets, queried in the metric's units (module docstring)."""

    def __init__(self, latent: Any, warp: MetricWarp) -> None:
        #: The :class:`~mapframe.surrogates.gp.FittedGP` on the latent scale.
        self.latent = latent
        self.warp = warp

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, task: Task | None, warp: WarpName = "auto",
            **fit_settings: Any) -> WarpedGP:
        """Fit :func:`~mapframe.surrogates.gp.fit_gp` to ``warp(y)`` (settings passed on)."""
        from mapframe.surrogates.gp import fit_gp

        link = MetricWarp.for_task(task, y, warp)
        return cls(fit_gp(X, link.to_latent(y), **fit_settings), link)

    def mean(self, X: np.ndarray) -> np.ndarray:
        """The warped latent posterior mean (the metric's posterior median): ``(M,)``."""
        return self.warp.to_metric(self.latent.mean(X))

    def shifted(self, X: np.ndarray, z: float) -> np.ndarray:
        """The warped latent mean plus ``z`` latent standard deviations: ``(M,)``."""
        if z == 0:
            return self.mean(X)
        m, v = self.latent.mean_var(X)
        return self.warp.to_metric(m + z * np.sqrt(np.maximum(v, 0.0)))

    def std(self, X: np.ndarray) -> np.ndarray:
        """Posterior standard deviation in the metric's units (delta method): ``(M,)``."""
        m, v = self.latent.mean_var(X)
        return self.warp.slope(m) * np.sqrt(np.maximum(v, 0.0))

    def loo_mean(self) -> np.ndarray:
        """Closed-form leave-one-out predictions of the training points, in metric units."""
        return self.warp.to_metric(self.latent.loo()[0])
