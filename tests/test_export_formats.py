"""Export formats: Hugging Face model folders (shards, index, side files, model card) and
mergekit YAML, from a study's result and from a results folder through the CLI. No
mergekit, transformers or huggingface_hub needed (the round trip against real mergekit is
in plugins/llm/tests/test_mergekit_roundtrip.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from mapframe import MergeStudy  # noqa: E402
from mapframe.cli import main  # noqa: E402
from mapframe.errors import CheckpointError, ConfigError  # noqa: E402
from mapframe.evaluators import ModelEvaluator  # noqa: E402
from mapframe.export.hf_folder import INDEX_NAME, parse_size, shard_names  # noqa: E402
from mapframe.export.mergekit_yaml import (  # noqa: E402
    MERGEKIT_METHODS,
    checkpoint_dtype,
    mergekit_config,
)
from mapframe.merging.checkpoints import load_state_dict, save_state_dict  # noqa: E402
from mapframe.plugin import get_registry  # noqa: E402
from mapframe.problem import Task  # noqa: E402


class Net(torch.nn.Module):
    """Four float tensors of 128 float32 entries (512 bytes) and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(16, 8)  # weight 512 B, bias 32 B
        self.b = torch.nn.Linear(8, 16)  # weight 512 B, bias 64 B
        self.register_buffer("steps", torch.tensor([3], dtype=torch.int64))


class NetEvaluator(ModelEvaluator):
    """Distances of the merged ``a.weight`` to the two fine-tunes' (a real trade-off)."""

    name = "export-test-net"
    #: The fine-tunes' ``a.weight`` (set by :func:`checkpoints`).
    targets: tuple[torch.Tensor, ...] = ()

    @property
    def tasks(self) -> list[Task]:
        return [Task("t0", "min"), Task("t1", "max")]

    def build_model(self) -> torch.nn.Module:
        return Net()

    def score(self, model: torch.nn.Module) -> list[float]:
        w = model.a.weight.detach()
        return [float((w - self.targets[0]).pow(2).mean()),
                float(-(w - self.targets[1]).pow(2).mean())]


def _write_model(folder: Path, state: dict[str, Any], hf: bool = True,
                 dtype: torch.dtype | None = None) -> str:
    folder.mkdir(parents=True)
    if hf:
        (folder / "config.json").write_text(json.dumps({"model_type": "net", "hidden": 8}))
        (folder / "tokenizer.json").write_text('{"version": "1.0"}')
        (folder / "generation_config.json").write_text("{}")
        (folder / "README.md").write_text("the base model's own card")
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return str(save_state_dict(state, folder / "model.safetensors"))


def checkpoints(root: Path, hf: bool = True, dtype: torch.dtype | None = None
                ) -> dict[str, Any]:
    torch.manual_seed(0)
    base = Net().state_dict()
    out = {"pretrained": _write_model(root / "base", base, hf, dtype), "finetuned": {}}
    for i in range(2):
        sd = {k: v + 0.1 * (i + 1) * torch.randn_like(v) if v.is_floating_point() else v
              for k, v in base.items()}
        out["finetuned"][f"t{i}"] = _write_model(root / f"ft{i}", sd, hf, dtype)
        NetEvaluator.targets = (*NetEvaluator.targets[:i], sd["a.weight"])
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("export")
    ck = checkpoints(root)
    result = MergeStudy(evaluator=NetEvaluator(), checkpoints=ck, budget=8, seed=0,
                        verify=2, preference=[0.5, 0.5]).run()
    return result, ck, root


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / INDEX_NAME
    names = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.is_file() else ["model.safetensors"])
    state: dict[str, torch.Tensor] = {}
    for name in names:
        state.update(load_state_dict(folder / name))
    return state


def _card(folder: Path) -> tuple[dict[str, Any], str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


# -- sizes and names --------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [("5GB", 5 * 10**9), ("200MB", 200 * 10**6),
                                           ("1.5kB", 1500), ("2GiB", 2 * 2**30),
                                           ("1000", 1000), (123, 123)])
def test_shard_sizes_parse_like_transformers(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["5 parsecs", "", "-1GB", "0MB", "GB"])
def test_bad_shard_sizes_are_one_line_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="shard size"):
        parse_size(bad)


def test_shard_names_follow_transformers() -> None:
    assert shard_names(1) == ["model.safetensors"]
    assert shard_names(3) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


