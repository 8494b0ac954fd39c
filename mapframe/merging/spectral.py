"""Spectral merges: TSV-M, Iso-C and Iso-CTS, steered per task by the coefficient vector ``c``.

All three treat each 2-D tensor (a layer's weight matrix) through singular value
decompositions of its task updates; every other tensor (biases, norms, conv kernels) is
merged by the mean rule of the reference code, ``θ0 + (1/N) Σ_i c_i τ_i``. Each strategy's
2-D rule is positively homogeneous in ``c`` (``θ(α c) − θ0 = α (θ(c) − θ0)`` for ``α > 0``),
so the overall scale of ``c`` is the papers' global scaling factor ``α``, and ``c = α·1``
is the published method with that ``α``.

* :class:`TaskSingularVectorsMerge` (``"tsv_m"``): per task, the top singular vectors of
  ``τ_i``; the concatenated left and right singular vectors are orthogonalised once in
  :meth:`~TaskSingularVectorsMerge.prepare`; ``c_i`` scales task ``i``'s singular values.
* :class:`IsotropicMerge` (``"iso_c"``): the spectrum of ``Σ_i c_i τ_i`` flattened to its
  mean singular value; an SVD per 2-D tensor and merge.
* :class:`IsotropicCommonTaskMerge` (``"iso_cts"``): the top common subspace of
  ``Σ_i c_i τ_i`` plus each task's top directions orthogonal to it, orthogonalised, then
  flattened; ``N + 3`` SVDs per 2-D tensor and merge.

Singular values at or below ``max(s) · max(shape) · ε_float32`` count as zero: their
singular vectors are arbitrary (an SVD of a zero block returns any basis), so they are
dropped instead of being given a flattened singular value. On matrices of full rank the
rule never triggers and the merges equal the reference code's (tests/test_strategies_2025.py
checks them against fusion-bench).

References: Gargiulo et al., *Task Singular Vectors: Reducing Task Interference in Model
Merging* (CVPR 2025); Marczak et al., *No Task Left Behind: Isotropic Model Merging with
Common and Task-Specific Subspaces* (ICML 2025).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.merging.base import TensorwiseMergeStrategy, checked_real

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = [
    "IsotropicCommonTaskMerge",
    "IsotropicMerge",
    "SpectralMergeStrategy",
    "TaskSingularVectorsMerge",
]

_EPS32 = float(np.finfo(np.float32).eps)


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor ``P Qᵀ`` of ``a = P Σ Qᵀ`` (the closest matrix with
    orthonormal columns or rows): the papers' whitening of concatenated singular vectors."""
    import torch

    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def _significant(s: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Which singular values ``s`` of a matrix of ``shape`` are numerically non-zero."""
    if s.numel() == 0:
        return s > 0
    tol = float(s.max()) * max(shape) * _EPS32
    return s > tol


class SpectralMergeStrategy(TensorwiseMergeStrategy):
    """Base of merges with a rule for 2-D tensors and the mean rule for all others.

    Subclasses implement :meth:`matrix_update`, the merged update ``Δ(c)`` of one 2-D
    tensor for one coefficient vector. Every other tensor gets ``θ0 + (1/N) Σ_i c_i τ_i``
    (the reference implementations average the task vectors of such tensors). Merges are
    computed in float32 and written back in each tensor's dtype.
    """

    @abstractmethod
    def matrix_update(self, key: str, vectors: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The merged update of 2-D tensor ``key`` (float32 task vectors ``(N, m, n)``) for
        one coefficient vector ``c`` (float32, ``(N,)``)."""

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``, float32, shape ``(B, *shape)``."""
        import torch

        tv = self.task_vectors
        vectors = tv.vectors(key).to(torch.float32)
        weights = torch.as_tensor(C, dtype=torch.float32, device=vectors.device)
        n = vectors.shape[0]
        if vectors.dim() == 3:
            out = torch.stack([self.matrix_update(key, vectors, weights[b])
                               for b in range(weights.shape[0])])
        else:
            flat = vectors.reshape(n, -1)
            out = (weights @ flat / n).reshape(weights.shape[0], *vectors.shape[1:])
        out += tv.base(key).to(torch.float32)
        return out


def _check_rank_fraction(value: object) -> float | None:
    if value is None:
        return None
    return checked_real(
        value,
        "rank_fraction must be in (0, 1] (the fraction of each 2-D tensor's singular "
        "vectors kept per task; null keeps 1/N)",
        lambda v: 0.0 < v <= 1.0,
    )


class TaskSingularVectorsMerge(SpectralMergeStrategy):
    """TSV-M (Gargiulo et al., CVPR 2025): task singular vectors, orthogonalised, merged.

    For each 2-D tensor (``m × n``, ``r = min(m, n)``), ``prepare`` takes the SVD
    ``τ_i = U_i S_i V_iᵀ`` of every task vector and keeps its top ``k = ⌊r · f⌋`` triplets
    (``f = rank_fraction``, default ``1/N``, so ``k = ⌊r / N⌋``). The kept singular vectors
    of all tasks are concatenated, ``U = [U_1,k … U_N,k]`` and ``V = [V_1,k … V_N,k]``, and
    whitened to their orthogonal polar factors ``U⊥ = P Qᵀ`` (``U = P Σ Qᵀ``) and ``V⊥``.
    The merge is::

        θ(c) = θ0 + U⊥ diag(c_1 S_1,k, …, c_N S_N,k) V⊥ᵀ          (2-D tensors)
        θ(c) = θ0 + (1/N) Σ_i c_i τ_i                             (all other tensors)

    **What c drives:** ``c_i`` scales task ``i``'s kept singular values (and, on non-2-D
    tensors, its share of the mean); the orthogonalised directions are fixed by the task
    vectors. ``c = α·1`` is TSV-M with global scaling ``α`` (the paper uses ``α = 1``).
    fusion-bench's per-task ``alpha`` list multiplies ``τ_i`` by ``c_i`` *before* the SVDs;
    that gives the same merge whenever every ``c_i ≠ 0`` (the polar factor absorbs the sign
    and scale of a column), while a zero ``c_i`` here only removes task ``i``'s block.

    **Memory:** per 2-D tensor, ``U⊥`` (``m × Nk``), ``V⊥`` (``Nk × n``) and the ``Nk``
    singular values in float32, at most ``(m + n) · r`` floats (about 2 floats per entry of
    a square matrix) whatever ``N``; nothing for other tensors. ``prepare`` needs one
    tensor's ``N`` task vectors at a time. A merge reads only ``θ0`` of a 2-D tensor (not
    its task vectors) and is one ``m × Nk × n`` product.

    Args:
        rank_fraction: fraction ``f`` of each task's singular vectors kept per 2-D tensor,
            in ``(0, 1]`` with ``N · f ≤ 1``; ``None`` (default) is ``1/N``.
    """

    name: ClassVar[str] = "tsv_m"

    def __init__(self, rank_fraction: float | None = None) -> None:
        self.rank_fraction = _check_rank_fraction(rank_fraction)

    def rank_per_task(self, r: int, n_tasks: int) -> int:
        """``k = ⌊r · f⌋`` singular triplets kept per task of a matrix of rank bound ``r``
        (computed on the decimal the user wrote; ``⌊r / N⌋`` by default)."""
        if self.rank_fraction is None:
            return r // n_tasks
        return math.floor(Fraction(repr(self.rank_fraction)) * r)

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Orthogonalise the kept singular vectors of every 2-D tensor, once."""
        import torch

        n = task_vectors.n_tasks
        if self.rank_fraction is not None and n * Fraction(repr(self.rank_fraction)) > 1:
            raise ConfigError(
                f"tsv_m: rank_fraction {self.rank_fraction} times {n} tasks exceeds 1 (the "
                "tasks' singular vectors would not fit in the matrix); use at most "
                f"{1 / n:.4g} or leave it unset"
            )
        super().prepare(task_vectors)
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for key in task_vectors.keys():
            vectors = task_vectors.vectors(key)
            if vectors.dim() != 3:
                continue
            vectors = vectors.to(torch.float32)
            m, cols = vectors.shape[1:]
            k = self.rank_per_task(min(m, cols), n)
            us, ss, vs = [], [], []
            for i in range(n):
                u, s, vh = torch.linalg.svd(vectors[i], full_matrices=False)
                us.append(u[:, :k])
                ss.append(s[:k])
                vs.append(vh[:k])
            if k == 0:
                self._factors[key] = (vectors.new_zeros((m, 0)), vectors.new_zeros(0),
                                      vectors.new_zeros((0, cols)))
                continue
            self._factors[key] = (_polar(torch.cat(us, dim=1)), torch.cat(ss),
                                  _polar(torch.cat(vs, dim=0)))

    def matrix_update(self, key: str, vectors: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``U⊥ diag(c_i S_i,k) V⊥ᵀ``."""
        return self._factored_update(key, c)

    def _factored_update(self, key: str, c: torch.Tensor) -> torch.Tensor:
        u, s, vh = self._factors[key]
        k = s.numel() // c.numel()
        scaled = s * c.repeat_interleave(k)
        return u @ (scaled[:, None] * vh)

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``; 2-D tensors read only ``θ0`` and the factors."""
        import torch

        if key not in self._factors:
            return super().merged(key, C)
        base = self.task_vectors.base(key).to(torch.float32)
        weights = torch.as_tensor(C, dtype=torch.float32, device=base.device)
        out = torch.stack([self._factored_update(key, weights[b])
                           for b in range(weights.shape[0])])
        out += base
        return out


def _check_common_fraction(value: object) -> float:
    return checked_real(
        value,
        "common_space_fraction must be in [0, 1] (the fraction of each 2-D tensor's "
        "singular directions taken from the common subspace)",
        lambda v: 0.0 <= v <= 1.0,
    )


def _flattened(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor,
               shape: tuple[int, ...]) -> torch.Tensor:
    """``σ̄ · Σ_{j: s_j ≠ 0} u_j v_jᵀ`` with ``σ̄ = mean(s)`` over all of ``s``."""
    keep = _significant(s, shape)
    mean = s.mean() if s.numel() else s.new_zeros(())
    return mean * (u[:, keep] @ vh[keep])


class IsotropicMerge(SpectralMergeStrategy):
    """Iso-C (Marczak et al., ICML 2025): the summed task matrix with a flat spectrum.

    For each 2-D tensor, with ``Δ(c) = Σ_i c_i τ_i = U S Vᵀ`` (thin SVD) and
    ``σ̄ = mean(S)``::

        θ(c) = θ0 + σ̄ U Vᵀ                                        (2-D tensors)
        θ(c) = θ0 + (1/N) Σ_i c_i τ_i                              (all other tensors)

    **What c drives:** the weights of the task vectors in the sum whose spectrum is
    flattened, hence both the subspace ``U Vᵀ`` and the level ``σ̄``. ``c = α·1`` is Iso-C
    with the paper's scaling factor ``α`` (the construction is positively homogeneous);
    ``c_i < 0`` subtracts a task. Directions with a numerically zero singular value (a
    rank-deficient sum) are dropped rather than flattened.

    **Memory:** nothing kept beyond the task vectors; a merge needs, per 2-D tensor, ``Δ``
    and its SVD factors (about 3 float32 copies of the largest matrix) and one SVD.
    """

    name: ClassVar[str] = "iso_c"

    def matrix_update(self, key: str, vectors: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``σ̄ U Vᵀ`` of ``Σ_i c_i τ_i``."""
        import torch

        delta = torch.tensordot(c, vectors, dims=1)
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        return _flattened(u, s, vh, tuple(delta.shape))


class IsotropicCommonTaskMerge(SpectralMergeStrategy):
    """Iso-CTS (Marczak et al., ICML 2025): common and task-specific subspaces, flattened.

    For each 2-D tensor (``r = min(m, n)``) the ``r`` directions are split as in the
    reference code: ``r_c = r − N · round((r − ⌊r · f⌋) / N)`` common directions
    (``f = common_space_fraction``) and ``k = (r − r_c) / N`` per task. With
    ``Δ(c) = Σ_i c_i τ_i``:

    1. the top ``r_c`` singular triplets ``(U_c, S_c, V_c)`` of ``Δ(c)``;
    2. for each task, the top ``k`` triplets ``(U_i, S_i, V_i)`` of its part outside the
       common subspace, ``(I − U_c U_cᵀ) c_i τ_i``;
    3. ``U = [U_1 … U_N U_c]``, ``V = [V_1 … V_N V_c]`` orthogonalised to their polar
       factors ``U⊥``, ``V⊥``, and ``σ̄`` the mean of ``[S_1 … S_N S_c]``::

        θ(c) = θ0 + σ̄ U⊥ V⊥ᵀ                                      (2-D tensors)
        θ(c) = θ0 + (1/N) Σ_i c_i τ_i                              (all other tensors)

    **What c drives:** the weights of the task vectors both in the common sum and in each
    task-specific part (task ``i`` enters as ``c_i τ_i`` everywhere, so all subspaces and
    ``σ̄`` move with ``c``). ``c = α·1`` is Iso-CTS with scaling factor ``α``. A task with
    ``c_i = 0`` contributes no task-specific directions (its block is dropped; the
    reference code would insert the arbitrary singular vectors of a zero matrix there).

    **Memory:** nothing kept beyond the task vectors; a merge needs, per 2-D tensor, a few
    float32 copies of the matrix and ``N + 3`` SVDs (the slowest of the built-ins per
    merge).

    Args:
        common_space_fraction: fraction ``f`` of the directions given to the common
            subspace, in ``[0, 1]`` (the paper's default 0.8).
    """

    name: ClassVar[str] = "iso_cts"

    def __init__(self, common_space_fraction: float = 0.8) -> None:
        self.common_space_fraction = _check_common_fraction(common_space_fraction)

    def split(self, r: int, n_tasks: int) -> tuple[int, int]:
        """``(r_c, k)``: common directions and directions per task of a rank-``r`` bound
        (the reference code's rounding; ``k`` is capped so that ``N · k ≤ r``)."""
        common = int(r * self.common_space_fraction)
        per_task = min(round((r - common) / n_tasks), r // n_tasks)
        return r - per_task * n_tasks, per_task

    def matrix_update(self, key: str, vectors: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``σ̄ U⊥ V⊥ᵀ`` of the common and task-specific subspaces."""
        import torch

        n, m, cols = vectors.shape
        shape = (m, cols)
        common, per_task = self.split(min(m, cols), n)
        u, s, vh = torch.linalg.svd(torch.tensordot(c, vectors, dims=1), full_matrices=False)
        uc, sc, vc = u[:, :common], s[:common], vh[:common]
        us, ss, vs = [], [], []
        for i in range(n):
            if float(c[i]) == 0.0:  # a zero task: no directions (an SVD would be arbitrary)
                ui, si = vectors.new_zeros((m, per_task)), vectors.new_zeros(per_task)
                vi = vectors.new_zeros((per_task, cols))
            else:
                w = c[i] * vectors[i]
                w = w - uc @ (uc.T @ w)
                ui, si, vi = torch.linalg.svd(w, full_matrices=False)
                ui, si, vi = ui[:, :per_task], si[:per_task], vi[:per_task]
            us.append(ui)
            ss.append(si)
            vs.append(vi)
        big_u = torch.cat([*us, uc], dim=1)
        big_s = torch.cat([*ss, sc])
        big_v = torch.cat([*vs, vc], dim=0)
        keep = _significant(big_s, shape)
        if not bool(keep.any()):
            return vectors.new_zeros(shape)
        # Orthogonalise the kept directions only: the polar factor of the kept columns is
        # that of the whole with the dropped ones zeroed, and an SVD of a matrix with zero
        # columns can fail to converge (LinAlgError on 4 of 1945 benchmark merges).
        mean = big_s.mean()
        return mean * (_polar(big_u[:, keep]) @ _polar(big_v[keep]))
