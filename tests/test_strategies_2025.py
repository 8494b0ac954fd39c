"""TSV-M, Iso-C/CTS, Breadcrumbs, DELLA, Model Stock, Karcher and multi-SLERP: contracts,
hand-checked properties, bad input, and agreement with independent implementations.

The oracle tests import the reference code and skip where it is not installed:
fusion-bench (TSV-M, Iso-C, Iso-CTS) runs in ``.venv-fb``, mergekit (Breadcrumbs, DELLA,
Model Stock, Karcher, multislerp) in ``.venv-ci-llm``; the core venv runs everything else.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from strategy_helpers import merge as _merge  # noqa: E402
from strategy_helpers import one_tensor_task_vectors as _tv  # noqa: E402

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.merging import Merger, TaskArithmetic, TaskVectors  # noqa: E402
from mapframe.merging.geometric import (  # noqa: E402
    KarcherMean,
    ModelStock,
    MultiSlerp,
    model_stock_weight,
)
from mapframe.merging.sparsified import (  # noqa: E402
    Breadcrumbs,
    Della,
    breadcrumbs_mask,
    della_keep_masks,
    della_keep_probabilities,
)
from mapframe.merging.spectral import (  # noqa: E402
    IsotropicCommonTaskMerge,
    IsotropicMerge,
    TaskSingularVectorsMerge,
)
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.testing import MergeStrategyContract, tiny_task_vectors  # noqa: E402


# -- contracts ------------------------------------------------------------------------------
class TestTsvM(MergeStrategyContract):
    def make_strategy(self):
        return TaskSingularVectorsMerge()


class TestTsvMRankFraction(MergeStrategyContract):
    def make_strategy(self):
        return TaskSingularVectorsMerge(rank_fraction=0.25)


class TestIsoC(MergeStrategyContract):
    def make_strategy(self):
        return IsotropicMerge()


class TestIsoCts(MergeStrategyContract):
    def make_strategy(self):
        return IsotropicCommonTaskMerge(common_space_fraction=0.5)


class TestBreadcrumbs(MergeStrategyContract):
    def make_strategy(self):
        return Breadcrumbs(density=0.6, gamma=0.1)


class TestDella(MergeStrategyContract):
    def make_strategy(self):
        return Della(density=0.6, epsilon=0.2, seed=3)


class TestDellaL1(MergeStrategyContract):
    def make_strategy(self):
        return Della(rescale="l1")


class TestModelStock(MergeStrategyContract):
    def make_strategy(self):
        return ModelStock()


class TestKarcher(MergeStrategyContract):
    def make_strategy(self):
        return KarcherMean()


class TestMultiSlerp(MergeStrategyContract):
    def make_strategy(self):
        return MultiSlerp()


NAMES = {
    "tsv_m": ({"rank_fraction": None}, TaskSingularVectorsMerge),
    "iso_c": ({}, IsotropicMerge),
    "iso_cts": ({"common_space_fraction": 0.8}, IsotropicCommonTaskMerge),
    "breadcrumbs": ({"density": 0.2, "gamma": 0.01}, Breadcrumbs),
    "della": ({"density": 0.5, "epsilon": 0.15, "seed": 0, "rescale": "probability"},
              Della),
    "model_stock": ({}, ModelStock),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, KarcherMean),
    "multislerp": ({"eps": 1e-8}, MultiSlerp),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_created_by_name_with_defaults(name):
    settings, cls = NAMES[name]
    s = get_registry().create("merge_strategy", name)
    assert isinstance(s, cls)
    assert s.describe() == {"name": name, **settings}


@pytest.mark.parametrize("name, params", [
    ("tsv_m", {"rank_fraction": 0.0}),
    ("tsv_m", {"rank_fraction": 1.5}),
    ("tsv_m", {"rank_fraction": True}),
    ("iso_cts", {"common_space_fraction": -0.1}),
    ("iso_cts", {"common_space_fraction": "half"}),
    ("breadcrumbs", {"density": 0.0}),
    ("breadcrumbs", {"gamma": 1.0}),
    ("della", {"density": 0.5, "epsilon": 0.5}),
    ("della", {"epsilon": -0.1}),
    ("della", {"seed": 1.5}),
    ("della", {"rescale": "l2"}),
    ("karcher", {"max_iter": 0}),
    ("karcher", {"tol": 0.0}),
    ("multislerp", {"eps": float("nan")}),
])
def test_bad_parameters_are_one_line_config_errors(name, params):
    with pytest.raises(ConfigError) as err:
        get_registry().create("merge_strategy", {"name": name, **params})
    assert "\n" not in str(err.value)


def test_tsv_m_rank_fraction_too_large_for_the_task_count():
    with pytest.raises(ConfigError, match="rank_fraction"):
        Merger(TaskSingularVectorsMerge(rank_fraction=0.5), tiny_task_vectors(3))


@pytest.mark.parametrize("cls", [ModelStock, KarcherMean, MultiSlerp])
def test_geometric_means_need_two_models(cls):
    with pytest.raises(ConfigError, match="at least two"):
        Merger(cls(), tiny_task_vectors(1))


@pytest.mark.parametrize("cls", [KarcherMean, MultiSlerp])
def test_spherical_means_refuse_negative_coefficients(cls):
    merger = Merger(cls(), tiny_task_vectors(3))
    params = {k: merger.task_vectors.base(k).clone() for k in merger.task_vectors.keys()}
    with pytest.raises(ConfigError, match="non-negative"):
        merger.merge_into(params, np.array([0.5, -0.1, 0.2]))


# -- shared helpers -------------------------------------------------------------------------
def _random_task_vectors(n: int, shapes: dict[str, tuple[int, ...]], seed: int = 0,
                         scale: float = 0.1, shared: float = 0.0) -> TaskVectors:
    """Random θ0 and ``n`` fine-tunes; ``shared`` adds a direction common to all tasks."""
    g = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    common = {k: shared * torch.randn(s, generator=g) for k, s in shapes.items()}
    fts = [{k: v + scale * (common[k] + torch.randn(v.shape, generator=g))
            for k, v in base.items()} for _ in range(n)]
    return TaskVectors(base, fts)


SHAPES = {"attn.weight": (12, 9), "mlp.weight": (7, 16), "mlp.bias": (7,),
          "conv.weight": (3, 2, 2, 2)}


def _update(strategy, tv: TaskVectors, c) -> dict[str, torch.Tensor]:
    merged = _merge(strategy, tv, c)
    return {k: merged[k] - tv.base(k) for k in tv.keys()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# -- TSV-M, Iso-C, Iso-CTS: properties ------------------------------------------------------
def test_tsv_m_one_task_is_its_fine_tune():
    # N = 1 keeps every singular triplet; U⊥ = U, V⊥ = V: θ(1) = θ0 + τ = θ1.
    tv = _random_task_vectors(1, SHAPES)
    merged = _merge(TaskSingularVectorsMerge(), tv, [1.0])
    for k in tv.keys():
        np.testing.assert_allclose(merged[k].numpy(), (tv.base(k) + tv.vectors(k)[0]).numpy(),
                                   atol=1e-5)


@pytest.mark.parametrize("strategy", [TaskSingularVectorsMerge(), IsotropicMerge(),
                                      IsotropicCommonTaskMerge()], ids=lambda s: s.name)
def test_spectral_merges_are_positively_homogeneous(strategy):
    # the overall scale of c is the papers' global α: θ(αc) − θ0 = α (θ(c) − θ0)
    tv = _random_task_vectors(3, SHAPES)
    c = np.array([0.3, 1.2, 0.7])
    one, two = _update(strategy, tv, c), _update(strategy, tv, 2.5 * c)
    for k in tv.keys():
        np.testing.assert_allclose(two[k].numpy(), 2.5 * one[k].numpy(), atol=1e-5)


@pytest.mark.parametrize("strategy", [TaskSingularVectorsMerge(), IsotropicMerge(),
                                      IsotropicCommonTaskMerge()], ids=lambda s: s.name)
def test_spectral_merges_average_non_matrix_tensors(strategy):
    tv = _random_task_vectors(3, SHAPES)
    c = np.array([0.3, 1.2, 0.7])
    update = _update(strategy, tv, c)
    for k in ("mlp.bias", "conv.weight"):
        expected = torch.tensordot(torch.tensor(c, dtype=torch.float32), tv.vectors(k), 1) / 3
        np.testing.assert_allclose(update[k].numpy(), expected.numpy(), atol=1e-6)


def test_tsv_m_coefficient_scales_only_its_task_block():
    # Setting c_2 = 0 removes task 2's singular values; the others' directions stay put,
    # so θ(c) − θ0 is additive over tasks: Δ(1, 1, 0) + Δ(0, 0, 1) = Δ(1, 1, 1).
    tv = _random_task_vectors(3, {"w": (12, 9)})
    s = TaskSingularVectorsMerge()
    a, b, both = (_update(s, tv, c)["w"] for c in ([1, 1, 0], [0, 0, 1], [1, 1, 1]))
    np.testing.assert_allclose((a + b).numpy(), both.numpy(), atol=1e-6)
    assert float(b.abs().max()) > 1e-3


def test_iso_c_flattens_the_spectrum_of_the_weighted_sum():
    tv = _random_task_vectors(3, {"w": (12, 9)})
    c = torch.tensor([0.3, 1.2, 0.7])
    update = _update(IsotropicMerge(), tv, c.numpy())["w"]
    s_sum = torch.linalg.svdvals(torch.tensordot(c, tv.vectors("w"), 1))
    s_merged = torch.linalg.svdvals(update)
    np.testing.assert_allclose(s_merged.numpy(), np.full(9, float(s_sum.mean())), rtol=1e-4)


def test_iso_c_rank_deficient_sum_gets_no_arbitrary_directions():
    # Σ c_i τ_i of rank 1: the flattened update keeps that one direction (σ̄ = s_1 / 2).
    tau = torch.outer(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0, 4.0]))
    tv = TaskVectors({"w": torch.zeros(2, 3)}, [{"w": tau}, {"w": 2 * tau}])
    update = _update(IsotropicMerge(), tv, [1.0, 1.0])["w"]
    np.testing.assert_allclose(update.numpy(), (3 * tau / 2).numpy(), atol=1e-5)


def test_iso_cts_with_only_a_common_space_is_iso_c():
    tv = _random_task_vectors(3, SHAPES)
    c = np.array([0.3, 1.2, 0.7])
    cts = _update(IsotropicCommonTaskMerge(common_space_fraction=1.0), tv, c)
    iso = _update(IsotropicMerge(), tv, c)
    assert _max_diff(cts, iso) < 1e-5


def test_iso_cts_split_follows_the_reference_rounding():
    s = IsotropicCommonTaskMerge(common_space_fraction=0.8)
    assert s.split(768, 8) == (616, 19)     # int(614.4) = 614; round(154 / 8) = 19
    assert s.split(9, 3) == (6, 1)          # int(7.2) = 7; round(2 / 3) = 1
    assert IsotropicCommonTaskMerge(0.0).split(2, 3) == (2, 0)   # capped: N·k ≤ r


def test_iso_cts_zero_coefficient_drops_that_task():
    tv = _random_task_vectors(3, {"w": (12, 9)})
    update = _update(IsotropicCommonTaskMerge(common_space_fraction=0.5), tv, [1, 1, 0])["w"]
    assert torch.isfinite(update).all() and float(update.abs().max()) > 1e-3
    # 9 directions: 5 common, 2 per task; task 3's 2 are dropped, so the rank is 7
    assert int(torch.linalg.matrix_rank(update)) == 7


# -- Breadcrumbs and DELLA: properties ------------------------------------------------------
def test_breadcrumbs_mask_by_hand():
    # |τ| = 1 … 10 in scrambled order; density 0.5 keeps 5, gamma 0.2 drops the top 2
    # (|τ| = 9, 10) and the bottom 3 (|τ| = 1, 2, 3): kept |τ| = 4 … 8.
    values = torch.tensor([3.0, -10.0, 5.0, 1.0, -8.0, 6.0, 2.0, -9.0, 4.0, 7.0])
    mask = breadcrumbs_mask(values, density=0.5, gamma=0.2)
    assert sorted(values[mask].abs().tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    # gamma too large for the density: nothing is dropped from the bottom and the top drop
    # is capped at 10 − 5, so the 5 smallest survive (as in mergekit)
    mask = breadcrumbs_mask(values, density=0.5, gamma=0.9)
    assert sorted(values[mask].abs().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_breadcrumbs_merge_scales_masked_task_vectors():
    # density 0.5, gamma 0.25 of 4 entries: keep 2, drop the largest and the smallest.
    #   τ1 = (4, -1, 2, 3)  ->  (0, 0, 2, 3)
    #   τ2 = (1, 1, -5, 2)  ->  (0, 1, 0, 2)   (|1| tie: the first one is "smaller")
    base, taus = [0.0] * 4, [[4.0, -1.0, 2.0, 3.0], [1.0, 1.0, -5.0, 2.0]]
    merged = _merge(Breadcrumbs(density=0.5, gamma=0.25), _tv(base, taus), [1.0, 0.5])
    np.testing.assert_array_equal(merged["w"].numpy(), np.array([0, 0.5, 2, 4], np.float32))


def test_della_keep_probabilities_by_hand():
    p = della_keep_probabilities(torch.tensor([[0.1, -3.0, 2.0], [5.0, 0.0, -1.0]]), 0.5, 0.2)
    np.testing.assert_allclose(p.numpy(), [[0.3, 0.7, 0.5], [0.7, 0.3, 0.5]], atol=1e-7)
    one = della_keep_probabilities(torch.tensor([[4.0], [2.0]]), 0.5, 0.2)
    np.testing.assert_allclose(one.numpy(), [[0.5], [0.5]])


def test_della_probability_rescale_is_unbiased_over_seeds():
    vectors = torch.randn(1, 40, 50, generator=torch.Generator().manual_seed(1))
    total = torch.zeros(40, 50)
    seeds = 300
    for seed in range(seeds):
        keep, probs = della_keep_masks(vectors, "w", 0.4, 0.2, seed)
        total += torch.where(keep[0], 1.0 / probs[0], 0.0)
    # E[keep / p] = 1 per entry; the mean over 2000 entries of 300 draws is within 1 %
    assert abs(float(total.mean()) / seeds - 1.0) < 0.01
    assert float((total / seeds - 1).abs().max()) < 0.5


def test_della_same_seed_same_merge_other_seed_differs():
    tv = tiny_task_vectors(3)
    c = [0.4, 0.7, 1.0]
    a, b = _merge(Della(seed=5), tv, c), _merge(Della(seed=5), tiny_task_vectors(3), c)
    other = _merge(Della(seed=6), tv, c)
    assert _max_diff(a, b) == 0.0
    assert _max_diff(a, other) > 1e-4


def test_della_without_drop_is_ties_without_trim():
    from mapframe.merging.ties_dare import TiesMerging

    tv = tiny_task_vectors(3)
    c = [0.4, 0.7, 1.0]
    assert _max_diff(_merge(Della(density=1.0), tv, c),
                     _merge(TiesMerging(trim=1.0), tv, c)) < 1e-6


# -- Model Stock, Karcher, multi-SLERP: properties ------------------------------------------
def test_model_stock_weight_from_angles():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert model_stock_weight(torch.stack([e1, e2])) == 0.0          # orthogonal: θ0
    assert model_stock_weight(torch.stack([e1, 3 * e1])) == pytest.approx(1.0)
    # cos θ = 0.5 with N = 2: t = 2·0.5 / (1 + 0.5) = 2/3
    v = torch.tensor([0.5, 3 ** 0.5 / 2])
    assert model_stock_weight(torch.stack([e1, v])) == pytest.approx(2 / 3)


def test_model_stock_is_scaled_task_arithmetic_per_tensor():
    tv = _random_task_vectors(3, SHAPES, shared=1.0)
    c = np.array([0.3, 1.2, 0.7])
    merged = _merge(ModelStock(), tv, c)
    for k in tv.keys():
        t = model_stock_weight(tv.vectors(k))
        assert 0.0 < t < 1.0
        expected = _merge(TaskArithmetic(), tv, t * c / 3)[k]
        np.testing.assert_allclose(merged[k].numpy(), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("cls", [KarcherMean, MultiSlerp])
def test_spherical_means_reproduce_each_fine_tune(cls):
    tv = _random_task_vectors(3, SHAPES)
    for i in range(3):
        merged = _merge(cls(), tv, np.eye(3)[i])
        for k in tv.keys():
            np.testing.assert_allclose(merged[k].numpy(),
                                       (tv.base(k) + tv.vectors(k)[i]).numpy(), atol=1e-5)


def test_karcher_midpoint_of_two_equal_norm_vectors():
    # the Karcher mean of two unit directions with equal weights is their bisector
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    merged = _merge(KarcherMean(), _tv([1.0, 1.0, 1.0], [a.tolist(), b.tolist()]),
                    [0.5, 0.5])["w"]
    expected = 1.0 + 3.0 * torch.tensor([1.0, 1.0, 0.0]) / 2 ** 0.5
    np.testing.assert_allclose(merged.numpy(), expected.numpy(), atol=1e-5)


def test_spherical_means_of_nothing_are_the_base():
    tv = tiny_task_vectors(3)
    for cls in (KarcherMean, MultiSlerp):
        merged = _merge(cls(), tv, [0.0, 0.0, 0.0])
        assert _max_diff({k: merged[k] for k in tv.keys()},
                         {k: tv.base(k) for k in tv.keys()}) == 0.0


def test_multislerp_scales_with_the_coefficient_sum():
    tv = _random_task_vectors(3, SHAPES)
    c = np.array([0.2, 0.5, 0.3])
    one, three = _update(MultiSlerp(), tv, c), _update(MultiSlerp(), tv, 3 * c)
    for k in tv.keys():
        np.testing.assert_allclose(three[k].numpy(), 3 * one[k].numpy(), atol=1e-5)


# -- oracles: fusion-bench ------------------------------------------------------------------
ORACLE_SHAPES = {"attn.weight": (24, 16), "mlp.weight": (16, 40), "mlp.bias": (16,),
                 "norm.weight": (24,)}
COEFFS = [np.array([1.0, 1.0, 1.0, 1.0]), np.array([0.3, 1.2, 0.7, 0.9]),
          np.array([0.8, -0.4, 1.5, 0.2])]


def _scaled_task_vectors(tv: TaskVectors, c: np.ndarray) -> list[dict[str, torch.Tensor]]:
    return [{k: float(c[i]) * tv.vectors(k)[i].clone() for k in tv.keys()}
            for i in range(tv.n_tasks)]


def _report(name: str, diff: float) -> None:
    print(f"max |mapframe - oracle| for {name}: {diff:.3g}")


@pytest.mark.parametrize("ci", range(len(COEFFS)))
def test_tsv_m_matches_fusion_bench(ci):
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
        compute_and_sum_svd_mem_reduction,
    )

    tv = _random_task_vectors(4, ORACLE_SHAPES, seed=ci)
    c = COEFFS[ci]
    # fusion-bench's per-task alpha list scales each task vector before the SVDs
    ref = compute_and_sum_svd_mem_reduction(_scaled_task_vectors(tv, c), accelerator="cpu")
    ours = _update(TaskSingularVectorsMerge(), tv, c)
    diff = _max_diff(ours, ref)
    _report(f"tsv_m c={c.tolist()}", diff)
    assert diff < 1e-5


@pytest.mark.parametrize("ci", range(len(COEFFS)))
def test_iso_c_matches_fusion_bench(ci):
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.isotropic_merging.iso_utils import iso_c

    tv = _random_task_vectors(4, ORACLE_SHAPES, seed=ci)
    c = COEFFS[ci]
    ref = iso_c(_scaled_task_vectors(tv, c), accelerator="cpu")
    diff = _max_diff(_update(IsotropicMerge(), tv, c), ref)
    _report(f"iso_c c={c.tolist()}", diff)
    assert diff < 1e-5


@pytest.mark.parametrize("fraction", [0.8, 0.5])
@pytest.mark.parametrize("ci", range(len(COEFFS)))
def test_iso_cts_matches_fusion_bench(ci, fraction):
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.isotropic_merging.iso_utils import iso_cts

    tv = _random_task_vectors(4, ORACLE_SHAPES, seed=ci)
    c = COEFFS[ci]
    ref = iso_cts(_scaled_task_vectors(tv, c), common_space_fraction=fraction,
                  accelerator="cpu")
    diff = _max_diff(_update(IsotropicCommonTaskMerge(fraction), tv, c), ref)
    _report(f"iso_cts f={fraction} c={c.tolist()}", diff)
    assert diff < 1e-5


# -- oracles: mergekit ----------------------------------------------------------------------
def _mergekit(method: str, tensors: list[torch.Tensor], base_index: int | None,
              **params) -> torch.Tensor:
    """One tensor merged by mergekit's registered ``method`` (its own merge_group)."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    m = registry.get(method)
    group = TensorGroup.from_tensors(tensors, base_index=base_index)
    return m.merge_group(group, **m._bind_group_parameters(group, params, 0, 1))


