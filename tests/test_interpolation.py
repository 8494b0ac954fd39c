"""SLERP, model soups, scalar and preference task arithmetic: contracts, hand-computed merges,
equivalences with task arithmetic, bad input, dtypes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from strategy_helpers import merge as _merge  # noqa: E402
from strategy_helpers import one_tensor_task_vectors as _tv  # noqa: E402

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.merging import Merger, TaskArithmetic, TaskVectors  # noqa: E402
from mapframe.merging.interpolation import (  # noqa: E402
    ModelSoup,
    PreferenceTaskArithmetic,
    ScalarTaskArithmetic,
    Slerp,
)
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.testing import (  # noqa: E402
    MergeStrategyContract,
    assert_batch_matches_rows,
    tiny_task_vectors,
)

STRATEGIES = (Slerp, ModelSoup, ScalarTaskArithmetic, PreferenceTaskArithmetic)
REWEIGHTED = (ModelSoup, ScalarTaskArithmetic, PreferenceTaskArithmetic)


def _models(n: int, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A random pretrained state dict and ``n`` fine-tunes of it (kept, unlike
    ``tiny_task_vectors``, so that merges can be checked against the θ_i themselves)."""
    g = torch.Generator().manual_seed(seed)
    base = {"a.weight": torch.randn(4, 5, generator=g), "a.bias": torch.randn(4, generator=g)}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
           for _ in range(n)]
    return base, fts


# -- contracts ------------------------------------------------------------------------------
class TestSlerp(MergeStrategyContract):
    n_tasks = 2

    def make_strategy(self):
        return Slerp()


class TestSlerpAlwaysLerp(MergeStrategyContract):
    n_tasks = 2

    def make_strategy(self):
        return Slerp(dot_threshold=0.0)


class TestModelSoup(MergeStrategyContract):
    def make_strategy(self):
        return ModelSoup()


class TestScalarTaskArithmetic(MergeStrategyContract):
    def make_strategy(self):
        return ScalarTaskArithmetic()


class TestPreferenceTaskArithmetic(MergeStrategyContract):
    def make_strategy(self):
        return PreferenceTaskArithmetic(scale=0.4)


def test_created_from_config_mappings():
    registry = get_registry()
    s = registry.create("merge_strategy", {"name": "slerp", "dot_threshold": 0.99})
    assert isinstance(s, Slerp) and s.describe() == {"name": "slerp", "dot_threshold": 0.99}
    assert registry.create("merge_strategy", "soup").describe() == {"name": "soup"}
    s = registry.create("merge_strategy", "task_arithmetic_scalar")
    assert isinstance(s, ScalarTaskArithmetic)
    s = registry.create("merge_strategy", {"name": "task_arithmetic_preference", "scale": 0.3})
    assert s.describe() == {"name": "task_arithmetic_preference", "scale": 0.3}
    # preparing does not add settings to the description
    s.prepare(tiny_task_vectors(3))
    assert s.describe() == {"name": "task_arithmetic_preference", "scale": 0.3}


def test_reweighted_strategies_are_not_task_arithmetic():
    # a soup is not task arithmetic with coefficients c: nothing may treat it as one
    for cls in REWEIGHTED:
        assert not isinstance(cls(), TaskArithmetic)


# -- SLERP by hand --------------------------------------------------------------------------
# θ0 = (1, 2), τ1 = (1, 0), τ2 = (0, 1): orthogonal unit vectors, Ω = π/2, sin Ω = 1.
#   c = (0.5, 0.5): t = 0.5, m = 1
#     τ(t) = sin(π/4) τ1 + sin(π/4) τ2 = (√2/2, √2/2) ≈ (0.70711, 0.70711)
#     θ = (1 + √2/2, 2 + √2/2) ≈ (1.70711, 2.70711)   (lerp would give (1.5, 2.5))
#   c = (1, 3): t = 0.75, m = 4
#     τ(t) = sin(π/8) τ1 + sin(3π/8) τ2 ≈ (0.38268, 0.92388)
#     θ = (1 + 4 sin(π/8), 2 + 4 sin(3π/8)) ≈ (2.53073, 5.69552)
#   c = (1, 0) -> θ0 + τ1 = θ1 = (2, 2);   c = (0, 1) -> θ0 + τ2 = θ2 = (1, 3)
ORTHO = ([1.0, 2.0], [[1.0, 0.0], [0.0, 1.0]])
R2 = math.sqrt(2) / 2


