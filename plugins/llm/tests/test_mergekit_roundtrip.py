"""mergekit as the oracle of mapframe's exports: a point exported as mergekit YAML, merged by
mergekit itself (``mergekit.merge.run_merge``, what ``mergekit-yaml`` runs), gives the
weights of the same point exported as a Hugging Face folder (``--format hf``), for every
strategy with a mergekit equivalent, on float32 and bfloat16 tiny Llama checkpoints; and a
mergekit YAML read by ``mapframe run`` comes back out as the same mergekit YAML.

Tolerances: float32, ``max |a − b| ≤ 1e-6 · max |b|`` per tensor (measured: 1.3e-7); bf16,
every entry within one bf16 rounding: ``|a − b| ≤ ulp(max(|a|, |b|))`` plus the float32
accumulation error ``1e-6 · max |b|`` (an entry that cancels to nearly 0 lies on a finer grid,
where the two tools' float32 sums, ordered differently, may round apart).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("mergekit")
torch = pytest.importorskip("torch")

from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import run_merge  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

from mapframe.cli import main as mapframe_main  # noqa: E402
from mapframe.errors import ConfigError  # noqa: E402
from mapframe.executors.base import MergeSpec  # noqa: E402
from mapframe.export import ExportPoint, export_point  # noqa: E402
from mapframe.plugin import get_registry  # noqa: E402

#: (strategy, coefficients of the exported point): every strategy with a mergekit
#: equivalent, at a point that has one (equal c for TIES, c1 + c2 = 1 for SLERP and
#: multi-SLERP, c = 1 for Model Stock).
CASES: list[tuple[dict[str, Any], list[float]]] = [
    ({"name": "task_arithmetic"}, [0.7, 0.4]),
    ({"name": "task_arithmetic_scalar"}, [0.7, 0.4]),
    ({"name": "task_arithmetic_preference", "scale": 0.8}, [0.7, 0.4]),
    ({"name": "soup"}, [0.7, 0.4]),
    ({"name": "ties", "trim": 0.3, "trim_rule": "mergekit", "zero_sum": "positive"},
     [0.6, 0.6]),
    ({"name": "dare_task_arithmetic", "drop_rate": 0.3, "seed": 2}, [0.7, 0.4]),
    ({"name": "dare_ties", "drop_rate": 0.3, "seed": 2, "zero_sum": "positive"}, [0.6, 0.6]),
    # the sum of the agreeing entries: mergekit's normalize: false
    ({"name": "ties", "trim": 0.3, "trim_rule": "mergekit", "zero_sum": "positive",
      "disjoint": False}, [0.6, 0.6]),
    ({"name": "dare_ties", "drop_rate": 0.3, "seed": 2, "zero_sum": "positive",
      "disjoint": False}, [0.6, 0.6]),
    ({"name": "slerp"}, [0.3, 0.7]),
    ({"name": "multislerp"}, [0.3, 0.7]),
    ({"name": "model_stock"}, [1.0, 1.0]),
]


def _spec(strategy: dict[str, Any], files: Any) -> MergeSpec:
    from mapframe_llm.taskvectors import load_task_vectors

    return MergeSpec(get_registry().create("merge_strategy", dict(strategy)), files.base,
                     dict(files.finetuned), loader=lambda p, f: load_task_vectors(p, f))


def _point(spec: MergeSpec, files: Any, c: list[float]) -> ExportPoint:
    return ExportPoint(strategy=spec.strategy.describe(), coefficients=c,
                       pretrained=files.base, finetuned=dict(files.finetuned),
                       task_names=list(files.tasks), directions=["min"] * len(files.tasks),
                       predicted=[1.0] * len(files.tasks), study="oracle", index=0,
                       source="predicted")


def run_mergekit(config_path: Path, out: Path) -> Path:
    """What ``mergekit-yaml CONFIG OUT`` does, in process (CPU, quiet)."""
    config = MergeConfiguration.model_validate(yaml.safe_load(config_path.read_text()))
    run_merge(config, str(out), MergeOptions(device="cpu", quiet=True))
    return out


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().tobytes()
                          ).hexdigest()


@pytest.fixture
def same_dare_masks(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make mergekit drop what mapframe dropped: each tool draws DARE's random masks with its
    own generator, so the oracle check of the rest of the formula (weights c/(1 − p), no L1
    rescale, disjoint mean) replaces mergekit's random sparsification by mapframe's masks,
    looked up by the task vector they apply to."""
    import mergekit.merge_methods.generalized_task_arithmetic as gta
    from mergekit.sparsify import SparsificationMethod

    from mapframe.merging.ties_dare import _dare_keep

    def install(spec: MergeSpec) -> None:
        tv = spec.task_vectors
        strategy: Any = spec.strategy
        table = {}
        for key in tv.keys():
            v = tv.vectors(key)
            keep = _dare_keep(v, key, strategy.drop_rate, strategy.seed)
            for i in range(v.shape[0]):
                table[_digest(v[i])] = keep[i]

        def sparsify(delta: torch.Tensor, density: float, method: Any,
                     rescale_norm: Any = None, **kw: Any) -> torch.Tensor:
            assert method == SparsificationMethod.random and rescale_norm is None
            assert density == pytest.approx(1 - strategy.drop_rate)
            return delta * table[_digest(delta)].to(delta.dtype)

        monkeypatch.setattr(gta, "sparsify", sparsify)

    return install


