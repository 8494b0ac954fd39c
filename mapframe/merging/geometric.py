"""Geometric merges of N task vectors: Model Stock, the Karcher mean and multi-SLERP.

* :class:`ModelStock` (``"model_stock"``): the interpolation weight towards the average of
  the fine-tunes from their mean pairwise angle, per tensor; ``c`` scales each task's share.
* :class:`KarcherMean` (``"karcher"``) and :class:`MultiSlerp` (``"multislerp"``): spherical
  averages of the task vectors of each tensor for any ``N ≥ 2`` (SLERP for more than two
  models); ``c / Σc`` sets the point on the sphere and ``c`` the magnitude.

All three work on task vectors ``τ_i = θ_i − θ0`` one tensor at a time, in float32, writing
back in each tensor's dtype; tests/test_strategies_2025.py checks them against mergekit.

References: Jang, Yun and Han, *Model Stock: All we need is just a few fine-tuned models*
(2024); Karcher, *Riemannian center of mass and mollifier smoothing* (1977); mergekit's
``karcher`` and ``multislerp`` methods.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.merging.base import MergeStrategy, TensorwiseMergeStrategy, checked_real

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = ["KarcherMean", "ModelStock", "MultiSlerp", "model_stock_weight"]


def _need_two(name: str, task_vectors: TaskVectors) -> None:
    if task_vectors.n_tasks < 2:
        raise ConfigError(
            f"{name} merges at least two fine-tuned models; got {task_vectors.n_tasks} task "
            "vector(s): use task_arithmetic for one")


def _check_non_negative(name: str, c: np.ndarray) -> None:
    if np.any(c < 0):
        raise ConfigError(
            f"merge strategy {name!r} needs non-negative coefficients (weights on the "
            f"sphere), got {c.tolist()}; set the search space's lower bound to 0")


# -- Model Stock ----------------------------------------------------------------------------
def model_stock_weight(vectors: torch.Tensor) -> float:
    """Model Stock's interpolation weight ``t = N cos θ / (1 + (N − 1) cos θ)`` of one tensor.

    ``cos θ`` is the mean over pairs ``i < j`` of ``⟨τ_i, τ_j⟩ / max(‖τ_i‖ ‖τ_j‖, 1e-6)``
    (each clipped to ``[-1, 1]``), summed in float64; where ``|1 + (N − 1) cos θ| < 1e-6``
    there is no finite estimate and ``t = 0`` (as mergekit).
    """
    import torch

    n = vectors.shape[0]
    flat = vectors.reshape(n, -1).to(torch.float64)
    gram = flat @ flat.T
    norms = gram.diagonal().clamp(min=0).sqrt()
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            denom = max(float(norms[i] * norms[j]), 1e-6)
            cosines.append(min(1.0, max(-1.0, float(gram[i, j]) / denom)))
    cos = float(np.mean(cosines))
    denominator = 1.0 + (n - 1) * cos
    if abs(denominator) < 1e-6:
        return 0.0
    return n * cos / denominator


class ModelStock(MergeStrategy):
    """Model Stock (Jang et al., 2024), with one coefficient per task scaling its share.

    Per tensor, ``prepare`` computes the interpolation weight ``t`` from the fine-tunes'
    mean pairwise angle (:func:`model_stock_weight`). Model Stock's merge is
    ``t · mean_i θ_i + (1 − t) θ0 = θ0 + t · (1/N) Σ_i τ_i``; with coefficients::

        θ(c) = θ0 + t · (1/N) Σ_i c_i τ_i

    **What c drives:** the per-task scaling of each task's share of the average; the
    per-tensor ``t`` is fixed by the task vectors. ``c = 1`` is Model Stock (mergekit's
    ``model_stock`` with ``filter_wise: false``); ``c = α·1`` scales its update by ``α``.

    **Memory:** one float per tensor; ``prepare`` reads one tensor's ``N`` task vectors at
    a time. A merge is task arithmetic with per-tensor weights ``t c_i / N`` through
    :meth:`TaskVectors.combine_into <mapframe.merging.TaskVectors.combine_into>`, so it
    streams like task arithmetic (chunked, nothing materialised).
    """

    name: ClassVar[str] = "model_stock"

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Fix each tensor's interpolation weight ``t``."""
        _need_two(self.name, task_vectors)
        super().prepare(task_vectors)
        self._t = {key: model_stock_weight(task_vectors.vectors(key))
                   for key in task_vectors.keys()}

    def weights(self, key: str, coefficients: np.ndarray) -> np.ndarray:
        """The task-arithmetic weights ``t c / N`` of tensor ``key`` (rows of ``c``)."""
        c = np.asarray(coefficients, dtype=float)
        return self._t[key] * c / c.shape[-1]

    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        """Overwrite each tensor in ``params`` with ``θ0 + t Σ_i c_i τ_i / N``."""
        import torch

        tv = self.task_vectors
        c = self.check_coefficients(coefficients)
        for key, target in params.items():
            w = torch.as_tensor(self.weights(key, c), dtype=torch.float32)
            tv.combine_into(key, w, target)

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        """Write ``B`` merges: ``out[k][b]`` is ``θ(C[b])`` for tensor ``k``."""
        import torch

        tv = self.task_vectors
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        C = np.stack([self.check_coefficients(row) for row in C])
        for key, target in out.items():
            W = torch.as_tensor(self.weights(key, C), dtype=torch.float32)
            tv.combine_batch_into(key, W, target)


