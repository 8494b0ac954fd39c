"""Pairing rules for Nested MAP (component kind ``pairing``).

:class:`PairingStrategy` is the base class, :class:`TournamentModel` (also known as
``NestedNode``) the model it pairs; the built-ins are ``cosine``, ``metric_profile`` and
``in_order``.
"""

from mapframe.pairing.base import NestedNode, PairingStrategy, TournamentModel
from mapframe.pairing.builtin import CosinePairing, InOrderPairing, MetricProfilePairing

__all__ = [
    "CosinePairing",
    "InOrderPairing",
    "MetricProfilePairing",
    "NestedNode",
    "PairingStrategy",
    "TournamentModel",
]
