"""Sparsifying merges: Model Breadcrumbs and DELLA, steered per task by the coefficient ``c``.

Both drop entries of each task vector by magnitude once, in ``prepare``, and keep only what
the merge needs; ``c`` then scales each task's surviving entries (as in
:mod:`mapframe.merging.ties_dare`, whose TIES rule DELLA reuses after its drop).

References: Davari and Belilovsky, *Model Breadcrumbs: Scaling Multi-Task Model Merging
with Sparse Masks* (2023); Deep, Bhardwaj and Majumder, *DELLA-Merging: Reducing
Interference in Model Merging through Magnitude-Based Sampling* (2024).
"""

from __future__ import annotations

import math
import numbers
import zlib
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.merging.base import TensorwiseMergeStrategy, checked_real
from mapframe.merging.ties_dare import MaskedMergeStrategy

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = [
    "Breadcrumbs",
    "Della",
    "breadcrumbs_mask",
    "della_keep_masks",
    "della_keep_probabilities",
]

RESCALES = ("probability", "l1")


def _check_density(value: object) -> float:
    return checked_real(
        value,
        "density must be in (0, 1] (the fraction of each task vector's entries kept per "
        "tensor)",
        lambda v: 0.0 < v <= 1.0,
    )


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def _floor_fraction(value: float, numel: int) -> int:
    """``⌊value · numel⌋`` on the decimal the user wrote (``0.07 · 100`` is 7)."""
    return math.floor(Fraction(repr(value)) * numel)


