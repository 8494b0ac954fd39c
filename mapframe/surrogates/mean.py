"""The ``gp_and_quadratic`` surrogate: the mean of a Gaussian process and MAP's quadratic.

The two models err differently: the quadratic (warped by the metric's range, the ``auto``
quadratic) has the right global shape but cannot follow what a quadratic cannot, the GP
follows the data but reverts to its constant mean away from them. Their average is a small
ensemble. On the search-reference pool at 3 tasks (GPs and quadratics fitted to M uniform
validation evaluations, their exact front on the pool scored on test,
``benchmarks/pilot_gp_variants.py``) it hands over a better front than the GP alone, and in
the ``front`` sampler's studies at 3 tasks it raised both scores of the peers benchmark's
pilots, so ``surrogate: auto`` picks it there above the quadratic's parameter count
(:mod:`mapframe.surrogates.choice`); docs/adaptive-sampling.md ("The mean of the GP and the
quadratic") has the numbers.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, cast

import numpy as np

from mapframe.problem import Task
from mapframe.surrogates.base import Surrogate, SurrogateDiagnostics, check_fit_data
from mapframe.surrogates.gp import GPSurrogate
from mapframe.surrogates.quadratic import AutoSurrogate, _fitted, _r2, check_identifiable

__all__ = ["GPQuadraticMeanSurrogate"]


class GPQuadraticMeanSurrogate(Surrogate):
    """The mean of the ``gp`` surrogate's and the ``auto`` quadratic's predictions
    (``"gp_and_quadratic"``).

    Call order (as for every surrogate)::

        s = GPQuadraticMeanSurrogate()
        s.n_params(N)              # (N + 1)(N + 2)/2: both members must be fitted
        s.fit(X, y, task)          # fits the gp and the auto quadratic to the same points
        s.predict(Xnew)            # (gp(Xnew) + quadratic(Xnew)) / 2
        s.diagnostics()            # of the mean, with each member's under "members"

    Settings: ``nu``, ``noise_floor``, ``restarts`` (the GP's) and ``ridge`` (the
    quadratic's); the GP fits the raw metric (``warp: none``), the quadratic is warped by the
    task's metric range as ``auto`` does. ``predict_std`` is ``None``: the members' spread is
    not a posterior. Needs gpytorch (``pip install 'mapframe[gp]'``).
    """

    name: ClassVar[str] = "gp_and_quadratic"

    def __init__(self, nu: float = 2.5, noise_floor: float = 1e-6, restarts: int = 2,
                 ridge: float = 0.0) -> None:
        # unfitted members: they check the settings (and that gpytorch is installed)
        self._gp = GPSurrogate(nu=nu, noise_floor=noise_floor, restarts=restarts)
        self._quadratic = AutoSurrogate(ridge=ridge)
        self.nu, self.noise_floor = self._gp.nu, self._gp.noise_floor
        self.restarts, self.ridge = self._gp.restarts, self._quadratic.ridge
        self._fitted: tuple[GPSurrogate, AutoSurrogate] | None = None
        self._diagnostics: dict[str, Any] = {}

    def n_params(self, n_dims: int) -> int:
        """The quadratic's ``(N + 1)(N + 2)/2``: the fewest points both members accept."""
        return max(self._gp.n_params(n_dims), self._quadratic.n_params(n_dims))

    def check_design(self, X: np.ndarray) -> None:
        """Raise :class:`~mapframe.errors.BudgetError` unless ``X`` identifies the quadratic."""
        check_identifiable(X)

    def fit(self, X: np.ndarray, y: np.ndarray,
            task: Task | None = None) -> GPQuadraticMeanSurrogate:
        """Fit both members to ``X`` (``(K, N)``) and ``y`` (``(K,)``); return ``self``.

        Raises what the members raise: :class:`~mapframe.errors.BudgetError` for too few
        points, :class:`~mapframe.errors.ConfigError` for malformed input (or missing
        gpytorch), :class:`~mapframe.errors.MetricError` for bad metric values.
        """
        self._fitted = None
        X, y = check_fit_data(X, y, task)
        gp = copy.deepcopy(self._gp).fit(X, y, task)
        quadratic = copy.deepcopy(self._quadratic).fit(X, y, task)
        self._fitted = (gp, quadratic)
        self._diagnostics = self._quality(X, y)
        return self

    @property
    def members(self) -> tuple[GPSurrogate, AutoSurrogate]:
        """The fitted ``(gp, quadratic)``."""
        return _fitted(self._fitted, "GPQuadraticMeanSurrogate")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The mean of the two members' predictions at each row of ``X``: ``(M,)``."""
        gp, quadratic = self.members
        return 0.5 * (gp.predict(X) + quadratic.predict(X))

    def diagnostics(self) -> SurrogateDiagnostics:
        """``r2``/``rmse`` of the mean on the fitted points; ``loo_rmse`` an upper bound of
        the mean's leave-one-out RMSE, the mean of the members' (the mean's held-out
        residuals are the members' averaged, so by Minkowski's inequality their RMS is at
        most that; ``loo_method = "bound"``), and ``loo_r2`` the lower bound of the
        leave-one-out R² that it gives; ``n_samples``, ``n_params``, ``model``, and each
        member's own diagnostics under ``members``. Empty before :meth:`fit`."""
        return cast(SurrogateDiagnostics, dict(self._diagnostics))

    def _quality(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        gp, quadratic = self.members
        resid = y - self.predict(X)
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        ss_res = float(resid @ resid)
        members: dict[str, dict[str, Any]] = {"gp": dict(gp.diagnostics()),
                                               "quadratic": dict(quadratic.diagnostics())}
        loo = [float(m.get("loo_rmse", math.nan)) for m in members.values()]
        loo_rmse = float(np.mean(loo))
        return {
            "model": self.name,
            "r2": _r2(ss_res, ss_tot),
            "rmse": math.sqrt(ss_res / y.size),
            "loo_r2": _r2(loo_rmse**2 * y.size, ss_tot),  # a lower bound, as loo_rmse is upper
            "loo_rmse": loo_rmse,
            "loo_method": "bound",
            "n_samples": int(y.size),
            "n_params": self.n_params(X.shape[1]),
            "members": members,
        }
