"""Tests of the ResNet evaluator on real (tiny) fine-tunes, offline, on the CPU.

The data are scikit-learn's bundled 8x8 digits, upscaled to 32x32 RGB and written as PNG
``ImageFolder`` trees: task ``upright`` (digits 0-9) and task ``rotated`` (digits rotated 90
degrees, labels ``y % 5``: a 5-class head). A reduced-width torchvision ResNet (basic blocks,
one per stage, width 8) is pretrained on ``upright`` and fine-tuned once per task, each with
its own head; training runs once per module (a few seconds).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mapframe_vision.resnet import ResNetEvaluator, build_resnet, default_transform
from PIL import Image
from torchvision.datasets import ImageFolder

from mapframe import MergeStudy
from mapframe.errors import CheckpointError, ConfigError
from mapframe.executors.base import MergeSpec
from mapframe.merging import Merger, TaskArithmetic, TaskVectors, save_state_dict
from mapframe.testing import EvaluatorContract

ARCH: dict[str, Any] = {"block": "basic", "layers": [1, 1, 1, 1], "width": 8}
IMAGE_SIZE = 32
N_TRAIN, N_VAL = 600, 300
TASKS = ("upright", "rotated")
N_CLASSES = {"upright": 10, "rotated": 5}


# ---------------------------------------------------------------------------------------------
# data and checkpoints (built once per module)


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        arr = (img / 16.0 * 255.0).round().astype(np.uint8)
        Image.fromarray(arr).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR).convert(
            "RGB").save(d / f"{i:04d}.png")


def _tensors(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ImageFolder(str(folder), transform=default_transform(IMAGE_SIZE, IMAGE_SIZE))
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
           seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), 50):
            idx = order[s:s + 50]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` itself, batched like the evaluator."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for s in range(0, len(y), 128):
            logits = model(x[s:s + 128])
            correct += int((logits.argmax(-1) == y[s:s + 128]).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y[s:s + 128],
                                                            reduction="sum"))
    return correct / len(y), loss / len(y)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """Single-threaded torch: these models are tiny, and thread hand-offs (worse on a busy
    machine) would cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Image folders, checkpoints (pretrained + one fine-tune per task) and the state dicts."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("resnet")
    digits = load_digits()
    perm = np.random.default_rng(0).permutation(len(digits.target))
    splits = {"train": perm[:N_TRAIN], "val": perm[N_TRAIN:N_TRAIN + N_VAL]}
    variants = {
        "upright": (digits.images, digits.target),
        "rotated": (np.rot90(digits.images, 1, axes=(1, 2)), digits.target % 5),
    }
    data: dict[str, dict[str, Path]] = {}
    tensors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for task, (images, labels) in variants.items():
        data[task] = {}
        for split, idx in splits.items():
            folder = root / task / split
            _write_folder(folder, images[idx], labels[idx])
            data[task][split] = folder
            tensors[(task, split)] = _tensors(folder)

    pre = build_resnet(ARCH, N_CLASSES["upright"])
    _train(pre, *tensors[("upright", "train")], epochs=2, lr=3e-3, seed=0)
    pre_state = _state(pre)
    states = {"pretrained": pre_state}
    for seed, task in enumerate(TASKS, start=1):
        model = build_resnet(ARCH, N_CLASSES[task])
        backbone = {k: v for k, v in pre_state.items() if not k.startswith("fc.")}
        missing, _ = model.load_state_dict(backbone, strict=False)
        assert sorted(missing) == ["fc.bias", "fc.weight"]
        if task == "upright":
            model.fc.load_state_dict({"weight": pre_state["fc.weight"],
                                      "bias": pre_state["fc.bias"]})
        _train(model, *tensors[(task, "train")], epochs=3, lr=3e-3, seed=seed)
        states[task] = _state(model)

    ckpt = root / "ckpt"
    ckpt.mkdir()
    paths = {
        "pretrained": ckpt / "pretrained.pt",
        "upright": ckpt / "upright.safetensors",
        "rotated": ckpt / "rotated.pt",
    }
    torch.save(states["pretrained"], paths["pretrained"])
    save_state_dict(states["upright"], paths["upright"])
    # A DataParallel-style checkpoint: every key under "module.".
    torch.save({f"module.{k}": v for k, v in states["rotated"].items()}, paths["rotated"])
    return {"root": root, "data": data, "tensors": tensors, "states": states,
            "paths": paths}