@pytest.mark.parametrize("c, expected", [
    ((0.5, 0.5), [1 + R2, 2 + R2]),
    ((1.0, 3.0), [1 + 4 * math.sin(math.pi / 8), 2 + 4 * math.sin(3 * math.pi / 8)]),
])
def test_slerp_by_hand(c, expected):
    merged = _merge(Slerp(), _tv(*ORTHO), c)["w"]
    np.testing.assert_allclose(merged.numpy(), np.array(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("c, expected", [
    ((1.0, 0.0), [2.0, 2.0]),  # θ1
    ((0.0, 1.0), [1.0, 3.0]),  # θ2
    ((0.0, 0.0), [1.0, 2.0]),  # θ0: no magnitude
])
def test_slerp_endpoints_are_exact(c, expected):
    merged = _merge(Slerp(), _tv(*ORTHO), c)["w"]
    np.testing.assert_array_equal(merged.numpy(), np.array(expected, dtype=np.float32))


def test_slerp_endpoints_on_random_models():
    base, fts = _models(2, seed=4)
    tv = TaskVectors(base, fts)
    for i, c in enumerate([(1.0, 0.0), (0.0, 1.0)]):
        merged = _merge(Slerp(), tv, c)
        ta = _merge(TaskArithmetic(), tv, c)
        for k in base:
            # exactly θ0 + τ_i, which is θ_i up to the rounding of storing τ_i = θ_i − θ0
            np.testing.assert_array_equal(merged[k].numpy(), ta[k].numpy())
            np.testing.assert_allclose(merged[k].numpy(), fts[i][k].numpy(), atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("m", [0.5, 1.0, 2.5])
def test_slerp_preserves_the_norm_of_orthogonal_unit_vectors(t, m):
    tau1 = [0.6, 0.8, 0.0, 0.0]
    tau2 = [0.0, 0.0, -0.28, 0.96]
    merged = _merge(Slerp(), _tv([0.0] * 4, [tau1, tau2]), (m * (1 - t), m * t))["w"]
    assert float(torch.linalg.vector_norm(merged.double())) == pytest.approx(m, abs=1e-6)


@pytest.mark.parametrize("vectors", [
    [[1.0, 2.0, -1.0], [2.0, 4.0, -2.0]],          # parallel
    [[1.0, 2.0, -1.0], [-0.5, -1.0, 0.5]],         # antiparallel
    [[1.0, 2.0, -1.0], [1.0, 2.0, -1.0005]],       # |cos Ω| > 0.9995
    [[1.0, 2.0, -1.0], [0.0, 0.0, 0.0]],           # a zero task vector
])
def test_slerp_falls_back_to_lerp(vectors):
    tv = _tv([0.5, -1.0, 2.0], vectors)
    for c in [(0.5, 0.5), (0.2, 1.3), (2.0, 0.0)]:
        m, t = sum(c), c[1] / sum(c)
        lerp = np.array([0.5, -1.0, 2.0]) + m * (
            (1 - t) * np.array(vectors[0]) + t * np.array(vectors[1]))
        merged = _merge(Slerp(), tv, c)["w"].numpy()
        np.testing.assert_allclose(merged, lerp, rtol=0, atol=1e-6)
        ta = _merge(TaskArithmetic(), tv, c)["w"].numpy()
        np.testing.assert_allclose(merged, ta, rtol=0, atol=1e-6)


def test_slerp_dot_threshold_switches_to_lerp():
    # cos Ω = 0.6 between (1, 0) and (0.6, 0.8)
    tv = _tv([0.0, 0.0], [[1.0, 0.0], [0.6, 0.8]])
    slerped = _merge(Slerp(), tv, (0.5, 0.5))["w"].numpy()
    lerped = _merge(Slerp(dot_threshold=0.5), tv, (0.5, 0.5))["w"].numpy()
    np.testing.assert_allclose(lerped, [0.8, 0.4], atol=1e-7)
    # equal norms: slerp keeps norm 1 where lerp shrinks to sqrt(0.8)
    np.testing.assert_allclose(np.linalg.norm(slerped), 1.0, atol=1e-6)
    np.testing.assert_allclose(slerped / np.linalg.norm(slerped), lerped / np.linalg.norm(lerped),
                               atol=1e-6)


def _reference_slerp(tv: TaskVectors, key: str, c, threshold: float = 0.9995) -> np.ndarray:
    """Float64 SLERP of one tensor's task vectors, written out independently."""
    v0 = tv.vectors(key)[0].double().numpy().reshape(-1)
    v1 = tv.vectors(key)[1].double().numpy().reshape(-1)
    m = c[0] + c[1]
    t = c[1] / m
    dot = v0 @ v1 / (np.linalg.norm(v0) * np.linalg.norm(v1))
    if abs(dot) > threshold:
        res = (1 - t) * v0 + t * v1
    else:
        omega = np.arccos(dot)
        res = (np.sin((1 - t) * omega) * v0 + np.sin(t * omega) * v1) / np.sin(omega)
    base = tv.base(key).double().numpy()
    return base + m * res.reshape(base.shape)


def test_slerp_matches_reference_per_tensor():
    base, fts = _models(2, seed=1)
    # one tensor whose task vectors are parallel: it is interpolated linearly on its own
    base["c"] = torch.zeros(3)
    fts[0]["c"], fts[1]["c"] = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])
    tv = TaskVectors(base, fts)
    for c in [(0.5, 0.5), (0.9, 0.3), (0.1, 2.0)]:
        merged = _merge(Slerp(), tv, c)
        for k in base:
            np.testing.assert_allclose(merged[k].numpy(), _reference_slerp(tv, k, c),
                                       rtol=0, atol=1e-6)
    np.testing.assert_allclose(_merge(Slerp(), tv, (0.5, 0.5))["c"].numpy(), [1.5, 3.0, 4.5])


# -- soup and task-arithmetic variants ------------------------------------------------------
def test_uniform_soup_is_the_mean_of_the_finetuned_models():
    base, fts = _models(3, seed=2)
    tv = TaskVectors(base, fts)
    for c in [(1.0, 1.0, 1.0), (0.2, 0.2, 0.2)]:
        merged = _merge(ModelSoup(), tv, c)
        for k in base:
            mean = np.mean([ft[k].double().numpy() for ft in fts], axis=0)
            np.testing.assert_allclose(merged[k].numpy(), mean, rtol=0, atol=1e-6)


def test_weighted_soup_is_the_weighted_average():
    base, fts = _models(3, seed=3)
    tv = TaskVectors(base, fts)
    c = np.array([0.5, 2.0, 1.5])
    merged = _merge(ModelSoup(), tv, c)
    for k in base:
        avg = sum(ci / c.sum() * ft[k].double().numpy() for ci, ft in zip(c, fts))
        np.testing.assert_allclose(merged[k].numpy(), avg, rtol=0, atol=1e-6)
    one = _merge(ModelSoup(), tv, (0.0, 3.0, 0.0))  # a single model: θ_2
    for k in base:
        np.testing.assert_allclose(one[k].numpy(), fts[1][k].numpy(), atol=1e-6)


@pytest.mark.parametrize("cls", [ModelSoup, PreferenceTaskArithmetic])
def test_normalised_strategies_ignore_the_scale_of_c(cls):
    tv = tiny_task_vectors(3)
    # 1/8, 2/8, 5/8 and 3/24, 6/24, 15/24 are the same binary fractions: equal bit for bit
    a, b = _merge(cls(), tv, (1.0, 2.0, 5.0)), _merge(cls(), tv, (3.0, 6.0, 15.0))
    for k in tv.keys():
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    c = np.random.default_rng(0).uniform(0.1, 1.0, 3)
    np.testing.assert_allclose(cls().effective_weights(3 * c), cls().effective_weights(c),
                               rtol=1e-15)
    a, b = _merge(cls(), tv, c), _merge(cls(), tv, 3 * c)
    for k in tv.keys():
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=0, atol=1e-6)


