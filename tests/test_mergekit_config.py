"""A mergekit configuration read as a study: a mergekit YAML with mapframe's fields added, or
a mapframe config with a ``mergekit:`` section (a file, inline, or with task names). No
mergekit needed: the translation is checked on the spec the config becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mapframe.config import load_spec, validate_config
from mapframe.errors import ConfigError
from mapframe.mergekit_config import MERGE_METHODS, expand_mergekit, strategy_for

EVALUATOR = {"name": "digits", "tasks": ["rot90", "flip"]}


def _models(root: Path, names: tuple[str, ...] = ("ft-a", "ft-b")) -> dict[str, Any]:
    for name in ("base", *names):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {"base_model": "base",
            "models": [{"model": n, "parameters": {"weight": 0.5}} for n in names]}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_mergekit_yaml_with_a_mapframe_part_is_a_study(tmp_path: Path) -> None:
    mk = {"merge_method": "ties", **_models(tmp_path), "parameters": {"density": 0.4},
          "dtype": "bfloat16", "evaluator": EVALUATOR, "study": {"budget": 12}}
    spec = load_spec(_write(tmp_path / "merge.yaml", mk))
    assert spec.merge_strategy == {"name": "ties", "trim": 0.4, "trim_rule": "mergekit",
                                   "zero_sum": "positive"}
    assert spec.checkpoints is not None
    assert spec.checkpoints.pretrained == str(tmp_path / "base")
    # one coefficient per model, named after the evaluator's tasks (one per model)
    assert spec.checkpoints.finetuned == {"rot90": str(tmp_path / "ft-a"),
                                         "flip": str(tmp_path / "ft-b")}
    assert spec.budget == 12


def test_a_mergekit_section_reads_a_file_relative_to_the_config(tmp_path: Path) -> None:
    models = tmp_path / "models"
    mk = _write(models / "merge.yaml", {"merge_method": "task_arithmetic",
                                        **_models(models)})
    config = {"mergekit": "models/merge.yaml", "evaluator": {"name": "digits",
                                                             "tasks": ["rot90"]}}
    spec = load_spec(_write(tmp_path / "study.yaml", config))
    assert spec.merge_strategy == {"name": "task_arithmetic"}
    assert spec.checkpoints is not None
    # paths inside the mergekit file are relative to that file; names are the folders'
    assert spec.checkpoints.pretrained == str(models / "base")
    assert spec.checkpoints.finetuned == {"ft-a": str(models / "ft-a"),
                                          "ft-b": str(models / "ft-b")}
    assert mk.is_file()


def test_a_mergekit_section_inline_with_names(tmp_path: Path) -> None:
    config = {"mergekit": {"config": {"merge_method": "dare_ties", **_models(tmp_path),
                                      "parameters": {"density": 0.7}},
                           "names": ["x", "y"]},
              "evaluator": EVALUATOR}
    spec = load_spec(_write(tmp_path / "study.yaml", config))
    # mergekit's dare_ties defaults to normalize: false, the sum of the agreeing entries
    assert spec.merge_strategy == pytest.approx({"name": "dare_ties", "drop_rate": 0.3,
                                                 "zero_sum": "positive", "disjoint": False})
    assert spec.checkpoints is not None and list(spec.checkpoints.finetuned) == ["x", "y"]
    # validate_config (what the CLI saves as results/config.yaml) is a plain mapframe config
    saved = validate_config(config, base_dir=tmp_path)
    assert "mergekit" not in saved and saved["checkpoints"]["finetuned"]["x"] == str(
        tmp_path / "ft-a")


def test_a_task_yaml_path_names_its_coefficient_by_its_stem(tmp_path: Path) -> None:
    """lm_eval names a task YAML given by path by its stem (my_tasks/qa_b.yaml -> qa_b):
    the coefficients must carry the objectives' names."""
    mk = {"merge_method": "task_arithmetic", **_models(tmp_path),
          "evaluator": {"name": "lm_eval",
                        "tasks": ["my_tasks/qa_b.yaml", {"task": "other/qa_c.yml"}]}}
    out = expand_mergekit(mk, tmp_path)
    assert list(out["checkpoints"]["finetuned"]) == ["qa_b", "qa_c"]
    named = {**mk, "evaluator": {"name": "lm_eval", "tasks": [
        {"task": "my_tasks/qa_b.yaml", "name": "qa"}, "arc_easy"]}}
    assert list(expand_mergekit(named, tmp_path)["checkpoints"]["finetuned"]) == ["qa",
                                                                                  "arc_easy"]