def _weights(tv: TaskVectors, key: str) -> list[torch.Tensor]:
    """``[θ0, θ_1, …, θ_N]`` of one tensor."""
    return [tv.base(key)] + [tv.base(key) + tv.vectors(key)[i] for i in range(tv.n_tasks)]


MK_SHAPES = {"attn.weight": (24, 16), "mlp.bias": (16,), "conv.weight": (4, 3, 2, 2)}


@pytest.mark.parametrize("density, gamma", [(0.6, 0.1), (0.3, 0.05), (0.9, 0.3)])
def test_breadcrumbs_matches_mergekit(density, gamma):
    pytest.importorskip("mergekit")
    tv = _random_task_vectors(3, MK_SHAPES)
    c = [0.3, 1.2, 0.7]
    ours = _merge(Breadcrumbs(density=density, gamma=gamma), tv, c)
    ref = {k: _mergekit("breadcrumbs", _weights(tv, k), 0, weight=c, density=density,
                        gamma=gamma) for k in tv.keys()}
    diff = _max_diff(ours, ref)
    _report(f"breadcrumbs density={density} gamma={gamma}", diff)
    assert diff < 1e-6


@pytest.mark.parametrize("rescale", ["l1", "probability"])
@pytest.mark.parametrize("lam", [1.0, 0.6])
def test_della_matches_mergekit_with_the_same_masks(monkeypatch, rescale, lam):
    pytest.importorskip("mergekit")
    import mergekit.sparsify

    tv = _random_task_vectors(3, {"attn.weight": (24, 16), "mlp.bias": (16,)})
    density, epsilon, seed = 0.5, 0.2, 7
    ours = _merge(Della(density=density, epsilon=epsilon, seed=seed, rescale=rescale), tv,
                  [lam] * 3)
    for key in tv.keys():
        keep, probs = della_keep_masks(tv.vectors(key), key, density, epsilon, seed)
        drawn = list(range(tv.n_tasks))

        def fixed_bernoulli(p, *args, _keep=keep, _probs=probs, _drawn=drawn, **kwargs):
            # mergekit draws one mask per task in order: check its keep probabilities
            # (the deterministic part) against ours, then hand it our mask; for the
            # paper's per-entry rescale (which mergekit lacks) the "mask" carries 1/p
            i = _drawn.pop(0)
            np.testing.assert_allclose(p.reshape(_probs[i].shape).numpy(),
                                       _probs[i].numpy(), atol=1e-6)
            mask = _keep[i].to(p.dtype)
            if rescale == "probability":
                mask = mask / _probs[i]
            return mask.reshape(p.shape)

        monkeypatch.setattr(mergekit.sparsify.torch, "bernoulli", fixed_bernoulli)
        ref = _mergekit("della", _weights(tv, key), 0, weight=1.0, density=density,
                        epsilon=epsilon, rescale=rescale == "l1", **{"lambda": lam})
        monkeypatch.undo()
        assert not drawn, "mergekit drew fewer masks than there are tasks"
        diff = float((ours[key] - ref).abs().max())
        _report(f"della rescale={rescale} lambda={lam} {key}", diff)
        assert diff < 1e-5


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_matches_mergekit_with_and_without_normalize(normalize):
    """mergekit's ties with normalize: true is mapframe's disjoint mean, with false the sum
    of the agreeing entries (``disjoint: false``), at equal coefficients (mergekit's
    lambda) with mapframe's mergekit rules for the trim count and a zero sum."""
    pytest.importorskip("mergekit")
    from mapframe.merging.ties_dare import TiesMerging

    tv = _random_task_vectors(3, MK_SHAPES)
    lam, density = 0.7, 0.4
    ours = _merge(TiesMerging(trim=density, trim_rule="mergekit", zero_sum="positive",
                              disjoint=normalize), tv, [lam] * 3)
    ref = {k: _mergekit("ties", _weights(tv, k), 0, weight=1.0, density=density,
                        normalize=normalize, **{"lambda": lam}) for k in tv.keys()}
    diff = _max_diff(ours, ref)
    _report(f"ties normalize={normalize}", diff)
    assert diff < 1e-5


