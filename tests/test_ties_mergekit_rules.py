"""TIES's mergekit-compatible rules: ``trim_rule: mergekit`` (exactly max(1, int(k·n))
entries kept, as mergekit's ``density``) and ``zero_sum: positive`` (elect + where the
trimmed values sum to exactly 0), computed by hand; the defaults are unchanged."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from strategy_helpers import merge as _merge  # noqa: E402
from strategy_helpers import one_tensor_task_vectors as _tv  # noqa: E402

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.merging.ties_dare import DareTies, TiesMerging  # noqa: E402
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.testing import MergeStrategyContract  # noqa: E402


class TestTiesMergekitRules(MergeStrategyContract):
    def make_strategy(self):
        return TiesMerging(trim=0.5, trim_rule="mergekit", zero_sum="positive")


class TestDareTiesPositiveZeroSum(MergeStrategyContract):
    def make_strategy(self):
        return DareTies(drop_rate=0.2, seed=3, zero_sum="positive")


def _kept(strategy: TiesMerging, tau: list[float]) -> int:
    """Entries of a single task vector that survive (one task always agrees with itself)."""
    w = _merge(strategy, _tv([0.0] * len(tau), [tau]), (1.0,))["w"]
    return int((w != 0).sum())


def test_mergekit_rule_keeps_exactly_int_k_n_entries() -> None:
    tau = [float(i + 1) for i in range(256)]  # distinct magnitudes
    # 0.2 · 256 = 51.2: mapframe keeps ceil = 52, mergekit int = 51
    assert _kept(TiesMerging(trim=0.2), tau) == 52
    assert _kept(TiesMerging(trim=0.2, trim_rule="mergekit"), tau) == 51
    # the binary product, as mergekit computes it: 0.29 · 100 = 28.999999999999996 -> 28
    tau = [float(i + 1) for i in range(100)]
    assert _kept(TiesMerging(trim=0.29), tau) == 29
    assert _kept(TiesMerging(trim=0.29, trim_rule="mergekit"), tau) == 28
    # at least one entry
    assert _kept(TiesMerging(trim=0.001, trim_rule="mergekit"), tau[:10]) == 1


def test_mergekit_rule_keeps_no_extra_ties_at_the_threshold() -> None:
    tau = [1.0, -2.0, 2.0, 0.5, 2.0]  # k = 2 of 5; three entries tie at |2|
    assert _kept(TiesMerging(trim=0.4), tau) == 3
    w = _merge(TiesMerging(trim=0.4, trim_rule="mergekit"), _tv([0.0] * 5, [tau]), (1.0,))["w"]
    kept = torch.nonzero(w).flatten().tolist()
    # exactly 2, the first two of torch.argsort(|τ|, descending=True), as mergekit picks
    order = torch.argsort(torch.tensor(tau).abs(), descending=True)[:2].tolist()
    assert sorted(kept) == sorted(order)


def test_zero_sum_keeps_the_base_or_elects_plus() -> None:
    base, taus = [1.0, 1.0, 1.0], [[2.0, 1.0, -3.0], [-2.0, 3.0, 3.0]]
    # entry 0 sums to exactly 0; entry 1 is +, entry 2 sums to 0 as well
    default = _merge(TiesMerging(trim=1.0), _tv(base, taus), (0.5, 0.5))["w"]
    assert default.tolist() == [1.0, 1.0 + 0.5 * (1.0 + 3.0) / 2, 1.0]
    positive = _merge(TiesMerging(trim=1.0, zero_sum="positive"), _tv(base, taus),
                      (0.5, 0.5))["w"]
    assert positive.tolist() == [1.0 + 0.5 * 2.0, 1.0 + 0.5 * (1.0 + 3.0) / 2,
                                 1.0 + 0.5 * 3.0]
    dare = _merge(DareTies(drop_rate=0.0, zero_sum="positive"), _tv(base, taus),
                  (0.5, 0.5))["w"]
    assert dare.tolist() == positive.tolist()


def test_defaults_are_unchanged_and_described_only_when_set() -> None:
    registry = get_registry()
    assert registry.create("merge_strategy", {"name": "ties", "trim": 0.4}).describe() == {
        "name": "ties", "trim": 0.4}
    s = registry.create("merge_strategy", {"name": "ties", "trim": 0.4,
                                           "trim_rule": "mergekit", "zero_sum": "positive"})
    assert s.describe() == {"name": "ties", "trim": 0.4, "trim_rule": "mergekit",
                            "zero_sum": "positive"}
    assert registry.create("merge_strategy", "dare_ties").describe() == {
        "name": "dare_ties", "drop_rate": 0.5, "seed": 0, "trim": 1.0}


@pytest.mark.parametrize("make,message", [
    (lambda: TiesMerging(trim_rule="ceil"), r"trim_rule must be 'mapframe' .* got 'ceil'"),
    (lambda: TiesMerging(zero_sum="minus"), r"zero_sum must be 'base' .* got 'minus'"),
    (lambda: DareTies(zero_sum=0), r"zero_sum must be 'base'"),
])
def test_bad_rules_are_one_line_errors(make, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_disjoint_false_sums_the_agreeing_entries_by_hand() -> None:
    """mergekit's normalize: false (its default for dare_ties) sums the agreeing entries;
    such a config used to run mapframe's disjoint mean, which no coefficients reproduce
    (the divisor differs entry by entry)."""
    tv = _tv([0.0, 0.0, 0.0], [[1.0, -2.0, 3.0], [2.0, 1.0, -1.0]])
    # elected signs +, -, +: task 1 agrees everywhere, task 2 only on the first entry
    c = (0.5, 2.0)
    mean = _merge(TiesMerging(trim=1.0), tv, c)["w"]
    total = _merge(TiesMerging(trim=1.0, disjoint=False), tv, c)["w"]
    assert mean.tolist() == pytest.approx([(0.5 * 1 + 2.0 * 2) / 2, 0.5 * -2, 0.5 * 3])
    assert total.tolist() == pytest.approx([0.5 * 1 + 2.0 * 2, 0.5 * -2, 0.5 * 3])
    dare = _merge(DareTies(drop_rate=0.0, disjoint=False), tv, c)["w"]
    assert dare.tolist() == pytest.approx(total.tolist())
    assert TiesMerging(disjoint=False).describe()["disjoint"] is False
    assert "disjoint" not in TiesMerging().describe()  # studies stored before still resume
    with pytest.raises(ConfigError, match="disjoint must be true"):
        TiesMerging(disjoint="no")  # type: ignore[arg-type]

