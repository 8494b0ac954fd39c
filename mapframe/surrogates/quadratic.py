"""MAP's per-task quadratic surrogates, plain and warped to a metric's known range.

Every model here is built on one quadratic in the coefficients,

    q(c) = cᵀ A c + bᵀ c + e          (A symmetric: (N+1)(N+2)/2 parameters)

and differs only in the link from ``q`` to the metric:

- ``quadratic`` (:class:`QuadraticSurrogate`): ``q(c)``, closed-form least squares;
- ``sigmoid_quadratic`` (:class:`SigmoidQuadraticSurrogate`): ``l + (u − l) · sigmoid(q(c))``;
- ``softplus_quadratic`` (:class:`SoftplusQuadraticSurrogate`): ``l + softplus(q(c))``, or
  ``u − softplus(q(c))`` for metrics bounded above only;
- ``auto`` (:class:`AutoSurrogate`): one of the above, picked from the task's metric range.

The warped models are fitted by nonlinear least squares on the metric's own scale.
``[l, u]`` is the task's declared metric range (:class:`~mapframe.problem.Task`), never learned.
Inputs are mapped to ``[-1, 1]`` per dimension (using the range of the fitted design) before
building features, which keeps the least-squares problems well conditioned; the fitted
``A``, ``b``, ``e`` are reported in the original coordinates.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np

from mapframe._shared_setting import SharedSetting
from mapframe.errors import BudgetError, ConfigError, MapframeError
from mapframe.problem import Task
from mapframe.settings import number_setting, refuse_number_string
from mapframe.surrogates.base import (
    Surrogate,
    SurrogateDiagnostics,
    as_design,
    check_fit_data,
    task_prefix,
)
from mapframe.surrogates.warp import MetricWarp, range_link

__all__ = [
    "AutoSurrogate",
    "QuadraticSurrogate",
    "SigmoidQuadraticSurrogate",
    "SoftplusQuadraticSurrogate",
    "check_identifiable",
    "design_rank",
    "n_quadratic_params",
    "quadratic_derivatives",
    "quadratic_features",
]

# Singular values below this fraction of the largest count as zero (features are built on
# inputs scaled to [-1, 1], so a well-spread design sits many orders of magnitude above it).
_RANK_RTOL = 1e-10
# Leverages this close to 1 make leave-one-out residuals meaningless: LOO is reported as NaN.
_LEVERAGE_MAX = 1.0 - 1e-8

LooMethod = Literal["linearized", "refit"]

_T = TypeVar("_T")


_blas_controller: Any = None


def _limit_blas() -> Callable[[], object]:
    """Limit BLAS to one thread (threadpoolctl; nothing without it); returns what puts the
    process's own count back. Runs under :data:`_ONE_BLAS_THREAD`'s lock."""
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    if _blas_controller is False:
        return lambda: None
    return _blas_controller.limit(limits=1, user_api="blas").restore_original_limits


#: The BLAS thread count is a process setting: concurrent studies share one limit.
_ONE_BLAS_THREAD = SharedSetting(_limit_blas)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run BLAS/LAPACK single-threaded inside the block, when threadpoolctl is installed.

    The matrices here are tiny (K × P with P ≤ a few dozen); threaded OpenBLAS gains nothing on
    them and, on a busy machine, its spinning threads made an 8-task fit take a second instead
    of milliseconds. threadpoolctl is optional: without it this does nothing.

    Blocks in several threads at once (studies run side by side) share one limit: the first
    sets it, the last puts the process's own count back. Each block saving and restoring it
    (threadpoolctl's ``limit``) left BLAS on one thread for good when two overlapped (A saves
    2, B saves 1, A restores 2, B restores 1).
    """
    with _ONE_BLAS_THREAD.held():
        yield


# --------------------------------------------------------------------------- features
def n_quadratic_params(n_dims: int) -> int:
    """Parameters of a full quadratic in ``n_dims`` variables: ``(N+1)(N+2)/2``."""
    if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
        raise ConfigError(f"the number of dimensions must be an integer >= 1, got {n_dims!r}")
    n = int(n_dims)
    return (n + 1) * (n + 2) // 2