def test_model_stock_matches_mergekit():
    pytest.importorskip("mergekit")
    for n in (2, 3, 5):
        tv = _random_task_vectors(n, MK_SHAPES, seed=n, shared=1.0)
        ours = _merge(ModelStock(), tv, np.ones(n))
        ref = {k: _mergekit("model_stock", _weights(tv, k), 0) for k in tv.keys()}
        diff = _max_diff(ours, ref)
        _report(f"model_stock N={n}", diff)
        assert diff < 1e-5


@pytest.mark.parametrize("c", [[1 / 3] * 3, [0.2, 0.5, 0.3], [1.0, 0.4, 2.0], [0.0, 1.0, 0.5]])
def test_karcher_matches_mergekit(c):
    pytest.importorskip("mergekit")
    from mergekit.merge_methods.karcher import karcher_merge_tensors

    tv = _random_task_vectors(3, MK_SHAPES)
    ours = _merge(KarcherMean(), tv, c)
    ref = {k: tv.base(k) + karcher_merge_tensors(list(tv.vectors(k)), list(c))
           for k in tv.keys()}
    diff = _max_diff(ours, ref)
    _report(f"karcher c={c}", diff)
    assert diff < 1e-5


def test_karcher_with_equal_weights_matches_mergekits_method_on_task_vectors():
    # mergekit's registered karcher averages its inputs with equal weights, without a base:
    # given the task vectors as inputs it is our merge at c = 1/N
    pytest.importorskip("mergekit")
    tv = _random_task_vectors(4, MK_SHAPES)
    ours = _update(KarcherMean(), tv, np.full(4, 0.25))
    ref = {k: _mergekit("karcher", list(tv.vectors(k)), None) for k in tv.keys()}
    diff = _max_diff(ours, ref)
    _report("karcher method, equal weights", diff)
    assert diff < 1e-5


