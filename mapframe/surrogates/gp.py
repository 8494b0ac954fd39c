"""A Gaussian-process surrogate (``"gp"``) and the small exact-GP fitter behind it.

:func:`fit_gp` fits an exact GP with gpytorch and returns a :class:`FittedGP`, a plain
float64 (numpy) posterior that the ``gp`` surrogate and the ``gp`` sampler query many times:

* model: constant mean, ``ScaleKernel(Matern(nu))`` with one lengthscale per input (ARD),
  Gaussian likelihood whose noise variance is bounded below by ``noise_floor``;
* priors: lengthscales ``LogNormal(√2 + log(d)/2, √3)`` (the dimension-scaled prior of
  Hvarfner et al., 2024, BoTorch's default since 0.12), outputscale ``Gamma(2, 0.15)``, noise
  ``LogNormal(-4, 1)``; no prior on the constant;
* scaling: inputs mapped to the unit cube (the given bounds, or the data's per-dimension
  min/max), outputs standardised to mean 0 and standard deviation 1; every hyper-parameter
  lives on those scales;
* optional: a quadratic trend added to the kernel (``trend="quadratic"``, not the default);
* fitting: the exact marginal log likelihood plus the log priors is maximised with
  ``torch.optim.LBFGS`` (strong Wolfe line search) from ``restarts`` fixed starting points
  (no random initialisation), keeping the best. The same data therefore gives the same fit.

gpytorch and torch are imported only inside :func:`fit_gp`, so ``import mapframe`` does not
load them; predictions never touch them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np

from mapframe._imports import installed
from mapframe._warning_filters import warning_filters
from mapframe.errors import BudgetError, ConfigError, MapframeError
from mapframe.problem import Task
from mapframe.settings import number_setting, refuse_number_string
from mapframe.surrogates.base import (
    Surrogate,
    SurrogateDiagnostics,
    check_fit_data,
    task_prefix,
)
from mapframe.surrogates.quadratic import _fitted, _one_blas_thread, _r2
from mapframe.surrogates.warp import WarpedGP, WarpName, check_warp

__all__ = ["FittedGP", "GPSurrogate", "fit_gp"]

_HINT = "the gp {what} needs gpytorch: pip install 'mapframe[gp]'"
#: Supported Matérn smoothness values.
NU_VALUES = (0.5, 1.5, 2.5)
#: Fixed starting points of the optimisation: (lengthscale / prior mode, noise variance).
_STARTS = ((1.0, 1e-3), (4.0, 1e-2), (0.25, 1e-4), (2.0, 1e-1), (0.5, 1e-5), (8.0, 1e-3))
#: LBFGS iterations per start.
_MAX_ITER = 100
#: Lower bound on every lengthscale (unit-cube inputs), as in BoTorch.
_MIN_LENGTHSCALE = 2.5e-2
#: Differences (rows of the first argument × rows of the second × inputs) formed at once when
#: building kernel matrices: a block of this size stays in a core's cache, where one of 2^21
#: (16 MB) made the differences cost half again as much.
_CHUNK_ELEMS = 1 << 15


def _require_gpytorch(what: str) -> None:
    """Raise :class:`ConfigError` (cheaply, without importing it) when gpytorch is missing."""
    if not installed("gpytorch"):
        raise ConfigError(_HINT.format(what=what))


def _import_torch(what: str) -> tuple[Any, Any]:
    try:
        with warning_filters() as filters:
            # linear_operator decorates helpers with torch.jit.script at import time, which
            # recent torch deprecates; that is gpytorch's business, not the user's.
            filters.ignore(category=DeprecationWarning, message=r".*torch\.jit\.script.*")
            import gpytorch
            import torch
    except ImportError:
        raise ConfigError(_HINT.format(what=what)) from None
    return gpytorch, torch


@contextlib.contextmanager
def _single_threaded(torch: Any) -> Iterator[None]:
    """Run torch (and BLAS) on one thread inside the block, restoring torch's setting after.

    The matrices of a GP fit are tiny; extra threads gain nothing, and where several
    processes share the cores their spinning made a 0.15 s fit take 3 s.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _one_blas_thread():
            yield
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- settings
def check_nu(nu: Any) -> float:
    """Validate the Matérn smoothness (0.5, 1.5 or 2.5); a string is refused, never read."""
    refuse_number_string(nu, "nu", what="one of 0.5, 1.5 or 2.5")
    try:
        value = float(nu)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(nu, (bool, str)) or value not in NU_VALUES:
        raise ConfigError(f"nu must be one of 0.5, 1.5 or 2.5 (Matérn smoothness), got {nu!r}")
    return value


