"""TIES, DARE and DARE-TIES: contracts, hand-computed merges, seeding, memory, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from strategy_helpers import merge as _merge  # noqa: E402
from strategy_helpers import one_tensor_task_vectors as _tv  # noqa: E402

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.merging import Merger, TaskArithmetic, TaskVectors  # noqa: E402
from mapframe.merging.ties_dare import DareTaskArithmetic, DareTies, TiesMerging  # noqa: E402
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.testing import (  # noqa: E402
    MergeStrategyContract,
    assert_batch_matches_rows,
    tiny_task_vectors,
)

STRATEGIES = (TiesMerging, DareTaskArithmetic, DareTies)


# -- contracts ------------------------------------------------------------------------------
class TestTiesMerging(MergeStrategyContract):
    def make_strategy(self):
        return TiesMerging(trim=0.5)


class TestTiesMergingDefault(MergeStrategyContract):
    def make_strategy(self):
        return TiesMerging()


class TestDareTaskArithmetic(MergeStrategyContract):
    def make_strategy(self):
        return DareTaskArithmetic(drop_rate=0.3, seed=1)


class TestDareTies(MergeStrategyContract):
    def make_strategy(self):
        return DareTies()


class TestDareTiesTrimmed(MergeStrategyContract):
    def make_strategy(self):
        return DareTies(drop_rate=0.2, seed=4, trim=0.6)


def test_created_from_config_mappings():
    registry = get_registry()
    s = registry.create("merge_strategy", {"name": "ties", "trim": 0.4})
    assert isinstance(s, TiesMerging) and s.describe() == {"name": "ties", "trim": 0.4}
    s = registry.create("merge_strategy", {"name": "dare_task_arithmetic", "seed": 3})
    assert s.describe() == {"name": "dare_task_arithmetic", "drop_rate": 0.5, "seed": 3}
    s = registry.create("merge_strategy", "dare_ties")
    assert s.describe() == {"name": "dare_ties", "drop_rate": 0.5, "seed": 0, "trim": 1.0}


# -- TIES by hand ---------------------------------------------------------------------------
# θ0 = (1, 1, 1, 1, 1); trim = 0.6 keeps ceil(0.6·5) = 3 entries of each task vector.
#
#   τ1 = ( 3, -1,  2, -4,  0.5)   |τ1| top 3: 4, 3, 2  ->  τ̂1 = ( 3,  0,  2, -4,  0)
#   τ2 = ( 1,  2, -3, -1,  4  )   |τ2| top 3: 4, 3, 2  ->  τ̂2 = ( 0,  2, -3,  0,  4)
#   τ3 = ( 5, -3, -1,  2, -1.5)   |τ3| top 3: 5, 3, 2  ->  τ̂3 = ( 5, -3,  0,  2,  0)
#
#   mass Σ τ̂ = ( 8, -1, -1, -2,  4)   ->  elected γ = ( +, -, -, -, + )
#   agreeing (non-zero τ̂ with sign γ):
#     entry 0: τ̂1 = 3, τ̂3 = 5          n = 2
#     entry 1: τ̂3 = -3 (τ̂2 = 2 disagrees)   n = 1
#     entry 2: τ̂2 = -3 (τ̂1 = 2 disagrees)   n = 1
#     entry 3: τ̂1 = -4 (τ̂3 = 2 disagrees)   n = 1
#     entry 4: τ̂2 = 4                    n = 1
#   disjoint-mean contributions τ̃_i = τ̂_i · agree_i / n:
#     τ̃1 = (1.5,  0,  0, -4, 0)
#     τ̃2 = (0,    0, -3,  0, 4)
#     τ̃3 = (2.5, -3,  0,  0, 0)
#   c = (1, 1, 1):   Σ τ̃ = (4, -3, -3, -4, 4)           θ = (5, -2, -2, -3, 5)
#   c = (1, 0, 0.5): τ̃1 + 0.5 τ̃3 = (2.75, -1.5, 0, -4, 0)   θ = (3.75, -0.5, 1, -3, 1)
BASE = [1.0] * 5
TAUS = [[3.0, -1.0, 2.0, -4.0, 0.5],
        [1.0, 2.0, -3.0, -1.0, 4.0],
        [5.0, -3.0, -1.0, 2.0, -1.5]]


@pytest.mark.parametrize("c, expected", [
    ((1.0, 1.0, 1.0), [5.0, -2.0, -2.0, -3.0, 5.0]),
    ((1.0, 0.0, 0.5), [3.75, -0.5, 1.0, -3.0, 1.0]),
])
def test_ties_by_hand(c, expected):
    merged = _merge(TiesMerging(trim=0.6), _tv(BASE, TAUS), c)
    np.testing.assert_array_equal(merged["w"].numpy(), np.array(expected, dtype=np.float32))


def test_ties_uniform_coefficients_scale_standard_ties():
    tv = _tv(BASE, TAUS)
    merged = _merge(TiesMerging(trim=0.6), tv, (0.5, 0.5, 0.5))["w"]
    # standard TIES with λ = 0.5: θ0 + 0.5 · (4, -3, -3, -4, 4)
    np.testing.assert_array_equal(merged.numpy(), np.array([3, -0.5, -0.5, -1, 3], np.float32))


def test_ties_keeps_every_entry_tied_at_the_threshold():
    # trim 0.4 of 5 entries asks for 2; |τ| = (1, 2, 2, 0.5, 2) ties three entries at the
    # 2nd-largest magnitude 2, and all three are kept: τ̂ = (0, -2, 2, 0, 2).
    merged = _merge(TiesMerging(trim=0.4), _tv([0.0] * 5, [[1, -2, 2, 0.5, 2]]), (1.0,))
    np.testing.assert_array_equal(merged["w"].numpy(), np.array([0, -2, 2, 0, 2], np.float32))


def test_ties_zero_mass_keeps_base():
    # entry 0: +1 and -1 sum to 0, so no sign is elected and θ0 stays; entry 1 agrees.
    merged = _merge(TiesMerging(trim=1.0), _tv([0.5, 0.5], [[1, 2], [-1, 4]]), (1.0, 1.0))
    np.testing.assert_array_equal(merged["w"].numpy(), np.array([0.5, 3.5], np.float32))


def test_trim_count_uses_the_written_decimal():
    # 0.07 · 100 is 7.000000000000001 in binary floats; the kept count is 7, not 8.
    tau = [float(v) for v in range(1, 101)]
    merged = _merge(TiesMerging(trim=0.07), _tv([0.0] * 100, [tau]), (1.0,))
    assert int(torch.count_nonzero(merged["w"])) == 7


# -- DARE -----------------------------------------------------------------------------------
def test_dare_without_drop_is_task_arithmetic():
    tv = _tv(BASE, TAUS)
    for c in [(1.0, 0.0, 0.5), (0.25, -1.5, 2.0)]:
        dare = _merge(DareTaskArithmetic(drop_rate=0.0), tv, c)["w"]
        ta = _merge(TaskArithmetic(), tv, c)["w"]
        np.testing.assert_array_equal(dare.numpy(), ta.numpy())
    tv = tiny_task_vectors(3)
    C = np.random.default_rng(0).uniform(-1, 2, (3, 3))
    for c in C:
        dare = _merge(DareTaskArithmetic(drop_rate=0.0), tv, c)
        ta = _merge(TaskArithmetic(), tv, c)
        for k in tv.keys():
            np.testing.assert_allclose(dare[k].numpy(), ta[k].numpy(), atol=1e-6)


def _dare_merge(seed: int, tv: TaskVectors, c=(0.4, 0.7, 1.0)) -> dict[str, Any]:
    return _merge(DareTaskArithmetic(drop_rate=0.5, seed=seed), tv, c)


def test_dare_same_seed_same_merge_other_seed_differs():
    tv = tiny_task_vectors(3)
    a, b, other = _dare_merge(7, tv), _dare_merge(7, tiny_task_vectors(3)), _dare_merge(8, tv)
    for k in tv.keys():
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert any(not np.array_equal(a[k].numpy(), other[k].numpy()) for k in tv.keys())


def test_dare_masks_do_not_depend_on_tensor_order():
    g = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(6, generator=g), "b": torch.randn(3, 4, generator=g)}
    fts = [{k: v + torch.randn(v.shape, generator=g) for k, v in base.items()}
           for _ in range(2)]
    forward = TaskVectors(base, fts)
    backward = TaskVectors(dict(reversed(base.items())),
                           [dict(reversed(ft.items())) for ft in fts])
    assert list(forward.keys()) != list(backward.keys())
    for cls in (DareTaskArithmetic, DareTies):
        x = _merge(cls(seed=5), forward, (0.6, 0.9))
        y = _merge(cls(seed=5), backward, (0.6, 0.9))
        for k in base:
            np.testing.assert_array_equal(x[k].numpy(), y[k].numpy())


def test_dare_keeps_the_right_fraction_and_rescales():
    p, n = 0.3, 100_000
    tv = TaskVectors({"w": torch.zeros(n)}, [{"w": torch.ones(n)}])
    merged = _merge(DareTaskArithmetic(drop_rate=p, seed=2), tv, (1.0,))["w"]
    kept = merged != 0
    # kept entries carry exactly 1 / (1 - p); the dropped ones are 0
    np.testing.assert_array_equal(merged[kept].numpy(), np.float32(1.0) / np.float32(1 - p))
    frac = float(kept.float().mean())
    assert abs(frac - (1 - p)) < 3 * np.sqrt(p * (1 - p) / n)


def test_dare_is_unbiased_over_seeds():
    p, n_seeds = 0.5, 200
    tv = tiny_task_vectors(3, seed=1)
    c = np.array([0.5, 1.0, -0.8])
    ta = _merge(TaskArithmetic(), tv, c)
    runs = [_merge(DareTaskArithmetic(drop_rate=p, seed=s), tv, c) for s in range(n_seeds)]
    for k in tv.keys():
        mean = np.mean([r[k].numpy() for r in runs], axis=0)
        # per-entry std of the mean: sqrt(Σ_i (c_i τ_i)² · p / (1 - p) / S)
        var = (c.reshape(-1, *[1] * tv.base(k).dim()) * tv.vectors(k).numpy()) ** 2
        sd = np.sqrt(var.sum(axis=0) * p / (1 - p) / n_seeds)
        z = (mean - ta[k].numpy()) / sd
        assert np.abs(z).max() < 5 and abs(z.mean()) < 5 / np.sqrt(z.size)


# -- DARE-TIES ------------------------------------------------------------------------------
# With trim = 1 nothing is trimmed: τ̂_i = τ_i (same τ as above).
#   mass Σ τ = (9, -2, -2, -3, 3)   ->  γ = (+, -, -, -, +)
#   entry 0: 3, 1, 5 agree (n = 3)   -> (3 + 1 + 5) / 3 = 3
#   entry 1: -1, -3 agree (n = 2)    -> -2
#   entry 2: -3, -1 agree (n = 2)    -> -2
#   entry 3: -4, -1 agree (n = 2)    -> -2.5
#   entry 4: 0.5, 4 agree (n = 2)    -> 2.25
#   c = (1, 1, 1): θ = θ0 + (3, -2, -2, -2.5, 2.25) = (4, -1, -1, -1.5, 3.25)
def test_dare_ties_without_drop_or_trim_is_ties_by_hand():
    tv = _tv(BASE, TAUS)
    expected = np.array([4, -1, -1, -1.5, 3.25], np.float32)
    ties = _merge(TiesMerging(trim=1.0), tv, (1, 1, 1))["w"].numpy()
    dare_ties = _merge(DareTies(drop_rate=0.0, trim=1.0), tv, (1, 1, 1))["w"].numpy()
    np.testing.assert_array_equal(ties, expected)
    np.testing.assert_array_equal(dare_ties, expected)
    tv = tiny_task_vectors(3)
    for c in np.random.default_rng(1).uniform(-1, 2, (3, 3)):
        a = _merge(TiesMerging(trim=1.0), tv, c)
        b = _merge(DareTies(drop_rate=0.0), tv, c)
        for k in tv.keys():
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_dare_ties_on_one_task_is_dare():
    # one task always agrees with itself, so only DARE's drops and rescale remain
    tv = tiny_task_vectors(1, seed=3)
    a = _merge(DareTies(drop_rate=0.4, seed=9), tv, (0.8,))
    b = _merge(DareTaskArithmetic(drop_rate=0.4, seed=9), tv, (0.8,))
    for k in tv.keys():
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_dare_ties_seeds():
    tv = tiny_task_vectors(3)
    c = (0.3, 0.6, 0.9)
    a = _merge(DareTies(drop_rate=0.5, seed=1, trim=0.7), tv, c)
    b = _merge(DareTies(drop_rate=0.5, seed=1, trim=0.7), tiny_task_vectors(3), c)
    other = _merge(DareTies(drop_rate=0.5, seed=2, trim=0.7), tv, c)
    for k in tv.keys():
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert any(not np.array_equal(a[k].numpy(), other[k].numpy()) for k in tv.keys())


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: TiesMerging(trim=0), r"trim fraction must be in \(0, 1\].*got 0"),
    (lambda: TiesMerging(trim=1.5), r"trim fraction must be in \(0, 1\].*got 1.5"),
    (lambda: TiesMerging(trim=float("nan")), r"trim fraction must be in \(0, 1\]"),
    (lambda: TiesMerging(trim="0.2"), r"trim fraction must be in \(0, 1\].*got the string '0.2'"),
    (lambda: DareTies(trim=0.0), r"trim fraction must be in \(0, 1\]"),
    (lambda: DareTaskArithmetic(drop_rate=1.0), r"drop rate must be in \[0, 1\).*got 1.0"),
    (lambda: DareTaskArithmetic(drop_rate=-0.1), r"drop rate must be in \[0, 1\).*got -0.1"),
    (lambda: DareTies(drop_rate=1.0), r"drop rate must be in \[0, 1\)"),
    (lambda: DareTaskArithmetic(seed=1.5), r"seed must be an integer"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_parameters_from_config():
    with pytest.raises(ConfigError, match=r"trim fraction must be in \(0, 1\]"):
        get_registry().create("merge_strategy", {"name": "ties", "trim": 0})


@pytest.mark.parametrize("cls", STRATEGIES)
def test_wrong_number_of_coefficients(cls):
    tv = tiny_task_vectors(3)
    merger = Merger(cls(), tv)
    params = {k: tv.base(k).clone() for k in tv.keys()}
    with pytest.raises(ConfigError, match="got 2 coefficients for 3 task vectors"):
        merger.merge_into(params, np.ones(2))
    out = {k: torch.empty((2, *tv.base(k).shape)) for k in tv.keys()}
    with pytest.raises(ConfigError, match="got 4 coefficients for 3 task vectors"):
        merger.merge_batch(np.ones((2, 4)), out)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_merge_before_prepare(cls):
    with pytest.raises(ConfigError, match="before prepare"):
        cls().merge_into({}, np.ones(3))


# -- memory, batches, dtypes ----------------------------------------------------------------
def _tensors(obj: Any) -> list[Any]:
    """Every tensor held in ``obj`` (through dicts, lists and tuples)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


