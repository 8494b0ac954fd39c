"""Evaluations and the history of a study: what samplers and surrogates see."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import numpy as np

__all__ = ["Evaluation", "FailureReason", "History", "coefficient_key"]

Status = Literal["ok", "failed", "invalid"]
Phase = Literal["search", "verify", "baseline", "grid"]


class FailureReason(str, Enum):
    """Why an evaluation is not ``"ok"``: the typed counterpart of its ``error`` text.

    Components compare ``ev.reason`` with a member (``ev.reason is
    FailureReason.OUT_OF_RANGE``) instead of parsing ``ev.error``, which is for people. The
    values are the strings stores persist.

    ``RAISED``
        The evaluator raised, or returned no metrics (status ``"failed"``).
    ``NON_FINITE``
        A metric was NaN or infinite (status ``"invalid"``).
    ``OUT_OF_RANGE``
        A finite metric lay outside its task's declared range (status ``"invalid"``): a scale
        bug, which stops a study.
    """

    RAISED = "raised"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"

    def __str__(self) -> str:
        return self.value


def coefficient_key(coefficients: Iterable[float]) -> str:
    """A stable key for one coefficient vector (exact float bits, so no two points collide).

    ``float.hex`` is exact and platform independent; rounding would merge distinct points.
    """
    return ",".join(float(c).hex() for c in coefficients)


@dataclass(frozen=True)
class Evaluation:
    """One evaluated coefficient vector.

    ``status`` is ``"ok"`` when every metric is finite and inside its declared range,
    ``"invalid"`` when the evaluator returned NaN/inf or out-of-range metrics (kept, never
    fitted), and ``"failed"`` when the evaluator raised; ``error`` then says why, for people,
    and ``reason`` (a :class:`FailureReason`) says why, for code. ``reason`` is ``None`` for
    an ``"ok"`` evaluation. Left unset on a failed one it is derived from the structure, never
    from the text: ``"failed"`` is always :attr:`FailureReason.RAISED`, and ``"invalid"``
    with a NaN/inf metric :attr:`FailureReason.NON_FINITE`; an out-of-range evaluation must
    say so with ``reason=FailureReason.OUT_OF_RANGE``.
    """

    coefficients: np.ndarray
    metrics: np.ndarray | None
    status: Status = "ok"
    error: str | None = None
    phase: Phase = "search"
    round: int = 0
    duration: float = 0.0
    key: str = field(default="")
    reason: FailureReason | None = None

    def __post_init__(self) -> None:
        c = np.asarray(self.coefficients, dtype=float).reshape(-1)
        object.__setattr__(self, "coefficients", c)
        if self.metrics is not None:
            object.__setattr__(
                self, "metrics", np.asarray(self.metrics, dtype=float).reshape(-1)
            )
        if not self.key:
            object.__setattr__(self, "key", coefficient_key(c))
        reason = self.reason
        if reason is not None:
            try:
                reason = FailureReason(reason)  # also accepts the persisted string value
            except ValueError:
                raise ValueError(
                    f"unknown evaluation failure reason {self.reason!r}; expected one of "
                    f"{', '.join(r.value for r in FailureReason)}"
                ) from None
            if self.status == "ok":
                raise ValueError(
                    f"an evaluation with status 'ok' has no failure reason, got {reason.value!r}"
                )
        elif self.status == "failed":
            reason = FailureReason.RAISED
        elif self.status == "invalid" and self.metrics is not None and not np.all(
            np.isfinite(self.metrics)
        ):
            reason = FailureReason.NON_FINITE
        object.__setattr__(self, "reason", reason)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def out_of_range(self) -> bool:
        """A metric lay outside its task's declared range (``reason`` is ``OUT_OF_RANGE``)."""
        return self.reason is FailureReason.OUT_OF_RANGE


class History:
    """The evaluations of a study so far, in the order they were stored.

    ``X``/``Y`` hold the successful search evaluations (the data surrogates are fitted on);
    failed or invalid ones stay visible through iteration and :attr:`failures`.
    """

    def __init__(self, n_dims: int, n_tasks: int, evaluations: Iterable[Evaluation] = ()):
        self.n_dims = int(n_dims)
        self.n_tasks = int(n_tasks)
        self._items: list[Evaluation] = []
        self._keys: dict[tuple[str, str], Evaluation] = {}
        for ev in evaluations:
            self.add(ev)

    def add(self, evaluation: Evaluation) -> None:
        self._items.append(evaluation)
        self._keys[(evaluation.phase, evaluation.key)] = evaluation

    def get(self, key: str, phase: str = "search") -> Evaluation | None:
        return self._keys.get((phase, key))

    def __contains__(self, key: object) -> bool:
        return ("search", key) in self._keys

    def __iter__(self) -> Iterator[Evaluation]:
        return iter(self._items)

    def __len__(self) -> int:
        """Number of search evaluations made (successful or not): what the budget counts."""
        return sum(1 for ev in self._items if ev.phase == "search")

    def select(self, phase: str = "search", ok: bool = True) -> list[Evaluation]:
        return [e for e in self._items if e.phase == phase and (e.ok or not ok)]

    @property
    def X(self) -> np.ndarray:
        rows = [e.coefficients for e in self.select()]
        return np.array(rows, dtype=float).reshape(len(rows), self.n_dims)

    @property
    def Y(self) -> np.ndarray:
        rows = [e.metrics for e in self.select()]
        return np.array(rows, dtype=float).reshape(len(rows), self.n_tasks)

    def canonical(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y)`` of the successful search evaluations sorted by coefficients.

        The row order no longer depends on the order in which evaluations finished, so a
        sampler that reads this is the same function of the data in a live run (results
        arriving out of order) and in a resumed one (results read back from the store).
        """
        X, Y = self.X, self.Y
        if X.shape[0] == 0:
            return X, Y
        order = np.lexsort(X.T[::-1])
        return X[order], Y[order]

    @property
    def failures(self) -> list[Evaluation]:
        return [e for e in self._items if not e.ok]
