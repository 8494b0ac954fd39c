"""Interpolating merges: SLERP of two task vectors, model soups, and task arithmetic steered
through a transform of the coefficient vector ``c``.

* :class:`Slerp` (``"slerp"``) spherically interpolates the two task vectors of a two-model
  merge, tensor by tensor; ``c`` sets the interpolation point and the overall magnitude.
* :class:`ModelSoup` (``"soup"``), :class:`ScalarTaskArithmetic`
  (``"task_arithmetic_scalar"``) and :class:`PreferenceTaskArithmetic`
  (``"task_arithmetic_preference"``) are task arithmetic ``θ0 + Σ_i w_i τ_i`` whose per-task
  weights ``w = w(c)`` are a function of the coefficient vector. They share
  :class:`ReweightedTaskArithmetic`, which validates ``c``, maps it to ``w`` and runs
  :class:`~mapframe.merging.task_arithmetic.TaskArithmetic`'s tensor loop on ``w``.

Every merge works one tensor at a time, accumulates in float32 and writes back in the
tensor's own dtype; the extra memory is about one tensor's worth.

References: Shoemake, *Animating Rotation with Quaternion Curves* (SLERP, 1985); Wortsman et
al., *Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time* (2022); Ilharco et al., *Editing Models with Task Arithmetic*
(2023).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.merging.base import MergeStrategy, TensorwiseMergeStrategy, checked_real
from mapframe.merging.task_arithmetic import TaskArithmetic

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = [
    "ModelSoup",
    "PreferenceTaskArithmetic",
    "ReweightedTaskArithmetic",
    "ScalarTaskArithmetic",
    "Slerp",
]


# -- checks ---------------------------------------------------------------------------------
def _check_scale(scale: object) -> float:
    return checked_real(
        scale,
        "scale must be a finite number > 0 (the total weight given to the task vectors)",
        lambda value: math.isfinite(value) and value > 0.0,
    )


def _check_dot_threshold(dot_threshold: object) -> float:
    message = (
        "dot_threshold must be in [0, 1) (above this |cos| between the two task vectors of "
        "a tensor, slerp falls back to linear interpolation)"
    )
    return checked_real(dot_threshold, message, lambda value: 0.0 <= value < 1.0)  # rejects NaN


def _check_non_negative(name: str, c: np.ndarray, allow_zero: bool) -> None:
    if np.any(c < 0):
        raise ConfigError(
            f"merge strategy {name!r} needs non-negative coefficients (they are relative "
            f"weights of the models), got {c.tolist()}; set the search space's lower bound "
            "to 0"
        )
    if not allow_zero and not np.any(c > 0):
        raise ConfigError(
            f"merge strategy {name!r} needs at least one positive coefficient (they are "
            f"normalised to sum to 1), got {c.tolist()}"
        )


def _normalised(name: str, c: np.ndarray) -> np.ndarray:
    """``c / Σ c`` for non-negative ``c`` with a positive entry (ConfigError otherwise)."""
    _check_non_negative(name, c, allow_zero=False)
    return c / c.sum()


# -- task arithmetic on transformed coefficients -------------------------------------------
class ReweightedTaskArithmetic(MergeStrategy):
    """Base of task arithmetic on weights derived from ``c``: ``θ(c) = θ0 + Σ_i w_i(c) τ_i``.

    Subclasses implement :meth:`effective_weights`, the map from the raw coefficient vector
    ``c`` (one entry per task) to the per-task weights ``w``; it also rejects coefficient
    vectors outside the strategy's domain with :class:`~mapframe.errors.ConfigError`.
    :meth:`check_coefficients` checks the raw vector (one finite coefficient per task, then
    the domain), so a :class:`~mapframe.merging.Merger` rejects a bad batch before writing
    anything. The merge itself is :class:`~mapframe.merging.task_arithmetic.TaskArithmetic`'s
    tensor loop run on ``w`` (float32 accumulation, float64 for float64 checkpoints, written
    back in each tensor's dtype).

    The loop is reused by composition, not inheritance: a weighted soup is not task
    arithmetic with coefficients ``c``, so these classes are not ``TaskArithmetic``
    instances.
    """

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Keep the task vectors and bind the task-arithmetic loop to them."""
        super().prepare(task_vectors)
        self._linear = TaskArithmetic()
        self._linear.prepare(task_vectors)

    @abstractmethod
    def effective_weights(self, coefficients: np.ndarray) -> np.ndarray:
        """The per-task weights ``w(c)`` (shape ``(N,)``) for a checked coefficient vector."""

    def check_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """Check one finite coefficient per task, then the strategy's domain; return ``c``."""
        c = super().check_coefficients(coefficients)
        self.effective_weights(c)
        return c

    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        """Overwrite each tensor in ``params`` with ``θ0 + Σ_i w_i(c) τ_i``."""
        c = self.check_coefficients(coefficients)
        self._linear.merge_into(params, self.effective_weights(c))

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        """Write ``B`` merges: ``out[k][b]`` is ``θ(C[b])`` for tensor ``k``."""
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        W = np.stack([self.effective_weights(self.check_coefficients(row)) for row in C])
        self._linear.merge_batch(W, out)


class ModelSoup(ReweightedTaskArithmetic):
    """Weighted model soup: ``θ(c) = Σ_i w_i θ_i = θ0 + Σ_i w_i τ_i`` with ``w = c / Σ_j c_j``.

    **What c drives:** only the relative weights of the fine-tuned models. ``c`` must be
    non-negative with at least one positive entry (:class:`~mapframe.errors.ConfigError`
    otherwise) and is normalised to sum to 1, so the merge is always a convex combination of
    the fine-tuned models and the overall scale of ``c`` has no effect: ``c`` and ``3·c``
    give the same model. Equal coefficients give the uniform soup of Wortsman et al. (2022);
    ``c = e_i`` gives the fine-tuned model ``θ_i``. Because of the scale invariance, a MAP
    search over ``N`` coefficients explores an ``(N − 1)``-dimensional simplex.
    """

    name: ClassVar[str] = "soup"

    def effective_weights(self, coefficients: np.ndarray) -> np.ndarray:
        """``c / Σ c``."""
        return _normalised(self.name, np.asarray(coefficients, dtype=float))


class ScalarTaskArithmetic(ReweightedTaskArithmetic):
    """Task arithmetic with one scalar for all tasks: ``θ(c) = θ0 + λ Σ_i τ_i``, ``λ = mean(c)``.

    **What c drives:** only its mean ``λ = (1/N) Σ_i c_i``; every coefficient vector with the
    same mean gives the same model, so a MAP search over it explores a line (the classic
    single-``λ`` task arithmetic of Ilharco et al.). Any finite ``c`` is accepted, negative
    entries included. As a single-model baseline call it with ``c = (λ, …, λ)``, which
    coincides with :class:`~mapframe.merging.task_arithmetic.TaskArithmetic` at that ``c``.
    """

    name: ClassVar[str] = "task_arithmetic_scalar"

    def effective_weights(self, coefficients: np.ndarray) -> np.ndarray:
        """``(λ, …, λ)`` with ``λ = mean(c)``."""
        c = np.asarray(coefficients, dtype=float)
        return np.full(c.shape, float(np.mean(c)))


class PreferenceTaskArithmetic(ReweightedTaskArithmetic):
    """Task arithmetic with the normalised preference vector as coefficients.

    ``θ(c) = θ0 + scale · Σ_i (c_i / Σ_j c_j) τ_i``.

    **What c drives:** only the relative weights of the task vectors (a preference over the
    tasks). ``c`` must be non-negative with at least one positive entry
    (:class:`~mapframe.errors.ConfigError` otherwise) and is normalised to sum to 1, so its
    overall scale has no effect; the total weight on the task vectors is the fixed ``scale``.
    With ``scale = 1`` this coincides with the weighted :class:`ModelSoup`; ``scale`` is what
    distinguishes it (e.g. ``scale = 0.3`` for the usual task-arithmetic ``λ`` shared out
    by preference).

    Args:
        scale: the total weight ``Σ_i w_i`` given to the task vectors, finite and ``> 0``.
    """

    name: ClassVar[str] = "task_arithmetic_preference"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = _check_scale(scale)

    def effective_weights(self, coefficients: np.ndarray) -> np.ndarray:
        """``scale · c / Σ c``."""
        return self.scale * _normalised(self.name, np.asarray(coefficients, dtype=float))


# -- SLERP ----------------------------------------------------------------------------------
class Slerp(TensorwiseMergeStrategy):
    """Spherical linear interpolation (SLERP) of the two task vectors of a two-model merge.

    With ``c = (c1, c2)``, the interpolation point is ``t = c2 / (c1 + c2)`` and the
    magnitude ``m = c1 + c2``. Per tensor, with ``τ1``, ``τ2`` that tensor's task vectors
    flattened and ``Ω`` the angle between them (``cos Ω = ⟨τ1, τ2⟩ / (‖τ1‖ ‖τ2‖)``)::

        τ(t) = sin((1 − t) Ω) / sin Ω · τ1 + sin(t Ω) / sin Ω · τ2
        θ(c) = θ0 + m · τ(t)

    The weights apply to the original, unnormalised vectors (as in mergekit's ``slerp``).
    Where the two vectors of a tensor are nearly parallel or antiparallel
    (``|cos Ω| > dot_threshold``) or either is zero, that tensor falls back to linear
    interpolation ``τ(t) = (1 − t) τ1 + t τ2``, i.e. ``θ = θ0 + c1 τ1 + c2 τ2``.

    **What c drives:** ``t`` (where on the arc between ``τ1`` and ``τ2``) and ``m`` (how far
    from ``θ0``). ``c = (1, 0)`` gives ``θ0 + τ1 = θ1`` and ``c = (0, 1)`` gives ``θ2``;
    ``c = (0.5, 0.5)`` gives ``θ0 + slerp(τ1, τ2; 0.5)``. When ``‖τ1‖ = ‖τ2‖`` the
    interpolated task vector keeps that norm, so ``‖θ(c) − θ0‖ = m ‖τ1‖`` on every such
    tensor that is not linearly interpolated. Both coefficients must be ``≥ 0``;
    ``c = (0, 0)`` is accepted and gives ``θ0`` (the limit ``m → 0``). Negative
    coefficients raise :class:`~mapframe.errors.ConfigError`.

    This slerps the *task vectors* ``τ_i = θ_i − θ0``, relative to the pretrained weights,
    not the whole weight vectors ``θ1`` and ``θ2`` as mergekit does; the angle ``Ω`` is the
    one between the two fine-tuning updates of each tensor. Exactly two fine-tuned models
    are required (``prepare`` raises otherwise).

    **Memory:** ``prepare`` keeps one angle per tensor; a merge needs one float32 tensor's
    worth of scratch (plus a float32 copy of a task vector for low-precision checkpoints).

    Args:
        dot_threshold: ``|cos Ω|`` above which a tensor is linearly interpolated, in
            ``[0, 1)`` (mergekit's ``DOT_THRESHOLD``).
    """

    name: ClassVar[str] = "slerp"

    def __init__(self, dot_threshold: float = 0.9995) -> None:
        self.dot_threshold = _check_dot_threshold(dot_threshold)

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Check there are two task vectors and fix each tensor's angle ``Ω`` (or lerp)."""
        import torch

        n = task_vectors.n_tasks
        if n != 2:
            raise ConfigError(
                f"slerp merges exactly two models; got {n} task vectors: use "
                "task_arithmetic, ties or soup for more"
            )
        super().prepare(task_vectors)
        self._angles: dict[str, float | None] = {}
        for key in task_vectors.keys():
            vectors = task_vectors.vectors(key)
            a = vectors[0].reshape(-1).to(torch.float32)
            b = vectors[1].reshape(-1).to(torch.float32)
            # float64 sums: the angle of large tensors stays accurate
            norm_a = math.sqrt(float(torch.sum(a * a, dtype=torch.float64)))
            norm_b = math.sqrt(float(torch.sum(b * b, dtype=torch.float64)))
            if norm_a == 0.0 or norm_b == 0.0:
                self._angles[key] = None
                continue
            cos = float(torch.sum(a * b, dtype=torch.float64)) / (norm_a * norm_b)
            cos = min(1.0, max(-1.0, cos))
            self._angles[key] = None if abs(cos) > self.dot_threshold else math.acos(cos)

    def check_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """Check two finite, non-negative coefficients; ``(0, 0)`` is allowed (``θ0``)."""
        c = super().check_coefficients(coefficients)
        _check_non_negative(self.name, c, allow_zero=True)
        return c

    def weights(self, key: str, coefficients: np.ndarray) -> np.ndarray:
        """The weights ``(B, 2)`` of ``(τ1, τ2)`` of tensor ``key`` for rows ``C`` of ``c``.

        Row ``(c1, c2)`` gets ``m · (sin((1 − t) Ω), sin(t Ω)) / sin Ω`` with ``m = c1 + c2``
        and ``t = c2 / m``, or ``(c1, c2)`` itself (``m · (1 − t, t)``) where the tensor is
        linearly interpolated; ``(0, 0)`` gets ``(0, 0)``.
        """
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        omega = self._angles[key]
        if omega is None:
            return C.copy()
        m = C.sum(axis=1)
        t = np.divide(C[:, 1], m, out=np.zeros_like(m), where=m > 0)
        sin_omega = math.sin(omega)
        return np.column_stack([m * np.sin((1.0 - t) * omega) / sin_omega,
                                m * np.sin(t * omega) / sin_omega])

    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` for tensor ``key``, float32, shape ``(B, *shape)``.

        ``merge_into`` and ``merge_batch`` both come here, so a batch row equals the single
        merge.
        """
        import torch

        tv = self.task_vectors
        vectors = tv.vectors(key)
        shape = tuple(vectors.shape[1:])
        W = torch.as_tensor(self.weights(key, C), dtype=torch.float32, device=vectors.device)
        column = (W.shape[0],) + (1,) * len(shape)
        acc = torch.zeros((W.shape[0], *shape), dtype=torch.float32, device=vectors.device)
        for i in range(2):
            acc.addcmul_(W[:, i].reshape(column), vectors[i].to(torch.float32))
        acc += tv.base(key).to(torch.float32)
        return acc