def _checkpoints(world: dict[str, Any]) -> dict[str, Any]:
    p = world["paths"]
    return {"pretrained": str(p["pretrained"]),
            "finetuned": {t: str(p[t]) for t in TASKS}}


def _task_configs(world: dict[str, Any], refit: bool = False) -> list[dict[str, Any]]:
    out = []
    for t in TASKS:
        cfg: dict[str, Any] = {"name": t, "data": str(world["data"][t]["val"])}
        if refit:
            cfg["refit_data"] = str(world["data"][t]["train"])
        out.append(cfg)
    return out


def _evaluator(world: dict[str, Any], **kwargs: Any) -> ResNetEvaluator:
    kwargs.setdefault("tasks", _task_configs(world, refit=kwargs.get("refit") is not None))
    args = {"arch": ARCH, "image_size": IMAGE_SIZE, "resize_size": IMAGE_SIZE, "device": "cpu",
            **kwargs}
    return ResNetEvaluator(**args)


def _setup(ev: ResNetEvaluator, world: dict[str, Any]) -> Merger:
    ck = _checkpoints(world)
    tv = TaskVectors.from_files(ck["pretrained"], ck["finetuned"],
                                prepare=ev.prepare_checkpoint)
    merger = Merger(TaskArithmetic(), tv)
    ev.setup(merger)
    return merger


def _model_with(world: dict[str, Any], backbone: str, head: str) -> torch.nn.Module:
    """The backbone of checkpoint ``backbone`` with the fine-tuned head of task ``head``."""
    states = world["states"]
    model = build_resnet(ARCH, N_CLASSES[head])
    state = {k: v for k, v in states[backbone].items() if not k.startswith("fc.")}
    state.update({k: v for k, v in states[head].items() if k.startswith("fc.")})
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# (1) endpoints reproduce the models they stand for


def test_fine_tunes_are_real(world: dict[str, Any]) -> None:
    """The fixture's fine-tunes learnt their task (otherwise the tests below prove little)."""
    for task in TASKS:
        acc, _ = _reference(_model_with(world, task, task), *world["tensors"][(task, "val")])
        chance = 1 / N_CLASSES[task]
        assert acc > chance + 0.3, (task, acc)


def test_unit_and_zero_coefficients_reproduce_the_models(world: dict[str, Any]) -> None:
    ev = _evaluator(world, metric="accuracy")
    _setup(ev, world)
    C = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    M = ev.evaluate(C)
    assert M.shape == (3, 2)
    tensors = world["tensors"]
    for i, task in enumerate(TASKS):
        # e_i: fine-tuned model i (its own backbone and head) on task i, exactly.
        acc, _ = _reference(_model_with(world, task, task), *tensors[(task, "val")])
        assert M[i, i] == acc, (task, M[i, i], acc)
        # c = 0: the pretrained backbone with task i's fine-tuned head.
        acc0, _ = _reference(_model_with(world, "pretrained", task), *tensors[(task, "val")])
        assert M[2, i] == acc0, (task, M[2, i], acc0)
    # The rotated task is learnt by its fine-tune, not by the pretrained backbone.
    assert M[1, 1] > M[2, 1]

    loss_ev = _evaluator(world, metric="loss")
    _setup(loss_ev, world)
    L = loss_ev.evaluate(C)
    assert [t.direction for t in loss_ev.tasks] == ["min", "min"]
    for i, task in enumerate(TASKS):
        _, loss = _reference(_model_with(world, task, task), *tensors[(task, "val")])
        assert L[i, i] == pytest.approx(loss, rel=1e-4, abs=1e-5)
        _, loss0 = _reference(_model_with(world, "pretrained", task), *tensors[(task, "val")])
        assert L[2, i] == pytest.approx(loss0, rel=1e-4, abs=1e-5)
    ev.close()
    loss_ev.close()


# ---------------------------------------------------------------------------------------------
# (2) merges are written in place into one resident model


