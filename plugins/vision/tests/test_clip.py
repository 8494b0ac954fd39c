"""The zero-shot CLIP evaluator on a tiny CLIP trained for real (offline, CPU).

References are computed independently of the evaluator: open_clip models built here, images
read from the ImageFolder with PIL and open_clip's own preprocessing.
"""

from __future__ import annotations

import csv
import gc
import importlib
import importlib.util
import json
import os
import pickle
import resource
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from mapframe_vision import clip as clip_module
from mapframe_vision.clip import ClipEvaluator
from mapframe_vision.heads import HeadCache
from mapframe_vision.toy import TINY_CLIP_CONFIG
from PIL import Image

from mapframe.errors import CheckpointError, ConfigError
from mapframe.executors.base import MergeSpec
from mapframe.merging import TaskArithmetic
from mapframe.testing import EvaluatorContract

TASKS = ("digits", "digits_rot90")


# -- independent references -------------------------------------------------------------------
def _open_clip(setup: Any) -> Any:
    import open_clip

    open_clip.add_model_config(setup.model_config)
    return open_clip


def _folder_tensors(folder: str, preprocess: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of an ImageFolder (class folders sorted = label order), preprocessed."""
    xs, ys = [], []
    classes = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    for label, cdir in enumerate(classes):
        for f in sorted(cdir.iterdir()):
            with Image.open(f) as im:
                xs.append(preprocess(im.convert("RGB")))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def _visual_state(path: str) -> dict[str, torch.Tensor]:
    """The image tower of a safetensors file (full CLIP or image tower alone)."""
    from safetensors.torch import load_file

    state = load_file(path)
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state


def _reference_accuracy(setup: Any, visual_state: dict[str, torch.Tensor], task: str,
                        head: torch.Tensor) -> float:
    """Accuracy of a fresh open_clip image tower holding ``visual_state`` on ``task``."""
    open_clip = _open_clip(setup)
    model, _, preprocess = open_clip.create_model_and_transforms(setup.model, pretrained=None)
    visual = model.visual.eval()
    visual.load_state_dict(visual_state)
    x, y = _folder_tensors(setup.data[task], preprocess)
    with torch.no_grad():
        logits = []
        for xb in x.split(128):
            f = visual(xb)
            logits.append((f / f.norm(dim=-1, keepdim=True)) @ head.T)
    pred = torch.cat(logits).argmax(dim=-1)
    return int((pred == y).sum()) / len(y)


def _hand_head(setup: Any, classnames: list[str], templates: list[str]) -> torch.Tensor:
    open_clip = _open_clip(setup)
    full = open_clip.create_model(setup.model, pretrained=setup.pretrained).eval()
    tokenizer = open_clip.get_tokenizer(setup.model)
    rows = []
    with torch.no_grad():
        for name in classnames:
            emb = full.encode_text(tokenizer([t.format(name) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.mean(dim=0)
            rows.append(mean / mean.norm())
        return torch.stack(rows) * full.logit_scale.exp()


# -- 1. heads ---------------------------------------------------------------------------------
def test_zero_shot_heads_match_a_hand_computed_head(clip_setup, make_clip_evaluator):
    templates = ["a photo of the number {}.", "a {} digit.", "{}"]
    tasks = clip_setup.task_configs()
    tasks[0]["templates"] = templates
    ev = make_clip_evaluator(tasks=tasks)
    heads = ev.heads
    assert set(heads) == set(TASKS)
    want = _hand_head(clip_setup, clip_setup.classnames["digits"], templates)
    assert heads["digits"].shape == (10, TINY_CLIP_CONFIG["embed_dim"])
    torch.testing.assert_close(heads["digits"], want, rtol=1e-5, atol=1e-5)
    # the second task has no preset: the default template
    want_default = _hand_head(clip_setup, clip_setup.classnames["digits_rot90"],
                              ["a photo of a {}."])
    torch.testing.assert_close(heads["digits_rot90"], want_default, rtol=1e-5, atol=1e-5)
    # the templates matter (the comparison above could not pass with the wrong ones)
    assert not torch.allclose(heads["digits"], want_default, atol=1e-3)
    assert ev.class_names["digits"] == clip_setup.classnames["digits"]


# -- 2. head cache ----------------------------------------------------------------------------
def test_head_cache_is_read_and_keyed_by_class_names(clip_setup, make_clip_evaluator,
                                                      tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    base = clip_setup.task_configs()
    base[1]["templates"] = ["a rotated photo of a {}."]  # else both tasks share one head
    first = make_clip_evaluator(tasks=base, head_cache=cache)
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 2 and all(f.name.startswith(clip_setup.model) for f in files)

    def boom(self):
        raise RuntimeError("the full model was built again")

    monkeypatch.setattr(ClipEvaluator, "_full_model", boom)
    second = make_clip_evaluator(tasks=base, head_cache=cache)
    for t in TASKS:
        assert torch.equal(first.heads[t], second.heads[t])

    # other class names: another key, so the (patched) full model is needed again
    tasks = [dict(t) for t in base]
    tasks[0]["classnames"] = [f"digit {n}" for n in clip_setup.classnames["digits"]]
    with pytest.raises(RuntimeError, match="built again"):
        make_clip_evaluator(tasks=tasks, head_cache=cache)
    ident = second._identity()
    k1 = HeadCache.key(ident, clip_setup.classnames["digits"], ["a photo of a {}."])
    k2 = HeadCache.key(ident, tasks[0]["classnames"], ["a photo of a {}."])
    assert k1 != k2

    monkeypatch.undo()
    third = make_clip_evaluator(tasks=tasks, head_cache=cache)
    assert len(list(cache.glob("*.safetensors"))) == 3
    assert not torch.allclose(third.heads["digits"], first.heads["digits"])
    assert torch.equal(third.heads["digits_rot90"], first.heads["digits_rot90"])
    assert not list(cache.glob("*.tmp"))  # writes are atomic: no temp files left


# -- 3. exactness -----------------------------------------------------------------------------
def test_unit_and_zero_coefficients_reproduce_the_models_exactly(clip_setup, clip_evaluator):
    ev = clip_evaluator
    M = ev.evaluate(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert M.shape == (3, 2)
    pre = _visual_state(clip_setup.pretrained)
    for i, task in enumerate(TASKS):
        ft = _reference_accuracy(clip_setup, _visual_state(clip_setup.finetuned[task]), task,
                                 ev.heads[task])
        zero = _reference_accuracy(clip_setup, pre, task, ev.heads[task])
        assert M[i, i] == ft, (task, M[i, i], ft)
        assert M[2, i] == zero, (task, M[2, i], zero)
        # the fine-tune learnt its task: otherwise e_i and 0 could not be told apart
        assert ft > zero + 0.05


# -- 4. in-place merging ----------------------------------------------------------------------
def _n_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_merges_are_written_in_place_without_leaks(clip_evaluator):
    ev = clip_evaluator
    visual = ev.resident_model
    assert ev.model_device() == torch.device("cpu")
    ptrs = {k: p.data_ptr() for k, p in visual.named_parameters()}
    ids = {k: id(p) for k, p in visual.named_parameters()}
    a = ev.evaluate(np.array([0.3, 0.7]))
    # the resident tower holds the merge just evaluated
    want = ev.merger.merged_state_dict(np.array([0.3, 0.7]))
    for k, t in visual.state_dict().items():
        torch.testing.assert_close(t, want[k], rtol=0, atol=0)
    ev.evaluate(np.array([[1.0, 0.0], [0.9, 0.1]]))
    b = ev.evaluate(np.array([0.3, 0.7]))
    np.testing.assert_array_equal(a, b)
    assert ev.resident_model is visual
    assert {k: p.data_ptr() for k, p in visual.named_parameters()} == ptrs
    assert {k: id(p) for k, p in visual.named_parameters()} == ids

    rng = np.random.default_rng(0)
    single = [1]  # one task: the leak check is about merges, not scoring
    ev.evaluate_tasks(rng.uniform(0, 1, (3, 2)), single)  # warm-up
    n0, rss0 = _n_tensors(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    merges0 = ev.timings["merges"]
    for c in rng.uniform(-0.5, 1.5, (40, 2)):
        ev.evaluate_tasks(c, single)
    n1, rss1 = _n_tensors(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert ev.timings["merges"] == merges0 + 40
    assert n1 - n0 <= 5, f"{n1 - n0} tensors more after 40 merges"
    assert (rss1 - rss0) / 1024 < 64, f"peak memory grew {(rss1 - rss0) / 1024:.0f} MB"
    assert {k: p.data_ptr() for k, p in visual.named_parameters()} == ptrs


# -- 5. checkpoint layouts --------------------------------------------------------------------
_ENCODER_SRC = '''
import torch


class ImageEncoder(torch.nn.Module):
    """As task-vectors' src/modeling.py: the open_clip CLIP without its text transformer."""

    def __init__(self, model, preprocess):
        super().__init__()
        self.model = model
        self.val_preprocess = preprocess
        delattr(self.model, "transformer")

    def forward(self, images):
        return self.model.encode_image(images)
'''


def _full_clip(setup: Any, visual_file: str | None) -> Any:
    open_clip = _open_clip(setup)
    model = open_clip.create_model(setup.model, pretrained=setup.pretrained).eval()
    if visual_file is not None:
        model.visual.load_state_dict(_visual_state(visual_file))
    return model


def test_checkpoint_layouts_give_identical_metrics(clip_setup, make_clip_evaluator, tmp_path):
    open_clip = _open_clip(clip_setup)
    layouts: dict[str, tuple[str, dict[str, str]]] = {
        "tower": (clip_setup.pretrained, dict(clip_setup.finetuned)),
    }
    # (b) full CLIP state dicts, torch.save(model.state_dict())
    full = {}
    for name, vis in [("pretrained", None), *clip_setup.finetuned.items()]:
        p = tmp_path / "full" / f"{name}.pt"
        p.parent.mkdir(exist_ok=True)
        torch.save(_full_clip(clip_setup, vis).state_dict(), p)
        full[name] = str(p)
    layouts["full_state_dict"] = (full.pop("pretrained"), full)

    # (c) task-vectors: whole pickled ImageEncoder modules of a module that then disappears
    modname = f"tv_modeling_{uuid.uuid4().hex[:8]}"
    moddir = tmp_path / "tvsrc"
    moddir.mkdir()
    (moddir / f"{modname}.py").write_text(_ENCODER_SRC)
    sys.path.insert(0, str(moddir))
    try:
        mod = importlib.import_module(modname)
        _, _, preprocess = open_clip.create_model_and_transforms(clip_setup.model)
        pickled = {}
        for name, vis in [("zeroshot", None), *clip_setup.finetuned.items()]:
            enc = mod.ImageEncoder(_full_clip(clip_setup, vis), preprocess)
            assert not hasattr(enc.model, "transformer")
            p = tmp_path / "tv" / name / "finetuned.pt"
            p.parent.mkdir(parents=True)
            torch.save(enc, p)
            pickled[name] = str(p)
    finally:
        sys.path.remove(str(moddir))
        sys.modules.pop(modname, None)
        importlib.invalidate_caches()
    assert importlib.util.find_spec(modname) is None
    with pytest.raises(pickle.UnpicklingError):
        torch.load(pickled["digits"], weights_only=True)
    with pytest.raises(ModuleNotFoundError):  # its class really is gone
        torch.load(pickled["digits"], weights_only=False)
    layouts["pickled_image_encoder"] = (pickled.pop("zeroshot"), pickled)

    C = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.3, 0.9]])
    from mapframe.executors.base import MergeSpec
    from mapframe.merging.task_arithmetic import TaskArithmetic

    results, keys = {}, {}
    for layout, (pre, fts) in layouts.items():
        ev = make_clip_evaluator(setup=False, head_cache=tmp_path / "heads")
        merger = MergeSpec(TaskArithmetic(), pre, fts, prepare=ev.prepare_checkpoint).build()
        keys[layout] = sorted(merger.task_vectors.keys())
        ev.setup(merger)
        results[layout] = ev.evaluate(C)
    ref = results["tower"]
    assert np.unique(ref).size > 3  # different merges score differently
    for layout, M in results.items():
        assert keys[layout] == keys["tower"], layout
        np.testing.assert_array_equal(M, ref, err_msg=layout)


# -- 6. errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("change", [{"layers": 3}, {"width": 32}])
def test_checkpoint_of_another_architecture(clip_setup, make_clip_evaluator, clip_merger,
                                            tmp_path, change):
    from mapframe.merging.checkpoints import load_state_dict, save_state_dict

    open_clip = _open_clip(clip_setup)
    name = f"mapframe-tiny-vit-other-{'-'.join(f'{k}{v}' for k, v in change.items())}"
    cfg = json.loads(json.dumps(TINY_CLIP_CONFIG))
    cfg["vision_cfg"].update(change)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    other = open_clip.create_model(name, pretrained=None)
    bad = save_state_dict(other.visual.state_dict(), tmp_path / "other.safetensors")

    ev = make_clip_evaluator(setup=False)
    with pytest.raises(CheckpointError, match="another architecture") as ei:
        clip_merger(ev, clip_setup.pretrained,
                    {"digits": str(bad), "digits_rot90": clip_setup.finetuned["digits_rot90"]})
    assert str(bad) in str(ei.value)
    # the right architecture passes, under the tower's own key names
    good = ev.prepare_checkpoint(load_state_dict(clip_setup.pretrained), "pre")
    assert set(good) == set(_visual_state(clip_setup.pretrained))


class _NoClasses:
    """A Dataset of PIL images without a ``classes`` attribute."""

    def __init__(self, n: int = 8, label_max: int = 9) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
        self.labels = np.linspace(0, label_max, n).astype(int).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return Image.fromarray(self.images[i]), self.labels[i]


def test_missing_class_names(make_clip_evaluator):
    with pytest.raises(ConfigError, match="no class names"):
        make_clip_evaluator(tasks=[{"name": "mine", "data": _NoClasses()}])


def test_image_folder_without_images(make_clip_evaluator, tmp_path):
    root = tmp_path / "empty"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "notes.txt").write_text("no image here")
    with pytest.raises(ConfigError, match="holds no images"):
        make_clip_evaluator(tasks=[{"name": "mine", "data": str(root),
                                    "classnames": ["a", "b"]}])


def test_labels_beyond_the_class_names(make_clip_evaluator):
    with pytest.raises(ConfigError, match="label 9 but the head has 3 classes"):
        make_clip_evaluator(tasks=[{"name": "mine", "data": _NoClasses(label_max=9),
                                    "classnames": ["x", "y", "z"]}])


def test_templates_without_placeholder(clip_setup, make_clip_evaluator):
    tasks = clip_setup.task_configs(["digits"], templates=["a photo of a digit."])
    with pytest.raises(ConfigError, match=r"exactly one '\{\}'"):
        make_clip_evaluator(tasks=tasks)


def test_unknown_model_and_pretrained_tag(clip_setup, tmp_path):
    tasks = clip_setup.task_configs(["digits"])
    ev = ClipEvaluator(tasks, model="ViT-B-32x", pretrained="openai", head_cache=None)
    with pytest.raises(ConfigError, match=r"unknown open_clip model 'ViT-B-32x'.*ViT-B-32"):
        ev.prepare_checkpoint({}, "x")
    ev = ClipEvaluator(tasks, model="RN50", pretrained="no-such-tag", head_cache=None)
    with pytest.raises(ConfigError, match=r"no pretrained tag 'no-such-tag'.*openai"):
        ev.prepare_checkpoint({}, "x")
    missing = str(tmp_path / "nowhere" / "clip.safetensors")
    ev = ClipEvaluator(tasks, model="RN50", pretrained=missing, head_cache=None)
    with pytest.raises(CheckpointError, match="not found"):
        ev.prepare_checkpoint({}, "x")


def test_pretrained_file_that_is_no_full_clip(clip_setup, make_clip_evaluator, tmp_path):
    """The text tower comes from ``pretrained``: an image tower alone, or a file that is no
    checkpoint at all, is a CheckpointError naming the file (not open_clip's own error)."""
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"study:\n  name: not a checkpoint\n")
    for path in (clip_setup.finetuned["digits"], str(junk)):
        with pytest.raises(CheckpointError, match="not a CLIP checkpoint of mapframe-tiny-vit"
                           ) as ei:
            make_clip_evaluator(pretrained=path, head_cache=None)
        assert str(ei.value).startswith(path)


class _NoMerge:
    """A merger stand-in for a setup that must fail before any merge."""

    def resident_params(self, model: Any) -> dict[str, torch.Tensor]:
        return {}


def test_pretrained_tag_offline_says_where_to_put_the_file(clip_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    tasks = clip_setup.task_configs(["digits"], max_samples=2)
    ev = ClipEvaluator(tasks, model="RN50", pretrained="openai", cache_dir=str(empty),
                       head_cache=str(tmp_path / "heads"), device="cpu")
    try:
        with pytest.raises(CheckpointError) as ei:
            ev.setup(_NoMerge())  # type: ignore[arg-type]
    finally:
        ev.close()
    msg = str(ei.value)
    assert "'openai' weights of open_clip model RN50" in msg
    assert "pretrained: /path/to/that/file" in msg
    assert "resnet50_clip.openai" in msg  # where to download them from
    assert not list(empty.iterdir())  # nothing half-downloaded


# -- 7. a study through the CLI ---------------------------------------------------------------
def _cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "mapframe.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_two_task_study_through_the_cli(clip_setup, clip_evaluator, tmp_path):
    cfg = {
        "study": {"name": "clip-2tasks", "budget": 8, "seed": 0, "output": "out"},
        "evaluator": {"name": "clip", "tasks": clip_setup.task_configs(),
                      "model": clip_setup.model, "model_config": clip_setup.model_config,
                      "pretrained": clip_setup.pretrained, "device": "cpu",
                      "head_cache": str(tmp_path / "heads")},
        "checkpoints": {"pretrained": clip_setup.pretrained,
                        "finetuned": dict(clip_setup.finetuned)},
    }
    path = tmp_path / "clip.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = _cli("run", str(path), "-q", "--no-plot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    for f in ("front.csv", "front.json", "evaluations.csv", "summary.json",
              "evaluations.sqlite"):
        assert (out / f).is_file(), f
    front = json.loads((out / "front.json").read_text())
    assert [t["name"] for t in front["tasks"]] == list(TASKS)
    assert len(front["points"]) > 0
    with open(out / "evaluations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    C = np.array([[float(r[f"c_{t}"]) for t in TASKS] for r in rows])
    M = np.array([[float(r[t]) for t in TASKS] for r in rows])
    assert np.all((M >= 0) & (M <= 1))
    # every stored metric is what the evaluator gives for that merge in this process
    np.testing.assert_allclose(M, clip_evaluator.evaluate(C), rtol=0, atol=1e-12)
    for i in range(2):  # the e_i vertices, where the sampler hit them
        e = np.eye(2)[i]
        for j in np.flatnonzero(np.all(np.isclose(C, e), axis=1)):
            assert 0.0 <= M[j, i] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["evaluator"]["name"] == "clip"
    assert summary["n_search_evaluations"] == 8
    # both tasks have the same class names and (default) template: one cached head
    assert len(list((tmp_path / "heads").glob("*.safetensors"))) == 1


def test_plugins_command_lists_clip_and_resnet(tmp_path):
    done = _cli("plugins", "--json", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    vision = [r for r in rows if r["package"] == "mapframe-vision"]
    assert len(vision) == 1 and vision[0]["error"] is None
    assert {"evaluator:clip", "evaluator:resnet"} <= set(vision[0]["components"])
    text = _cli("plugins", cwd=tmp_path, timeout=120)
    assert text.returncode == 0
    assert "mapframe-vision" in text.stdout and "clip, resnet" in text.stdout


# -- 8. evaluate_tasks ------------------------------------------------------------------------
def _n_images(setup: Any) -> int:
    return sum(1 for _ in Path(setup.data["digits_rot90"]).rglob("*.png"))


class _CountingFolder:
    """An ImageFolder that counts the images read from it."""

    def __init__(self, root: str) -> None:
        from torchvision.datasets import ImageFolder

        self.base = ImageFolder(root)
        self.classes = self.base.classes
        self.reads = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        self.reads += 1
        return self.base[i]


def test_evaluate_tasks_scores_only_the_requested_tasks(clip_setup, make_clip_evaluator,
                                                        monkeypatch):
    data = {t: _CountingFolder(clip_setup.data[t]) for t in TASKS}
    tasks = [{"name": t, "data": data[t], "classnames": clip_setup.classnames[t]}
             for t in TASKS]
    ev = make_clip_evaluator(tasks=tasks, preload=False)
    scored: list[str] = []
    real = clip_module.score_classifier

    def spy(logits_fn, evalset, device, precision):
        scored.append(evalset.name)
        return real(logits_fn, evalset, device, precision)

    monkeypatch.setattr(clip_module, "score_classifier", spy)
    reads = {t: d.reads for t, d in data.items()}
    c = np.array([[0.4, 0.6], [1.0, 0.2]])
    only = ev.evaluate_tasks(c, [1])
    assert only.shape == (2, 1)
    assert scored == ["digits_rot90", "digits_rot90"]
    assert data["digits"].reads == reads["digits"]  # never read
    assert data["digits_rot90"].reads == reads["digits_rot90"] + 2 * _n_images(clip_setup)
    both = ev.evaluate(c)
    assert scored[2:] == ["digits", "digits_rot90"] * 2
    np.testing.assert_array_equal(only[:, 0], both[:, 1])
    assert ev.tasks[1].name == "digits_rot90" and ev.tasks[1].direction == "max"


def test_describe_is_json_and_stable_across_evaluations(clip_setup, make_clip_evaluator):
    """The store's fingerprint (``describe``) must not change while a study runs."""
    ev = make_clip_evaluator(setup=False)
    before = json.dumps(ev.describe(), sort_keys=True)
    fresh = make_clip_evaluator()
    fresh.evaluate(np.array([[0.2, 0.4], [1.0, 1.0]]))
    assert fresh.timings["merges"] == 2
    assert json.dumps(fresh.describe(), sort_keys=True) == before
    desc = json.loads(before)
    assert desc["name"] == "clip" and desc["model"] == clip_setup.model
    assert [t["name"] for t in desc["tasks"]] == list(TASKS)


# -- 9. the evaluator contract every mapframe evaluator runs ----------------------------------
@pytest.fixture(scope="module")
def contract_head_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One zero-shot head cache for the contract checks: heads are built once."""
    return tmp_path_factory.mktemp("contract-heads")


class TestClipEvaluatorContract(EvaluatorContract):
    """:class:`mapframe.testing.EvaluatorContract` on the toy CLIP fixture (32 images per task
    to keep it fast)."""

    @pytest.fixture(autouse=True)
    def _fixture_files(self, clip_setup: Any, contract_head_cache: Path) -> None:
        self.files = clip_setup
        self.head_cache = contract_head_cache

    def make_evaluator(self) -> ClipEvaluator:
        tasks = self.files.task_configs(max_samples=32)
        return ClipEvaluator(**self.files.evaluator_kwargs(self.head_cache, tasks))

    def make_merge_spec(self) -> MergeSpec:
        return MergeSpec(TaskArithmetic(), self.files.pretrained, dict(self.files.finetuned),
                         prepare=self.make_evaluator().prepare_checkpoint)
