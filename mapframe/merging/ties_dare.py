"""TIES merging, DARE and DARE-TIES, steered per task by the coefficient vector ``c``.

All three reduce to one rule once ``prepare`` has fixed, per tensor, a boolean mask ``m_i``
for each task (which entries of ``τ_i`` survive)::

    θ(c) = θ0 + s · Σ_i c_i (τ_i ⊙ m_i) / d          d = max(Σ_i m_i, 1) if disjoint else 1

with a constant rescale ``s``. :class:`MaskedMergeStrategy` implements that rule once (for
:meth:`~MaskedMergeStrategy.merge_into` and :meth:`~MaskedMergeStrategy.merge_batch`); the
strategies differ only in how they build the masks. Only the masks are stored (one byte per
entry and task), never a masked copy of the task vectors, so the extra memory is ``N·P``
bytes for ``N`` tasks and ``P`` merged parameters, against ``4·N·P`` (float32) for
precomputed per-task vectors.

References: Yadav et al., *TIES-Merging: Resolving Interference When Merging Models* (2023);
Yu et al., *Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch* (DARE, 2023).
"""

from __future__ import annotations

import math
import numbers
import zlib
from abc import abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.merging.base import TensorwiseMergeStrategy, checked_real

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = ["TRIM_RULES", "ZERO_SUM_RULES", "DareTaskArithmetic", "DareTies", "MaskedMergeStrategy",
           "TiesMerging"]

#: How TIES's magnitude trim counts the entries it keeps (``TiesMerging(trim_rule=...)``):
#: ``mapframe`` keeps ``ceil(trim · n)`` entries of the exact decimal plus every entry tied at
#: the threshold; ``mergekit`` keeps exactly ``max(1, int(trim · n))`` (mergekit's
#: ``density``), the first ones of ``torch.argsort(|τ|, descending=True)``.
TRIM_RULES = ("mapframe", "mergekit")
#: What TIES's sign election does where an entry's trimmed values sum to exactly 0 (it
#: happens in bf16 checkpoints, whose task vectors take few distinct values): ``base`` elects
#: no sign (the merge keeps ``θ0`` there), ``positive`` elects ``+`` as mergekit does.
ZERO_SUM_RULES = ("base", "positive")


# -- parameter checks ---------------------------------------------------------------------
def _check_trim(trim: object) -> float:
    message = (
        "trim fraction must be in (0, 1] (the fraction of each task vector's entries kept, "
        "by magnitude, per tensor; 1 keeps everything)"
    )
    return checked_real(trim, message, lambda value: 0.0 < value <= 1.0)  # also rejects NaN


def _check_drop_rate(drop_rate: object) -> float:
    message = (
        "drop rate must be in [0, 1) (the probability of dropping each task-vector entry; "
        "0 drops nothing)"
    )
    return checked_real(drop_rate, message, lambda value: 0.0 <= value < 1.0)  # rejects NaN


def _check_trim_rule(rule: object) -> str:
    if rule not in TRIM_RULES:
        raise ConfigError(
            f"trim_rule must be 'mapframe' (keep ceil(trim·n) entries and every tie at the "
            f"threshold) or 'mergekit' (keep exactly max(1, int(trim·n)), as mergekit's "
            f"density), got {rule!r}")
    return str(rule)


def _check_zero_sum(rule: object) -> str:
    if rule not in ZERO_SUM_RULES:
        raise ConfigError(
            f"zero_sum must be 'base' (where trimmed values sum to exactly 0 keep the "
            f"pretrained weight) or 'positive' (elect +, as mergekit), got {rule!r}")
    return str(rule)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return int(seed)


# -- mask building blocks -----------------------------------------------------------------
def _n_keep(trim: float, numel: int) -> int:
    """``ceil(trim · numel)``, at least 1, computed on the decimal the user wrote.

    ``Fraction(repr(0.07)) == 7/100`` exactly, so ``0.07 · 100`` keeps 7 entries, not 8 as
    the binary float product ``7.000000000000001`` would.
    """
    if numel == 0:
        return 0
    return min(numel, max(1, math.ceil(Fraction(repr(trim)) * numel)))