@pytest.mark.parametrize("make", [
    lambda: TiesMerging(trim=0.3),
    lambda: DareTaskArithmetic(drop_rate=0.5),
    lambda: DareTies(drop_rate=0.5, trim=0.5),
])
def test_prepare_stores_only_bool_masks(make):
    tv = tiny_task_vectors(3)
    s = make()
    s.prepare(tv)
    held = [t for v in vars(s).values() for t in _tensors(v)]
    assert held, "expected the masks to be held"
    assert all(t.dtype == torch.bool for t in held)
    n_params = sum(tv.base(k).numel() for k in tv.keys())
    assert sum(t.numel() * t.element_size() for t in held) == tv.n_tasks * n_params


@pytest.mark.parametrize("make", [
    lambda: TiesMerging(trim=0.4),
    lambda: DareTaskArithmetic(drop_rate=0.3, seed=2),
    lambda: DareTies(drop_rate=0.3, seed=2, trim=0.8),
])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_equals_rows(make, dtype):
    tv = tiny_task_vectors(4, seed=2, dtype=getattr(torch, dtype))
    s = make()
    s.prepare(tv)
    C = np.random.default_rng(3).uniform(-0.5, 1.5, (5, 4))
    assert_batch_matches_rows(s, tv, C)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_bf16_stays_bf16(cls):
    tv = tiny_task_vectors(3, dtype=torch.bfloat16)
    s = cls()
    s.prepare(tv)
    c = np.array([0.4, 0.9, 0.2])
    params = {k: tv.base(k).clone() for k in tv.keys()}
    s.merge_into(params, c)
    # the same merge written into float32 tensors, rounded to bf16 once at the end
    full = {k: torch.empty((1, *tv.base(k).shape)) for k in tv.keys()}
    s.merge_batch(c[None, :], full)
    for k, v in params.items():
        assert v.dtype == torch.bfloat16
        np.testing.assert_array_equal(v.float().numpy(), full[k][0].to(torch.bfloat16)
                                      .float().numpy())