def test_scalar_task_arithmetic_is_task_arithmetic_with_the_mean():
    tv = tiny_task_vectors(3, seed=5)
    for c in np.random.default_rng(1).uniform(-1, 2, (4, 3)):
        scalar = _merge(ScalarTaskArithmetic(), tv, c)
        ta = _merge(TaskArithmetic(), tv, np.full(3, c.mean()))
        for k in tv.keys():
            np.testing.assert_array_equal(scalar[k].numpy(), ta[k].numpy())
    # every c with the same mean is the same model
    a = _merge(ScalarTaskArithmetic(), tv, (0.1, 0.5, 0.9))
    b = _merge(ScalarTaskArithmetic(), tv, (0.5, 0.5, 0.5))
    for k in tv.keys():
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_preference_task_arithmetic_is_task_arithmetic_on_scaled_preferences(scale):
    tv = tiny_task_vectors(3, seed=6)
    for c in np.random.default_rng(2).uniform(0, 1, (4, 3)):
        pref = _merge(PreferenceTaskArithmetic(scale=scale), tv, c)
        ta = _merge(TaskArithmetic(), tv, scale * c / c.sum())
        for k in tv.keys():
            np.testing.assert_allclose(pref[k].numpy(), ta[k].numpy(), rtol=0, atol=1e-6)