def _magnitude_mask(values: torch.Tensor, trim: float) -> torch.Tensor:
    """Entries of ``values`` among the top ``ceil(trim · numel)`` by magnitude.

    Ties at the threshold are all kept: the rule is ``|v| ≥ k-th largest |v|`` (as in the TIES
    authors' code), so more than ``k`` entries survive when several share the k-th magnitude.
    It does not depend on the order of the entries.
    """
    import torch

    numel = values.numel()
    k = _n_keep(trim, numel)
    if k >= numel:
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    magnitude = values.abs()
    threshold = torch.kthvalue(magnitude.reshape(-1), numel - k + 1).values
    return magnitude >= threshold


def _mergekit_magnitude_mask(values: torch.Tensor, trim: float) -> torch.Tensor:
    """Entries of ``values`` kept by mergekit's magnitude sparsification at ``density = trim``.

    Exactly ``max(1, int(trim · numel))`` entries (the binary float product, as mergekit
    computes it), the first ones of ``torch.argsort(|values|, descending=True)`` (float32):
    the same computation as ``mergekit.sparsify.magnitude``, so the same entries survive,
    ties at the threshold included.
    """
    import torch

    numel = values.numel()
    if trim >= 1.0 or numel == 0:
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    k = max(1, int(trim * numel))
    magnitude = values.abs().reshape(-1).to(torch.float32)
    mask = torch.zeros(numel, dtype=torch.bool, device=values.device)
    mask[torch.argsort(magnitude, descending=True)[:k]] = True
    return mask.reshape(values.shape)


def _dare_keep(vectors: torch.Tensor, key: str, drop_rate: float, seed: int) -> torch.Tensor:
    """Bernoulli keep-masks (``P(keep) = 1 − drop_rate``), one per task, for tensor ``key``.

    Each mask comes from a CPU generator seeded with ``crc32(f"{seed}:{i}:{key}")``: it depends
    only on the seed, the task index and the tensor name, not on the order tensors are
    prepared in nor on the device, so a seed always reproduces the same merge.
    """
    import torch

    keep = torch.empty(vectors.shape, dtype=torch.bool, device=vectors.device)
    for i in range(vectors.shape[0]):
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{i}:{key}".encode()))
        u = torch.rand(tuple(vectors.shape[1:]), generator=gen)
        keep[i] = (u >= drop_rate).to(vectors.device)  # P(u ≥ p) = 1 − p for u ~ U[0, 1)
    return keep


def _ties_mask(
    vectors: torch.Tensor, trim: float, keep: torch.Tensor | None = None,
    trim_rule: str = "mapframe", zero_sum: str = "base",
) -> torch.Tensor:
    """TIES's trim → elect sign → agree, as one bool mask of shape ``(N, *shape)``.

    ``keep`` (DARE's masks) zeroes entries before trimming; ``trim_rule`` picks the magnitude
    trim (:data:`TRIM_RULES`). The elected sign of an entry is
    ``γ = sign(Σ_i τ̂_i)`` over the trimmed vectors ``τ̂_i`` (unweighted by ``c``); task ``i``
    agrees where its trimmed entry is non-zero and has sign ``γ``. Where the trimmed entries
    sum to exactly 0, ``γ = 0`` and no task agrees: the merge keeps ``θ0`` there (with
    ``zero_sum="positive"``, ``γ = +1`` there, as mergekit elects). Temporaries
    stay at a few tensors' worth: the tasks are visited one at a time.
    """
    import torch

    def values(i: int) -> torch.Tensor:
        v = vectors[i].to(torch.float32)
        return v if keep is None else torch.where(keep[i], v, 0.0)

    mask = torch.empty(vectors.shape, dtype=torch.bool, device=vectors.device)
    mass = torch.zeros(tuple(vectors.shape[1:]), dtype=torch.float32, device=vectors.device)
    for i in range(vectors.shape[0]):
        v = values(i)
        mask[i] = (_magnitude_mask(v, trim) if trim_rule == "mapframe"
                   else _mergekit_magnitude_mask(v, trim))
        mass += torch.where(mask[i], v, 0.0)
    gamma = torch.sign(mass) if zero_sum == "base" else torch.where(mass >= 0, 1.0, -1.0)
    del mass
    for i in range(vectors.shape[0]):
        mask[i] &= torch.sign(values(i)) * gamma > 0
    return mask