@pytest.mark.parametrize("method,shared,per_model,expected", [
    ("task_arithmetic", {}, [{"weight": 0.3}, {"weight": 0.6}], {"name": "task_arithmetic"}),
    ("task_arithmetic", {"lambda": 0.7}, [{}, {}], {"name": "task_arithmetic"}),
    ("task_arithmetic", {"normalize": True, "lambda": 0.7}, [{}, {}],
     {"name": "task_arithmetic_preference", "scale": 0.7}),
    ("linear", {}, [{"weight": 1.0}, {"weight": 2.0}], {"name": "soup"}),
    ("ties", {}, [{"density": 0.3}, {"density": 0.3}],
     {"name": "ties", "trim": 0.3, "trim_rule": "mergekit", "zero_sum": "positive"}),
    ("ties", {"normalize": False}, [{"density": 0.3}, {"density": 0.3}],
     {"name": "ties", "trim": 0.3, "trim_rule": "mergekit", "zero_sum": "positive",
      "disjoint": False}),
    ("dare_ties", {"density": 0.5}, [{}, {}],
     {"name": "dare_ties", "drop_rate": 0.5, "zero_sum": "positive", "disjoint": False}),
    ("dare_linear", {"density": 0.9}, [{}, {}],
     {"name": "dare_task_arithmetic", "drop_rate": 0.1}),
    ("dare_ties", {"density": 0.5, "normalize": True}, [{}, {}],
     {"name": "dare_ties", "drop_rate": 0.5, "zero_sum": "positive"}),
    ("nuslerp", {}, [{"weight": 0.4}, {"weight": 0.6}], {"name": "slerp"}),
    ("multislerp", {"eps": 1e-6}, [{"weight": 1.0}, {"weight": 2.0}],
     {"name": "multislerp", "eps": 1e-6}),
    ("model_stock", {}, [{}, {}], {"name": "model_stock"}),
])
def test_each_supported_method_becomes_its_strategy(method: str, shared: dict[str, Any],
                                                    per_model: list[dict[str, Any]],
                                                    expected: dict[str, Any]) -> None:
    assert method in MERGE_METHODS
    assert strategy_for(method, shared, per_model) == pytest.approx(expected)


@pytest.mark.parametrize("change,message", [
    ({"merge_method": "della"}, r"merge_method 'della' is not supported by mapframe; "
                                r"supported: task_arithmetic"),
    ({"merge_method": "slerp"}, r"merge_method 'slerp' is not supported.*nuslerp"),
    ({"parameters": {"density": [0.2, 0.5]}}, r"parameters.density is a per-tensor setting"),
    ({"parameters": {"density": [{"filter": "mlp", "value": 0.5}, {"value": 0.3}]}},
     r"per-tensor setting"),
    ({"models": [{"model": "ft-a", "parameters": {"density": 0.2}},
                 {"model": "ft-b", "parameters": {"density": 0.5}}]},
     r"'density' differs between models \(0.2, 0.5\)"),
    ({"parameters": {"epsilon": 0.1}}, r"parameter 'epsilon' of ties is not supported"),
    ({"base_model": None}, r"needs the mergekit base_model"),
    ({"slices": [{"sources": []}]}, r"slices are not supported"),
    ({"models": [{"model": "other+lora"}, {"model": "ft-b"}]},
     r"applies a LoRA adapter to 'other', not to base_model"),
    ({"models": [{"model": "base"}]}, r"no fine-tuned model besides base_model"),
    ({"merge_strategy": "ties"}, r"merge_strategy comes from the mergekit config"),
    ({"evaluator": {"name": "digits", "tasks": ["a", "b"]}, "frobnicate": 1},
     r"unknown field 'frobnicate'"),
])
def test_what_mapframe_cannot_search_is_a_one_line_error(tmp_path: Path,
                                                         change: dict[str, Any],
                                                         message: str) -> None:
    mk = {"merge_method": "ties", **_models(tmp_path), "evaluator": EVALUATOR, **change}
    with pytest.raises(ConfigError, match=message) as err:
        load_spec(_write(tmp_path / "merge.yaml", mk))
    assert "\n" not in str(err.value)


def test_a_bare_mergekit_yaml_says_what_to_add(tmp_path: Path) -> None:
    path = _write(tmp_path / "merge.yaml", {"merge_method": "linear", **_models(tmp_path)})
    with pytest.raises(ConfigError, match=r"mergekit config without a mapframe part: add "
                                          r"evaluator"):
        load_spec(path)