@pytest.mark.parametrize("c", [[1 / 3] * 3, [0.2, 0.5, 0.3], [1.0, 0.4, 2.0]])
def test_multislerp_matches_mergekit(c):
    pytest.importorskip("mergekit")
    tv = _random_task_vectors(3, MK_SHAPES)
    m = float(np.sum(c))
    ours = _update(MultiSlerp(), tv, c)
    ref = {k: (_mergekit("multislerp", _weights(tv, k), 0, weight=c) - tv.base(k)) * m
           for k in tv.keys()}
    diff = _max_diff(ours, ref)
    _report(f"multislerp c={c}", diff)
    assert diff < 1e-5


# -- the LLM plugin's streamed task vectors -------------------------------------------------
@pytest.mark.parametrize("strategy", [
    TaskSingularVectorsMerge(), IsotropicMerge(), IsotropicCommonTaskMerge(),
    Breadcrumbs(density=0.5, gamma=0.1), Della(), Della(rescale="l1"), ModelStock(),
    KarcherMean(), MultiSlerp()], ids=lambda s: f"{s.name}-{getattr(s, 'rescale', '')}")
def test_streamed_llm_task_vectors_merge_like_in_memory_ones(tmp_path, strategy):
    # the LLM plugin reads each tensor's task vectors from the shards (vectors(key)) or
    # streams them in chunks (combine_into: Model Stock); the merge must not change
    pytest.importorskip("mapframe_llm")
    from mapframe_llm.taskvectors import load_task_vectors
    from safetensors.torch import save_file

    tv = _random_task_vectors(3, {"model.layer.weight": (12, 9), "model.layer.bias": (12,),
                                  "model.embed.weight": (20, 8)}, shared=0.5)
    state = {k: tv.base(k).to(torch.bfloat16) for k in tv.keys()}
    save_file(state, str(tmp_path / "base.safetensors"))
    fts = []
    for i in range(3):
        ft = {k: (tv.base(k) + tv.vectors(k)[i]).to(torch.bfloat16) for k in tv.keys()}
        save_file(ft, str(tmp_path / f"t{i}.safetensors"))
        fts.append(ft)
    streamed = load_task_vectors(tmp_path / "base.safetensors",
                                 {f"t{i}": tmp_path / f"t{i}.safetensors" for i in range(3)})
    in_memory = TaskVectors(state, fts)
    c = np.array([0.3, 0.8, 0.5])
    a = {k: v.clone() for k, v in state.items()}
    b = {k: v.clone() for k, v in state.items()}
    Merger(strategy, streamed).merge_into(a, c)
    settings = {k: v for k, v in strategy.describe().items() if k != "name"}
    Merger(type(strategy)(**settings), in_memory).merge_into(b, c)
    assert _max_diff(a, b) == 0.0
    assert _max_diff(a, state) > 0.0