def quadratic_features(X: np.ndarray) -> np.ndarray:
    """The design rows ``[c_1², …, c_N², c_j c_l (j<l), c_1, …, c_N, 1]`` of each row of ``X``.

    ``X`` is ``(K, N)`` (a single point may be given as a 1-D array); the result is
    ``(K, (N+1)(N+2)/2)``. Cross terms come in row-major order: ``(1,2), (1,3), …, (2,3), …``.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] < 1:
        raise ConfigError(f"coefficients must be a (K, N) array, got shape {X.shape}")
    j, m = np.triu_indices(X.shape[1], k=1)
    return np.hstack([X * X, X[:, j] * X[:, m], X, np.ones((X.shape[0], 1))])


def _unit_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Center and half-range mapping each column of ``X`` onto ``[-1, 1]`` (1 if constant)."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    half = (hi - lo) / 2.0
    half[half <= 0] = 1.0
    return (hi + lo) / 2.0, half


def _rank(F: np.ndarray) -> int:
    with _one_blas_thread():
        s = np.linalg.svd(F, compute_uv=False)
    return int(np.sum(s > s[0] * _RANK_RTOL)) if s.size and s[0] > 0 else 0


def design_rank(X: np.ndarray) -> int:
    """Rank of the quadratic design matrix of ``X`` (computed on inputs scaled to ``[-1, 1]``).

    The quadratic is identifiable from ``X`` exactly when this equals
    :func:`n_quadratic_params`; a design whose coordinates take only two values (such as the
    0/1 corners of the box) falls short because ``c_j²`` then repeats ``c_j``.
    """
    X = as_design(X)
    center, half = _unit_scaling(X)
    return _rank(quadratic_features((X - center) / half))


def check_identifiable(X: np.ndarray, n_dims: int | None = None) -> None:
    """Raise :class:`~mapframe.errors.BudgetError` unless ``X`` identifies a full quadratic.

    ``n_dims`` (default: the number of columns of ``X``) is checked against ``X``.
    """
    X = as_design(X)
    if n_dims is not None and n_dims != X.shape[1]:
        raise ConfigError(f"expected {n_dims} coefficients per point, got {X.shape[1]}")
    p = n_quadratic_params(X.shape[1])
    _check_budget(X.shape[0], X.shape[1])
    r = design_rank(X)
    if r < p:
        raise BudgetError(_rank_message(r, p))


def _rank_message(r: int, p: int) -> str:
    return (
        f"the design does not identify the quadratic (rank {r} < {p}): use a space-filling "
        "sampler (sobol/lhs) or more points"
    )


def _check_budget(k: int, n_dims: int, where: str = "") -> None:
    p = n_quadratic_params(n_dims)
    if k < p:
        raise BudgetError(
            f"{where}{k} evaluations cannot fit the {p}-parameter quadratic for {n_dims} tasks: "
            f"raise budget to at least {p} (the paper uses about {2 * p})"
        )


# --------------------------------------------------------------------------- linear algebra
class _LeastSquares:
    """Ridge least squares ``min |M β − t|² + ridge·|β without intercept|²`` through one SVD.

    The last column of ``M`` is the intercept's and is not penalised. With ``M = U S Vᵀ`` and
    ``W = V S⁻¹``: ``β = W B⁻¹ Uᵀ t`` and the hat matrix is ``U B⁻¹ Uᵀ``, where
    ``B = I + ridge · W'ᵀW'`` (``W'``: ``W`` without the intercept's row; ``B = I`` without
    ridge). No normal equations are formed, so the ridge-free solve keeps the SVD's accuracy.
    Directions with singular values below ``_RANK_RTOL`` of the largest are dropped
    (pseudo-inverse); :attr:`rank` counts the rest.
    """

    def __init__(self, M: np.ndarray, ridge: float = 0.0) -> None:
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        keep = s > s[0] * _RANK_RTOL if s.size and s[0] > 0 else np.zeros(s.size, dtype=bool)
        self.rank = int(keep.sum())
        self._U, self._s, self._Vt = U[:, keep], s[keep], Vt[keep]
        self._B_inv: np.ndarray | None = None
        if ridge > 0 and self.rank:
            W = self._Vt[:, :-1].T / self._s
            self._B_inv = np.linalg.inv(np.eye(self.rank) + ridge * (W.T @ W))

    def solve(self, t: np.ndarray) -> np.ndarray:
        """The coefficients for targets ``t``."""
        c = self._U.T @ t
        if self._B_inv is not None:
            c = self._B_inv @ c
        return self._Vt.T @ (c / self._s)

    def leverage(self) -> np.ndarray:
        """The diagonal of the hat matrix ``M (MᵀM + ridge·I')⁻¹ Mᵀ``."""
        UB = self._U if self._B_inv is None else self._U @ self._B_inv
        return np.einsum("ij,ij->i", UB, self._U)


#: The last fitted design: ``id`` of the caller's ``X`` -> (a copy of ``X``, ridge, center,
#: half, features, SVD). A study fits one copy of its surrogate per task on the same ``X``
#: array: its scaling, features and SVD (16 tasks, 10 010 points: 16 SVDs of 10 010 x 153,
#: 5.5 s of a 7 s fit) are the same for every task and computed once. The entry goes when
#: that ``X`` is garbage collected, or when another design is fitted.
_DESIGNS: dict[int, tuple[Any, ...]] = {}


def _design(X: np.ndarray, ridge: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _LeastSquares]:
    """``X``'s scaling (center, half-range), quadratic features and their least-squares
    decomposition; reused when the same, unchanged ``X`` array is fitted again."""
    key = id(X)
    hit = _DESIGNS.get(key)
    if hit is not None and hit[1] == ridge and np.array_equal(hit[0], X):
        return hit[2].copy(), hit[3].copy(), hit[4], hit[5]
    center, half = _unit_scaling(X)
    F = quadratic_features((X - center) / half)
    F.setflags(write=False)  # shared by every task's fit: an in-place change would leak
    design = _LeastSquares(F, ridge)
    token = object()
    _DESIGNS.clear()
    _DESIGNS[key] = (X.copy(), ridge, center.copy(), half.copy(), F, design, token)
    weakref.finalize(X, _forget_design, key, token)
    return center, half, F, design


def _forget_design(key: int, token: object) -> None:
    """Drop the design of an ``X`` being collected, unless another one replaced it."""
    hit = _DESIGNS.get(key)
    if hit is not None and hit[-1] is token:
        del _DESIGNS[key]


def _unpack(beta: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(A, b, e)`` from feature coefficients in :func:`quadratic_features` order."""
    j, m = np.triu_indices(n, k=1)
    A = np.diag(beta[:n]).astype(float)
    A[j, m] = A[m, j] = beta[n : n + j.size] / 2.0
    return A, beta[n + j.size : -1].copy(), float(beta[-1])


def _check_settings(**settings: Any) -> dict[str, Any]:
    """Validate the fitting settings shared by the models; return them normalised."""
    out: dict[str, Any] = {}
    if "ridge" in settings:
        out["ridge"] = number_setting(settings["ridge"], "ridge", 0.0)
    if "eps" in settings:
        out["eps"] = number_setting(settings["eps"], "eps", 0.0, 0.5, open_low=True,
                                    open_high=True)
    if "loo" in settings:
        if settings["loo"] not in ("linearized", "refit"):
            raise ConfigError(f"loo must be 'linearized' or 'refit', got {settings['loo']!r}")
        out["loo"] = settings["loo"]
    if "max_nfev" in settings:
        m = settings["max_nfev"]
        refuse_number_string(m, "max_nfev", what="a positive integer")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ConfigError(f"max_nfev must be a positive integer, got {m!r}")
        out["max_nfev"] = int(m)
    return out


def _r2(ss_res: float, ss_tot: float) -> float:
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def _fitted(state: _T | None, who: str) -> _T:
    """``state`` (what a surrogate's fit set); :class:`MapframeError` while it is ``None``."""
    if state is None:
        raise MapframeError(f"{who} is not fitted yet: call fit(X, y, task) first")
    return state


class _WarpSettings:
    """The settings of the warped fits, checked once: the warped models use them and
    :class:`AutoSurrogate` passes them on to the model it picks."""

    def __init__(
        self,
        ridge: float = 0.0,
        eps: float = 1e-3,
        loo: LooMethod = "linearized",
        max_nfev: int = 200,
    ) -> None:
        settings = _check_settings(ridge=ridge, eps=eps, loo=loo, max_nfev=max_nfev)
        self.ridge: float = settings["ridge"]
        self.eps: float = settings["eps"]
        self.loo: LooMethod = settings["loo"]
        self.max_nfev: int = settings["max_nfev"]
        super().__init__()


# --------------------------------------------------------------------------- models
class _QuadraticModel(Surrogate):
    """Shared machinery: validation, scaling, the quadratic ``q``, prediction and diagnostics.

    Subclasses define the link ``q -> metric`` (:meth:`_link`, :meth:`_link_grad`) and how
    the feature coefficients are estimated (:meth:`_estimate`).
    """

    # How leave-one-out residuals come from leverages: exact for OLS, linearised when warped.
    _leverage_kind: ClassVar[str] = "exact"

    def check_design(self, X: np.ndarray) -> None:
        """Raise :class:`BudgetError` unless ``X`` identifies the quadratic."""
        check_identifiable(X)

    ridge: float

    def __init__(self) -> None:
        """The unfitted state; subclasses set ``ridge`` (and their other settings) first."""
        self._beta: np.ndarray | None = None
        self._task: Task | None = None
        self._diagnostics: dict[str, Any] = {}

    # ---- the Surrogate interface
    def n_params(self, n_dims: int) -> int:
        """``(N+1)(N+2)/2``: the quadratic's parameter count (the minimum sample size)."""
        return n_quadratic_params(n_dims)

    def fit(self, X: np.ndarray, y: np.ndarray, task: Task | None = None) -> _QuadraticModel:
        """Fit to ``K`` points (``X``: ``(K, N)``, ``y``: ``(K,)``); return ``self``.

        Raises :class:`~mapframe.errors.BudgetError` when ``K`` is below the parameter count
        or the design does not identify the quadratic, :class:`~mapframe.errors.ConfigError`
        for malformed inputs, and :class:`~mapframe.errors.MetricError` for non-finite or
        out-of-range metric values.
        """
        self._beta = None  # a failed refit leaves the model unfitted, not half-updated
        X, y = self._validate(X, y, task)
        with _one_blas_thread():
            self._fit(X, y, task)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray, task: Task | None) -> None:
        self._task = task
        self._center, self._half, F, design = _design(X, self.ridge)
        if design.rank < F.shape[1]:
            raise BudgetError(self._where(task) + _rank_message(design.rank, F.shape[1]))
        beta, info = self._estimate(F, y, design)
        self._set_beta(beta)
        fitted = self._link(F @ beta)
        leverage = info.pop("leverage", None)
        if leverage is None:
            leverage = self._leverage(F, beta)
        loo_pred = info.pop("loo_pred", None)
        self._diagnostics = self._fit_quality(y, fitted, leverage, loo_pred)
        self._diagnostics.update(info)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted metric at each row of ``X`` (``(M, N)``; one point as ``(N,)``): ``(M,)``."""
        return self._link(self.quadratic(X))

    def diagnostics(self) -> SurrogateDiagnostics:
        """Fit quality on the natural (metric) scale.

        ``r2``/``rmse`` on the fitted points; ``loo_r2``/``loo_rmse`` from leave-one-out
        residuals (``loo_method`` says how they were obtained; NaN when a point has leverage
        ~1, i.e. the fit cannot predict it without it); ``n_samples``, ``n_params``,
        ``model``. ``r2`` is NaN when all targets are equal.
        """
        return cast(SurrogateDiagnostics, dict(self._diagnostics))

    # ---- the fitted quadratic, in original coordinates
    def quadratic(self, X: np.ndarray) -> np.ndarray:
        """The inner quadratic ``q(c)`` at each row of ``X`` (before the link): ``(M,)``."""
        self._require_fit()
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self._Az.shape[0]:
            raise ConfigError(
                f"expected points with {self._Az.shape[0]} coefficients, got shape {X.shape}"
            )
        Z = (X - self._center) / self._half
        with _one_blas_thread():
            return np.einsum("ij,ij->i", Z @ self._Az, Z) + Z @ self._bz + self._ez

    @property
    def A(self) -> np.ndarray:
        """Symmetric ``(N, N)`` matrix of the fitted quadratic ``cᵀAc + bᵀc + e``."""
        self._require_fit()
        return self._A.copy()

    @property
    def b(self) -> np.ndarray:
        """Linear coefficients ``(N,)`` of the fitted quadratic."""
        self._require_fit()
        return self._b.copy()

    @property
    def e(self) -> float:
        """Constant term of the fitted quadratic."""
        self._require_fit()
        return self._e

    @property
    def coef_(self) -> dict[str, Any]:
        """``{"A": A, "b": b, "e": e}`` of the fitted quadratic, in original coordinates."""
        return {"A": self.A, "b": self.b, "e": self.e}

    # ---- hooks for subclasses
    def _link(self, q: np.ndarray) -> np.ndarray:
        return q

    def _link_grad(self, q: np.ndarray) -> np.ndarray:
        return np.ones_like(q)

    def _check_task(self, task: Task | None) -> None:
        """Reject tasks whose declared range the model cannot use."""

    def _estimate(
        self, F: np.ndarray, y: np.ndarray, design: _LeastSquares
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Feature coefficients for targets ``y``; ``design`` is the SVD of ``F``."""
        return design.solve(y), {"leverage": design.leverage()}

    def _leverage(self, F: np.ndarray, beta: np.ndarray) -> np.ndarray:
        # Linearised at the solution: for the identity link this is the exact hat matrix.
        J = self._link_grad(F @ beta)[:, None] * F
        return _LeastSquares(J, self.ridge).leverage()

    # ---- helpers
    def _validate(
        self, X: np.ndarray, y: np.ndarray, task: Task | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if task is not None and not isinstance(task, Task):
            raise ConfigError(f"task must be a mapframe Task, got {type(task).__name__}")
        self._check_task(task)
        X, y = check_fit_data(X, y, task)
        _check_budget(X.shape[0], X.shape[1], self._where(task))
        return X, y

    @staticmethod
    def _where(task: Task | None) -> str:
        return task_prefix(task)

    def _set_beta(self, beta: np.ndarray) -> None:
        n = self._center.size
        self._beta = beta
        self._Az, self._bz, self._ez = _unpack(beta, n)
        # Back to original coordinates: z = D (c - m) with D = diag(1 / half).
        d = 1.0 / self._half
        m = self._center
        self._A = self._Az * np.outer(d, d)
        self._b = d * self._bz - 2.0 * self._A @ m
        self._e = float(self._ez + m @ self._A @ m - (d * self._bz) @ m)

    def _fit_quality(
        self,
        y: np.ndarray,
        fitted: np.ndarray,
        leverage: np.ndarray,
        loo_pred: np.ndarray | None,
    ) -> dict[str, Any]:
        k = y.size
        resid = y - fitted
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        ss_res = float(resid @ resid)
        if loo_pred is not None:
            loo_resid = y - loo_pred
        elif np.all(leverage < _LEVERAGE_MAX):
            loo_resid = resid / (1.0 - leverage)
        else:
            loo_resid = np.full(k, math.nan)
        press = float(loo_resid @ loo_resid)
        return {
            "model": self.name,
            "r2": _r2(ss_res, ss_tot),
            "loo_r2": _r2(press, ss_tot) if math.isfinite(press) else math.nan,
            "rmse": math.sqrt(ss_res / k),
            "loo_rmse": math.sqrt(press / k) if math.isfinite(press) else math.nan,
            "n_samples": k,
            "n_params": int(self._beta.size) if self._beta is not None else 0,
            "loo_method": self._leverage_kind if loo_pred is None else "refit",
        }

    def _require_fit(self) -> None:
        _fitted(self._beta, type(self).__name__)


class QuadraticSurrogate(_QuadraticModel):
    """MAP's case 1: ``m(c) = cᵀAc + bᵀc + e`` by closed-form least squares (``"quadratic"``).

    ``ridge`` (default 0) adds ``ridge · |β|²`` on the scaled features' coefficients (all but
    the intercept) for ill-conditioned designs; it does not rescue an unidentifiable design,
    which is still rejected. Leave-one-out diagnostics are exact, from the hat matrix:
    ``e_i / (1 - h_ii)`` (with ``ridge`` > 0: of the ridge fit at the features' scaling over
    all points; a refit on the others rescales the features, so its penalty differs).
    """

    name: ClassVar[str] = "quadratic"

    def __init__(self, ridge: float = 0.0) -> None:
        self.ridge = _check_settings(ridge=ridge)["ridge"]
        super().__init__()


class _WarpedQuadratic(_WarpSettings, _QuadraticModel):
    """A quadratic behind a fixed link, fitted by nonlinear least squares on the metric scale.

    The fit starts from OLS on the inverse-linked targets (clipped ``eps`` inside the bounds,
    so that values exactly at a bound stay finite) and then runs Levenberg–Marquardt
    (``scipy.optimize.least_squares(method="lm")``) with the analytic Jacobian
    ``link'(q) · features``.
    """

    _leverage_kind: ClassVar[str] = "linearized"

    @abstractmethod
    def _inverse_link(self, y: np.ndarray) -> np.ndarray:
        """Map targets (clipped off the bounds) to the quadratic's scale for the start."""

    def _estimate(
        self, F: np.ndarray, y: np.ndarray, design: _LeastSquares
    ) -> tuple[np.ndarray, dict[str, Any]]:
        beta0 = design.solve(self._inverse_link(y))
        beta, ok, nfev = self._nls(F, y, beta0)
        info: dict[str, Any] = {"converged": ok, "nfev": nfev}
        k, p = F.shape
        if self.loo == "refit" and k - 1 + (p - 1 if self.ridge > 0 else 0) < p:
            info["loo_pred"] = np.full(k, math.nan)  # K == P: nothing left to refit on
        elif self.loo == "refit":
            loo_pred = np.empty(k)
            mask = np.ones(k, dtype=bool)
            for i in range(k):
                mask[i] = False
                beta_i, _, _ = self._nls(F[mask], y[mask], beta)
                loo_pred[i] = self._link(F[i] @ beta_i)
                mask[i] = True
            info["loo_pred"] = loo_pred
        return beta, info

    def _nls(
        self, F: np.ndarray, y: np.ndarray, beta0: np.ndarray
    ) -> tuple[np.ndarray, bool, int]:
        p = F.shape[1]
        root = math.sqrt(self.ridge)
        penalty = root * np.eye(p)[:-1]

        def residuals(beta: np.ndarray) -> np.ndarray:
            r = self._link(F @ beta) - y
            return np.concatenate([r, root * beta[:-1]]) if root else r

        def jacobian(beta: np.ndarray) -> np.ndarray:
            J = self._link_grad(F @ beta)[:, None] * F
            return np.vstack([J, penalty]) if root else J

        from scipy.optimize import least_squares  # imported when first needed

        res = least_squares(
            residuals, beta0, jac=jacobian, method="lm", max_nfev=self.max_nfev
        )
        beta = res.x
        # LM never increases the loss from its start, but guard against a non-finite step.
        if not np.all(np.isfinite(beta)):
            return beta0, False, int(res.nfev)
        return beta, bool(res.status > 0), int(res.nfev)


class SigmoidQuadraticSurrogate(_WarpedQuadratic):
    """MAP's case 2: ``m(c) = l + (u − l) · sigmoid(q(c))`` for metrics in ``[l, u]``
    (``"sigmoid_quadratic"``), e.g. accuracy in ``[0, 1]``.

    ``l, u`` are the task's ``lower``/``upper`` (both must be finite). Predictions always lie
    in ``[l, u]``; targets exactly at a bound (accuracy 0 or 1) are fine. Settings: ``ridge``
    (penalty on the scaled quadratic's coefficients, intercept excluded), ``eps`` (the
    targets are clipped ``eps · (u − l)`` inside the range for the starting logit fit only),
    ``loo`` (``"linearized"``: ``e_i / (1 − h_ii)`` with ``h = diag(J (JᵀJ)⁻¹ Jᵀ)`` from the
    Jacobian at the solution — fast, the default; ``"refit"``: exact leave-one-out by ``K``
    warm-started refits, slower by a factor of about ``K``), ``max_nfev`` (cap on
    Levenberg–Marquardt residual evaluations; ``diagnostics()["converged"]`` reports whether
    it converged before the cap).
    """

    name: ClassVar[str] = "sigmoid_quadratic"

    def _check_task(self, task: Task | None) -> None:
        if task is None or not task.bounded:
            where = self._where(task)
            raise ConfigError(
                f"{where}the sigmoid surrogate needs a task with finite lower and upper metric "
                "bounds (e.g. Task(name, lower=0, upper=1)); use 'quadratic' or 'auto' otherwise"
            )

    def _range(self) -> tuple[float, float]:
        assert self._task is not None
        return self._task.lower, self._task.upper

    def _warp(self) -> MetricWarp:
        return MetricWarp("logit", *self._range(), eps=self.eps)

    def _link(self, q: np.ndarray) -> np.ndarray:
        return self._warp().to_metric(q)

    def _link_grad(self, q: np.ndarray) -> np.ndarray:
        return self._warp().derivative(q)

    def _inverse_link(self, y: np.ndarray) -> np.ndarray:
        return self._warp().to_latent(y)


class SoftplusQuadraticSurrogate(_WarpedQuadratic):
    """MAP's case 3: ``m(c) = l + softplus(q(c))`` for metrics bounded below, e.g. a loss
    ``>= 0`` (``"softplus_quadratic"``); mirrored, ``u − softplus(q(c))``, for metrics bounded
    above only.

    ``bound`` picks the side: ``"lower"`` (needs a finite ``task.lower``), ``"upper"`` (needs
    a finite ``task.upper``), or ``None`` (default: lower when finite, else upper). Targets
    are kept ``eps · max|y − bound|`` off the bound for the starting fit only. ``ridge``,
    ``loo`` and ``max_nfev`` as for :class:`SigmoidQuadraticSurrogate`.
    """

    name: ClassVar[str] = "softplus_quadratic"

    def __init__(
        self,
        ridge: float = 0.0,
        eps: float = 1e-3,
        loo: LooMethod = "linearized",
        max_nfev: int = 200,
        bound: Literal["lower", "upper"] | None = None,
    ) -> None:
        super().__init__(ridge=ridge, eps=eps, loo=loo, max_nfev=max_nfev)
        if bound not in (None, "lower", "upper"):
            raise ConfigError(f"bound must be 'lower', 'upper' or None, got {bound!r}")
        self.bound = bound
        self._side: float = 1.0
        self._anchor: float = 0.0

    def _check_task(self, task: Task | None) -> None:
        where = self._where(task)
        lo_ok = task is not None and math.isfinite(task.lower)
        hi_ok = task is not None and math.isfinite(task.upper)
        side = self.bound or ("lower" if lo_ok else "upper" if hi_ok else None)
        if task is None or side is None or not (lo_ok if side == "lower" else hi_ok):
            need = f"a finite {side} metric bound" if side else "a finite metric bound"
            raise ConfigError(
                f"{where}the softplus surrogate needs {need} (e.g. Task(name, direction='min', "
                "lower=0) for a loss); use 'quadratic' or 'auto' otherwise"
            )
        self._side = 1.0 if side == "lower" else -1.0
        self._anchor = task.lower if side == "lower" else task.upper

    def _warp(self) -> MetricWarp:
        return MetricWarp("softplus", lower=self._anchor, side=self._side)

    def _link(self, q: np.ndarray) -> np.ndarray:
        return self._warp().to_metric(q)

    def _link_grad(self, q: np.ndarray) -> np.ndarray:
        return self._warp().derivative(q)

    def _inverse_link(self, y: np.ndarray) -> np.ndarray:
        return MetricWarp.softplus_from(self._anchor, self._side, y, self.eps).to_latent(y)

    def _fit_quality(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super()._fit_quality(*args, **kwargs)
        out["bound"] = "lower" if self._side > 0 else "upper"
        return out


class AutoSurrogate(_WarpSettings, Surrogate):
    """Picks the warping from each task's declared metric range (``"auto"``).

    Both bounds finite → :class:`SigmoidQuadraticSurrogate`; only the lower bound →
    :class:`SoftplusQuadraticSurrogate`; only the upper bound → the mirrored softplus
    ``u − softplus(q)``; unbounded → :class:`QuadraticSurrogate`. ``predict``, ``diagnostics``
    (whose ``"model"`` names the choice), ``A``/``b``/``e`` delegate to the chosen model,
    available as :attr:`model` after :meth:`fit`. Settings are passed on (``ridge`` to all,
    the others to the warped models).
    """

    name: ClassVar[str] = "auto"

    def check_design(self, X: np.ndarray) -> None:
        """Raise :class:`BudgetError` unless ``X`` identifies the quadratic."""
        check_identifiable(X)

    _model: _QuadraticModel | None = None  # set by fit

    def n_params(self, n_dims: int) -> int:
        """``(N+1)(N+2)/2`` whichever model is chosen."""
        return n_quadratic_params(n_dims)

    def choose(self, task: Task | None) -> _QuadraticModel:
        """A fresh, unfitted model suited to ``task``'s metric range."""
        kind = range_link(task)
        if kind == "identity":
            return QuadraticSurrogate(ridge=self.ridge)
        if kind == "logit":
            return SigmoidQuadraticSurrogate(
                ridge=self.ridge, eps=self.eps, loo=self.loo, max_nfev=self.max_nfev
            )
        return SoftplusQuadraticSurrogate(
            ridge=self.ridge, eps=self.eps, loo=self.loo, max_nfev=self.max_nfev,
            bound="lower" if kind == "softplus-lower" else "upper",
        )

    def fit(self, X: np.ndarray, y: np.ndarray, task: Task | None = None) -> AutoSurrogate:
        """Choose the model for ``task`` and fit it; return ``self``."""
        model = self.choose(task)
        model.fit(X, y, task)
        self._model = model
        return self

    @property
    def model(self) -> _QuadraticModel:
        """The fitted model chosen for the task."""
        return _fitted(self._model, "AutoSurrogate")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of the chosen model: ``(M,)``."""
        return self.model.predict(X)

    def quadratic(self, X: np.ndarray) -> np.ndarray:
        """The chosen model's inner quadratic ``q(c)``: ``(M,)``."""
        return self.model.quadratic(X)

    def diagnostics(self) -> SurrogateDiagnostics:
        """The chosen model's diagnostics; ``"model"`` names it. Empty before :meth:`fit`."""
        return self._model.diagnostics() if self._model is not None else {}

    @property
    def A(self) -> np.ndarray:
        """``A`` of the chosen model's quadratic."""
        return self.model.A

    @property
    def b(self) -> np.ndarray:
        """``b`` of the chosen model's quadratic."""
        return self.model.b

    @property
    def e(self) -> float:
        """``e`` of the chosen model's quadratic."""
        return self.model.e

    @property
    def coef_(self) -> dict[str, Any]:
        """``{"A", "b", "e"}`` of the chosen model's quadratic."""
        return self.model.coef_


def quadratic_derivatives(
    surrogates: Sequence[Surrogate],
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """The exact derivatives of fitted plain quadratics' predictions, for the front solver's
    polish (:class:`~mapframe.solvers._common.PredictWithDerivatives`): a function of ``C``
    ``(M, N)`` returning the Jacobians ``2 A_t c + b_t`` ``(M, T, N)`` and the Hessians
    ``2 A_t`` ``(T, N, N)`` of the ``T`` surrogates, in their order.

    ``None`` unless every surrogate is a fitted :class:`QuadraticSurrogate` (itself or an
    :class:`AutoSurrogate`'s choice) whose prediction is the quadratic itself: a warped
    model's link is not quadratic, and finite differences of it differ from its exact
    derivatives by more than rounding, so the polish keeps those.
    """
    models: list[_QuadraticModel] = []
    for s in surrogates:
        if isinstance(s, AutoSurrogate):
            if type(s).predict is not AutoSurrogate.predict or s._model is None:
                return None
            s = s._model
        if not (isinstance(s, QuadraticSurrogate) and s._beta is not None
                and type(s).predict is _QuadraticModel.predict
                and type(s).quadratic is _QuadraticModel.quadratic
                and type(s)._link is _QuadraticModel._link):
            return None
        models.append(s)
    if not models:
        return None
    hess = np.stack([2.0 * m.A for m in models])  # (T, N, N), symmetric
    b = np.stack([m.b for m in models])  # (T, N)
    n_tasks, n = b.shape
    # C @ W holds C @ (2 A_t) for every task t side by side.
    W = np.ascontiguousarray(hess.transpose(1, 0, 2).reshape(n, n_tasks * n))

    def derivatives(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        C = np.atleast_2d(np.asarray(C, dtype=float))
        return (C @ W).reshape(len(C), n_tasks, n) + b, hess

    return derivatives