# -- the shared merge rule ----------------------------------------------------------------
class MaskedMergeStrategy(TensorwiseMergeStrategy):
    """Base of merges defined by per-task boolean masks fixed in :meth:`prepare`.

    Subclasses implement :meth:`build_mask` (``None`` means "keep every entry"), and set
    :attr:`disjoint` (divide by the number of surviving tasks per entry) and
    :attr:`rescale` (a constant factor on the task-vector sum). The merge is::

        θ(c) = θ0 + rescale · Σ_i c_i (τ_i ⊙ m_i) / d,   d = max(Σ_i m_i, 1) if disjoint else 1

    computed per tensor in float32, one task at a time, and written back in each tensor's
    own dtype; besides the masks, a merge needs three float32 tensors' worth of scratch
    (the accumulator, one masked task vector, the agreeing-task count). :meth:`merge_into`
    and :meth:`merge_batch` share one code path, so a batch row equals the single merge up
    to float32 rounding.
    """

    @property
    def disjoint(self) -> bool:
        """Whether each entry is divided by its number of surviving tasks (the disjoint
        mean); ``False`` here, TIES and DARE-TIES say otherwise."""
        return False

    @property
    def rescale(self) -> float:
        """Constant factor on the masked task-vector sum (1 unless a subclass says otherwise)."""
        return 1.0

    @abstractmethod
    def build_mask(self, key: str, vectors: torch.Tensor) -> torch.Tensor | None:
        """The bool mask of shape ``(N, *shape)`` for tensor ``key``, or ``None`` for all."""

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Build and keep one bool mask per merged tensor (``N·P`` bytes in all)."""
        super().prepare(task_vectors)
        self._masks: dict[str, torch.Tensor | None] = {}
        for key in task_vectors.keys():
            first = task_vectors.tied_key(key)  # tied tensors: one mask, seeded by one name
            self._masks[key] = (self._masks[first] if first in self._masks
                                else self.build_mask(first, task_vectors.vectors(key)))

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``, float32, shape ``(B, *shape)``."""
        import torch

        tv = self.task_vectors
        vectors = tv.vectors(key)
        mask = self._masks[key]
        shape = tuple(vectors.shape[1:])
        weights = torch.as_tensor(C, dtype=torch.float32, device=vectors.device)
        column = (weights.shape[0],) + (1,) * len(shape)
        acc = torch.zeros((weights.shape[0], *shape), dtype=torch.float32, device=vectors.device)
        # reused buffers: no allocation inside the task loop
        masked = torch.empty(shape, dtype=torch.float32, device=vectors.device)
        count = None
        if self.disjoint and mask is not None:
            count = torch.zeros(shape, dtype=torch.float32, device=vectors.device)
        for i in range(vectors.shape[0]):
            masked.copy_(vectors[i])
            if mask is not None:
                masked.mul_(mask[i])  # task vectors are finite, so this zeroes exactly
                if count is not None:
                    count.add_(mask[i])
            acc.addcmul_(weights[:, i].reshape(column), masked)
        if count is not None:
            acc /= count.clamp_(min=1.0)
        scale = self.rescale
        if scale != 1.0:
            acc *= scale
        acc += tv.base(key).to(torch.float32)
        return acc