# -- a MAP study over each strategy, by name ------------------------------------------------
@pytest.mark.filterwarnings("ignore:no trade-off between the tasks")
@pytest.mark.parametrize("name", sorted(NAMES))
def test_map_study_runs_over_each_strategy_by_name(tmp_path, name):
    from mapframe import MergeStudy
    from mapframe.evaluators import ModelEvaluator
    from mapframe.merging.checkpoints import load_state_dict, save_state_dict
    from mapframe.problem import Task

    def net():
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))

    torch.manual_seed(0)
    base = net().state_dict()
    pre = save_state_dict(base, tmp_path / "pre.safetensors")
    ft = {f"t{i}": save_state_dict({k: v + 0.1 * (i + 1) * torch.randn_like(v)
                                    for k, v in base.items()}, tmp_path / f"t{i}.safetensors")
          for i in range(2)}
    x = torch.linspace(-1, 1, 3)

    class Outputs(ModelEvaluator):
        name = "outputs-2025"

        @property
        def tasks(self):
            return [Task("y0"), Task("y1")]

        def build_model(self):
            return net()

        def score(self, model):
            y = model(x)
            return [float(y[0]), float(-y[1])]

    res = MergeStudy(evaluator=Outputs(), checkpoints={"pretrained": pre, "finetuned": ft},
                     merge_strategy=name, search_bounds=(0.05, 1.0), budget=8, seed=0,
                     verify=1, preference=[0.5, 0.5]).run()
    assert res.settings["merge"]["strategy"]["name"] == name
    model = net()
    model.load_state_dict(load_state_dict(res.export(tmp_path / "m.safetensors")))
    with torch.no_grad():
        np.testing.assert_allclose(Outputs().score(model), res.front.real[res.selected],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_scalars_and_single_entries_merge(name):
    # CLIP's logit_scale is a 0-d tensor; 1 × 1 matrices and 1-entry rows are edge cases of
    # every rank, sort and SVD above
    tv = _random_task_vectors(3, {"logit_scale": (), "one.weight": (1, 1), "col.weight": (5, 1),
                                  "w": (4, 6)}, shared=0.5)
    s = get_registry().create("merge_strategy", name)
    merged = _merge(s, tv, [0.3, 0.6, 0.9])
    for k in tv.keys():
        assert merged[k].shape == tv.base(k).shape and torch.isfinite(merged[k]).all()
    assert float((merged["w"] - tv.base("w")).abs().max()) > 1e-4
