"""The :class:`MergeStrategy` component: how coefficients turn task vectors into weights."""

from __future__ import annotations

import numbers
from abc import abstractmethod
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = ["MergeStrategy", "TensorwiseMergeStrategy", "checked_real"]


def checked_real(value: object, message: str, valid: Callable[[float], bool]) -> float:
    """A strategy setting as a float: ``value`` must be a real number (not a bool) for which
    ``valid`` holds, else :class:`ConfigError` ``"{message}, got {value!r}"``."""
    if isinstance(value, str):
        from mapframe.settings import string_number_hint

        hint = string_number_hint(value)
        raise ConfigError(f"{message}, got the string {value!r}" + (f" ({hint})" if hint else ""))
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not valid(float(value)):
        raise ConfigError(f"{message}, got {value!r}")
    return float(value)


class MergeStrategy(Component):
    """Writes the merged weights ``θ(c)`` for a coefficient vector ``c`` into given tensors.

    Call order::

        strategy.prepare(task_vectors)            # once, after checkpoints are loaded
        strategy.merge_into(params, c)            # per evaluation, in place, tensor by tensor
        strategy.merge_batch(C, out)              # optional: B merges at once (vectorised
                                                  # evaluators); default loops merge_into

    ``task_vectors`` holds the pretrained weights ``θ0`` and the task vectors ``τ_i``;
    ``params`` maps parameter names to the tensors of one resident model (a subset of the
    checkpoint keys is fine: keys absent from ``params`` are skipped). Strategies overwrite
    ``params`` in place and must not allocate a full model copy per call: work one tensor at a
    time. Any tensors ``prepare`` derives (trimmed or sign-elected vectors, ...) are computed
    once, not per merge.
    """

    kind: ClassVar[str] = "merge_strategy"
    #: The merged task vector is ``Σ c_i τ_i``: linear in the coefficients, so merges of
    #: merges compose (Nested MAP reports the final model's coefficients on the original
    #: task vectors only for such strategies).
    linear: ClassVar[bool] = False

    def prepare(self, task_vectors: TaskVectors) -> None:
        """Precompute whatever does not depend on the coefficients (default: keep a reference)."""
        self._tv = task_vectors

    @property
    def task_vectors(self) -> TaskVectors:
        tv = getattr(self, "_tv", None)
        if tv is None:
            raise ConfigError(
                f"merge strategy {self.name!r} was used before prepare(task_vectors) was called"
            )
        return tv

    def check_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        c = np.asarray(coefficients, dtype=float).reshape(-1)
        n = self.task_vectors.n_tasks
        if c.size != n:
            raise ConfigError(
                f"merge strategy {self.name!r} got {c.size} coefficients for {n} task vectors; "
                "pass one coefficient per fine-tuned checkpoint"
            )
        if not np.all(np.isfinite(c)):
            raise ConfigError(f"coefficients must be finite numbers, got {c.tolist()}")
        return c

    @abstractmethod
    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        """Overwrite each tensor in ``params`` with the merged weights for ``coefficients``."""

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        """Write ``B`` merges at once: ``out[k]`` has shape ``(B, *shape_k)``.

        The default loops :meth:`merge_into` over rows, writing into views of ``out``.
        """
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        for b in range(C.shape[0]):
            self.merge_into({k: v[b] for k, v in out.items()}, C[b])


class TensorwiseMergeStrategy(MergeStrategy):
    """A strategy defined by one per-tensor rule :meth:`merged` over rows of coefficients.

    :meth:`merge_into` and :meth:`merge_batch` both check every row, then write
    ``merged(key, C)`` tensor by tensor, so a batch row always equals the single merge.
    """

    @abstractmethod
    def merged(self, key: str, C: np.ndarray) -> torch.Tensor:
        """``θ(C[b])`` of tensor ``key`` for each checked row of ``C``: ``(B, *shape)``."""

    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        """Overwrite each tensor in ``params`` with ``θ(c)``, one tensor at a time."""
        C = self._coefficient_rows(coefficients)
        for key, target in params.items():
            target.copy_(self.merged(key, C)[0])

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        """Write ``B`` merges: ``out[k][b]`` is ``θ(C[b])`` for tensor ``k``."""
        C = self._coefficient_rows(coefficients)
        for key, target in out.items():
            target.copy_(self.merged(key, C))

    def _coefficient_rows(self, coefficients: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        return np.stack([self.check_coefficients(row) for row in C])