# -- the strategies -----------------------------------------------------------------------
@dataclass(frozen=True)
class _ElectionRules:
    """TIES's optional mergekit-compatible rules. Kept out of the public attributes and
    described only when not the default: a strategy's description is part of a study's
    identity in the store, so studies run before these options existed still resume."""

    trim_rule: str = "mapframe"
    zero_sum: str = "base"
    disjoint: bool = True

    def described(self) -> dict[str, str | bool]:
        out: dict[str, str | bool] = {}
        if self.trim_rule != "mapframe":
            out["trim_rule"] = self.trim_rule
        if self.zero_sum != "base":
            out["zero_sum"] = self.zero_sum
        if not self.disjoint:
            out["disjoint"] = False
        return out


def _check_disjoint(disjoint: Any) -> bool:
    if not isinstance(disjoint, bool):
        raise ConfigError(f"disjoint must be true (divide each entry by its agreeing tasks: "
                          f"the disjoint mean) or false (their sum), got {disjoint!r}")
    return disjoint


class TiesMerging(MaskedMergeStrategy):
    """TIES merging (Yadav et al., 2023) with one coefficient per task.

    ``prepare`` runs TIES once, independently of ``c``, per tensor: **trim** each task vector
    to its top ``ceil(trim · numel)`` entries by magnitude (``τ̂_i``; every entry tied with the
    threshold magnitude is kept too; ``trim_rule="mergekit"`` keeps exactly
    ``max(1, int(trim · numel))`` instead, as mergekit's ``density``), **elect** the sign
    ``γ = sign(Σ_i τ̂_i)`` per entry (the summed "mass", unweighted by ``c``), and mark where
    task ``i`` **agrees** (``τ̂_i ≠ 0`` with sign ``γ``). With ``n`` the number of agreeing
    tasks of an entry, the disjoint-mean
    contribution of task ``i`` is ``τ̃_i = τ̂_i ⊙ agree_i / max(n, 1)`` and::

        θ(c) = θ0 + Σ_i c_i τ̃_i

    **What c drives:** only the per-task scaling ``c_i`` of ``τ̃_i``. Trimming, the elected
    signs and the disjoint-mean divisor are fixed by ``trim`` and the task vectors; ``c``
    does not move them. ``c = (λ, …, λ)`` is standard TIES with scaling ``λ``; MAP tunes each
    task's ``c_i`` separately. Entries whose trimmed values sum to exactly 0 keep ``θ0``.

    **Memory:** one bool mask (trimmed and agreeing) per task and tensor, ``N·P`` bytes for
    ``N`` tasks and ``P`` merged parameters; ``τ̃`` is never stored, it is rebuilt per tensor
    at merge time from ``τ`` and the mask (a few tensors' worth of float32 temporaries).

    **Against mergekit's ``ties``:** with ``trim_rule="mergekit"`` and equal coefficients
    ``c = (λ, …, λ)`` this is mergekit's ``ties`` with ``density: trim``, ``lambda: λ`` and
    equal weights; ``zero_sum="positive"`` also elects ``+`` where the trimmed values of an
    entry sum to exactly 0, as mergekit does (by default such entries keep ``θ0``). mergekit
    weights the sign election and divides by ``Σ w_i`` over the agreeing models rather than
    by their count, so unequal coefficients have no mergekit equivalent (see
    docs/merge-strategies.md).

    Args:
        trim: fraction of each task vector's entries kept per tensor, by magnitude, in
            ``(0, 1]`` (TIES's ``k``); 1 skips trimming.
        trim_rule: ``"mapframe"`` (default: ``ceil(trim · numel)`` entries of the decimal
            ``trim``, plus every tie at the threshold) or ``"mergekit"`` (exactly
            ``max(1, int(trim · numel))`` entries, as mergekit's ``density``).
        zero_sum: ``"base"`` (default: entries whose trimmed values sum to exactly 0 keep
            ``θ0``) or ``"positive"`` (elect ``+`` there, as mergekit).
        disjoint: ``True`` (default: each entry divided by its number of agreeing tasks,
            the disjoint mean of the TIES paper; mergekit's ``normalize: true``) or
            ``False`` (their sum, ``θ(c) = θ0 + Σ_i c_i τ̂_i ⊙ agree_i``: mergekit's
            ``normalize: false``).
    """

    name: ClassVar[str] = "ties"

    def __init__(self, trim: float = 0.2, trim_rule: str = "mapframe",
                 zero_sum: str = "base", disjoint: bool = True) -> None:
        self.trim = _check_trim(trim)
        self._rules = _ElectionRules(_check_trim_rule(trim_rule), _check_zero_sum(zero_sum),
                                     _check_disjoint(disjoint))

    @property
    def disjoint(self) -> bool:
        """Whether each entry is divided by its agreeing tasks (the disjoint mean)."""
        return self._rules.disjoint

    @property
    def trim_rule(self) -> str:
        """How the magnitude trim counts kept entries (:data:`TRIM_RULES`)."""
        return self._rules.trim_rule

    @property
    def zero_sum(self) -> str:
        """The sign elected where trimmed values sum to 0 (:data:`ZERO_SUM_RULES`)."""
        return self._rules.zero_sum

    def describe(self) -> dict[str, Any]:
        """Name and settings; ``trim_rule``, ``zero_sum`` and ``disjoint`` only when not the
        default."""
        return {**super().describe(), **self._rules.described()}

    def build_mask(self, key: str, vectors: torch.Tensor) -> torch.Tensor:
        """Trimmed-and-agreeing entries of each task for tensor ``key``."""
        return _ties_mask(vectors, self.trim, trim_rule=self.trim_rule,
                          zero_sum=self.zero_sum)


