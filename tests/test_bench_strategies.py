"""The merge-strategy benchmark (benchmarks/bench_strategies.py): its memory probe, its report
and reading, a tiny end-to-end run, and that regenerating docs/benchmarks.md keeps the
sections of benchmarks whose results are not stored locally."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_strategies, run


def test_torch_peak_bytes_sees_a_temporary_allocation() -> None:
    import torch

    def work() -> None:
        a = torch.ones(1_000_000)  # 4 MB, freed on return
        float((a * 2).sum())

    peak, net = bench_strategies._torch_peak_bytes(work)
    assert peak >= 8e6 - 1  # a and a * 2 alive together
    assert abs(net) < 1e5


def _data() -> dict[str, Any]:
    runs = []
    for s, hv, pref in (("task_arithmetic", 0.9, 80.0), ("iso_c", 0.5, 60.0),
                        ("karcher", 0.95, 81.0)):
        for box in bench_strategies.BOXES:
            for seed in (0, 1):
                runs.append({"n": 2, "strategy": s, "box": box, "seed": seed, "budget": 20,
                             "front_size": 10, "failed_merges": int(s == "iso_c" and seed),
                             "pref": pref + seed, "pref_std": 1.0, "pref_best": pref + 2,
                             "wall_s": 1.0, "hv_fraction": hv - 0.01 * seed})
    costs = [{"n": 2, "strategy": s, "alpha": a, "scale_accuracy": [0.5] * 6, "prepare_s": 0.0,
              "kept_mb": 0.0, "merge_ms": m, "peak_mb": 0.1, "eval_ms": e}
             for s, a, m, e in (("task_arithmetic", 1.0, 0.2, 5.0), ("iso_c", 4.0, 10.0, 20.0),
                                ("karcher", 1.0, 2.0, 6.0))]
    return {"ns": [2], "seeds": [0, 1], "strategies": ["task_arithmetic", "iso_c", "karcher"],
            "settings": {"2": {"tasks": ["rot90", "flip"], "budget": 20,
                               "reference_point": [0.0, 0.0], "pooled_front_size": 30}},
            "runs": runs, "costs": costs, "preferences": 20, "mc_points": 10,
            "mc_from_n": 4}


def test_report_tables_reading_and_failed_merges() -> None:
    text = bench_strategies.report(_data())
    assert "| `karcher` | 1 | **0.945 ± 0.005** |" in text
    assert "best front `karcher`" in text and "ahead of task arithmetic: `karcher`" in text
    assert "`iso_c` 20.0 ms" in text  # more than twice task arithmetic's evaluation
    assert "`iso_c` N = 2 box `[0, 1]` seed 1: 1 of 11" in text


def test_quick_run_on_two_tasks() -> None:
    """Two strategies, N = 2, one seed (a few seconds with the example's checkpoints cached):
    every number is produced and sane."""
    data = bench_strategies.run(quick=True, ns=[2], strategies=["task_arithmetic", "karcher"])
    assert len(data["runs"]) == 2 * len(bench_strategies.BOXES)
    hv = np.array([r["hv_fraction"] for r in data["runs"]])
    assert np.all((hv > 0) & (hv <= 1 + 1e-9))
    assert all(0 < r["pref"] <= r["pref_best"] + 1e-9 <= 100 + 1e-9 for r in data["runs"])
    assert all(c["merge_ms"] > 0 and c["peak_mb"] >= 0 for c in data["costs"])
    assert "**N = 2**" in bench_strategies.report(json.loads(json.dumps(data, default=float)))


def test_write_doc_keeps_sections_without_results(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    module = type(sys)("fake_bench")
    module.__doc__ = "Fake."
    module.report = lambda data: f"value {data['v']}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_bench", module)
    monkeypatch.setattr(run, "BENCHMARKS", {"a": ("Section A", "fake_bench"),
                                            "b": ("Section B", "fake_bench")})
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Section A\n\nold A\n\n## Section B\n\nold B\n| x |\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "b.json").write_text(json.dumps({"v": 2, "_meta": {
        "command": "python benchmarks/run.py b", "machine": "m", "seconds": 1.0}}))
    run.write_doc(results, doc)
    text = doc.read_text()
    assert "## Section A\n\nold A\n\n## Section B" in text  # kept as it was
    assert "old B" not in text and "value 2" in text  # regenerated from its results