def check_noise_floor(noise_floor: Any) -> float:
    """Validate the lower bound on the (standardised) noise variance."""
    return number_setting(noise_floor, "noise_floor", 0.0, 1.0, open_low=True, open_high=True,
                          meaning="noise variance on standardised outputs")


def check_restarts(restarts: Any) -> int:
    """Validate the number of fixed optimisation starts."""
    refuse_number_string(restarts, "restarts", what=f"an integer from 1 to {len(_STARTS)}")
    if (
        isinstance(restarts, bool)
        or not isinstance(restarts, (int, np.integer))
        or not 1 <= restarts <= len(_STARTS)
    ):
        raise ConfigError(
            f"restarts must be an integer from 1 to {len(_STARTS)}, got {restarts!r}"
        )
    return int(restarts)


#: Kernel trends :func:`fit_gp` accepts: none (the default), or a Bayesian quadratic one.
TRENDS = ("none", "quadratic")


def check_trend(trend: Any) -> str:
    """Validate the kernel's trend part."""
    if trend not in TRENDS:
        raise ConfigError(f"trend must be one of {', '.join(TRENDS)}, got {trend!r}")
    return str(trend)


# --------------------------------------------------------------------------- kernel
def _matern(r: np.ndarray, nu: float) -> np.ndarray:
    """The unit-variance Matérn correlation at scaled distances ``r`` (gpytorch's form).

    Computed in place: ``r`` is overwritten and returned (the same operations, in the same
    order, as the expression ``(1 + s + s²/3) · exp(-s)``, so the values are identical to it;
    the temporaries of that expression were a third of a GP prediction's time)."""
    if nu == 0.5:
        return np.exp(np.negative(r, out=r), out=r)
    if nu == 1.5:
        s = np.multiply(r, math.sqrt(3.0), out=r)
        e = np.negative(s)
        np.exp(e, out=e)
        s += 1.0
        s *= e
        return s
    s = np.multiply(r, math.sqrt(5.0), out=r)
    e = np.negative(s)
    np.exp(e, out=e)
    q = np.multiply(s, s)
    q /= 3.0
    s += 1.0
    s += q
    s *= e
    return s


