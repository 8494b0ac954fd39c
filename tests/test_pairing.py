"""The pairing kind: the contract on every built-in pairing, and the old import paths."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from mapframe.pairing import (
    CosinePairing,
    InOrderPairing,
    MetricProfilePairing,
    PairingStrategy,
    TournamentModel,
)
from mapframe.testing import PairingContract


class TestCosinePairing(PairingContract):
    def make_pairing(self) -> PairingStrategy:
        return CosinePairing()


class TestMetricProfilePairing(PairingContract):
    def make_pairing(self) -> PairingStrategy:
        return MetricProfilePairing()


class TestInOrderPairing(PairingContract):
    def make_pairing(self) -> PairingStrategy:
        return InOrderPairing()


def test_nested_keeps_exporting_the_pairing_names() -> None:
    import mapframe.nested as nested
    import mapframe.pairing as pairing

    for name in ("CosinePairing", "InOrderPairing", "MetricProfilePairing", "NestedNode",
                 "PairingStrategy"):
        assert getattr(nested, name) is getattr(pairing, name)
        assert name in nested.__all__
    assert nested.NestedNode is TournamentModel


def test_pairing_and_stopping_bases_live_in_their_own_packages() -> None:
    # The registry's kinds name these packages, not the Nested MAP orchestrator.
    from mapframe.plugin.registry import component_bases
    from mapframe.stopping import StoppingRule

    bases = component_bases()
    assert bases["pairing"] is PairingStrategy
    assert bases["stopping"] is StoppingRule
    assert PairingStrategy.__module__ == "mapframe.pairing.base"
    assert StoppingRule.__module__ == "mapframe.stopping.base"