# -- the HF folder ----------------------------------------------------------------------
def test_hf_folder_holds_the_merged_weights_sharded_with_an_index(study: Any,
                                                                  tmp_path: Path) -> None:
    result, ck, _ = study
    i = result.selected
    reference = load_state_dict(result.export(tmp_path / "ref.safetensors", i))
    folder = result.export(tmp_path / "hf", i, format="hf", max_shard_size="600B")
    index = json.loads((folder / INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == shard_names(len(files)) and len(files) == 2  # 544 + 584 bytes
    assert set(index["weight_map"]) == set(reference)
    state = _read_folder(folder)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                  for t in state.values())
    for name in files:  # every shard within the limit (each tensor here is <= 512 B)
        shard = load_state_dict(folder / name)
        assert sum(t.numel() * t.element_size() for t in shard.values()) <= 600
    for k, v in reference.items():  # bit for bit the same merge as the safetensors export
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    assert state["steps"].tolist() == [3]  # integer buffers come from the base
    # the base's side files are copied, its own card is not
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        assert (folder / name).read_bytes() == (Path(ck["pretrained"]).parent / name
                                                ).read_bytes()
    assert "the base model's own card" not in (folder / "README.md").read_text()
    marker = json.loads((folder / "mapframe_merge.json").read_text())
    assert marker["mapframe.index"] == i
    assert marker["mapframe.coefficients"] == pytest.approx(
        dict(zip(["t0", "t1"], result.front.coefficients[i].tolist())))


def test_hf_folder_is_one_file_when_it_fits(study: Any, tmp_path: Path) -> None:
    result, _, _ = study
    folder = result.export(tmp_path / "hf", 0, format="hf")
    assert (folder / "model.safetensors").is_file() and not (folder / INDEX_NAME).exists()
    assert not list(folder.glob("model-*"))


def test_model_card_front_matter_metrics_and_mergekit_yaml(study: Any, tmp_path: Path
                                                           ) -> None:
    result, ck, _ = study
    i = int(np.flatnonzero(result.front.measured)[0])
    folder = result.export(tmp_path / "hf", i, format="hf")
    meta, body = _card(folder)
    assert meta["base_model"] == [ck["pretrained"], *ck["finetuned"].values()]
    assert meta["tags"] == ["mergekit", "merge", "mapframe"]
    assert meta["library_name"] == "transformers"
    for name, c in zip(["t0", "t1"], result.front.coefficients[i]):
        assert f"({name}) | {c:.6g} |" in body
    for t, d, p, r in zip(result.task_names, ["lower", "higher"], result.front.predicted[i],
                          result.front.real[i]):
        assert f"| {t} | {d} is better | {p:.6g} | {r:.6g} |" in body
    # the equivalent mergekit YAML, in the card and beside it, with the point's weights
    mk = yaml.safe_load((folder / "mergekit_config.yml").read_text())
    assert mk["merge_method"] == "task_arithmetic"
    assert [m["parameters"]["weight"] for m in mk["models"]] == pytest.approx(
        result.front.coefficients[i].tolist(), rel=1e-15)
    assert (folder / "mergekit_config.yml").read_text().strip() in body
    if i == result.selected:
        assert "selected for the preference t0 0.5, t1 0.5" in body


def test_card_without_hf_checkpoints_says_why_there_is_no_mergekit_yaml(tmp_path: Path
                                                                        ) -> None:
    ck = checkpoints(tmp_path / "plain", hf=False)
    result = MergeStudy(evaluator=NetEvaluator(), checkpoints=ck, budget=8, seed=0,
                        merge_strategy={"name": "ties", "trim": 0.5}).run()
    folder = result.export(tmp_path / "hf", 0, format="hf")
    meta, body = _card(folder)
    assert "library_name" not in meta and not (folder / "config.json").exists()
    assert "No mergekit configuration reproduces this merge" in body
    assert not (folder / "mergekit_config.yml").exists()
    with pytest.raises(ConfigError, match="trim_rule: mergekit"):
        result.export(tmp_path / "m.yaml", 0, format="mergekit")


def test_an_existing_folder_is_replaced_only_when_it_is_an_export(study: Any,
                                                                  tmp_path: Path) -> None:
    result, _, _ = study
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an earlier mapframe export"):
        result.export(tmp_path / "mine", 0, format="hf")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = result.export(tmp_path / "hf", 0, format="hf")
    again = result.export(tmp_path / "hf", 1, format="hf")
    assert first == again
    assert json.loads((again / "mapframe_merge.json").read_text())["mapframe.index"] == 1
    assert not list(tmp_path.glob(".hf.partial-*"))


# -- mergekit YAML ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return checkpoints(tmp_path_factory.mktemp("mk"))


def _config(folders: dict[str, Any], strategy: dict[str, Any], c: list[float],
            **kw: Any) -> dict[str, Any]:
    return mergekit_config(strategy, c, folders["pretrained"], folders["finetuned"], **kw)


def _dir(path: str) -> str:
    return str(Path(path).parent)


@pytest.mark.parametrize("strategy,c,method,shared,per_model,base", [
    ({"name": "task_arithmetic"}, [0.7, -0.2], "task_arithmetic", {"normalize": False},
     [{"weight": 0.7}, {"weight": -0.2}], True),
    ({"name": "task_arithmetic_scalar"}, [0.7, 0.3], "task_arithmetic", {"normalize": False},
     [{"weight": 0.5}, {"weight": 0.5}], True),
    ({"name": "task_arithmetic_preference", "scale": 0.4}, [3.0, 1.0], "task_arithmetic",
     {"normalize": True, "lambda": 0.4}, [{"weight": 3.0}, {"weight": 1.0}], True),
    ({"name": "soup"}, [3.0, 1.0], "linear", {"normalize": True},
     [{"weight": 3.0}, {"weight": 1.0}], False),
    ({"name": "ties", "trim": 0.3, "trim_rule": "mergekit"}, [0.8, 0.8], "ties",
     {"normalize": True, "lambda": 0.8},
     [{"weight": 1.0, "density": 0.3}, {"weight": 1.0, "density": 0.3}], True),
    ({"name": "ties", "trim": 1.0}, [0.8, 0.8], "ties", {"normalize": True, "lambda": 0.8},
     [{"weight": 1.0, "density": 1.0}, {"weight": 1.0, "density": 1.0}], True),
    ({"name": "dare_task_arithmetic", "drop_rate": 0.2, "seed": 0}, [0.8, 0.4],
     "dare_linear", {"normalize": False, "rescale": False},
     [{"weight": 1.0, "density": 0.8}, {"weight": 0.5, "density": 0.8}], True),
    ({"name": "dare_ties", "drop_rate": 0.2, "seed": 0, "trim": 1.0}, [0.6, 0.6],
     "dare_ties", {"normalize": True, "rescale": False, "lambda": 0.75},
     [{"weight": 1.0, "density": 0.8}, {"weight": 1.0, "density": 0.8}], True),
    ({"name": "slerp", "dot_threshold": 0.9995}, [0.25, 0.75], "nuslerp",
     {"nuslerp_flatten": True, "nuslerp_row_wise": False},
     [{"weight": 0.25}, {"weight": 0.75}], True),
    ({"name": "multislerp", "eps": 1e-8}, [0.25, 0.75], "multislerp",
     {"normalize_weights": True, "eps": 1e-8}, [{"weight": 0.25}, {"weight": 0.75}], True),
    ({"name": "model_stock"}, [1.0, 1.0], "model_stock", {"filter_wise": False}, [{}, {}],
     True),
], ids=lambda v: v.get("name") if isinstance(v, dict) and "name" in v else None)
def test_each_strategy_translates_to_its_mergekit_method(
        folders: dict[str, Any], strategy: dict[str, Any], c: list[float], method: str,
        shared: dict[str, Any], per_model: list[dict[str, Any]], base: bool) -> None:
    cfg = _config(folders, strategy, c)
    assert cfg["merge_method"] == method == MERGEKIT_METHODS[strategy["name"]].method
    assert cfg["parameters"] == pytest.approx(shared)
    assert [m["model"] for m in cfg["models"]] == [_dir(p) for p in
                                                   folders["finetuned"].values()]
    for got, want in zip([m.get("parameters", {}) for m in cfg["models"]], per_model):
        assert got == pytest.approx(want)
    assert cfg.get("base_model") == (_dir(folders["pretrained"]) if base else None)
    assert cfg["dtype"] == "float32" and "out_dtype" not in cfg  # float32 checkpoints


@pytest.mark.parametrize("strategy,c,message", [
    ({"name": "ties", "trim": 0.3, "trim_rule": "mergekit"}, [0.8, 0.5],
     r"has no mergekit equivalent: mergekit's ties .* only equal coefficients"),
    ({"name": "ties", "trim": 0.3}, [0.8, 0.8],
     r"trims with mapframe's rule .* trim_rule: mergekit"),
    ({"name": "dare_ties", "drop_rate": 0.2, "trim": 0.5}, [0.8, 0.8], r"trim: 1"),
    ({"name": "slerp"}, [0.5, 0.7], r"c1 \+ c2 = 1\.2 is not 1"),
    ({"name": "soup"}, [0.0, 0.0], r"positive"),
    ({"name": "multislerp"}, [0.5, 0.7], r"magnitude Σc = 1\.2 is not 1"),
    ({"name": "model_stock"}, [1.0, 0.5], r"takes no weights \(it is mapframe's at c = 1\)"),
    ({"name": "breadcrumbs", "density": 0.2, "gamma": 0.01}, [0.5, 0.5],
     r"'breadcrumbs' has no mergekit equivalent"),
    ({"name": "my_merge"}, [0.5, 0.5], r"'my_merge' has no mergekit equivalent"),
])
def test_points_without_an_equivalent_are_one_line_errors(
        folders: dict[str, Any], strategy: dict[str, Any], c: list[float],
        message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _config(folders, strategy, c)
    assert "\n" not in str(err.value)


def test_single_file_checkpoints_and_lora_adapters(tmp_path: Path) -> None:
    plain = checkpoints(tmp_path / "plain", hf=False)
    with pytest.raises(ConfigError, match="mergekit reads Hugging Face model folders"):
        mergekit_config({"name": "task_arithmetic"}, [1, 1], plain["pretrained"],
                        plain["finetuned"])
    hf = checkpoints(tmp_path / "hf")
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cfg = mergekit_config({"name": "task_arithmetic"}, [1, 1], hf["pretrained"],
                          {"t0": hf["finetuned"]["t0"], "t1": str(adapter)})
    assert cfg["models"][1]["model"] == f"{_dir(hf['pretrained'])}+{adapter}"


def test_bf16_checkpoints_compute_in_float32_and_write_bf16(tmp_path: Path) -> None:
    ck = checkpoints(tmp_path, dtype=torch.bfloat16)
    assert checkpoint_dtype(_dir(ck["pretrained"])) == "bfloat16"
    cfg = mergekit_config({"name": "task_arithmetic"}, [0.5, 0.5], ck["pretrained"],
                          ck["finetuned"])
    assert (cfg["dtype"], cfg["out_dtype"]) == ("float32", "bfloat16")


def test_exported_yaml_round_trips_the_floats(study: Any, tmp_path: Path) -> None:
    result, _, _ = study
    path = result.export(tmp_path / "point", 3, format="mergekit")
    assert path.suffix == ".yaml"
    text = path.read_text()
    assert text.startswith("# mergekit configuration of front point 3")
    cfg = yaml.safe_load(text)
    assert [m["parameters"]["weight"] for m in cfg["models"]] == result.front.coefficients[
        3].tolist()  # exactly: YAML writes floats in full


# -- the command line -------------------------------------------------------------------
@pytest.fixture
def results_folder(tmp_path: Path, fresh_plugins: Any) -> Path:
    get_registry().register(NetEvaluator)
    ck = checkpoints(tmp_path / "ck")
    config = {"evaluator": "export-test-net", "checkpoints": ck,
              "study": {"budget": 8, "seed": 0, "verify": 1, "preference": [0.5, 0.5],
                        "output": str(tmp_path / "out")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "c.yaml"), "-q"]) == 0
    return tmp_path / "out"


def test_cli_exports_hf_folders_and_mergekit_yaml(results_folder: Path, tmp_path: Path,
                                                  capsys: Any) -> None:
    out = tmp_path / "model"
    assert main(["export", str(results_folder), "--format", "hf", "--max-shard-size",
                 "700B", "-o", str(out)]) == 0
    assert (out / INDEX_NAME).is_file() and (out / "config.json").is_file()
    meta, body = _card(out)
    assert meta["library_name"] == "transformers"
    if (results_folder / "front.png").is_file():  # drawn when matplotlib is installed
        assert (out / "front.png").read_bytes() == (results_folder / "front.png").read_bytes()
        assert "![the study's Pareto front](front.png)" in body
    assert "selected for the preference t0 0.5, t1 0.5" in body
    assert main(["export", str(results_folder), "--format", "mergekit", "--point", "0",
                 "-o", str(tmp_path / "m.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["merge_method"] == (
        "task_arithmetic")
    assert "m.yaml" in capsys.readouterr().out


def test_cli_push_to_hub_needs_huggingface_hub_and_a_folder(
        results_folder: Path, tmp_path: Path, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    capsys.readouterr()
    assert main(["export", str(results_folder), "--format", "hf", "-o",
                 str(tmp_path / "m"), "--push-to-hub", "me/merged"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--push-to-hub needs huggingface_hub: pip install huggingface_hub "
                        "(then log in with hf auth login or set HF_TOKEN)")
    assert main(["export", str(results_folder), "-o", str(tmp_path / "x.safetensors"),
                 "--push-to-hub", "me/merged"]) == 2
    assert "add --format hf" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv,message", [
    (["--format", "hf", "-o", "m.safetensors"], "--format hf writes a model folder"),
    (["--format", "mergekit", "-o", "m.safetensors"], "--format mergekit writes a YAML file"),
    (["--max-shard-size", "1GB", "-o", "m.safetensors"], "--max-shard-size sizes the shards"),
    (["--format", "hf", "--max-shard-size", "lots", "-o", "m"], "a shard size is a number"),
])
def test_cli_export_argument_errors(results_folder: Path, tmp_path: Path, capsys: Any,
                                    argv: list[str], message: str) -> None:
    argv = [a if a not in ("m", "m.safetensors") else str(tmp_path / a) for a in argv]
    capsys.readouterr()
    assert main(["export", str(results_folder), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.safetensors").exists()


def test_card_names_cached_hub_models_by_their_repository_id() -> None:
    from mapframe.export.model_card import hub_id

    cached = "/home/me/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B/snapshots/abc123"
    assert hub_id(cached) == "meta-llama/Llama-3.1-8B"
    assert hub_id(cached + "/") == "meta-llama/Llama-3.1-8B"
    assert hub_id("/models/my-finetune") == "/models/my-finetune"



def test_notes_say_where_mergekit_will_not_give_the_same_weights() -> None:
    from mapframe.export.mergekit_yaml import mergekit_notes

    assert mergekit_notes({"name": "task_arithmetic"}) == []
    assert mergekit_notes({"name": "ties", "zero_sum": "positive"}) == []
    assert any("sum to exactly 0" in n for n in mergekit_notes({"name": "ties"}))
    notes = mergekit_notes({"name": "dare_task_arithmetic", "drop_rate": 0.1})
    assert len(notes) == 1 and "mergekit draws its own masks" in notes[0]
    assert len(mergekit_notes({"name": "dare_ties"})) == 2


def test_export_never_replaces_what_it_did_not_write(results_folder: Path, tmp_path: Path,
                                                      capsys: Any) -> None:
    """The default format overwrote any file (a user's notes.md became safetensors bytes),
    and a folder or an unusable path ended in raw tracebacks."""
    import mapframe

    notes = tmp_path / "notes.md"
    notes.write_text("important data")
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "afile.txt").write_text("x")
    for target, message in ((notes, "it exists and is not an earlier mapframe export"),
                            (tmp_path / "folder.safetensors", "it is a folder"),
                            (tmp_path / "afile.txt" / "m.safetensors",
                             "its folder cannot be made")):
        capsys.readouterr()
        assert main(["export", str(results_folder), "-o", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    assert notes.read_text() == "important data"
    saved = mapframe.load_results(results_folder)
    with pytest.raises(ConfigError, match="not an earlier mapframe export"):
        saved.export(notes, index=0)
    # an earlier export is replaced, as before
    out = tmp_path / "m.safetensors"
    assert main(["export", str(results_folder), "-o", str(out)]) == 0
    assert main(["export", str(results_folder), "-o", str(out)]) == 0
    yaml_out = tmp_path / "m.yaml"
    (tmp_path / "their.yaml").write_text("models: []\n")
    assert main(["export", str(results_folder), "--format", "mergekit", "-o",
                 str(tmp_path / "their.yaml")]) == 2
    assert (tmp_path / "their.yaml").read_text() == "models: []\n"
    assert main(["export", str(results_folder), "--format", "mergekit", "-o", str(yaml_out)]
                ) == 0
    assert main(["export", str(results_folder), "--format", "mergekit", "-o", str(yaml_out)]
                ) == 0


def test_a_path_without_a_suffix_never_replaces_a_users_file(study: Any,
                                                              tmp_path: Path) -> None:
    """``export("pretrained")`` wrote ``pretrained.safetensors`` over the user's own
    checkpoint: the overwrite check ran only for paths with a suffix, and the suffix was
    appended afterwards. The final path is now checked."""
    result, ck, _ = study
    target = Path(ck["pretrained"])  # .../base/model.safetensors, the study's own input
    before = target.read_bytes()
    for path in (target, target.with_suffix("")):
        with pytest.raises(ConfigError, match="not an earlier mapframe export") as err:
            result.export(path, index=0)
        assert "\n" not in str(err.value) and str(target) in str(err.value)
    assert target.read_bytes() == before
    # an earlier export under the same suffixless name is still replaced
    first = result.export(tmp_path / "m", index=0)
    assert first == tmp_path / "m.safetensors"
    assert result.export(tmp_path / "m", index=1) == first


def _bin_model(folder: Path, state: dict[str, Any], config: dict[str, Any] | None) -> str:
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "pytorch_model.bin")
    return str(folder / "pytorch_model.bin")


@pytest.mark.parametrize("config", [{"torch_dtype": "bfloat16"}, {}])
def test_bf16_bin_checkpoints_keep_their_dtype_in_the_mergekit_yaml(tmp_path: Path,
                                                                   config: dict[str, Any]
                                                                   ) -> None:
    """checkpoint_dtype read only safetensors headers: pytorch_model.bin checkpoints (and
    folders holding only .bin) got no out_dtype, so mergekit wrote a bf16 merge in float32."""
    torch.manual_seed(0)
    base = {k: v.to(torch.bfloat16) for k, v in Net().state_dict().items()
            if v.is_floating_point()}
    pre = _bin_model(tmp_path / "base", base, {"model_type": "net", **config})
    fts = {f"t{i}": _bin_model(tmp_path / f"ft{i}", base, {"model_type": "net"})
           for i in range(2)}
    for where in (pre, str(Path(pre).parent)):
        assert checkpoint_dtype(where) == "bfloat16"
        cfg = mergekit_config({"name": "task_arithmetic"}, [0.5, 0.5], where, fts)
        assert (cfg["dtype"], cfg["out_dtype"]) == ("float32", "bfloat16")


def test_a_checkpoint_dtype_read_from_config_json_or_refused(tmp_path: Path) -> None:
    """A legacy (non-zip) .bin is read from config.json's torch_dtype; with neither, the
    export says it cannot tell the dtype instead of leaving out_dtype out."""
    state = {k: v.half() for k, v in Net().state_dict().items() if v.is_floating_point()}
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert checkpoint_dtype(str(folder)) == "float16"
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"cannot tell the dtype.*torch_dtype") as err:
        mergekit_config({"name": "task_arithmetic"}, [1.0], str(folder),
                        {"t": str(folder / "pytorch_model.bin")})
    assert "\n" not in str(err.value)


def test_odd_names_stay_inside_the_card_tables_and_the_yaml_comments() -> None:
    """A task named ``a|b`` split its model-card row into more cells, and a name holding a
    line break ended the mergekit header's comment: the rest was read as a YAML key."""
    from mapframe.export.model_card import model_card
    from mapframe.export.point import ExportPoint

    point = ExportPoint(strategy={"name": "task_arithmetic"}, coefficients=[0.5, 0.25],
                        pretrained=None, finetuned={"x|y": "", "z": ""},
                        task_names=["acc|top1", "loss\nval"], directions=["max", "min"],
                        predicted=[0.9, 0.1], study="s")
    card = model_card(point)
    metric_rows = [r for r in card.splitlines() if r.startswith("| acc")]
    assert metric_rows == ["| acc\\|top1 | higher is better | 0.9 | – |"]
    assert "| loss val | lower is better | 0.1 | – |" in card.splitlines()
    assert "| `x\\|y` (x\\|y) | 0.5 |" in card.splitlines()
    from mapframe.export.mergekit_yaml import mergekit_yaml

    text = mergekit_yaml({"merge_method": "linear"},
                         ["coefficients: a=1\ntokenizer_source: /tmp/EVIL\n#=0.5"])
    assert yaml.safe_load(text) == {"merge_method": "linear"}
    assert text.splitlines()[:3] == ["# coefficients: a=1", "# tokenizer_source: /tmp/EVIL",
                                     "# #=0.5"]