def test_section_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mergekit config not found"):
        expand_mergekit({"mergekit": "nope.yaml", "evaluator": EVALUATOR}, tmp_path)
    with pytest.raises(ConfigError, match="must be the path of a mergekit YAML"):
        expand_mergekit({"mergekit": {"models": []}, "evaluator": EVALUATOR}, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown field 'weights' in mergekit"):
        expand_mergekit({"mergekit": {"config": "x.yaml", "weights": [1]}}, tmp_path)
    with pytest.raises(ConfigError, match=r"mergekit\.names must be 2 distinct task names"):
        expand_mergekit({"mergekit": {"config": {"merge_method": "linear",
                                                 **_models(tmp_path)}, "names": ["a", "a"]},
                         "evaluator": EVALUATOR}, tmp_path)
    # a plain mapframe config passes through untouched
    plain = {"evaluator": EVALUATOR, "study": {"budget": 3}}
    assert expand_mergekit(plain, tmp_path) is plain


@pytest.mark.parametrize("method,params,c", [
    ("task_arithmetic", {}, [0.3, 0.9]),
    ("task_arithmetic", {"normalize": True, "lambda": 0.6}, [0.3, 0.9]),
    ("linear", {}, [0.3, 0.9]),
    ("ties", {"density": 0.35}, [0.7, 0.7]),
    ("ties", {"density": 0.35, "normalize": False}, [0.7, 0.7]),
    ("dare_linear", {"density": 0.8}, [0.3, 0.9]),
    ("dare_ties", {"density": 0.8}, [0.7, 0.7]),
    ("dare_ties", {"density": 0.8, "normalize": True}, [0.7, 0.7]),
    ("nuslerp", {}, [0.25, 0.75]),
    ("multislerp", {}, [0.25, 0.75]),
    ("model_stock", {}, [1.0, 1.0]),
])
def test_a_config_read_in_exports_back_to_the_same_method(tmp_path: Path, method: str,
                                                          params: dict[str, Any],
                                                          c: list[float]) -> None:
    """mergekit in, mapframe's strategy, mergekit out: the same method, base, models and
    fixed parameters; the searched coefficients become the weights (or lambda)."""
    from mapframe.export.mergekit_yaml import mergekit_config

    models = _models(tmp_path)
    for name in ("base", "ft-a", "ft-b"):
        # no weights: the dtype (mergekit's out_dtype) is read from config.json
        (tmp_path / name / "config.json").write_text('{"torch_dtype": "float32"}')
    mk = {"merge_method": method, **models, "parameters": params, "evaluator": EVALUATOR}
    spec = load_spec(_write(tmp_path / "merge.yaml", mk))
    assert spec.checkpoints is not None
    out = mergekit_config(spec.merge_strategy, c, spec.checkpoints.pretrained,
                          spec.checkpoints.finetuned)
    assert out["merge_method"] == method
    assert [m["model"] for m in out["models"]] == [str(tmp_path / "ft-a"),
                                                   str(tmp_path / "ft-b")]
    if method != "linear":
        assert out["base_model"] == str(tmp_path / "base")
    for key in ("density",):
        if key in params:
            assert [m["parameters"][key] for m in out["models"]] == pytest.approx(
                [params[key]] * 2)
    if method == "task_arithmetic" and params.get("normalize"):
        assert out["parameters"]["lambda"] == params["lambda"]
    if method in ("ties", "dare_ties"):  # mergekit's own default where none was given
        default = method == "ties"
        assert out["parameters"]["normalize"] == params.get("normalize", default)


def test_a_linear_merge_needs_no_base_and_keeps_a_listed_base(tmp_path: Path) -> None:
    """mapframe's soup exports as mergekit's linear without base_model (mergekit adds an
    unlisted base with no weight, which breaks linear); reading it back asked for a
    base_model. A linear that lists its base among the models averages it in (mergekit
    does); mapframe dropped it silently."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from mapframe.export.mergekit_yaml import mergekit_config
    from mapframe.merging.checkpoints import load_state_dict
    from mapframe.merging.interpolation import ModelSoup

    weights = {}
    for i, name in enumerate(("base", "ft-a", "ft-b")):
        (tmp_path / name).mkdir()
        weights[name] = {"w": torch.full((3,), float(i + 1))}
        save_file(weights[name], str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text("{}")
    out = mergekit_config({"name": "soup"}, [0.3, 0.9], str(tmp_path / "base"),
                          {"a": str(tmp_path / "ft-a"), "b": str(tmp_path / "ft-b")})
    assert "base_model" not in out
    spec = load_spec(_write(tmp_path / "soup.yaml", {**out, "evaluator": EVALUATOR}))
    assert spec.merge_strategy == {"name": "soup"} and spec.checkpoints is not None
    assert spec.checkpoints.pretrained == str(tmp_path / "ft-a")  # any model would do
    assert list(spec.checkpoints.finetuned.values()) == [str(tmp_path / "ft-a"),
                                                          str(tmp_path / "ft-b")]
    listed = {"merge_method": "linear", "base_model": "base",
              "models": [{"model": n, "parameters": {"weight": 1.0}}
                         for n in ("base", "ft-a", "ft-b")], "evaluator": {
                  "name": "callable", "function": "objectives:two_quadratics",
                  "tasks": ["x", "y", "z"]}}
    spec = load_spec(_write(tmp_path / "listed.yaml", listed))
    assert spec.checkpoints is not None
    assert list(spec.checkpoints.finetuned.values()) == [
        str(tmp_path / n) for n in ("base", "ft-a", "ft-b")]
    # the soup of the three at equal weights is mergekit's (θ0 + θa + θb) / 3
    from mapframe.merging.checkpoints import TaskVectors
    from mapframe.merging.merger import Merger

    base = load_state_dict(Path(spec.checkpoints.pretrained) / "model.safetensors")
    fts = [load_state_dict(Path(p) / "model.safetensors")
           for p in spec.checkpoints.finetuned.values()]
    merged = Merger(ModelSoup(), TaskVectors(base, fts)).merged_state_dict(np.ones(3))
    assert merged["w"].tolist() == pytest.approx([2.0, 2.0, 2.0])


@pytest.mark.parametrize("method, shared, message", [
    ("task_arithmetic", {"normalize": "false"}, "normalize must be true or false"),
    ("ties", {"density": "abc"}, "density must be a finite number"),
    ("task_arithmetic", {"normalize": True, "lambda": "abc"}, "lambda must be a finite number"),
    ("multislerp", {"eps": None}, "eps must be a finite number >= 0"),
    ("model_stock", {"filter_wise": "no"}, "filter_wise must be true or false"),
])
def test_mergekit_parameters_of_the_wrong_kind_are_one_line_errors(method, shared, message):
    """normalize: "false" was truthy (a different merge, silently); non-numbers ended in raw
    ValueError / TypeError tracebacks."""
    with pytest.raises(ConfigError, match=rf"mergekit {method} parameter: {message}"):
        strategy_for(method, shared, [{}, {}])


def test_a_binary_mergekit_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        expand_mergekit({"mergekit": {"config": str(path)}, "evaluator": EVALUATOR}, tmp_path)


@pytest.mark.parametrize("method, shared, message", [
    ("dare_linear", {"density": 0.5, "normalize": True},
     r"mergekit dare_linear with normalize: true .*no mapframe strategy.*normalize: false"),
    ("multislerp", {"normalize_weights": False},
     r"mergekit multislerp with normalize_weights: false .*no mapframe strategy.*"
     r"normalize_weights: true"),
])
def test_mergekit_settings_without_a_mapframe_equivalent_are_refused(method, shared,
                                                                     message):
    """dare_linear's normalize: true (mergekit divides by the summed weights) and
    multislerp's normalize_weights: false were dropped silently: the study searched a
    different merge than the config asked for."""
    with pytest.raises(ConfigError, match=message) as err:
        strategy_for(method, shared, [{"weight": 0.5}, {"weight": 0.5}])
    assert "\n" not in str(err.value)
    # their defaults (and explicit defaults) still read
    default = {k: v for k, v in shared.items() if k not in ("normalize", "normalize_weights")}
    flipped = {**shared, **{k: not v for k, v in shared.items()
                            if k in ("normalize", "normalize_weights")}}
    assert strategy_for(method, default, [{}, {}]) == strategy_for(method, flipped, [{}, {}])


def test_mergekit_ties_with_rescale_is_refused():
    """TIES' rescale: true (mergekit scales each trimmed task vector back to its L1 norm per
    tensor) was read silently: the study searched another merge than the config's."""
    with pytest.raises(ConfigError, match=r"mergekit ties with rescale: true .*no mapframe "
                                          r"strategy; drop rescale") as err:
        strategy_for("ties", {"density": 0.5, "rescale": True}, [{"weight": 1}, {"weight": 1}])
    assert "\n" not in str(err.value)
    assert (strategy_for("ties", {"density": 0.5, "rescale": False}, [{}, {}])
            == strategy_for("ties", {"density": 0.5}, [{}, {}]))