def test_preference_task_arithmetic_with_unit_scale_is_the_soup():
    tv = tiny_task_vectors(3, seed=7)
    c = (0.2, 0.7, 0.4)
    a, b = _merge(PreferenceTaskArithmetic(), tv, c), _merge(ModelSoup(), tv, c)
    for k in tv.keys():
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


# -- bad input ------------------------------------------------------------------------------
def test_slerp_needs_exactly_two_models():
    for n in (1, 3):
        with pytest.raises(ConfigError, match=(
            rf"slerp merges exactly two models; got {n} task vectors: use task_arithmetic, "
            "ties or soup for more"
        )):
            Merger(Slerp(), tiny_task_vectors(n))


@pytest.mark.parametrize("make, c, match", [
    (ModelSoup, (0.5, -0.1, 0.2), "non-negative"),
    (ModelSoup, (0.0, 0.0, 0.0), "at least one positive"),
    (PreferenceTaskArithmetic, (-1.0, 1.0, 1.0), "non-negative"),
    (PreferenceTaskArithmetic, (0.0, 0.0, 0.0), "at least one positive"),
    (ModelSoup, (0.5, float("nan"), 0.2), "finite"),
    (ScalarTaskArithmetic, (0.5, float("inf"), 0.2), "finite"),
])
def test_bad_coefficients(make, c, match):
    tv = tiny_task_vectors(3)
    merger = Merger(make(), tv)
    params = {k: tv.base(k).clone() for k in tv.keys()}
    with pytest.raises(ConfigError, match=match):
        merger.merge_into(params, np.array(c))
    strategy = make()  # also without a Merger
    strategy.prepare(tv)
    with pytest.raises(ConfigError, match=match):
        strategy.merge_into(params, np.array(c))


@pytest.mark.parametrize("c", [(-0.5, 1.0), (1.0, -1e-9), (float("nan"), 1.0)])
def test_slerp_bad_coefficients(c):
    tv = tiny_task_vectors(2)
    merger = Merger(Slerp(), tv)
    params = {k: tv.base(k).clone() for k in tv.keys()}
    with pytest.raises(ConfigError):
        merger.merge_into(params, np.array(c))