def _kernel(A: np.ndarray, B: np.ndarray, lengthscale: np.ndarray, outputscale: float,
            nu: float) -> np.ndarray:
    """``outputscale · Matern(|(a - b) / lengthscale|)`` for all rows ``a`` of A, ``b`` of B.

    Differences are formed directly (not through ``|a|² + |b|² − 2ab``), so distances between
    equal points are exactly zero; rows of ``A`` are processed in chunks of about
    ``_CHUNK_ELEMS`` differences (small enough to stay in cache) and every step after the
    differences works in place on the output's rows.
    """
    A = A / lengthscale
    B = B / lengthscale
    out = np.empty((A.shape[0], B.shape[0]))
    step = max(1, _CHUNK_ELEMS // max(1, B.shape[0] * A.shape[1]))
    for i in range(0, A.shape[0], step):
        diff = A[i : i + step, None, :] - B[None, :, :]
        rows = out[i : i + step]
        np.sqrt(np.einsum("ijk,ijk->ij", diff, diff), out=rows)
        _matern(rows, nu)
    out *= outputscale
    return out


def _trend_kernel(A: np.ndarray, B: np.ndarray, trend_scale: float,
                  trend_offset: float) -> np.ndarray:
    """``trend_scale · ((a − ½)·(b − ½) + trend_offset)²`` for unit-cube rows: the covariance
    of a quadratic function of the inputs with random coefficients (a Bayesian quadratic
    trend; gpytorch's ``PolynomialKernel(power=2)`` on centred inputs)."""
    return trend_scale * ((A - 0.5) @ (B - 0.5).T + trend_offset) ** 2


def _cholesky(K: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``K``, adding growing jitter only if it is not numerically PD."""
    from scipy.linalg import cholesky  # scipy.linalg: imported when a GP is first fitted

    jitter = 0.0
    scale = float(np.mean(np.diag(K))) if K.size else 1.0
    for _ in range(8):
        try:
            return cholesky(K + jitter * np.eye(K.shape[0]), lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            jitter = scale * (1e-10 if jitter == 0.0 else 10.0 * jitter / scale)
    raise MapframeError("the GP kernel matrix is not positive definite, even with jitter")


# --------------------------------------------------------------------------- fitted model
class FittedGP:
    """An exact GP posterior with fixed hyper-parameters, in float64 numpy.

    Inputs are mapped with ``(x − lower) / width`` and outputs standardised with
    ``(y − y_mean) / y_scale``; the hyper-parameters (``constant``, ``outputscale``,
    ``lengthscale``, ``noise``) live on those scales. Everything returned is in the original
    units. The posterior is that of the *latent* function (no observation noise), except for
    :meth:`loo`, which predicts held-out *observations*.

    Cached after construction: the Cholesky factor ``L`` of ``K + noise·I`` and
    ``alpha = (K + noise·I)⁻¹ (t − constant)``, so a mean costs one kernel matrix and one
    matrix-vector product.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        lower: np.ndarray,
        width: np.ndarray,
        y_mean: float,
        y_scale: float,
        constant: float,
        outputscale: float,
        lengthscale: np.ndarray,
        noise: float,
        nu: float,
        log_likelihood: float = math.nan,
        trend_scale: float = 0.0,
        trend_offset: float = 0.0,
    ) -> None:
        self.lower = np.asarray(lower, dtype=float)
        self.width = np.asarray(width, dtype=float)
        self.y_mean, self.y_scale = float(y_mean), float(y_scale)
        self.constant, self.outputscale = float(constant), float(outputscale)
        self.lengthscale = np.asarray(lengthscale, dtype=float).reshape(-1)
        self.noise, self.nu = float(noise), float(nu)
        #: Weight and offset of the quadratic trend part of the kernel (0: none).
        self.trend_scale, self.trend_offset = float(trend_scale), float(trend_offset)
        #: Maximised objective: log marginal likelihood plus log priors, per data point.
        self.log_likelihood = float(log_likelihood)
        self.X = np.asarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self._Z = self._unit(self.X)
        self._t = (self.y - self.y_mean) / self.y_scale
        K = self._k(self._Z, self._Z)
        K[np.diag_indices_from(K)] += self.noise
        self._L = _cholesky(K)
        from scipy.linalg import cho_solve

        self._alpha = cho_solve((self._L, True), self._t - self.constant, check_finite=False)

    # ---- helpers
    def _unit(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.lower.size:
            raise ConfigError(
                f"expected points with {self.lower.size} coefficients, got shape {X.shape}"
            )
        return (X - self.lower) / self.width

    def _k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        K = _kernel(A, B, self.lengthscale, self.outputscale, self.nu)
        if self.trend_scale:
            K += _trend_kernel(A, B, self.trend_scale, self.trend_offset)
        return K

    def _prior_var(self, Z: np.ndarray) -> np.ndarray:
        """Prior variance of the latent function at unit-cube rows ``Z``: ``(M,)``."""
        v = np.full(Z.shape[0], self.outputscale)
        if self.trend_scale:
            c = Z - 0.5
            v += self.trend_scale * (np.einsum("ij,ij->i", c, c) + self.trend_offset) ** 2
        return v

    def _solve_cross(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K(X, Z), L⁻¹ K(X, Z))`` for unit-cube points ``Z``."""
        from scipy.linalg import solve_triangular

        Kxz = self._k(self._Z, Z)
        return Kxz, solve_triangular(self._L, Kxz, lower=True, check_finite=False)

    # ---- posterior
    def mean(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean at each row of ``X``: ``(M,)``."""
        Kxz = self._k(self._Z, self._unit(X))
        return self.y_mean + self.y_scale * (self.constant + Kxz.T @ self._alpha)

    def _latent_var(self, Z: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Posterior latent variance at unit-cube rows ``Z`` from ``V = L⁻¹ K(X, Z)``, in the
        metric's units: ``(M,)``."""
        return np.maximum(self._prior_var(Z) - np.einsum("ij,ij->j", V, V), 0.0) * self.y_scale**2

    def var(self, X: np.ndarray) -> np.ndarray:
        """Posterior variance of the latent function at each row of ``X``: ``(M,)``."""
        Z = self._unit(X)
        return self._latent_var(Z, self._solve_cross(Z)[1])

    def mean_var(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and latent variance at each row of ``X``, sharing one kernel matrix."""
        Z = self._unit(X)
        Kxz, V = self._solve_cross(Z)
        mean = self.y_mean + self.y_scale * (self.constant + Kxz.T @ self._alpha)
        return mean, self._latent_var(Z, V)

    def cov(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Posterior covariance of the latent function between rows of ``A`` and ``B``."""
        Za, Zb = self._unit(A), self._unit(B)
        _, Va = self._solve_cross(Za)
        _, Vb = self._solve_cross(Zb)
        return (self._k(Za, Zb) - Va.T @ Vb) * self.y_scale**2

    def posterior(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint posterior of the latent function at the rows of ``X``:
        ``(mean (M,), cov (M, M))``."""
        Z = self._unit(X)
        Kxz, V = self._solve_cross(Z)
        mean = self.y_mean + self.y_scale * (self.constant + Kxz.T @ self._alpha)
        cov = (self._k(Z, Z) - V.T @ V) * self.y_scale**2
        return mean, 0.5 * (cov + cov.T)

    def loo(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form leave-one-out predictions of the training observations (hyper-parameters
        kept fixed; Rasmussen & Williams 2006, eq. 5.12): ``(mean (K,), variance (K,))``.

        ``μ₋ᵢ = yᵢ − [K⁻¹(y − m)]ᵢ / [K⁻¹]ᵢᵢ`` and ``σ²₋ᵢ = 1 / [K⁻¹]ᵢᵢ`` with ``K`` including
        the noise; the variance is that of a new *observation* at ``xᵢ``.
        """
        from scipy.linalg import cho_solve

        k = self._t.size
        Kinv = cho_solve((self._L, True), np.eye(k), check_finite=False)
        d = np.diag(Kinv)
        mean_t = self._t - self._alpha / d
        return self.y_mean + self.y_scale * mean_t, self.y_scale**2 / d

    def with_data(self, X: np.ndarray, y: np.ndarray) -> FittedGP:
        """The same hyper-parameters and scalings, conditioned on other data ``(X, y)``."""
        return FittedGP(
            X, y, lower=self.lower, width=self.width, y_mean=self.y_mean,
            y_scale=self.y_scale, constant=self.constant, outputscale=self.outputscale,
            lengthscale=self.lengthscale, noise=self.noise, nu=self.nu,
            trend_scale=self.trend_scale, trend_offset=self.trend_offset,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The fitted hyper-parameters as plain floats (standardised scales, unit-cube inputs)."""
        return {
            "lengthscales": [float(v) for v in self.lengthscale],
            "outputscale": self.outputscale,
            "noise": self.noise,
            "constant": self.constant,
            "nu": self.nu,
            **({"trend_scale": self.trend_scale, "trend_offset": self.trend_offset}
               if self.trend_scale else {}),
        }


# --------------------------------------------------------------------------- fitting
_MODEL_CLASS: Any = None


def _model_class(gpytorch: Any) -> Any:
    """The ExactGP subclass, defined on first use so that gpytorch is imported lazily."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:

        class _ExactGP(gpytorch.models.ExactGP):  # type: ignore[name-defined,misc]
            def __init__(self, x: Any, y: Any, likelihood: Any, covar: Any) -> None:
                super().__init__(x, y, likelihood)
                self.mean_module = gpytorch.means.ConstantMean()
                self.covar_module = covar

            def forward(self, x: Any) -> Any:
                return gpytorch.distributions.MultivariateNormal(
                    self.mean_module(x), self.covar_module(x)
                )

        _MODEL_CLASS = _ExactGP
    return _MODEL_CLASS


def _scaling(
    X: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    if bounds is None:
        lower, upper = X.min(axis=0), X.max(axis=0)
    else:
        lower = np.asarray(bounds[0], dtype=float).reshape(-1)
        upper = np.asarray(bounds[1], dtype=float).reshape(-1)
        if lower.shape != (X.shape[1],) or upper.shape != (X.shape[1],):
            raise ConfigError(
                f"bounds must give one lower and one upper value per input ({X.shape[1]})"
            )
    width = upper - lower
    width = np.where(np.isfinite(width) & (width > 0), width, 1.0)
    return lower, width


def _optimise(
    gpytorch: Any, torch: Any, Z: np.ndarray, t: np.ndarray, *, nu: float, noise_floor: float,
    lengthscale0: float, noise0: float, trend: str = "none",
) -> tuple[float, dict[str, Any]] | None:
    """One LBFGS run from a fixed start; ``(loss, hyper-parameters)`` or ``None`` on failure."""
    from gpytorch.constraints import GreaterThan
    from gpytorch.priors import GammaPrior, LogNormalPrior

    d = Z.shape[1]
    x = torch.as_tensor(Z, dtype=torch.float64)
    y = torch.as_tensor(t, dtype=torch.float64)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_prior=LogNormalPrior(-4.0, 1.0),
        noise_constraint=GreaterThan(noise_floor),
    )
    base = gpytorch.kernels.MaternKernel(
        nu=nu, ard_num_dims=d,
        lengthscale_prior=LogNormalPrior(math.sqrt(2.0) + math.log(d) / 2.0, math.sqrt(3.0)),
        lengthscale_constraint=GreaterThan(_MIN_LENGTHSCALE),
    )
    covar = gpytorch.kernels.ScaleKernel(base, outputscale_prior=GammaPrior(2.0, 0.15))
    kernel, quad = covar, None
    if trend == "quadratic":
        x = x - 0.5  # the trend is centred on the box; the Matérn part is shift-invariant
        quad = gpytorch.kernels.ScaleKernel(gpytorch.kernels.PolynomialKernel(power=2))
        kernel = covar + quad
    model = _model_class(gpytorch)(x, y, likelihood, kernel).double()
    if quad is not None:
        quad.outputscale = torch.tensor(0.1, dtype=torch.float64)
        quad.base_kernel.offset = torch.tensor([[1.0]], dtype=torch.float64)
    base.lengthscale = torch.full((1, d), max(lengthscale0, 2 * _MIN_LENGTHSCALE),
                                  dtype=torch.float64)
    covar.outputscale = torch.tensor(1.0, dtype=torch.float64)
    likelihood.noise = torch.tensor([max(noise0, 2 * noise_floor)], dtype=torch.float64)
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=_MAX_ITER, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-10,
    )

    def closure() -> Any:
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
        with torch.no_grad():
            loss = float(-mll(model(x), y))
    except (RuntimeError, ValueError):  # NotPSDError is a RuntimeError
        return None
    if not math.isfinite(loss):
        return None
    hyper = {
        "lengthscale": base.lengthscale.detach().cpu().numpy().reshape(-1).copy(),
        "outputscale": float(covar.outputscale.detach()),
        "noise": float(likelihood.noise.detach().reshape(-1)[0]),
        "constant": float(model.mean_module.constant.detach().reshape(-1)[0]),
    }
    if quad is not None:
        hyper["trend_scale"] = float(quad.outputscale.detach())
        hyper["trend_offset"] = float(quad.base_kernel.offset.detach().reshape(-1)[0])
    if not all(np.all(np.isfinite(v)) for v in hyper.values()):
        return None
    return loss, hyper


def fit_gp(
    X: np.ndarray,
    y: np.ndarray,
    *,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    nu: float = 2.5,
    noise_floor: float = 1e-6,
    restarts: int = 2,
    trend: str = "none",
) -> FittedGP:
    """Fit an exact GP to ``(X (K, d), y (K,))`` and return its :class:`FittedGP` posterior.

    ``bounds = (lower, upper)`` maps inputs to the unit cube (default: the data's min/max per
    dimension; a constant dimension gets width 1). ``nu`` is the Matérn smoothness,
    ``noise_floor`` the lower bound of the noise variance on standardised outputs, and
    ``restarts`` the number of fixed starting points tried (the best objective wins; a start
    that fails numerically is skipped, and if all fail the first start's values are kept).
    ``trend="quadratic"`` adds a Bayesian quadratic trend to the kernel,
    ``s · ((z − ½)·(z' − ½) + o)²`` on unit-cube inputs (gpytorch's ``PolynomialKernel(power=2)``
    under a ``ScaleKernel``; ``s`` and ``o`` fitted with the rest, no priors): the marginal
    likelihood decides how much of the data a quadratic explains. Not the default: on the
    peers benchmark's pilot seeds the front sampler with it in every fit scored no higher
    (docs/adaptive-sampling.md, "Tried and not adopted: other GP kernels").
    torch runs single-threaded during the fit (its setting is restored afterwards). The
    result is a deterministic function of the data and these settings.
    """
    nu = check_nu(nu)
    noise_floor = check_noise_floor(noise_floor)
    restarts = check_restarts(restarts)
    trend = check_trend(trend)
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.size or X.shape[0] == 0:
        raise ConfigError(f"fit_gp needs X (K, d) and y (K,) with K >= 1, got {X.shape}, "
                          f"{y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ConfigError("fit_gp got NaN or infinite inputs or targets")
    lower, width = _scaling(X, bounds)
    Z = (X - lower) / width
    y_mean = float(y.mean())
    y_scale = float(y.std())
    if not y_scale > 1e-12 * max(1.0, abs(y_mean)):
        y_scale = 1.0
    t = (y - y_mean) / y_scale

    gpytorch, torch = _import_torch("surrogate")
    d = Z.shape[1]
    mode = math.exp(math.sqrt(2.0) + math.log(d) / 2.0 - 3.0)  # the lengthscale prior's mode
    best: tuple[float, dict[str, Any]] | None = None
    # warning_filters() first: its lock also keeps another thread's fit from restoring torch's
    # thread count (a process-wide setting) under this one.
    with warning_filters() as filters, _single_threaded(torch), \
            gpytorch.settings.fast_computations(
                log_prob=False, covar_root_decomposition=False, solves=False), \
            gpytorch.settings.max_cholesky_size(1 << 30):
        filters.ignore(module=r"gpytorch\..*|linear_operator\..*")
        for factor, noise0 in _STARTS[:restarts]:
            got = _optimise(gpytorch, torch, Z, t, nu=nu, noise_floor=noise_floor,
                            lengthscale0=factor * mode, noise0=noise0, trend=trend)
            if got is not None and (best is None or got[0] < best[0]):
                best = got
    hyper: dict[str, Any]
    if best is None:  # every start failed numerically: fall back to the first start's values
        loss, hyper = math.nan, {
            "lengthscale": np.full(d, mode), "outputscale": 1.0,
            "noise": max(_STARTS[0][1], noise_floor), "constant": 0.0,
        }
    else:
        loss, hyper = best
    return FittedGP(
        X, y, lower=lower, width=width, y_mean=y_mean, y_scale=y_scale,
        constant=hyper["constant"], outputscale=hyper["outputscale"],
        lengthscale=hyper["lengthscale"], noise=hyper["noise"], nu=nu,
        log_likelihood=-loss, trend_scale=hyper.get("trend_scale", 0.0),
        trend_offset=hyper.get("trend_offset", 0.0),
    )


# --------------------------------------------------------------------------- surrogate
class GPSurrogate(Surrogate):
    """A Gaussian process per task (``"gp"``): exact GP regression with a Matérn kernel.

    Call order (as for every surrogate; the study fits a ``copy.deepcopy`` per task)::

        s = GPSurrogate(nu=2.5)
        s.n_params(N)              # N + 1: the fewest points a fit accepts
        s.fit(X, y, task)          # standardise y, map X to the unit cube of the data's range,
                                   # maximise the marginal likelihood (see fit_gp)
        s.predict(Xnew)            # posterior mean (cached Cholesky and weights; numpy only)
        s.predict_std(Xnew)        # posterior standard deviation of the latent function
        s.diagnostics()            # r2/rmse, closed-form leave-one-out, hyper-parameters

    Settings: ``nu`` (Matérn smoothness: 0.5, 1.5 or 2.5), ``noise_floor`` (lower bound of the
    noise variance on standardised outputs: keeps noise-free data well conditioned),
    ``restarts`` (fixed optimisation starts) and ``warp``: ``"none"`` (default) fits the raw
    metric (predictions may leave its declared range); ``"auto"`` fits the task's metric
    mapped by the link its declared range calls for, as the ``auto`` quadratic does (logit
    for a metric bounded on both sides such as an accuracy, softplus inverse for one bound;
    :mod:`mapframe.surrogates.warp`), so predictions stay inside the range and flatten
    towards it; then ``predict`` is the warped latent posterior mean (the metric's posterior
    median) and ``predict_std`` the delta-method standard deviation. Not the default: in the
    front sampler's studies on the peers benchmark's pilot seeds it scored lower
    (docs/adaptive-sampling.md, "Tried and not adopted: a warped GP"). Unlike the
    quadratic surrogates the GP has no fixed parameter count, so any design with ``N + 1``
    points is accepted. The fit is deterministic. Needs gpytorch (``pip install
    'mapframe[gp]'``).
    """

    name: ClassVar[str] = "gp"
    interpolates_at_n_params: ClassVar[bool] = False  # N + 1 is a minimum, not a count

    def __init__(self, nu: float = 2.5, noise_floor: float = 1e-6, restarts: int = 2,
                 warp: WarpName = "none") -> None:
        self.nu = check_nu(nu)
        self.noise_floor = check_noise_floor(noise_floor)
        self.restarts = check_restarts(restarts)
        self.warp: WarpName = check_warp(warp)
        _require_gpytorch("surrogate")
        self._gp: WarpedGP | None = None
        self._diagnostics: dict[str, Any] = {}

    def n_params(self, n_dims: int) -> int:
        """``N + 1``: the fewest evaluations the GP is fitted on."""
        if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
            raise ConfigError(
                f"the number of dimensions must be an integer >= 1, got {n_dims!r}"
            )
        return int(n_dims) + 1

    def fit(self, X: np.ndarray, y: np.ndarray, task: Task | None = None) -> GPSurrogate:
        """Fit to ``K >= N + 1`` points (``X``: ``(K, N)``, ``y``: ``(K,)``); return ``self``.

        Raises :class:`~mapframe.errors.BudgetError` for too few points,
        :class:`~mapframe.errors.ConfigError` for malformed inputs (or missing gpytorch) and
        :class:`~mapframe.errors.MetricError` for non-finite or out-of-range metric values.
        """
        self._gp = None
        X, y = self._validate(X, y, task)
        gp = WarpedGP.fit(X, y, task, self.warp, nu=self.nu, noise_floor=self.noise_floor,
                          restarts=self.restarts)
        self._gp = gp
        self._diagnostics = self._quality(gp, y)
        return self

    @property
    def model(self) -> FittedGP:
        """The fitted :class:`FittedGP` on the warped scale (posterior mean, covariance,
        leave-one-out); with ``warp="none"``, or an unbounded metric, the metric's own."""
        return _fitted(self._gp, "GPSurrogate").latent

    @property
    def warped(self) -> WarpedGP:
        """The fitted GP with its :class:`~mapframe.surrogates.warp.MetricWarp`."""
        return _fitted(self._gp, "GPSurrogate")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean (with a warp: median) at each row of ``X`` (``(M, N)``; one point as
        ``(N,)``): ``(M,)``."""
        return self.warped.mean(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        """Posterior standard deviation of the latent function at each row of ``X``, in the
        metric's units (delta method through the warp): ``(M,)``."""
        return self.warped.std(X)

    def diagnostics(self) -> SurrogateDiagnostics:
        """``r2``/``rmse`` of the posterior mean on the fitted points, ``loo_r2``/``loo_rmse``
        from closed-form leave-one-out (``loo_method = "closed_form"``, hyper-parameters
        fixed; both in the metric's units), ``n_samples``, ``model``, ``warp`` (``"logit"``,
        ``"softplus (lower bound)"`` / ``"(upper bound)"`` or ``"identity"``), the
        hyper-parameters (of the GP on the warped scale: ``lengthscales`` per input on the
        unit cube, ``outputscale`` and ``noise`` on standardised outputs, ``constant``,
        ``nu``) and ``log_likelihood`` (the maximised objective per point). Empty before
        :meth:`fit`."""
        return cast(SurrogateDiagnostics, dict(self._diagnostics))

    # ---- helpers
    def _validate(
        self, X: np.ndarray, y: np.ndarray, task: Task | None
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = check_fit_data(X, y, task)
        where = task_prefix(task)
        need = self.n_params(X.shape[1])
        if X.shape[0] < need:
            raise BudgetError(
                f"{where}{X.shape[0]} evaluations cannot fit the gp surrogate for "
                f"{X.shape[1]} tasks: it needs at least {need} (N + 1); raise the budget"
            )
        return X, y

    def _quality(self, gp: WarpedGP, y: np.ndarray) -> dict[str, Any]:
        k = y.size
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        resid = y - gp.mean(gp.latent.X)
        loo_resid = y - gp.loo_mean()
        ss_res, press = float(resid @ resid), float(loo_resid @ loo_resid)

        return {
            "model": self.name,
            "r2": _r2(ss_res, ss_tot),
            "rmse": math.sqrt(ss_res / k),
            "loo_r2": _r2(press, ss_tot),
            "loo_rmse": math.sqrt(press / k),
            "loo_method": "closed_form",
            "n_samples": k,
            "warp": gp.warp.describe(),
            **gp.latent.hyperparameters(),
            "log_likelihood": gp.latent.log_likelihood,
        }