def compare(ours: Path, theirs: Path, dtype: str, llm_helpers: Any) -> dict[str, float]:
    """Assert the two folders hold the same weights (see the module docstring) and return
    the largest differences."""
    a, b = llm_helpers.load_state(ours), llm_helpers.load_state(theirs)
    assert set(a) == set(b)
    worst = {"max_abs": 0.0, "max_rel": 0.0, "max_excess": 0.0}
    for k in a:
        assert a[k].dtype == b[k].dtype == getattr(torch, dtype), k
        x, z = a[k].double(), b[k].double()
        d = (x - z).abs()
        scale = float(z.abs().max()) or 1.0
        worst["max_abs"] = max(worst["max_abs"], float(d.max()))
        worst["max_rel"] = max(worst["max_rel"], float(d.max()) / scale)
        if dtype == "float32":
            assert float(d.max()) <= 1e-6 * scale, (k, float(d.max()), scale)
        else:
            big = torch.maximum(x.abs(), z.abs()).clamp(min=1e-38)
            ulp = torch.pow(2.0, torch.floor(torch.log2(big)) - 7)  # bf16: 8 significant bits
            excess = float((d - ulp).max())
            worst["max_excess"] = max(worst["max_excess"], excess / scale)
            assert excess <= 1e-6 * scale, (k, excess, scale)
    return worst


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("strategy,c", CASES, ids=[s["name"] for s, _ in CASES])
def test_mergekit_turns_the_exported_yaml_into_the_exported_weights(
        strategy: dict[str, Any], c: list[float], dtype: str, lm_files: Any,
        lm_bf16_files: Any, same_dare_masks: Any, llm_helpers: Any, tmp_path: Path) -> None:
    files = lm_files if dtype == "float32" else lm_bf16_files
    spec = _spec(strategy, files)
    point = _point(spec, files, c)
    hf = export_point(point, spec, tmp_path / "hf", "hf")
    config_path = export_point(point, spec, tmp_path / "merge.yaml", "mergekit")
    config = yaml.safe_load(config_path.read_text())
    assert config["dtype"] == "float32"
    assert config.get("out_dtype") == (None if dtype == "float32" else "bfloat16")
    if strategy["name"].startswith("dare"):
        same_dare_masks(spec)
    worst = compare(hf, run_mergekit(config_path, tmp_path / "mk"), dtype, llm_helpers)
    print(f"{strategy['name']} {dtype}: {json.dumps(worst)}")
    # the HF folder's card holds the same YAML mergekit ran
    card = (hf / "README.md").read_text()
    assert config_path.read_text().strip() in card
    assert (hf / "mergekit_config.yml").read_text() == config_path.read_text()