class DareTaskArithmetic(MaskedMergeStrategy):
    """DARE (Yu et al., 2023) on task arithmetic, with one coefficient per task.

    ``prepare`` draws once, per task and tensor, a random keep-mask ``keep_i`` with
    ``P(keep) = 1 − drop_rate`` (a CPU generator seeded with ``crc32(f"{seed}:{i}:{key}")``,
    so a mask depends only on the seed, the task index ``i`` and the tensor name ``key``).
    Surviving entries are rescaled by ``1 / (1 − drop_rate)`` so that each merge is unbiased
    over seeds::

        θ(c) = θ0 + Σ_i c_i τ_i ⊙ keep_i / (1 − drop_rate)

    **What c drives:** only the per-task scaling ``c_i``; which entries are dropped is fixed
    by ``seed`` and ``drop_rate``, so every evaluation of a MAP study sees the same masks.
    ``drop_rate = 0`` is task arithmetic.

    **Memory:** one bool keep-mask per task and tensor, ``N·P`` bytes (none when
    ``drop_rate = 0``).

    Args:
        drop_rate: probability of dropping each task-vector entry, in ``[0, 1)``.
        seed: seed of the drop masks; the same seed gives the same merge.
    """

    name: ClassVar[str] = "dare_task_arithmetic"

    def __init__(self, drop_rate: float = 0.5, seed: int = 0) -> None:
        self.drop_rate = _check_drop_rate(drop_rate)
        self.seed = _check_seed(seed)

    @property
    def rescale(self) -> float:
        """``1 / (1 − drop_rate)``."""
        return 1.0 / (1.0 - self.drop_rate)

    def build_mask(self, key: str, vectors: torch.Tensor) -> torch.Tensor | None:
        """The keep-masks of tensor ``key`` (``None`` when nothing is dropped)."""
        if self.drop_rate == 0.0:
            return None
        return _dare_keep(vectors, key, self.drop_rate, self.seed)


