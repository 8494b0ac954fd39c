"""The GPU benchmark's guard and report (its measurements need a GPU and both plugins)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from benchmarks import bench_gpu  # noqa: E402


def _vision_row(device: str, model: str, s: float, scores: list[list[float]]) -> dict:
    row = {"label": f"{model} (random weights)", "model": model, "image_size": 224,
           "tasks": 2, "device": device, "precision": "auto", "images_per_eval": 256,
           "visual_params": 87.8e6, "setup_s": 1.0, "resident_eval_s": s,
           "reload_eval_s": None, "merge_s": 0.01, "images_per_s": 256 / s,
           "rss_growth_mb": 0.0, "leak_merges": 10, "scores": scores, "threads": 16}
    if device != "cpu":
        row.update(gpu_peak_mb=900.0, gpu_growth_mb=0.0)
    return row


def _llm_row(mode: str, device: str, scores: list[list[float]]) -> dict:
    row = {"mode": mode, "device": device, "setup_s": 2.0, "cycle_merge_s": 1.0,
           "cycle_score_s": 0.5, "merge_s": 0.9, "merge_gbps": 7.0, "setup_rss": 2e9,
           "scores": scores}
    if device != "cpu":
        row["gpu_peak_bytes"] = 1.5e9
    return row


def test_without_cuda_it_says_why_in_one_line(monkeypatch):
    monkeypatch.setattr(bench_gpu, "GPU", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    why = bench_gpu.unavailable()
    assert why and "CUDA is not available" in why and "\n" not in why
    with pytest.raises(SystemExit, match=r"^bench gpu: CUDA is not available here"):
        bench_gpu.run()


def test_run_py_skips_it_in_a_full_run_but_not_by_name(monkeypatch, tmp_path, capsys):
    from benchmarks import run as run_py

    monkeypatch.setattr(bench_gpu, "GPU", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run_py, "BENCHMARKS", {"gpu": run_py.BENCHMARKS["gpu"]})
    monkeypatch.delenv("MAPFRAME_BENCH_RESULTS", raising=False)
    doc = tmp_path / "benchmarks.md"
    assert run_py.main(["--results", str(tmp_path / "r"), "--doc", str(doc)]) == 0
    assert "skipping gpu: CUDA is not available" in capsys.readouterr().out
    assert not (tmp_path / "r" / "gpu.json").exists()
    with pytest.raises(SystemExit, match="bench gpu: CUDA is not available"):
        run_py.main(["gpu", "--results", str(tmp_path / "r"), "--doc", str(doc)])
    monkeypatch.delenv("MAPFRAME_BENCH_RESULTS", raising=False)


def test_report_compares_each_gpu_row_with_the_cpu_row_of_its_model():
    data = {
        "gpu": "Test GPU", "device": "cuda", "skipped": ["examples"],
        "vision": [_vision_row("cuda:0", "ViT-B-32", 0.1, [[0.5, 0.25]]),
                   _vision_row("cpu", "ViT-B-32", 2.0, [[0.5, 0.2]]),
                   _vision_row("cuda:0", "ViT-L-14", 0.3, [[0.1, 0.1]])],
        "llm": {"checkpoints": {"params": 5.4e8, "checkpoint_bytes": 1.08e9}, "threads": 16,
                "rows": [_llm_row("cuda disk", "cuda:0", [[3.0, 3.5, 4.0, 4.5]]),
                         _llm_row("cpu disk", "cpu", [[3.0, 3.5, 4.25, 4.5]])]},
    }
    text = bench_gpu.report(data)
    b32 = [line for line in text.splitlines() if line.startswith("| ViT-B-32")]
    assert "| 20.0× | 0.0500 |" in b32[0]  # 2.0 / 0.1 and |0.25 - 0.2|
    assert b32[1].endswith("| — | — |")  # the CPU row is the reference
    l14 = next(line for line in text.splitlines() if line.startswith("| ViT-L-14"))
    assert l14.endswith("| — | — |")  # no CPU row for it: nothing to compare
    cuda_llm = next(line for line in text.splitlines() if line.startswith("| cuda disk"))
    assert "| 1.50 |" in cuda_llm and cuda_llm.endswith("| 0.2500 |")
    assert "0.54 B parameters" in text and "base + 4 fine-tunes" in text
    assert "Not run (the run's time limit was reached first): examples." in text


def test_reading_is_computed_from_the_rows():
    data = {
        "gpu": "Test GPU", "device": "cuda",
        "vision": [{**_vision_row("cuda:0", "ViT-B-32", 0.1, [[0.5, 0.5]]),
                    "reload_eval_s": 1.0},
                   _vision_row("cpu", "ViT-B-32", 2.0, [[0.5, 0.5]]),
                   {**_vision_row("cuda:0", "ViT-L-14", 0.5, [[0.1, 0.1]]), "merge_s": 0.2}],
        "llm": {"checkpoints": {"params": 5.4e8, "checkpoint_bytes": 1.08e9}, "threads": 16,
                "rows": [_llm_row("cuda ram", "cuda:0", [[3.0]]),
                         {**_llm_row("cuda disk", "cuda:0", [[3.0]]), "merge_s": 1.7},
                         {**_llm_row("cpu disk", "cpu", [[3.0]]), "merge_s": 1.8}]},
        "examples": [{"command": "mapframe-llm example", "gpu": g, "rc": 0, "wall_s": w}
                     for g, w in ((True, 10.0), (False, 30.0))]
        + [{"command": "mapframe-vision example", "gpu": g, "rc": 0, "wall_s": w}
           for g, w in ((True, 20.0), (False, 21.0))]
        + [{"command": "mapframe-other example", "gpu": g, "rc": 0, "wall_s": w}
           for g, w in ((True, 30.0), (False, 20.0))],
    }
    text = bench_gpu.report(data)
    assert "0.10 s on the GPU against 2.00 s on 16 CPU threads (20× faster)" in text
    assert "costs 1.00 s there (10× the resident evaluator)" in text
    assert "ViT-L-14 (GPU only): 0.50 s per evaluation of 256 images, of which the merge " \
        "takes 200 ms (40%)" in text
    # the GPU row of the CPU row's storage is compared with it; the other one is listed
    assert "takes 1.70 s (cuda disk) against 1.80 s on the CPU (cpu disk), about the same" \
        in text
    assert "held in RAM instead of read from the checkpoints: 0.90 s (cuda ram)" in text
    assert "no steady-state scoring speed" in text  # these rows have no 2nd cycle
    assert "| 0.50 | not measured | 0.90 |" in text
    for row, s in zip(data["llm"]["rows"], (0.05, 0.08, 0.4)):
        row["cycle2_score_s"] = s
    text = bench_gpu.report(data)
    # the fastest GPU row's steady-state scoring against the CPU's
    assert "(2nd cycle): 0.05 s on the GPU (cuda ram) against 0.40 s on the CPU, 8.0× " \
        "faster." in text
    assert "| 0.50 | 0.05 | 0.90 |" in text
    assert "`mapframe-llm example`: 10 s with the GPU visible, 30 s hidden, 3.0× faster" in text
    assert "`mapframe-vision example`: 20 s with the GPU visible, 21 s hidden, about the " \
        "same" in text
    assert "`mapframe-other example`: 30 s with the GPU visible, 20 s hidden, 1.5× slower" \
        in text