# -- spherical means ------------------------------------------------------------------------
class SphericalMergeStrategy(TensorwiseMergeStrategy):
    """Base of ``θ(c) = θ0 + f(τ_1 … τ_N; c)`` for a spherical mean ``f`` of one tensor.

    ``c`` must be non-negative (weights on the sphere); ``c = 0`` gives ``θ0``. Subclasses
    implement :meth:`combine` on the flattened task vectors ``(N, P)`` and their norms,
    using only matrix-vector products with them (no normalised copy of the task vectors:
    the scratch is a few vectors of one tensor's size).
    """

    def check_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """One finite, non-negative coefficient per task."""
        c = super().check_coefficients(coefficients)
        _check_non_negative(self.name, c)
        return c

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Keep each tensor's task-vector norms."""
        import torch

        _need_two(self.name, task_vectors)
        super().prepare(task_vectors)
        self._norms: dict[str, torch.Tensor] = {}
        for key in task_vectors.keys():
            flat = task_vectors.vectors(key).reshape(task_vectors.n_tasks, -1)
            self._norms[key] = torch.linalg.vector_norm(flat.to(torch.float32), dim=1)

    @abstractmethod
    def combine(self, flat: torch.Tensor, norms: torch.Tensor,
                c: np.ndarray) -> torch.Tensor:
        """The merged update of one tensor, flattened, for one coefficient row ``c``."""

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``, float32, shape ``(B, *shape)``."""
        import torch

        tv = self.task_vectors
        vectors = tv.vectors(key)
        shape = tuple(vectors.shape[1:])
        flat = vectors.reshape(vectors.shape[0], -1).to(torch.float32)
        out = torch.stack([self.combine(flat, self._norms[key], row).reshape(shape)
                           for row in np.atleast_2d(C)])
        out += tv.base(key).to(torch.float32)
        return out


class KarcherMean(SphericalMergeStrategy):
    """The weighted Karcher (Riemannian) mean of the task vectors on the sphere, per tensor.

    Per tensor, with unit vectors ``u_i = τ_i / ‖τ_i‖`` and weights ``w = c / Σc`` over the
    tasks with ``‖τ_i‖ > tol``: start from the normalised ``Σ w_i u_i`` and take up to
    ``max_iter`` Riemannian gradient steps ``μ ← exp_μ(Σ_i w_i θ_i/sin θ_i (u_i − cos θ_i μ))``
    (``θ_i`` the angle between ``μ`` and ``u_i``), stopping when the step is below
    ``tol``. Then::

        θ(c) = θ0 + (Σ_i c_i ‖τ_i‖) · μ

    **What c drives:** the relative weights ``c/Σc`` set the point ``μ`` on the sphere; the
    magnitude is the ``c``-weighted sum of the task vectors' norms, so ``c = e_i`` gives
    ``θ_i`` and, for two tasks, ``c = (1 − t, t)`` is (up to ``tol``) SLERP of the task
    vectors with norms interpolated linearly. ``c ≥ 0``; ``c = 0`` gives ``θ0``.

    mergekit's ``karcher`` averages whole weight tensors with equal weights; here the task
    vectors (relative to ``θ0``, as mapframe's ``slerp``) are averaged with weights ``c``.
    The arithmetic is mergekit's ``karcher_merge_tensors(τ, alphas=c)``, which the tests
    compare against.

    **Memory:** ``N`` floats per tensor (the norms); a merge needs a few float32 vectors of
    one tensor's size besides its ``N`` task vectors.

    Args:
        max_iter: iterations of the Karcher mean, ``≥ 1`` (mergekit's default 10).
        tol: convergence and zero-norm tolerance, ``> 0`` (mergekit's default 1e-5).
    """

    name: ClassVar[str] = "karcher"

    def __init__(self, max_iter: int = 10, tol: float = 1e-5) -> None:
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError(f"max_iter must be an integer ≥ 1, got {max_iter!r}")
        self.max_iter = max_iter
        self.tol = checked_real(tol, "tol must be a finite number > 0",
                                lambda v: math.isfinite(v) and v > 0.0)

    def combine(self, flat: torch.Tensor, norms: torch.Tensor,
                c: np.ndarray) -> torch.Tensor:
        """``(Σ c_i ‖τ_i‖) μ`` with ``μ`` the Karcher mean of the unit task vectors."""
        import torch

        tol = self.tol
        valid = [i for i in range(flat.shape[0]) if float(norms[i]) > tol]
        alpha_sum = float(sum(c[i] for i in valid))
        if not valid or alpha_sum == 0.0:
            return torch.zeros(flat.shape[1], dtype=torch.float32)
        sub, sub_norms = flat[valid], norms[valid]
        w = torch.as_tensor([c[i] / alpha_sum for i in valid], dtype=torch.float32)
        # unit vectors enter only through products with the task vectors
        mean = (w / sub_norms) @ sub
        mean_norm = float(torch.linalg.vector_norm(mean))
        mean = sub[0] / sub_norms[0] if mean_norm < tol else mean / mean_norm
        for _ in range(self.max_iter):
            dots = ((sub @ mean) / sub_norms).clamp(-1.0, 1.0)
            theta = torch.arccos(dots)
            moving = theta >= tol
            if not bool(moving.any()):
                break
            g = torch.where(moving, w * theta / torch.sin(theta), 0.0)
            tangent = (g / sub_norms) @ sub - float((g * dots).sum()) * mean
            step = float(torch.linalg.vector_norm(tangent))
            if step < tol:
                break
            mean = math.cos(step) * mean + math.sin(step) * (tangent / step)
            unit_norm = float(torch.linalg.vector_norm(mean))
            if unit_norm > tol:
                mean = mean / unit_norm
        scale = float(sum(c[i] * float(norms[i]) for i in range(flat.shape[0])))
        return scale * mean


class MultiSlerp(SphericalMergeStrategy):
    """Multi-model SLERP (mergekit's ``multislerp``) of the task vectors, per tensor.

    Per tensor, with ``w = c / Σc``, ``m = Σc`` and unit vectors ``u_i = τ_i / (‖τ_i‖ + eps)``:
    ``μ`` the normalised ``Σ w_i u_i``, the tangent vectors ``u_i − ⟨u_i, μ⟩ μ`` averaged
    with weights ``w`` into ``v``, mapped back to the sphere
    ``x = cos‖v‖ μ + sin‖v‖ v / ‖v‖``, and::

        θ(c) = θ0 + m · (Σ_i w_i ‖τ_i‖) · x

    **What c drives:** ``c/Σc`` the barycentric point on the sphere, ``Σc`` the magnitude
    (as mapframe's two-model ``slerp``: ``t`` from the ratios, ``m`` from the sum); so
    ``θ0 + Σc · multislerp(τ; c/Σc)``, and at ``Σc = 1`` exactly mergekit's ``multislerp``
    with the base model ``θ0`` and weights ``c``. ``c ≥ 0``; ``c = 0`` gives ``θ0``. Where
    the weighted unit vectors cancel (``‖Σ w_i u_i‖ < eps``), the tensor falls back to
    ``θ0 + Σ_i c_i τ_i`` (mergekit does this for two models and raises for more).

    **Memory:** ``N`` floats per tensor; a merge needs a few float32 vectors of one
    tensor's size besides its ``N`` task vectors.

    Args:
        eps: the stabiliser of mergekit's ``multislerp``, ``> 0``.
    """

    name: ClassVar[str] = "multislerp"

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = checked_real(eps, "eps must be a finite number > 0",
                                lambda v: math.isfinite(v) and v > 0.0)

    def combine(self, flat: torch.Tensor, norms: torch.Tensor,
                c: np.ndarray) -> torch.Tensor:
        """``Σc · (Σ w_i ‖τ_i‖) · x`` for ``w = c/Σc``."""
        import torch

        m = float(np.sum(c))
        if m == 0.0:
            return torch.zeros(flat.shape[1], dtype=torch.float32)
        w = torch.as_tensor(np.asarray(c, dtype=float) / m, dtype=torch.float32)
        inv = 1.0 / (norms + self.eps)
        mean = (w * inv) @ flat
        mean_norm = float(torch.linalg.vector_norm(mean))
        if mean_norm < self.eps:
            return torch.as_tensor(np.asarray(c, dtype=float), dtype=torch.float32) @ flat
        mean = mean / mean_norm
        dots = (flat @ mean) * inv
        tangent = (w * inv) @ flat - float((w * dots).sum()) * mean
        tangent_norm = float(torch.linalg.vector_norm(tangent)) + self.eps
        result = math.cos(tangent_norm) * mean + tangent * (math.sin(tangent_norm)
                                                            / tangent_norm)
        return (m * float((norms * w).sum())) * result