def test_merges_write_in_place(world: dict[str, Any]) -> None:
    ev = _evaluator(world)
    merger = _setup(ev, world)
    assert ev.model_device() == torch.device("cpu")
    state = ev.resident_model.state_dict()
    ptrs = {k: v.data_ptr() for k, v in state.items()}
    c = np.array([0.3, 0.7])
    first = ev.evaluate(c[None])
    for other in ([1.0, 0.0], [0.0, 1.0], [0.9, 0.9]):
        ev.evaluate(np.array([other]))
    again = ev.evaluate(c[None])
    np.testing.assert_array_equal(first, again)
    after = ev.resident_model.state_dict()
    assert {k: v.data_ptr() for k, v in after.items()} == ptrs
    # The resident backbone holds θ(c) for the last c.
    tv = merger.task_vectors
    key = "layer1.0.conv1.weight"
    expected = tv.base(key) + 0.3 * tv.vectors(key)[0] + 0.7 * tv.vectors(key)[1]
    torch.testing.assert_close(after[key], expected)
    assert isinstance(ev.resident_model.fc, torch.nn.Identity)
    # evaluate_tasks scores only the asked task, with the same value.
    before = ev.cost()["tasks_scored"]
    only = ev.evaluate_tasks(c[None], [1])
    assert only.shape == (1, 1)
    assert only[0, 0] == first[0, 1]
    assert ev.cost()["tasks_scored"] == before + 1
    assert ev.cost()["evaluations"] == 6
    assert ev.cost()["refits"] == 0
    with pytest.raises(ConfigError, match="shape"):
        ev.evaluate(np.zeros((1, 3)))
    ev.close()
    with pytest.raises(ConfigError, match="before setup"):
        ev.evaluate(c[None])


