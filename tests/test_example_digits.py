"""The offline digits example: training cache, checkpoints, and the vectorised evaluator."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mapframe.executors.base import MergeSpec
from mapframe.testing import EvaluatorContract

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from mapframe.errors import ConfigError  # noqa: E402
from mapframe.examples import digits  # noqa: E402
from mapframe.merging.checkpoints import TaskVectors, load_state_dict  # noqa: E402
from mapframe.merging.merger import Merger  # noqa: E402
from mapframe.merging.task_arithmetic import TaskArithmetic  # noqa: E402

TRAINED = ("rot90", "flip", "shift_labels")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


@pytest.fixture(scope="module")
def ckpts(cache_dir: Path) -> dict:
    return digits.prepare_checkpoints(cache_dir, TRAINED)


@pytest.fixture(scope="module")
def merger(ckpts: dict) -> Merger:
    tv = TaskVectors.from_files(ckpts["pretrained"], ckpts["finetuned"])
    return Merger(TaskArithmetic(), tv)


def _evaluator(merger: Merger, **kwargs: object) -> digits.DigitsEvaluator:
    ev = digits.DigitsEvaluator(**{"tasks": TRAINED, **kwargs})  # type: ignore[arg-type]
    ev.setup(merger)
    return ev


def _model(path: Path) -> torch.nn.Module:
    model = digits.DigitsNet()
    model.load_state_dict(load_state_dict(path))
    return model.eval()


def _accuracy(model: torch.nn.Module, task: str, split: str = "validation") -> float:
    x, y = digits.task_data(task, split)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=-1).numpy()
    return int((pred == y).sum()) / len(y)


def _loss(model: torch.nn.Module, task: str, split: str = "validation") -> float:
    x, y = digits.task_data(task, split)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                       torch.from_numpy(y)))


# --- data -------------------------------------------------------------------------------------


def test_splits_are_disjoint_stratified_and_fixed() -> None:
    sizes = {s: len(digits.task_data("original", s)[1]) for s in digits.SPLITS}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == 898 and abs(sizes["validation"] - sizes["test"]) <= 1
    for split in digits.SPLITS:
        x, y = digits.task_data("original", split)
        assert x.shape == (len(y), 64) and x.dtype == np.float32 and y.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y).tolist()) == set(range(10))
    xv, _ = digits.task_data("rot90", "validation")
    xt, _ = digits.task_data("rot90", "test")
    assert xv.shape != xt.shape or not np.array_equal(xv, xt)
    np.testing.assert_array_equal(xv, digits.task_data("rot90", "validation")[0])


def test_task_variants_transform_inputs_or_labels() -> None:
    x0, y0 = digits.task_data("original", "validation")
    img = x0.reshape(-1, 8, 8)
    x, y = digits.task_data("flip", "validation")
    np.testing.assert_array_equal(x.reshape(-1, 8, 8), img[:, :, ::-1])
    np.testing.assert_array_equal(y, y0)
    x, y = digits.task_data("invert", "validation")
    np.testing.assert_allclose(x, 1.0 - x0)
    x, y = digits.task_data("shift_labels", "validation")
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, (y0 + 3) % 10)
    np.testing.assert_array_equal(digits.task_data("reverse_labels", "validation")[1], 9 - y0)
    assert len(digits.TASKS) >= 8 and set(digits.TASKS) == set(digits.TASK_DESCRIPTIONS)


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoints_are_safetensors_with_manifest(ckpts: dict, cache_dir: Path) -> None:
    from safetensors import safe_open

    root = digits.cache_root(cache_dir)
    assert root.name == digits.CACHE_VERSION
    files = [ckpts["pretrained"], *ckpts["finetuned"].values()]
    assert list(ckpts["finetuned"]) == list(TRAINED)
    for path in files:
        assert path.parent == root and path.suffix == ".safetensors"
        with safe_open(str(path), framework="pt") as fh:
            assert set(fh.keys()) == {
                "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"
            }
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["settings"] == digits.TRAINING.to_dict()
    assert set(manifest["finetuned"]) == set(TRAINED)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert ckpts == digits.checkpoint_paths(cache_dir, TRAINED)


def test_second_call_reuses_the_cache(
    ckpts: dict, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached checkpoints were retrained")

    mtimes = {p: p.stat().st_mtime_ns for p in [ckpts["pretrained"], *ckpts["finetuned"].values()]}
    # patch the module prepare_checkpoints reads them from
    monkeypatch.setattr(digits.training, "_pretrain", no_training)
    monkeypatch.setattr(digits.training, "_finetune", no_training)
    again = digits.prepare_checkpoints(cache_dir, ["flip", "rot90"])
    assert again["pretrained"] == ckpts["pretrained"]
    assert again["finetuned"] == {t: ckpts["finetuned"][t] for t in ("flip", "rot90")}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    with pytest.raises(AssertionError, match="retrained"):  # the patches are the ones read
        digits.prepare_checkpoints(tmp_path, ["flip"], force=True)


def test_head_is_frozen_and_training_is_deterministic_per_task(
    ckpts: dict, tmp_path: Path
) -> None:
    # "flip" trained alone gives the same file as "flip" trained among three tasks.
    alone = digits.prepare_checkpoints(tmp_path, ["flip"])
    assert alone["finetuned"]["flip"].read_bytes() == ckpts["finetuned"]["flip"].read_bytes()
    base = load_state_dict(ckpts["pretrained"])
    for key, value in load_state_dict(alone["pretrained"]).items():
        assert torch.equal(value, base[key])
    flip = load_state_dict(ckpts["finetuned"]["flip"])
    for key, value in load_state_dict(alone["finetuned"]["flip"]).items():
        assert torch.equal(value, flip[key]), key
    for task in TRAINED:
        ft = load_state_dict(ckpts["finetuned"][task])
        assert torch.equal(ft["head.weight"], base["head.weight"])
        assert torch.equal(ft["head.bias"], base["head.bias"])
        assert not torch.equal(ft["fc1.weight"], base["fc1.weight"])


def test_damaged_or_stale_cache_is_retrained(ckpts: dict, cache_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(digits.cache_root(cache_dir), copy / digits.CACHE_VERSION)
    target = copy / digits.CACHE_VERSION / ckpts["finetuned"]["flip"].name
    original = target.read_bytes()
    target.write_bytes(original[: len(original) // 2])  # an interrupted, non-atomic write
    paths = digits.prepare_checkpoints(copy, ["flip"])
    assert paths["finetuned"]["flip"] == target
    assert target.read_bytes() == original

    manifest_path = copy / digits.CACHE_VERSION / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["settings"]["finetune_lr"] = 1.0  # written by other settings: not trusted
    manifest_path.write_text(json.dumps(manifest))
    before = target.stat().st_mtime_ns
    digits.prepare_checkpoints(copy, ["flip"])
    assert target.stat().st_mtime_ns != before
    assert target.read_bytes() == original
    assert json.loads(manifest_path.read_text())["settings"] == digits.TRAINING.to_dict()


def test_finetunes_beat_the_pretrained_model(ckpts: dict) -> None:
    pre = _model(ckpts["pretrained"])
    assert _accuracy(pre, "original") > 0.9
    assert _accuracy(pre, "rot90") < 0.3
    for task in TRAINED:
        own = _accuracy(_model(ckpts["finetuned"][task]), task)
        assert own > 0.85, (task, own)
        assert own > _accuracy(pre, task) + 0.3, task


def test_task_vectors_are_moderate(merger: Merger) -> None:
    ratios = merger.task_vectors.norm_ratios()
    assert all(0.01 < r < 0.6 for r in ratios), ratios


# --- evaluator ----------------------------------------------------------------------------------


def test_tasks_and_describe() -> None:
    ev = digits.DigitsEvaluator(["flip", "rot90"])
    assert [t.name for t in ev.tasks] == ["flip", "rot90"]
    assert all(t.direction == "max" and (t.lower, t.upper) == (0.0, 1.0) for t in ev.tasks)
    loss = digits.DigitsEvaluator(["flip"], metric="loss")
    assert loss.tasks[0].direction == "min" and loss.tasks[0].upper == math.inf
    desc = ev.describe()
    assert desc["name"] == "digits" and desc["tasks"] == ["flip", "rot90"]
    assert desc["split"] == "validation" and desc["metric"] == "accuracy"
    assert digits.DigitsEvaluator.needs_merger
    assert [t.name for t in digits.DigitsEvaluator().tasks] == list(digits.DEFAULT_TASKS)


def test_unit_vectors_reproduce_the_checkpoints_exactly(ckpts: dict, merger: Merger) -> None:
    ev = _evaluator(merger)
    n = len(TRAINED)
    got = ev.evaluate(np.vstack([np.zeros(n), np.eye(n)]))
    assert got.shape == (n + 1, n)
    pre = _model(ckpts["pretrained"])
    assert got[0].tolist() == [_accuracy(pre, t) for t in TRAINED]
    for i, task in enumerate(TRAINED):
        assert got[i + 1, i] == _accuracy(_model(ckpts["finetuned"][task]), task)
        assert got[i + 1, i] > got[0, i]


def test_batch_equals_row_by_row(merger: Merger) -> None:
    rng = np.random.default_rng(0)
    C = rng.uniform(0.0, 1.0, size=(7, len(TRAINED)))
    for metric in digits.METRICS:
        ev = _evaluator(merger, metric=metric, max_batch_size=3)  # also exercises chunking
        batch = ev.evaluate(C)
        rows = np.vstack([ev.evaluate(c) for c in C])
        np.testing.assert_allclose(batch, rows, rtol=0, atol=1e-6)
        big = _evaluator(merger, metric=metric)
        np.testing.assert_allclose(big.evaluate(C), batch, rtol=0, atol=1e-6)
        assert np.isfinite(batch).all()


def test_evaluate_tasks_runs_only_the_requested_tasks(merger: Merger, monkeypatch) -> None:
    C = np.random.default_rng(1).uniform(0.0, 1.0, size=(4, len(TRAINED)))
    ev = _evaluator(merger)
    full = ev.evaluate(C)
    calls: list[int] = []
    forward = ev._forward

    def counting(params, x):
        calls.append(int(x.shape[0]))
        return forward(params, x)

    monkeypatch.setattr(ev, "_forward", counting)
    sub = ev.evaluate_tasks(C, [2, 0])
    np.testing.assert_allclose(sub, full[:, [2, 0]], rtol=0, atol=1e-12)
    n_sub = len(calls)
    calls.clear()
    ev.evaluate(C)
    assert 0 < n_sub < len(calls)  # rot90 and shift_labels share images; flip's are skipped
    with pytest.raises(ConfigError, match="out of range"):
        ev.evaluate_tasks(C, [5])


def test_merges_trade_off(ckpts: dict) -> None:
    pair = ("rot90", "flip")
    tv = TaskVectors.from_files(ckpts["pretrained"], {t: ckpts["finetuned"][t] for t in pair})
    ev = digits.DigitsEvaluator(pair)
    ev.setup(Merger(TaskArithmetic(), tv))
    g = np.linspace(0.0, 1.0, 6)
    C = np.array([(a, b) for a in g for b in g])
    Y = ev.evaluate(C)
    dominated = [
        any((Y[j] >= Y[i]).all() and (Y[j] > Y[i]).any() for j in range(len(Y)))
        for i in range(len(Y))
    ]
    front = Y[~np.array(dominated)]
    assert len(front) >= 3  # a curve, not one point that dominates all others
    assert np.ptp(front[:, 0]) > 0.2 and np.ptp(front[:, 1]) > 0.2


def test_validation_and_test_splits_differ(merger: Merger) -> None:
    C = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.3, 0.6, 0.2], [0.5, 0.5, 0.5]])
    val = _evaluator(merger, split="validation").evaluate(C)
    test = _evaluator(merger, split="test").evaluate(C)
    assert val.shape == test.shape and not np.array_equal(val, test)


def test_loss_metric(ckpts: dict, merger: Merger) -> None:
    ev = _evaluator(merger, metric="loss")
    n = len(TRAINED)
    got = ev.evaluate(np.vstack([np.zeros(n), np.eye(n)]))
    assert (got > 0).all()
    pre = _model(ckpts["pretrained"])
    np.testing.assert_allclose(got[0], [_loss(pre, t) for t in TRAINED], rtol=1e-5)
    for i, task in enumerate(TRAINED):
        own = _loss(_model(ckpts["finetuned"][task]), task)
        np.testing.assert_allclose(got[i + 1, i], own, rtol=1e-5)
        assert got[i + 1, i] < got[0, i]


def test_non_finite_logits_give_nan_accuracy() -> None:
    ev = digits.DigitsEvaluator(["rot90"])
    logits = torch.zeros(2, 4, 10)
    logits[1, 2, 3] = math.nan
    acc = ev._metric(logits, torch.tensor([0, 1, 2, 3]))
    assert acc[0].item() == 0.25 and math.isnan(acc[1].item())


def test_evaluator_errors(merger: Merger) -> None:
    with pytest.raises(ConfigError, match="available: rot90, flip"):
        digits.DigitsEvaluator(["rot90", "mnist"])
    with pytest.raises(ConfigError, match="split"):
        digits.DigitsEvaluator(split="train")
    with pytest.raises(ConfigError, match="metric"):
        digits.DigitsEvaluator(metric="f1")
    with pytest.raises(ConfigError, match="unique"):
        digits.DigitsEvaluator(["flip", "flip"])
    with pytest.raises(ConfigError, match="max_batch_size"):
        digits.DigitsEvaluator(max_batch_size=0)
    ev = digits.DigitsEvaluator(TRAINED)
    with pytest.raises(ConfigError, match="before setup"):
        ev.evaluate(np.zeros((1, 3)))
    with pytest.raises(ConfigError):
        ev.setup(None)
    with pytest.raises(ConfigError, match="device"):
        digits.DigitsEvaluator(TRAINED, device="nonsense").setup(merger)
    ev.setup(merger)
    with pytest.raises(ConfigError, match=r"shape \(B, 3\)"):
        ev.evaluate(np.zeros((2, 2)))
    assert ev.evaluate(np.zeros((0, 3))).shape == (0, 3)
    ev.close()
    with pytest.raises(ConfigError, match="before setup"):
        ev.evaluate(np.zeros((1, 3)))


def test_follows_the_model_evaluator_template(merger: Merger) -> None:
    from mapframe.evaluators.base import ModelEvaluator

    assert issubclass(digits.DigitsEvaluator, ModelEvaluator)
    assert digits.DigitsEvaluator.merge_and_score is not ModelEvaluator.merge_and_score
    C = np.random.default_rng(2).uniform(0.0, 1.0, size=(5, len(TRAINED)))
    for metric in digits.METRICS:
        ev = _evaluator(merger, metric=metric)
        assert isinstance(ev.resident_model, digits.DigitsNet)
        assert ev.model_device() == torch.device("cpu")
        assert ev.resident_model.fc1.weight.shape == (digits.TRAINING.hidden, 64)
        # the template's row-by-row path (merge into the resident model, score_task per
        # task) gives what the vectorised batch merge gives
        with torch.no_grad():
            rows = ModelEvaluator.merge_and_score(ev, C, [2, 0])
        np.testing.assert_allclose(ev.evaluate_tasks(C, [2, 0]), rows, rtol=1e-5, atol=1e-6)
    assert ev.evaluate_tasks(C, [1, 1]).shape == (5, 2)
    np.testing.assert_array_equal(ev.evaluate_tasks(C, [1, 1])[:, 0], ev.evaluate(C)[:, 1])


def test_the_package_modules_hold_one_job_each() -> None:
    from mapframe.examples.digits import config, data, evaluator, model, training

    assert digits.TASKS is data.TASKS and digits.task_data is data.task_data
    assert digits.DigitsNet is model._digits_net_class()
    assert digits.prepare_checkpoints is training.prepare_checkpoints
    assert digits.TRAINING is training.TRAINING
    assert digits.DigitsEvaluator is evaluator.DigitsEvaluator
    assert digits.digits_study_config is config.digits_study_config
    # private helpers of the single-module example stay importable from the package
    assert digits._VARIANTS is data._VARIANTS and digits._variant_data is data._variant_data
    assert digits._digits_net_class is model._digits_net_class
    with pytest.raises(AttributeError):
        digits.NoSuchName  # noqa: B018


def test_evaluator_tasks_may_differ_from_the_checkpoints(merger: Merger) -> None:
    # Three checkpoints (three coefficients), two objectives.
    ev = digits.DigitsEvaluator(["reverse_labels", "rot90"])
    ev.setup(merger)
    got = ev.evaluate(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert got.shape == (2, 2) and got[1, 1] > got[0, 1]


# --- config -------------------------------------------------------------------------------------


def test_study_config(ckpts: dict, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    cfg = digits.digits_study_config(tmp_path / "out", ["rot90", "flip"], checkpoints=ckpts)
    assert cfg["study"] == {
        "name": "digits-2tasks",
        "budget": 20,
        "seed": 0,
        "output": str(tmp_path / "out"),
        "storage": str(tmp_path / "out" / "evaluations.sqlite"),
        "search_bounds": [0.0, 1.0],
        "verify": 5,
        "preference": None,
        "export": False,
    }
    assert cfg["evaluator"] == {
        "name": "digits", "tasks": ["rot90", "flip"], "split": "validation", "metric": "accuracy"
    }
    assert cfg["checkpoints"] == {
        "pretrained": str(ckpts["pretrained"]),
        "finetuned": {t: str(ckpts["finetuned"][t]) for t in ("rot90", "flip")},
    }
    assert cfg["merge_strategy"] == "task_arithmetic"
    assert (cfg["sampler"], cfg["surrogate"], cfg["front_solver"]) == ("sobol", "auto", "auto")
    with_pref = digits.digits_study_config(tmp_path, ["rot90", "flip"], checkpoints=ckpts,
                                           preference=[1, 3])
    assert with_pref["study"]["preference"] == [1.0, 3.0] and with_pref["study"]["export"]
    from mapframe.config import validate_config

    assert validate_config(cfg)["evaluator"]["name"] == "digits"
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg

    eight = digits.digits_study_config(tmp_path, digits.TASKS, cache_dir=tmp_path / "c")
    assert eight["study"]["budget"] == 90 and eight["study"]["name"] == "digits-8tasks"
    assert eight["checkpoints"]["pretrained"].startswith(str(tmp_path / "c"))
    assert digits.digits_study_config(tmp_path, budget=33)["study"]["budget"] == 33
    assert [digits.default_budget(n) for n in (1, 2, 3, 4, 8)] == [20, 20, 20, 30, 90]
    with pytest.raises(ConfigError):
        digits.digits_study_config(tmp_path, ["rot90", "flip"], checkpoints={"finetuned": {}})
    with pytest.raises(ConfigError):
        digits.digits_study_config(tmp_path, budget=0)


def test_import_is_light() -> None:
    code = (
        "import sys, mapframe; before = set(sys.modules); import mapframe.examples.digits; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "assert not new & {'torch', 'sklearn'}, new"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


class TestDigitsEvaluatorContract(EvaluatorContract):
    """The digits evaluator passes the evaluator contract that third parties run too."""

    @pytest.fixture(autouse=True)
    def _checkpoints(self, ckpts: dict) -> None:
        self._ckpts = ckpts

    def make_evaluator(self) -> digits.DigitsEvaluator:
        return digits.DigitsEvaluator(tasks=TRAINED)

    def make_merge_spec(self) -> MergeSpec:
        return MergeSpec(TaskArithmetic(), self._ckpts["pretrained"],
                         {t: self._ckpts["finetuned"][t] for t in TRAINED})


def test_cli_example_end_to_end(cache_dir: Path, tmp_path: Path, capsys) -> None:
    """`mapframe example` trains (cached), writes a config, runs MAP and exports a model."""
    import json

    from mapframe.cli import main
    from mapframe.merging.checkpoints import load_state_dict

    out = tmp_path / "ex"
    argv = ["example", "--tasks", ",".join(TRAINED[:2]), "--cache-dir", str(cache_dir),
            "--output", str(out), "--preference", "0.5,0.5", "-q", "--budget", "12"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 12
    assert summary["verification"]["n_verified"] == 5
    assert all(d["model"] == "sigmoid_quadratic" for d in summary["surrogates"].values())
    merged = load_state_dict(out / "selected.safetensors")
    assert set(merged) == set(load_state_dict(Path(summary["settings"]["merge"]["pretrained"]
                                                   ["path"])))
    assert (out / "config.yaml").is_file() and (out / "front.png").stat().st_size > 1000
    # rerunning the written config reuses every evaluation
    assert main(["run", str(out / "config.yaml"), "-q", "--budget", "12"]) == 0
    assert "0 new this run, 17 reused" in capsys.readouterr().out


def test_export_and_load_results_from_a_finished_results_folder(cache_dir: Path,
                                                               tmp_path: Path, capsys) -> None:
    """`mapframe export` and `mapframe.load_results` read a finished folder back: the
    study's own selection exports the same model as the run did, any front row or a new
    preference exports without evaluating anything, and bad requests are one-line errors."""
    import torch

    import mapframe
    from mapframe.cli import main
    from mapframe.merging.checkpoints import load_state_dict

    out = tmp_path / "ex"
    assert main(["example", "--tasks", ",".join(TRAINED[:2]), "--cache-dir", str(cache_dir),
                 "--output", str(out), "--preference", "0.5,0.5", "-q", "--budget",
                 "12"]) == 0
    capsys.readouterr()
    saved = mapframe.load_results(out)
    assert saved.task_names == list(TRAINED[:2]) and len(saved.front) > 10
    assert saved.selected is not None and saved.front.measured[saved.selected]
    # the study's own choice: the same weights as the run's selected.safetensors
    assert main(["export", str(out), "-o", str(tmp_path / "again.safetensors")]) == 0
    line = capsys.readouterr().out
    assert f"front point {saved.selected} " in line and "measured" in line
    a = load_state_dict(out / "selected.safetensors")
    b = load_state_dict(tmp_path / "again.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a row of front.csv, and a new preference (selected like the study would)
    assert main(["export", str(out), "--point", "0", "-o", str(tmp_path / "p0")]) == 0
    assert (tmp_path / "p0.safetensors").is_file()
    i = saved.select([0.9, 0.1])
    assert main(["export", str(out), "--preference", "0.9,0.1", "-o",
                 str(tmp_path / "pref.safetensors")]) == 0
    assert f"front point {i} " in capsys.readouterr().out
    c = saved.front.coefficients[i]
    merged = load_state_dict(tmp_path / "pref.safetensors")
    tv = mapframe.merging.TaskVectors.from_files(
        saved.config["checkpoints"]["pretrained"], saved.config["checkpoints"]["finetuned"])
    key = next(iter(tv.keys()))
    expect = tv.base(key).float() + sum(float(ci) * tv.vectors(key)[j].float()
                                        for j, ci in enumerate(c))
    torch.testing.assert_close(merged[key].float(), expect.to(merged[key].dtype).float())
    # one-line errors
    for argv, msg in ((["export", str(out), "--point", "999", "-o", "x"], "out of range"),
                      (["export", str(out), "--point", "best", "-o", "x"], "--point must"),
                      (["export", str(out), "--preference", "1,2,3", "-o", "x"],
                       "2 non-negative weights"),
                      (["export", str(tmp_path), "-o", "x"], "not a mapframe results")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and err.count("\n") == 0, err


def test_a_bad_preference_fails_before_any_config_is_written(cache_dir: Path, tmp_path: Path,
                                                              capsys) -> None:
    from mapframe.cli import main

    out = tmp_path / "ex"
    argv = ["example", "--tasks", ",".join(TRAINED[:2]), "--cache-dir", str(cache_dir),
            "--output", str(out), "--preference", "1,2,3", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "preference" in err
    assert not (out / "config.yaml").exists()


def test_the_readmes_python_snippets_run_as_written(ckpts: dict, cache_dir: Path,
                                                   tmp_path: Path) -> None:
    """Every ```python block of the README, run as written in a fresh folder (the example's
    checkpoints come from this module's cache, so nothing is trained twice)."""
    import os
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2
    env = {**os.environ, "MAPFRAME_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    for i, code in enumerate(blocks):
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README snippet {i}:\n{code}\n{done.stderr[-2000:]}"
    assert (tmp_path / "merged.safetensors").is_file()
    assert (tmp_path / "study.sqlite").is_file()


def test_cli_example_and_export_bad_arguments_are_one_line_errors(cache_dir: Path,
                                                                  tmp_path: Path,
                                                                  capsys) -> None:
    """An all-zero preference wrote config.yaml before failing; an output that is a file
    ended in a raw FileExistsError; --point beside --preference was silently ignored."""
    from mapframe.cli import main

    base = ["example", "--tasks", ",".join(TRAINED[:2]), "--cache-dir", str(cache_dir),
            "-q", "--budget", "8"]
    out = tmp_path / "zero"
    assert main([*base, "--output", str(out), "--preference", "0,0"]) == 2
    assert "not all 0" in capsys.readouterr().err and not out.exists()
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    assert main([*base, "--output", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err and afile.read_text() == "x"
    done = tmp_path / "done"
    assert main([*base, "--output", str(done), "--preference", "0.5,0.5"]) == 0
    capsys.readouterr()
    assert main(["export", str(done), "--point", "3", "--preference", "1,0", "-o",
                 str(tmp_path / "m.safetensors")]) == 2
    assert "give --point or --preference, not both" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
