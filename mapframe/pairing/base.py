"""The pairing kind: which models Nested MAP merges with which in each round.

A :class:`TournamentModel` is one model in the tournament (a fine-tuned leaf or a merged
pair); a :class:`PairingStrategy` looks at the models left in a round and pairs them up.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import EvaluationError

if TYPE_CHECKING:
    import torch

__all__ = ["NestedNode", "PairingStrategy", "TournamentModel"]


@dataclass
class TournamentModel:
    """A model in the tournament: a fine-tuned leaf or a merged pair.

    ``tasks`` are indices into the study's tasks the model stands for; ``vector`` its task
    vector ``{tensor name: θ − θ0}``; ``profile`` its metrics on all tasks (only when the
    pairing needs them); ``effective`` its coefficients on the original task vectors (linear
    merge strategies only).
    """

    name: str
    tasks: list[int]
    vector: dict[str, torch.Tensor] = field(repr=False)
    round: int = 0
    children: tuple[str, str] | None = None
    coefficients: tuple[float, float] | None = None
    profile: np.ndarray | None = None
    effective: np.ndarray | None = None


#: The name :mod:`mapframe.nested` has always used for :class:`TournamentModel`.
NestedNode = TournamentModel


class PairingStrategy(Component):
    """Decides which models merge with which in each round of Nested MAP.

    Call order, once per round::

        pairs, byes = pairing.pair(nodes)   # [(i, j), ...] and the indices left alone

    The default :meth:`pair` is greedy on :meth:`similarity`: the most similar unpaired two
    first, then the most similar two of the rest, and so on; with an odd count the model left
    over moves to the next round unchanged (a *bye*): one whose close partners were all
    taken, not necessarily the one least similar to the others. Set ``needs_profiles =
    True`` to get every node's metrics on all tasks in ``node.profile`` (each costs one
    evaluation of that model).
    """

    kind: ClassVar[str] = "pairing"
    needs_profiles: ClassVar[bool] = False

    @abstractmethod
    def similarity(self, nodes: Sequence[TournamentModel]) -> np.ndarray:
        """Symmetric ``(n, n)`` similarities (larger = merge sooner)."""

    def pair(self, nodes: Sequence[TournamentModel]) -> tuple[list[tuple[int, int]], list[int]]:
        """Greedy pairing on :meth:`similarity` (ties: lower indices first)."""
        n = len(nodes)
        S = np.asarray(self.similarity(nodes), dtype=float)
        if S.shape != (n, n) or not np.all(np.isfinite(S)):
            raise EvaluationError(
                f"pairing {self.name!r} returned similarities of shape {S.shape} for {n} "
                "models, or non-finite values")
        cand = sorted((-S[i, j], i, j) for i in range(n) for j in range(i + 1, n))
        used: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for _, i, j in cand:
            if i not in used and j not in used:
                pairs.append((i, j))
                used.update((i, j))
        byes = [i for i in range(n) if i not in used]
        return sorted(pairs), byes