class DareTies(MaskedMergeStrategy):
    """DARE-TIES: DARE's random drop and rescale, then TIES on the dropped vectors.

    ``prepare`` draws DARE's keep-masks exactly as :class:`DareTaskArithmetic` does (same
    ``drop_rate`` and ``seed`` give the same drops), then runs TIES on the DARE'd vectors
    ``δ_i = τ_i ⊙ keep_i / (1 − drop_rate)``: optional magnitude trim to ``ceil(trim ·
    numel)`` entries, sign election ``γ = sign(Σ_i δ̂_i)`` (unweighted by ``c``; the common
    rescale does not change it) and agreement. Keep, trim and agree combine into one mask
    ``m_i`` per task, and with ``n`` the number of agreeing tasks of an entry::

        θ(c) = θ0 + Σ_i c_i δ_i ⊙ m_i / max(n, 1)

    By default ``trim = 1``: DARE's random drop replaces TIES's magnitude trim; ``trim < 1``
    trims the DARE'd vectors further. Unlike mergekit's ``dare_ties`` (whose defaults are
    ``normalize: false``, no disjoint mean, and ``rescale: true``, restoring each task
    vector's L1 norm), this takes the disjoint mean by default (``disjoint=False``: the
    sum, as ``normalize: false``) and rescales by ``1 / (1 − drop_rate)``: mergekit's
    ``dare_ties`` with ``normalize: true`` (``false`` for ``disjoint=False``), ``rescale:
    false``, ``density: 1 − drop_rate`` and ``lambda: λ / (1 − drop_rate)`` is this merge at
    ``c = (λ, …, λ)``, given the same drop masks (each tool draws its own).

    **What c drives:** only the per-task scaling ``c_i``; drops, trimming, signs and the
    disjoint-mean divisor are fixed by ``drop_rate``, ``seed``, ``trim`` and the task vectors.
    ``c = (λ, …, λ)`` is standard DARE-TIES with scaling ``λ``.

    **Memory:** one bool mask per task and tensor, ``N·P`` bytes.

    Args:
        drop_rate: probability of dropping each task-vector entry, in ``[0, 1)``.
        seed: seed of the drop masks; the same seed gives the same merge.
        trim: fraction of each DARE'd task vector's entries kept per tensor, by magnitude, in
            ``(0, 1]``; 1 (the default) skips trimming.
        zero_sum: ``"base"`` (default: entries whose values sum to exactly 0 keep ``θ0``)
            or ``"positive"`` (elect ``+`` there, as mergekit).
        disjoint: ``True`` (default: the disjoint mean; mergekit's ``normalize: true``) or
            ``False`` (the sum of the agreeing entries: mergekit's ``normalize: false``,
            its default for ``dare_ties``).
    """

    name: ClassVar[str] = "dare_ties"

    def __init__(self, drop_rate: float = 0.5, seed: int = 0, trim: float = 1.0,
                 zero_sum: str = "base", disjoint: bool = True) -> None:
        self.drop_rate = _check_drop_rate(drop_rate)
        self.seed = _check_seed(seed)
        self.trim = _check_trim(trim)
        self._rules = _ElectionRules(zero_sum=_check_zero_sum(zero_sum),
                                     disjoint=_check_disjoint(disjoint))

    @property
    def disjoint(self) -> bool:
        """Whether each entry is divided by its agreeing tasks (the disjoint mean)."""
        return self._rules.disjoint

    @property
    def zero_sum(self) -> str:
        """The sign elected where the values sum to 0 (:data:`ZERO_SUM_RULES`)."""
        return self._rules.zero_sum

    def describe(self) -> dict[str, Any]:
        """Name and settings; ``zero_sum`` and ``disjoint`` only when not the default."""
        return {**super().describe(), **self._rules.described()}

    @property
    def rescale(self) -> float:
        """``1 / (1 − drop_rate)``."""
        return 1.0 / (1.0 - self.drop_rate)

    def build_mask(self, key: str, vectors: torch.Tensor) -> torch.Tensor:
        """Kept, trimmed and agreeing entries of each task for tensor ``key``."""
        keep = None if self.drop_rate == 0.0 else _dare_keep(
            vectors, key, self.drop_rate, self.seed
        )
        return _ties_mask(vectors, self.trim, keep, zero_sum=self.zero_sum)