def test_dare_without_the_same_masks_is_a_different_merge(lm_files: Any, tmp_path: Path,
                                                          llm_helpers: Any) -> None:
    """The YAML says so: mergekit's own random drop gives another model (this is why the
    test above shares the masks)."""
    spec = _spec({"name": "dare_task_arithmetic", "drop_rate": 0.3, "seed": 2}, lm_files)
    point = _point(spec, lm_files, [0.7, 0.4])
    hf = export_point(point, spec, tmp_path / "hf", "hf")
    config_path = export_point(point, spec, tmp_path / "merge.yaml", "mergekit")
    assert "mergekit draws its own masks" in config_path.read_text()
    with pytest.raises(AssertionError):
        compare(hf, run_mergekit(config_path, tmp_path / "mk"), "float32", llm_helpers)


def test_points_without_a_mergekit_equivalent_are_one_line_errors(lm_files: Any,
                                                                 tmp_path: Path) -> None:
    for strategy, c, message in (
            ({"name": "ties", "trim": 0.3, "trim_rule": "mergekit"}, [0.6, 0.3],
             "only equal coefficients"),
            ({"name": "ties", "trim": 0.3}, [0.6, 0.6], "trim_rule: mergekit"),
            ({"name": "slerp"}, [0.6, 0.6], "c1 \\+ c2 = 1.2 is not 1")):
        spec = _spec(strategy, lm_files)
        with pytest.raises(ConfigError, match=message) as err:
            export_point(_point(spec, lm_files, c), spec, tmp_path / "m.yaml", "mergekit")
        assert "\n" not in str(err.value)
        assert not (tmp_path / "m.yaml").exists()


def test_mergekit_yaml_in_map_study_mergekit_yaml_out(lm_files: Any, llm_helpers: Any,
                                                      tmp_path: Path, capsys: Any) -> None:
    """A mergekit user's YAML with the mapframe part added: ``mapframe run`` searches its
    weights; the chosen point comes out as a mergekit YAML of the same merge (method, base,
    models) with the chosen weights, and as an HF folder mergekit reproduces."""
    merge = {
        "merge_method": "task_arithmetic",
        "base_model": lm_files.base,
        "models": [{"model": lm_files.finetuned[t], "parameters": {"weight": 0.5}}
                   for t in lm_files.tasks],
        "dtype": "float32",
        # mapframe's part (mergekit ignores fields it does not know)
        "evaluator": {"name": "causal_lm", **lm_files.evaluator_kwargs()},
        "study": {"budget": 8, "seed": 0, "preference": [0.5, 0.5],
                  "output": str(tmp_path / "out")},
    }
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(merge, sort_keys=False))
    MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))  # still mergekit's
    assert mapframe_main(["run", str(path), "-q", "--no-plot"]) == 0
    saved_cfg = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved_cfg["merge_strategy"] == {"name": "task_arithmetic"}
    assert list(saved_cfg["checkpoints"]["finetuned"]) == list(lm_files.tasks)
    out_yaml, hf = tmp_path / "chosen.yaml", tmp_path / "chosen"
    assert mapframe_main(["export", str(tmp_path / "out"), "--format", "mergekit",
                          "-o", str(out_yaml)]) == 0
    assert mapframe_main(["export", str(tmp_path / "out"), "--format", "hf",
                          "--max-shard-size", "200kB", "-o", str(hf)]) == 0
    got = yaml.safe_load(out_yaml.read_text())
    assert got["merge_method"] == merge["merge_method"]
    assert got["base_model"] == merge["base_model"]
    assert [m["model"] for m in got["models"]] == [m["model"] for m in merge["models"]]
    import mapframe

    saved = mapframe.load_results(tmp_path / "out")
    assert saved.selected is not None
    chosen = saved.front.coefficients[saved.selected]
    assert [m["parameters"]["weight"] for m in got["models"]] == pytest.approx(
        chosen.tolist(), rel=1e-12)
    # the HF folder: config and tokenizer of the base, sharded weights, a card
    assert (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file()
    assert (hf / "model.safetensors.index.json").is_file()
    card = (hf / "README.md").read_text()
    assert "library_name: transformers" in card and "- mapframe" in card
    compare(hf, run_mergekit(out_yaml, tmp_path / "mk"), "float32", llm_helpers)
    model = llm_helpers.load_causal_lm(hf)  # transformers loads it as it is
    assert model is not None