def test_heads_of_different_sizes_and_checkpoint_layouts(world: dict[str, Any]) -> None:
    """The 10- and 5-class heads merge fine (heads are dropped), the ``module.`` prefix of
    the rotated checkpoint is stripped, and an explicit ``head`` path is read."""
    ev = _evaluator(world)
    raw = torch.load(world["paths"]["rotated"], weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    prepared = ev.prepare_checkpoint(raw, "rotated.pt")
    assert not any(k.startswith(("module.", "fc.")) for k in prepared)
    assert "layer4.0.bn2.running_var" in prepared
    tasks = _task_configs(world)
    tasks[0]["head"] = str(world["paths"]["upright"])  # the same head, given explicitly
    explicit = _evaluator(world, tasks=tasks)
    _setup(ev, world)
    _setup(explicit, world)
    heads = ev.heads
    assert heads["upright"].out_features == 10 and heads["rotated"].out_features == 5
    torch.testing.assert_close(heads["rotated"].weight,
                               world["states"]["rotated"]["fc.weight"])
    np.testing.assert_array_equal(ev.evaluate([[0.5, 0.5]]), explicit.evaluate([[0.5, 0.5]]))


# ---------------------------------------------------------------------------------------------
# (3) head refit


def test_refit_changes_heads_and_reports_its_cost(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    plain = _evaluator(world)
    _setup(plain, world)
    refit = _evaluator(world, refit={"steps": 40, "lr": 0.01, "batch_size": 64})
    _setup(refit, world)
    c = np.array([[0.5, 0.5]])
    m_plain = plain.evaluate(c)
    with caplog.at_level(logging.INFO, logger="mapframe_vision.resnet"):
        m_refit = refit.evaluate(c)
    cost = refit.cost()
    assert cost["refits"] == 2 and cost["evaluations"] == 1
    assert cost["refit_s"] > 0 and cost["refit_s_per_evaluation"] == cost["refit_s"]
    assert cost["merge_s"] > 0 and cost["score_s"] > 0
    assert plain.cost()["refit_s"] == 0
    assert any("refit" in r.getMessage() for r in caplog.records)
    for task in TASKS:
        info = refit.last_refit[task]
        assert info["samples"] == N_TRAIN and info["steps"] == 40
        # The refit lowers the head's loss on its own training data ...
        assert info["loss_after"] < info["loss_before"], (task, info)
        # ... and moved the head away from the fine-tuned one, which stays as it was.
        w0, _ = refit.finetuned_heads[task]
        assert not torch.equal(refit.heads[task].weight, w0)
        torch.testing.assert_close(w0, world["states"][task]["fc.weight"])
    assert not np.array_equal(m_plain, m_refit)
    # Here the merged backbone's features drifted from what the fine-tuned heads expect: the
    # re-fitted heads classify better on average (0.86 -> 0.93 when this was written).
    assert m_refit.mean() > m_plain.mean()
    assert np.all((m_refit >= 0) & (m_refit <= 1))
    # Deterministic: the same merge after another one refits to the same head and metrics.
    refit.evaluate([[1.0, 0.0]])
    np.testing.assert_array_equal(refit.evaluate(c), m_refit)
    with caplog.at_level(logging.INFO, logger="mapframe_vision.resnet"):
        refit.close()
    assert any("re-fitting 6 heads" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# (4) a whole study


def test_merge_study_finds_a_front(world: dict[str, Any]) -> None:
    ev = _evaluator(world, refit={"steps": 5, "batch_size": 64})
    result = MergeStudy(evaluator=ev, checkpoints=_checkpoints(world), budget=8, seed=0,
                        verify=1).run()
    assert result.coefficient_names == list(TASKS)
    assert len(result.front) >= 1
    assert result.front.coefficients.shape[1] == 2
    assert result.n_evaluated >= 8
    Y = np.asarray(result.history.Y)
    assert Y.shape[1] == 2 and np.all((Y >= 0) & (Y <= 1))
    json.dumps(result.summary())


def test_describe_is_json(world: dict[str, Any]) -> None:
    tasks = _task_configs(world, refit=True)
    tasks[1]["data"] = ImageFolder(str(world["data"]["rotated"]["val"]))  # a Dataset object
    ev = _evaluator(world, tasks=tasks, refit=True, transform=default_transform(32, 32))
    desc = json.loads(json.dumps(ev.describe()))
    assert desc["name"] == "resnet"
    assert desc["arch"] == ARCH
    assert desc["tasks"][0] == {"name": "upright", "data": str(world["data"]["upright"]["val"]),
                                "refit_data": str(world["data"]["upright"]["train"])}
    assert desc["tasks"][1]["data"] == "<ImageFolder of 300 items>"
    assert desc["refit"]["steps"] == 100 and desc["refit"]["optimizer"] == "adam"
    assert desc["transform"].endswith("Compose")
    assert ev.describe() == ev.describe()
    # A Dataset given without preprocessing gets the evaluator's.
    _setup(ev, world)
    assert np.all(np.isfinite(ev.evaluate([[0.2, 0.8]])))


# ---------------------------------------------------------------------------------------------
# (5) bad input


def test_checkpoint_of_another_architecture(world: dict[str, Any], tmp_path: Path) -> None:
    ev = _evaluator(world)
    deeper = build_resnet({**ARCH, "layers": [2, 1, 1, 1]}, 10).state_dict()
    with pytest.raises(CheckpointError, match=r"deeper\.pt.*another architecture") as exc:
        ev.prepare_checkpoint(deeper, "deeper.pt")
    assert "layer1.1." in str(exc.value)  # an unexpected key is named
    assert "layers: [2, 1, 1, 1]" in str(exc.value)  # and the architecture guessed
    wider = build_resnet({**ARCH, "width": 16}, 10).state_dict()
    with pytest.raises(CheckpointError, match=r"wider\.pt.*conv1\.weight.*another arch"):
        ev.prepare_checkpoint(wider, "wider.pt")
    r18 = build_resnet("resnet18", 10).state_dict()
    with pytest.raises(CheckpointError, match="resnet18"):
        ev.prepare_checkpoint(r18, "r18.pt")
    with pytest.raises(CheckpointError, match="no backbone tensors"):
        ev.prepare_checkpoint({"fc.weight": torch.zeros(2, 64)}, "head_only.pt")
    # Through the loading path, with the file's name in the message.
    path = tmp_path / "wider.safetensors"
    save_state_dict(wider, path)
    with pytest.raises(CheckpointError, match=r"wider\.safetensors"):
        TaskVectors.from_files(world["paths"]["pretrained"], {"upright": path},
                               prepare=ev.prepare_checkpoint)


def test_labels_beyond_the_head(world: dict[str, Any]) -> None:
    tasks = _task_configs(world)
    tasks[1]["data"] = str(world["data"]["upright"]["val"])  # labels 0-9, 5-class head
    ev = _evaluator(world, tasks=tasks)
    # an ImageFolder lists its classes: the count differs before any label is read
    with pytest.raises(ConfigError, match=r"'rotated': the dataset has 10 classes.*the head "
                                          r"has 5 classes"):
        _setup(ev, world)


def test_refit_data_labels_beyond_the_head(world: dict[str, Any]) -> None:
    tasks = _task_configs(world, refit=True)
    tasks[1]["refit_data"] = str(world["data"]["upright"]["train"])
    ev = _evaluator(world, tasks=tasks, refit=True)
    with pytest.raises(ConfigError, match=r"rotated \(refit_data\).*5 classes"):
        _setup(ev, world)


def test_refit_data_that_is_the_scored_data_is_an_error(world: dict[str, Any]) -> None:
    """A head re-fitted on the split it is scored on learns those labels: accepted silently
    before."""
    tasks = _task_configs(world, refit=True)
    tasks[0]["refit_data"] = tasks[0]["data"]
    with pytest.raises(ConfigError, match=r"'upright' re-fit their head on the data they are "
                                          r"scored on"):
        _evaluator(world, tasks=tasks, refit=True)


def test_head_errors(world: dict[str, Any], tmp_path: Path) -> None:
    tasks = _task_configs(world)
    tasks[0]["name"] = "digits"  # no checkpoint of that name: its head cannot be found
    with pytest.raises(ConfigError, match="no fine-tuned checkpoint is named 'digits'"):
        _setup(_evaluator(world, tasks=tasks), world)
    wrong = tmp_path / "head.safetensors"
    save_state_dict({"fc.weight": torch.zeros(10, 32), "fc.bias": torch.zeros(10)}, wrong)
    tasks = _task_configs(world)
    tasks[0]["head"] = str(wrong)
    with pytest.raises(CheckpointError, match=r"\(10, 32\).*64 features"):
        _setup(_evaluator(world, tasks=tasks), world)
    # A head_prefix the checkpoints do not use: their fc.* tensors are unexpected.
    with pytest.raises(CheckpointError, match=r"fc\.weight.*head_prefix \(now 'classifier\.'\)"):
        _setup(_evaluator(world, head_prefix="classifier."), world)
    # A head file without the head tensors.
    headless = tmp_path / "headless.safetensors"
    save_state_dict({"classifier.weight": torch.zeros(10, 64)}, headless)
    tasks = _task_configs(world)
    tasks[0]["head"] = str(headless)
    with pytest.raises(CheckpointError, match=r"headless.*no head tensor 'fc\.weight'"):
        _setup(_evaluator(world, tasks=tasks), world)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "resnet19"}, "unknown ResNet arch 'resnet19'"),
        ({"arch": {"block": "basic", "layers": [1, 1, 1]}}, "4 positive integers"),
        ({"arch": {"block": "wide", "layers": [1, 1, 1, 1]}}, "basic' or 'bottleneck"),
        ({"arch": {"layers": [1, 1, 1, 1], "width": 0}}, "width must be a positive"),
        ({"arch": {"layers": [1, 1, 1, 1], "depth": 3}}, "unknown field"),
        ({"metric": "f1"}, "unknown metric"),
        ({"tasks": [{"name": "a", "data": "x"}, {"name": "b", "data": "y"}],
          "refit": {"steps": 10}}, r"refit is on but task\(s\) 'a', 'b' have no refit_data"),
        ({"tasks": [{"name": "a", "data": "x", "refit_data": "z"}, {"name": "b", "data": "y"}],
          "refit": True}, r"task\(s\) 'b' have no refit_data"),
        ({"refit": "yes"}, "refit must be"),
        ({"tasks": [{"name": "a", "data": "x", "refit_data": "y"}],
          "refit": {"lr": -1}}, "refit.lr"),
        ({"tasks": [{"name": "a", "data": "x", "refit_data": "y"}],
          "refit": {"epochs": 3}}, "unknown field"),
        ({"tasks": [{"name": "a", "data": "x", "classnames": "folder"}]}, "unknown field"),
        ({"tasks": [{"name": "a"}]}, "missing 'data'"),
        ({"tasks": [{"name": "a", "data": "x"}, {"name": "a", "data": "y"}]}, "used twice"),
        ({"tasks": []}, "non-empty list"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"preload": "yes"}, "preload"),
        ({"head_prefix": ""}, "head_prefix"),
    ],
)
def test_bad_arguments(world: dict[str, Any], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _evaluator(world, **kwargs)


def test_missing_data_folder(world: dict[str, Any], tmp_path: Path) -> None:
    tasks = _task_configs(world)
    tasks[0]["data"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="image folder not found"):
        _setup(_evaluator(world, tasks=tasks), world)


def test_named_arch_builds_torchvision_keys() -> None:
    import torchvision

    ours = build_resnet({"block": "bottleneck", "layers": [3, 4, 6, 3], "width": 64}, 7)
    ref = torchvision.models.resnet50(weights=None, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()}
    ev = ResNetEvaluator(tasks=[{"name": "a", "data": "x"}], arch="resnet50")
    assert ev.tasks[0].name == "a" and ev.tasks[0].upper == 1.0
    prepared = ev.prepare_checkpoint({f"module.{k}": v for k, v in ref.state_dict().items()},
                                     "r50.pt")
    assert len(prepared) == len(ref.state_dict()) - 2
    assert math.isinf(ResNetEvaluator(tasks=[{"name": "a", "data": "x"}],
                                      metric="loss").tasks[0].upper)


# ---------------------------------------------------------------------------------------------
# (6) registry


def test_registered_as_resnet() -> None:
    from mapframe.plugin import get_registry

    registry = get_registry()
    assert "resnet" in registry.names("evaluator")
    assert registry.get("evaluator", "resnet") is ResNetEvaluator


def test_built_from_a_yaml_config(world: dict[str, Any]) -> None:
    """The config a user writes builds the evaluator through the registry."""
    import yaml

    from mapframe.plugin import get_registry

    data = world["data"]
    config = yaml.safe_load(f"""
evaluator:
  name: resnet
  arch: {{block: basic, layers: [1, 1, 1, 1], width: 8}}
  image_size: 32
  resize_size: 32
  metric: accuracy
  device: cpu
  tasks:
    - {{name: upright, data: {data["upright"]["val"]}, refit_data: {data["upright"]["train"]}}}
    - name: rotated
      data: {data["rotated"]["val"]}
      refit_data: {data["rotated"]["train"]}
      max_samples: 100
  refit: {{steps: 10, lr: 0.01, batch_size: 64, weight_decay: 0.0, max_samples: 200}}
""")
    ev = get_registry().create("evaluator", config["evaluator"])
    assert isinstance(ev, ResNetEvaluator)
    assert ev.refit is not None and ev.refit["max_samples"] == 200
    assert ev.describe()["tasks"][1]["max_samples"] == 100
    _setup(ev, world)
    M = ev.evaluate([[0.5, 0.5]])
    assert M.shape == (1, 2) and np.all(np.isfinite(M))
    assert ev.last_refit["upright"]["samples"] == 200
    with pytest.raises(ConfigError, match="does not take parameter"):
        get_registry().create("evaluator", {**config["evaluator"], "classnames": "folder"})


# ---------------------------------------------------------------------------------------------
# (7) the evaluator contract every mapframe evaluator runs


class TestResNetEvaluatorContract(EvaluatorContract):
    """:class:`mapframe.testing.EvaluatorContract` on the fixture's fine-tunes, with a small
    head refit (its per-task state must not make a task's score depend on which other tasks
    are scored, or in which order) and 100 images per task to keep it fast."""

    @pytest.fixture(autouse=True)
    def _world(self, world: dict[str, Any]) -> None:
        self.world = world

    def make_evaluator(self) -> ResNetEvaluator:
        tasks = [{**t, "max_samples": 100} for t in _task_configs(self.world, refit=True)]
        return _evaluator(self.world, tasks=tasks,
                          refit={"steps": 5, "batch_size": 32, "max_samples": 100})

    def make_merge_spec(self) -> MergeSpec:
        ck = _checkpoints(self.world)
        return MergeSpec(TaskArithmetic(), ck["pretrained"], ck["finetuned"],
                         prepare=self.make_evaluator().prepare_checkpoint)
