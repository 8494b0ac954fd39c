"""``mapframe-llm example`` end to end: toy checkpoints prepared once, a study config written,
``mapframe run`` on it in-process, and the results folder a user gets."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mapframe_llm import cli

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RESULT_FILES = ("config.yaml", "front.csv", "front.json", "evaluations.csv", "surrogates.json",
                "summary.json", "evaluations.sqlite")


def _shard_times(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("model-*.safetensors"))}


@pytest.mark.slow
def test_lm_example_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["example", "--output", str(out), "--workdir", str(work), "--budget", "8",
            "--preference", "0.5,0.5", "-q"]
    assert cli.main(argv) == 0
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    # The merged model for the preference: a model folder that transformers loads.
    selected = out / "selected"
    assert (selected / "config.json").is_file() and (selected / "mapframe_merge.json").is_file()
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(selected))
    assert merged.config.model_type == "llama"

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["evaluator"]["name"] == "causal_lm"
    assert [t["name"] for t in cfg["evaluator"]["tasks"]] == ["lang_a", "lang_b"]
    data = [Path(t["data"]) for t in cfg["evaluator"]["tasks"]]
    assert [p.suffix for p in data] == [".txt", ".jsonl"] and all(p.is_absolute() for p in data)
    base = Path(cfg["checkpoints"]["pretrained"])
    assert base.is_relative_to(work) and (base / "model.safetensors.index.json").is_file()
    assert set(cfg["checkpoints"]["finetuned"]) == {"lang_a", "lang_b"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 8
    assert summary["n_failed_or_invalid"] == 0
    assert summary["verification"]["n_verified"] == 3
    assert [t["name"] for t in summary["tasks"]] == ["lang_a", "lang_b"]
    assert all(t["direction"] == "min" for t in summary["tasks"])
    with (out / "evaluations.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 8
    losses = [float(r[k]) for r in rows for k in r if k in ("lang_a", "lang_b")]
    assert losses and all(0.5 < v < 6.0 for v in losses)  # losses in nats of a real LM
    # the corners bracket the trade-off: merges move each loss between base and fine-tune
    prepared = json.loads((work / "example.json").read_text())["result"]
    assert prepared["losses"]["lang_a"]["lang_a"] < prepared["losses"]["base"]["lang_a"]
    captured = capsys.readouterr()
    assert "results in" in captured.err and str(out) in captured.err

    # A re-run reuses the prepared checkpoints and every stored evaluation.
    before = _shard_times(base)
    assert cli.main(argv) == 0
    assert _shard_times(base) == before
    assert "0 new this run" in capsys.readouterr().out


def test_classification_study_config_runs(cls_files: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The classification example's config, on the shared MiniLM fixture (no re-training):
    its front is a real trade-off between the tasks, and the verified merges confirm it."""
    from mapframe.cli import main as mapframe_main

    prepared = {"pretrained": cls_files.pretrained, "finetuned": cls_files.finetuned,
                "data": cls_files.data, "labels": cls_files.labels}
    out = tmp_path / "cls"
    # 10 search evaluations, not 6: with as many samples as parameters the sigmoid-quadratic
    # surrogates only interpolate them and the front is no trade-off (the example uses 12)
    cfg = cli.example_config(prepared, out, kind="classification", budget=10, verify=3,
                             device="cpu")
    assert cfg["evaluator"]["name"] == "text_classification"
    assert cfg["evaluator"]["tasks"][0]["labels"] == cls_files.labels[cls_files.tasks[0]]
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert mapframe_main(["run", str(out / "config.yaml"), "-q", "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 10 and summary["n_failed_or_invalid"] == 0
    assert all(t["direction"] == "max" for t in summary["tasks"])
    front = json.loads((out / "front.json").read_text())
    s, t = cls_files.tasks
    points = front["points"]
    assert points and all(0.0 <= p["predicted_" + k] <= 1.0 for p in points
                          for k in cls_files.tasks)
    # the front is not one point: its predictions trade one task for the other
    predicted = {(round(p["predicted_" + s], 3), round(p["predicted_" + t], 3)) for p in points}
    assert len(predicted) >= 3, predicted
    best_s = max(points, key=lambda p: p["predicted_" + s])
    best_t = max(points, key=lambda p: p["predicted_" + t])
    assert best_s["predicted_" + s] > best_t["predicted_" + s] + 0.1
    assert best_t["predicted_" + t] > best_s["predicted_" + t] + 0.1
    # and the measured merges on the front are a trade-off too: none of them dominates
    # another. (3 front points were verified; the front also holds the evaluated points no
    # measurement beats and no prediction beats by more than the surrogates' error, with
    # their real metrics, and a verified point that a measured one beats leaves it, so it
    # holds 1 to 3 verified rows.)
    real = sorted((p["real_" + s], p["real_" + t]) for p in points
                  if p.get("real_" + s) is not None)
    verified = [p for p in points if p["source"] == "verified"]
    assert summary["verification"]["n_verified"] == 3
    assert 1 <= len(verified) <= 3 and len(real) >= 3
    for (s0, t0), (s1, t1) in itertools.pairwise(real):
        assert s1 > s0 and t1 < t0, real  # sorted by s: t strictly falls


def test_example_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["example", "--output", str(tmp_path / "o"), "--workdir", str(tmp_path / "w")]
    assert cli.main([*argv, "--preference", "1,2,3"]) == 2
    assert "one weight per task" in capsys.readouterr().err
    assert cli.main([*argv, "--preference", "a,b"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert cli.main([*argv, "--kind", "classification", "--lora"]) == 2
    assert "--kind lm only" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert not (tmp_path / "w").exists()  # nothing was prepared