def test_scalar_task_arithmetic_accepts_negative_coefficients():
    tv = tiny_task_vectors(3)
    merged = _merge(ScalarTaskArithmetic(), tv, (-0.5, 0.1, -0.2))
    ta = _merge(TaskArithmetic(), tv, np.full(3, -0.2))
    for k in tv.keys():
        np.testing.assert_allclose(merged[k].numpy(), ta[k].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_a_bad_row_stops_a_batch_before_anything_is_written(cls):
    n = 2 if cls is Slerp else 3
    tv = tiny_task_vectors(n)
    merger = Merger(cls(), tv)
    out = {k: torch.full((2, *tv.base(k).shape), 7.0) for k in tv.keys()}
    C = np.array([np.full(n, 0.5), np.full(n, float("nan"))])
    with pytest.raises(ConfigError):
        merger.merge_batch(C, out)
    with pytest.raises(ConfigError):  # the strategy checks every row first on its own too
        merger.strategy.merge_batch(C, out)
    assert all(bool((v == 7.0).all()) for v in out.values())


@pytest.mark.parametrize("make, match", [
    (lambda: PreferenceTaskArithmetic(scale=0), r"scale must be a finite number > 0.*got 0"),
    (lambda: PreferenceTaskArithmetic(scale=-1.0), r"scale must be.*got -1.0"),
    (lambda: PreferenceTaskArithmetic(scale=float("inf")), r"scale must be"),
    (lambda: PreferenceTaskArithmetic(scale=float("nan")), r"scale must be"),
    (lambda: PreferenceTaskArithmetic(scale="1"),
     r"scale must be.*got the string '1' \(write the number without quotes\)"),
    (lambda: PreferenceTaskArithmetic(scale=True), r"scale must be"),
    (lambda: Slerp(dot_threshold=1.0), r"dot_threshold must be in \[0, 1\).*got 1.0"),
    (lambda: Slerp(dot_threshold=-0.1), r"dot_threshold must be in \[0, 1\)"),
    (lambda: Slerp(dot_threshold=float("nan")), r"dot_threshold must be in \[0, 1\)"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_parameters_from_config():
    with pytest.raises(ConfigError, match="scale must be"):
        get_registry().create("merge_strategy",
                              {"name": "task_arithmetic_preference", "scale": -2})


@pytest.mark.parametrize("cls", STRATEGIES)
def test_wrong_number_of_coefficients(cls):
    n = 2 if cls is Slerp else 3
    tv = tiny_task_vectors(n)
    merger = Merger(cls(), tv)
    params = {k: tv.base(k).clone() for k in tv.keys()}
    with pytest.raises(ConfigError, match=f"got {n + 1} coefficients for {n} task vectors"):
        merger.merge_into(params, np.ones(n + 1))
    with pytest.raises(ConfigError, match=f"got 1 coefficients for {n} task vectors"):
        merger.merge_into(params, np.ones(1))
    out = {k: torch.empty((2, *tv.base(k).shape)) for k in tv.keys()}
    with pytest.raises(ConfigError, match=f"got {n + 1} coefficients for {n} task vectors"):
        merger.merge_batch(np.ones((2, n + 1)), out)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_merge_before_prepare(cls):
    with pytest.raises(ConfigError, match="before prepare"):
        cls().merge_into({}, np.ones(2))


# -- batches, dtypes ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", STRATEGIES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_equals_rows(cls, dtype):
    n = 2 if cls is Slerp else 4
    tv = tiny_task_vectors(n, seed=2, dtype=getattr(torch, dtype))
    s = cls()
    s.prepare(tv)
    C = np.random.default_rng(3).uniform(0.0, 1.5, (5, n))
    if cls in (Slerp, ScalarTaskArithmetic):
        C[0] = 0.0  # valid for these two: θ0
    assert_batch_matches_rows(s, tv, C)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_bf16_stays_bf16(cls):
    n = 2 if cls is Slerp else 3
    tv = tiny_task_vectors(n, dtype=torch.bfloat16)
    s = cls()
    s.prepare(tv)
    c = np.array([0.4, 0.9, 0.2][:n])
    params = {k: tv.base(k).clone() for k in tv.keys()}
    s.merge_into(params, c)
    # the same merge written into float32 tensors, rounded to bf16 once at the end
    full = {k: torch.empty((1, *tv.base(k).shape)) for k in tv.keys()}
    s.merge_batch(c[None, :], full)
    for k, v in params.items():
        assert v.dtype == torch.bfloat16
        np.testing.assert_allclose(v.float().numpy(),
                                   full[k][0].to(torch.bfloat16).float().numpy(),
                                   rtol=2**-7, atol=1e-6)
