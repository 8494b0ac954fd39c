"""The built-in pairing rules: by task-vector cosine, by metric profile, in the order given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import EvaluationError
from mapframe.pairing.base import PairingStrategy, TournamentModel

if TYPE_CHECKING:
    import torch

__all__ = ["CosinePairing", "InOrderPairing", "MetricProfilePairing"]


def _flat_dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    import torch

    return float(sum(float(torch.sum(a[k].float() * b[k].float())) for k in a))


class CosinePairing(PairingStrategy):
    """Pair the models whose task vectors point the most alike (``name = "cosine"``).

    The default: it costs no evaluation, and models whose task vectors agree interfere least
    when merged, so the early rounds (which see only a few tasks each) lose little, and the
    conflicting directions meet in the last rounds, whose two-dimensional MAP then arbitrates
    between whole groups of tasks with the preference in view.
    """

    name: ClassVar[str] = "cosine"

    def similarity(self, nodes: Sequence[TournamentModel]) -> np.ndarray:
        n = len(nodes)
        G = np.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                G[i, j] = G[j, i] = _flat_dot(nodes[i].vector, nodes[j].vector)
        d = np.sqrt(np.clip(np.diag(G), 1e-30, None))
        return G / np.outer(d, d)


class MetricProfilePairing(PairingStrategy):
    """Pair the models whose metrics on all tasks are closest (``name = "metric_profile"``).

    Each model is evaluated once on every task (leaves before round 1, merged models after
    their round; these evaluations are counted); similarity is minus the Euclidean distance
    between the profiles, each task scaled by the spread of its metric over the models. The
    authors' code pairs by closest single-task accuracy, which this generalises.
    """

    name: ClassVar[str] = "metric_profile"
    needs_profiles: ClassVar[bool] = True

    def similarity(self, nodes: Sequence[TournamentModel]) -> np.ndarray:
        P = np.array([node.profile for node in nodes], dtype=float)
        if P.ndim != 2 or not np.all(np.isfinite(P)):
            raise EvaluationError("metric_profile pairing needs finite metric profiles")
        scale = P.std(axis=0)
        P = P / np.where(scale > 0, scale, 1.0)
        return -np.sqrt(((P[:, None, :] - P[None, :, :]) ** 2).sum(axis=2))


class InOrderPairing(PairingStrategy):
    """Pair the models in the order given: (1, 2), (3, 4), ...; the last one of an odd count
    has the bye (``name = "in_order"``). The paper's description of round 1."""

    name: ClassVar[str] = "in_order"

    def similarity(self, nodes: Sequence[TournamentModel]) -> np.ndarray:
        n = len(nodes)
        return -np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(float)

    def pair(self, nodes: Sequence[TournamentModel]) -> tuple[list[tuple[int, int]], list[int]]:
        n = len(nodes)
        pairs = [(i, i + 1) for i in range(0, n - 1, 2)]
        return pairs, ([n - 1] if n % 2 else [])
