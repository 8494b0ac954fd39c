"""The vision benchmark's measurement runs on the tiny CLIP (`python benchmarks/run.py vision`
once failed unnoticed: a private attribute of the evaluator it read had been renamed)."""

from __future__ import annotations

import pytest

bench_vision = pytest.importorskip("benchmarks.bench_vision")


def test_the_vision_benchmark_measures_the_tiny_clip(tmp_path):
    from mapframe_vision.toy import write_tiny_clip_config

    cfg = str(write_tiny_clip_config(tmp_path))
    row = bench_vision._case("tiny CLIP", "mapframe-tiny-vit", 32, 20,
                             ["digits", "digits_rot90"], cfg, reps=2, leak_merges=1)
    assert row["images_per_eval"] == 40 and row["visual_params"] > 10_000
    assert row["device"] == "cpu" and row["resident_eval_s"] > 0 and row["reload_eval_s"] > 0
    assert len(row["scores"]) == 2
    assert all(0.0 <= s <= 1.0 for scores in row["scores"] for s in scores)
    assert "gpu_peak_mb" not in row  # GPU memory is read on CUDA rows only
    assert "| tiny CLIP (" in bench_vision.report({"rows": [row]})