# -- Breadcrumbs --------------------------------------------------------------------------
def breadcrumbs_mask(values: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Model Breadcrumbs' mask of one task vector's tensor: drop both magnitude tails.

    With ``P = numel``, ``n_keep = ⌊density · P⌋`` entries survive: sorted by magnitude,
    the largest ``n_top = min(⌊gamma · P⌋, P − n_keep)`` are dropped (outliers) and the
    smallest ``P − n_keep − n_top``. Ties in magnitude go by position (a stable sort).
    ``density = 1`` keeps everything (as mergekit).
    """
    import torch

    numel = values.numel()
    if density >= 1.0:
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    n_keep = _floor_fraction(density, numel)
    n_top = _floor_fraction(gamma, numel)
    n_bottom = max(0, numel - n_keep - n_top)
    order = torch.sort(values.abs().reshape(-1).to(torch.float32), stable=True).indices
    mask = torch.zeros(numel, dtype=torch.bool, device=values.device)
    mask[order[n_bottom: n_bottom + n_keep]] = True
    return mask.reshape(values.shape)


class Breadcrumbs(MaskedMergeStrategy):
    """Model Breadcrumbs (Davari and Belilovsky, 2023) with one coefficient per task.

    ``prepare`` fixes, per task and tensor, the mask :func:`breadcrumbs_mask`: of each task
    vector's entries only the ``density`` fraction in the middle of the magnitude order
    survives, after dropping the largest ``gamma`` fraction (outliers) and as many of the
    smallest as needed. Then::

        θ(c) = θ0 + Σ_i c_i (τ_i ⊙ m_i)

    **What c drives:** only the per-task scaling of the masked task vectors; the masks are
    fixed by ``density``, ``gamma`` and the task vectors. Equal to mergekit's
    ``breadcrumbs`` with ``weight = c_i`` (no rescaling, no normalisation).

    **Memory:** one bool mask per task and tensor, ``N·P`` bytes.

    Args:
        density: fraction of each task vector's entries kept per tensor, in ``(0, 1]``.
        gamma: fraction of each task vector's entries dropped from the top of the
            magnitude order, in ``[0, 1)``; capped so that ``density`` survives.
    """

    name: ClassVar[str] = "breadcrumbs"

    def __init__(self, density: float = 0.2, gamma: float = 0.01) -> None:
        self.density = _check_density(density)
        self.gamma = checked_real(
            gamma,
            "gamma must be in [0, 1) (the fraction of the largest-magnitude entries dropped)",
            lambda v: 0.0 <= v < 1.0,
        )

    def build_mask(self, key: str, vectors: torch.Tensor) -> torch.Tensor | None:
        """One mask per task for tensor ``key`` (``None`` when ``density = 1``)."""
        import torch

        if self.density >= 1.0:
            return None
        return torch.stack([breadcrumbs_mask(vectors[i], self.density, self.gamma)
                            for i in range(vectors.shape[0])])


# -- DELLA ---------------------------------------------------------------------------------
def della_keep_probabilities(values: torch.Tensor, density: float,
                             epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep probability of every entry of one task vector's tensor.

    Entries are ranked by magnitude along axis 1 (within each row of a matrix; a 1-D tensor
    is one row; ties by position), ranks normalised to ``[0, 1]`` within the row, and the
    probability grows linearly from ``density − epsilon`` (smallest) to
    ``density + epsilon`` (largest). A row of one entry gets ``density``.
    """
    import torch

    x = values.to(torch.float32)
    flat = x.reshape(1, -1) if x.dim() < 2 else x  # a scalar or a vector: one row
    order = torch.argsort(flat.abs(), dim=1, stable=True)
    ranks = order.argsort(dim=1, stable=True).to(torch.float32)
    span = float(flat.shape[1] - 1)
    rank_norm = ranks / span if span > 0 else torch.full_like(ranks, 0.5)
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    return probs.reshape(values.shape)


def della_keep_masks(vectors: torch.Tensor, key: str, density: float, epsilon: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, probabilities)`` of shape ``(N, *shape)`` for tensor ``key``.

    ``keep_i = u_i < p_i`` with ``u_i`` uniform from a CPU generator seeded with
    ``crc32(f"{seed}:{i}:{key}")``, as for DARE: a mask depends only on the seed, the task
    index and the tensor name.
    """
    import torch

    probs = torch.stack([della_keep_probabilities(vectors[i], density, epsilon)
                         for i in range(vectors.shape[0])])
    keep = torch.empty(vectors.shape, dtype=torch.bool, device=vectors.device)
    for i in range(vectors.shape[0]):
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{i}:{key}".encode()))
        u = torch.rand(tuple(vectors.shape[1:]), generator=gen).to(vectors.device)
        keep[i] = u < probs[i]
    return keep, probs


class Della(TensorwiseMergeStrategy):
    """DELLA (Deep et al., 2024): magnitude-ranked random drop, rescale, TIES election.

    ``prepare``, per task and tensor: keep each entry of ``τ_i`` with probability
    :func:`della_keep_probabilities` (``density ± epsilon`` by magnitude rank within each
    row, larger entries kept more often), with seeded masks (:func:`della_keep_masks`);
    rescale the survivors to ``δ_i``, by ``1 / p`` per entry (``rescale="probability"``,
    the paper's unbiased ``1/(1 − p_drop)``) or by one factor per tensor restoring
    ``‖τ_i‖₁`` (``rescale="l1"``, mergekit's ``della``); elect the sign
    ``γ = sign(Σ_i δ_i)`` per entry (unweighted by ``c``) and mark where task ``i`` agrees
    (``δ_i ≠ 0`` with sign ``γ``). With ``n`` the number of agreeing tasks of an entry::

        θ(c) = θ0 + Σ_i c_i δ_i ⊙ agree_i / max(n, 1)

    **What c drives:** only the per-task scaling of the dropped, rescaled, sign-elected
    disjoint-mean shares; drops, signs and divisors are fixed by ``density``, ``epsilon``,
    ``seed`` and the task vectors. ``c = λ·1`` with ``rescale="l1"`` is mergekit's ``della``
    with ``weight = 1``, ``lambda = λ`` (for the same masks). mergekit elects signs on the
    weighted deltas and divides by the summed weights, so for unequal ``c`` it differs by
    design: here ``c_i`` scales task ``i`` alone.

    **Memory:** with ``rescale="probability"``, one float32 factor per entry and task
    (``agree / p``, zero where dropped: ``4·N·P`` bytes, as much as the task vectors
    themselves); with ``"l1"``, one bool mask per task and tensor (``N·P`` bytes, as TIES)
    and one float per task and tensor. For large models prefer ``"l1"``.

    Args:
        density: mean keep probability ``d``, with ``0 < d − ε`` and ``d + ε < 1``
            (``d = 1`` drops nothing: TIES's sign election and disjoint mean alone).
        epsilon: half-width ``ε`` of the keep probabilities around ``density``, ``≥ 0``.
        seed: seed of the drop masks; the same seed gives the same merge.
        rescale: ``"probability"`` (``1/p`` per entry) or ``"l1"`` (mergekit's).
    """

    name: ClassVar[str] = "della"

    def __init__(self, density: float = 0.5, epsilon: float = 0.15, seed: int = 0,
                 rescale: str = "probability") -> None:
        self.density = _check_density(density)
        self.epsilon = checked_real(epsilon, "epsilon must be a number ≥ 0",
                                    lambda v: v >= 0.0)
        if self.density < 1.0 and not (self.density - self.epsilon > 0.0
                                       and self.density + self.epsilon < 1.0):
            raise ConfigError(
                f"della needs 0 < density − epsilon and density + epsilon < 1 (keep "
                f"probabilities), got density={self.density}, epsilon={self.epsilon}")
        self.seed = _check_seed(seed)
        if rescale not in RESCALES:
            raise ConfigError(f"rescale must be one of {', '.join(RESCALES)}, got {rescale!r}")
        self.rescale = rescale

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Draw, rescale and sign-elect once per tensor; keep masks and factors."""
        import torch

        super().prepare(task_vectors)
        # per tensor: (bool agree mask, one l1 factor per task) or (None, agree / p)
        self._state: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
        for key in task_vectors.keys():
            first = task_vectors.tied_key(key)  # tied tensors: one draw, seeded by one name
            if first in self._state:
                self._state[key] = self._state[first]
                continue
            vectors = task_vectors.vectors(key).to(torch.float32)
            if self.density >= 1.0:  # nothing dropped; the sign election stays
                keep = torch.ones(vectors.shape, dtype=torch.bool, device=vectors.device)
                probs = torch.ones(vectors.shape, device=vectors.device)
            else:
                keep, probs = della_keep_masks(vectors, first, self.density, self.epsilon,
                                               self.seed)
            n = vectors.shape[0]
            if self.rescale == "probability":
                factor = torch.where(keep, 1.0 / probs, 0.0)
            else:
                factor = torch.empty((n,) + (1,) * (vectors.dim() - 1))
                for i in range(n):
                    before = float(vectors[i].abs().sum())
                    after = float((vectors[i] * keep[i]).abs().sum())
                    # as mergekit: no rescale when either norm is tiny
                    factor[i] = 1.0 if before < 1e-7 or after < 1e-7 else before / after
            gamma = torch.sign((vectors * keep * factor).sum(dim=0))
            agree = keep & (torch.sign(vectors) * gamma > 0)
            del keep, probs
            if self.rescale == "probability":
                self._state[key] = (None, factor * agree)
            else:
                self._state[key] = (agree, factor)

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``, float32, shape ``(B, *shape)``."""
        import torch

        tv = self.task_vectors
        vectors = tv.vectors(key)
        weights = torch.as_tensor(C, dtype=torch.float32, device=vectors.device)
        shape = tuple(vectors.shape[1:])
        column = (weights.shape[0],) + (1,) * len(shape)
        acc = torch.zeros((weights.shape[0], *shape), dtype=torch.float32,
                          device=vectors.device)
        mask, factor = self._state[key]
        count = torch.zeros(shape, dtype=torch.float32, device=vectors.device)
        delta = torch.empty(shape, dtype=torch.float32, device=vectors.device)
        for i in range(vectors.shape[0]):
            delta.copy_(vectors[i])
            delta.mul_(factor[i])
            if mask is not None:
                delta.mul_(mask[i])  # task vectors are finite, so this zeroes exactly
                count.add_(mask[i])
            else:
                count.add_(factor[i] != 0)  # 1/p is never 0: non-zero means kept, agreeing
            acc.addcmul_(weights[:, i].reshape(column), delta)
        acc /= count.clamp_(min=1.0)
        acc += tv.base(key).to(torch.float32)
        return acc
