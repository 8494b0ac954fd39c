"""The Pareto polish uses a ``predict``'s exact derivatives where it carries them.

Finite differences of ``predict`` cost ``1 + 2N + N(N-1)/2`` rows per point and Newton step
(the Hessian's mixed differences); with exact derivatives (a study's plain quadratic
surrogates attach them, :func:`mapframe.surrogates.quadratic.quadratic_derivatives`) a step
predicts only the line search's points. For quadratics the finite differences are exact too,
so both polish to the same points up to rounding.
"""

from __future__ import annotations

import numpy as np

import mapframe.solvers.pymoo_solvers as pymoo_solvers
from mapframe import MergeStudy
from mapframe.problem import SearchSpace, Task
from mapframe.solvers import improve
from mapframe.surrogates import QuadraticSurrogate, SigmoidQuadraticSurrogate
from mapframe.surrogates.quadratic import AutoSurrogate, quadratic_derivatives

N_DIMS, N_TASKS = 6, 4
_RNG = np.random.default_rng(3)
# Concave quadratics m_t(c) = -(c - t_t)^T A_t (c - t_t), SPD A_t, optima t_t in the box.
_A = np.stack([M @ M.T + 0.5 * np.eye(N_DIMS)
               for M in _RNG.normal(size=(N_TASKS, N_DIMS, N_DIMS)) / np.sqrt(N_DIMS)])
_T = _RNG.uniform(0.1, 0.9, size=(N_TASKS, N_DIMS))


class _Counting:
    """The closed-form quadratics' predict, counting the rows asked for; with
    ``derivatives`` (the exact Jacobians and Hessians) when ``exact``."""

    def __init__(self, exact: bool) -> None:
        self.rows = 0
        if exact:
            self.derivatives = self._derivatives

    def __call__(self, C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        self.rows += len(C)
        D = C[:, None, :] - _T[None]
        return -np.einsum("mtn,tnk,mtk->mt", D, _A, D)

    def _derivatives(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.atleast_2d(C)[:, None, :] - _T[None]
        return -2.0 * np.einsum("tnk,mtk->mtn", _A, D), -2.0 * _A


def test_polish_with_exact_derivatives_predicts_far_fewer_rows_for_the_same_points() -> None:
    space = SearchSpace.box(N_DIMS)
    X0 = np.random.default_rng(0).uniform(0.0, 1.0, size=(40, N_DIMS))
    directions = ["max"] * N_TASKS
    fd, exact = _Counting(exact=False), _Counting(exact=True)
    X_fd, G_fd, n_fd = improve(fd, X0, space, directions)
    X_ex, G_ex, n_ex = improve(exact, X0, space, directions)
    assert (n_fd, n_ex) == (fd.rows, exact.rows)
    # Structural: no finite-difference stencils (1 + 2N + N(N-1)/2 = 28 rows per point and
    # step here), only the line search's rows. The old polish ignored the derivatives.
    assert exact.rows * 2 < fd.rows, (exact.rows, fd.rows)
    # The same points up to rounding (finite differences of a quadratic are exact too).
    assert np.abs(X_ex - X_fd).max() < 1e-6
    assert np.abs(G_ex - G_fd).max() < 1e-6
    assert (G_ex.min(axis=1) > 1e-6).mean() > 0.5  # the starts were dominated: it moved them


def test_quadratic_derivatives_are_the_fitted_quadratics_and_only_theirs() -> None:
    X = np.random.default_rng(1).uniform(0.0, 1.0, size=(60, N_DIMS))
    Y = _Counting(exact=False)(X)
    plain = [QuadraticSurrogate().fit(X, Y[:, t]) for t in range(N_TASKS)]
    auto = [AutoSurrogate().fit(X, Y[:, t]) for t in range(N_TASKS)]  # unbounded: plain
    C = np.random.default_rng(2).uniform(0.0, 1.0, size=(5, N_DIMS))
    J_true, H_true = _Counting(exact=True).derivatives(C)
    for models in (plain, auto):
        derivatives = quadratic_derivatives(models)
        assert derivatives is not None
        J, H = derivatives(C)
        np.testing.assert_allclose(J, J_true, atol=1e-8)
        np.testing.assert_allclose(H, H_true, atol=1e-8)
    # A link makes finite differences inexact: those keep them.
    s = SigmoidQuadraticSurrogate().fit(X, 1.0 / (1.0 + np.exp(-Y[:, 0])),
                                        Task("a", lower=0.0, upper=1.0))
    assert quadratic_derivatives([*plain[:1], s]) is None
    assert quadratic_derivatives([QuadraticSurrogate()]) is None  # not fitted


def test_a_study_with_quadratic_surrogates_hands_the_polish_their_derivatives(
        monkeypatch) -> None:
    seen = []
    polish_front = pymoo_solvers.polish_front

    def spy(predict, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(callable(getattr(predict, "derivatives", None)))
        return polish_front(predict, *args, **kwargs)

    monkeypatch.setattr(pymoo_solvers, "polish_front", spy)
    centres = np.random.default_rng(4).uniform(0.1, 0.9, size=(3, 3))
    result = MergeStudy(
        objective=lambda C: -((np.atleast_2d(C)[:, None, :] - centres) ** 2).sum(axis=2),
        task_names=["a", "b", "c"], budget=30, seed=0, sampler="sobol",
        surrogate="quadratic").run()
    assert seen == [True]
    assert result.summary()["front_solver"]["polished"] is True
