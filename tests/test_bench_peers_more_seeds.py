"""The close-cells-on-more-seeds benchmark (benchmarks/bench_peers_more_seeds.py): its pieces.

What is checked: a cell's jobs are the peers benchmark's (every peer of that N, cut at its
budgets up to B, every mapframe mode charged), charged rows are read without proposal rows or
unreached budgets, the paired difference and its standard error are computed per seed, and
the report names the best peer and the count of seeds ahead.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_peers as bp
from benchmarks import bench_peers_more_seeds as ms
from benchmarks import run as bench_run


def test_cell_jobs_follow_the_peers_benchmark():
    jobs = ms.cell_jobs(3, 20, [3, 4])
    peers = [j for j in jobs if j["kind"] == "peer"]
    maps = [j for j in jobs if j["kind"] == "map"]
    assert {j["method"] for j in peers} == set(bp.PEERS_AT[3])
    assert all(j["checkpoints"] == [10, 20] for j in peers)
    assert {j["mode"] for j in maps} == set(bp.MAP_MODES)
    assert not any(j["proposal"] for j in maps) and len(maps) == 2 * len(bp.MAP_MODES)
    assert {j["mode"] for j in ms.cell_jobs(8, 20, [3]) if j["kind"] == "map"} == set(
        bp.MODES_MANY)


def test_cells_of_one_n_share_each_peer_run():
    jobs = ms.cells_jobs([(3, 10), (3, 30), (4, 10)], [5])
    peers3 = [j for j in jobs if j["kind"] == "peer" and j["n"] == 3]
    assert len(peers3) == len(bp.PEERS_AT[3])  # one run per peer, not one per cell
    assert all(j["checkpoints"] == [10, 20, 30] for j in peers3)
    assert all(j["checkpoints"] == [10] for j in jobs if j["kind"] == "peer" and j["n"] == 4)
    maps3 = [j for j in jobs if j["kind"] == "map" and j["n"] == 3]
    assert sorted({j["budget"] for j in maps3}) == [10, 30]
    assert len(maps3) == 2 * len(bp.modes_at(3))


def test_charged_skips_proposals_and_unreached_budgets():
    rows = [{"method": "a", "n": 3, "budget": 20, "seed": 1, "hv_fraction": 0.5},
            {"method": "a (proposal quality)", "n": 3, "budget": 20, "seed": 1,
             "hv_fraction": 0.9},
            {"method": "b", "n": 3, "budget": 20, "seed": 1, "skipped": "cap"},
            {"method": "a", "n": 3, "budget": 10, "seed": 1, "hv_fraction": 0.1}]
    assert ms.charged(rows, 3, 20) == {"a": {1: 0.5}}


def _cell() -> dict:
    return {"n": 3, "budget": 20,
            "recorded": {ms.FRONT: {0: 0.70, 1: 0.80}, "peer x": {0: 0.72, 1: 0.78},
                         "peer y": {0: 0.5, 1: 0.5}},
            "new": {ms.FRONT: {3: 0.75}, "peer x": {3: 0.70}, "peer y": {3: 0.5}}}


def test_paired_difference_per_seed():
    mean, se, ahead, k = ms.paired(_cell(), ms.FRONT, "peer x")
    d = np.array([-0.02, 0.02, 0.05])
    assert k == 3 and ahead == 2
    assert abs(mean - d.mean()) < 1e-12
    assert abs(se - d.std(ddof=1) / np.sqrt(3)) < 1e-12


def test_report_reads_the_best_peer_over_all_seeds():
    cell = {**_cell(), "check_rows": 3, "check_max_diff": 0.0}
    text = ms.report({"recorded_seeds": [0, 1], "new_seeds": [3], "check_seed": [0],
                      "cells": [cell]})
    assert "Rerun of seed 0 against its recorded rows (3 methods): largest difference" in text
    assert ("The best mapframe mode (Bayesian MAP (front)) minus the best peer (peer x), "
            "paired over all seeds: +0.017") in text and "ahead on 2 of 3 seeds" in text
    assert "The `front` sampler" not in text  # it is the best mode here: one line
    assert "| peer x | 0.733 ± 0.034 (3) | 0.750 ± 0.030 (2) | 0.700 ± 0.000 (1) |" in text
    # The summary row: front - peer x is 0.000 on the recorded seeds 0-1 (-0.02, +0.02),
    # +0.017 over all three.
    assert ("| N = 3, B = 20 | Bayesian MAP (front) | peer x | +0.000 | +0.017 ± 0.020 "
            "| 2 of 3 |") in text


def test_cells_variable_names_cells_of_the_benchmark(monkeypatch):
    assert ms.selected_cells() is None
    monkeypatch.setenv(ms.CELLS_ENV, " 4:20, 3:20 ")
    assert ms.selected_cells() == [(4, 20), (3, 20)]
    for bad in ("5:20", "4-20", "4:x", ","):
        monkeypatch.setenv(ms.CELLS_ENV, bad)
        with pytest.raises(ValueError, match="give comma-separated N:B cells from: 3:10, 3:20"):
            ms.selected_cells()


def test_rerun_of_a_cell_keeps_the_other_recorded_cells(tmp_path, monkeypatch):
    def cell(n: int, b: int, v: float) -> dict:
        return {"n": n, "budget": b, "new": {"m": {3: v}}, "recorded": {"m": {0: v}}}

    recorded = {"new_seeds": [3], "cells": [cell(8, 20, 0.1), cell(4, 20, 0.2),
                                            cell(3, 20, 0.3)],
                "_meta": {"machine": "old", "seconds": 5.0, "command": "c"}}
    (tmp_path / "peers_more_seeds.json").write_text(json.dumps(recorded))
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("MAPFRAME_BENCH_PEER_CAP", "1500")
    data = ms.merged_with_recorded({"new_seeds": [3], "cells": [cell(4, 20, 0.9)]},
                                   ms.recorded_cells([3]))
    assert [(c["n"], c["budget"]) for c in data["cells"]] == [(3, 20), (4, 20), (8, 20)]
    # The rerun cell replaces its recorded one (JSON keys are strings: read the values).
    assert [list(c["new"]["m"].values()) for c in data["cells"]] == [[0.3], [0.9], [0.1]]
    meta = bench_run.merged_meta(
        {"machine": "new", "seconds": 2.0,
         "command": bench_run.command_env() + "python benchmarks/run.py peers_more_seeds"},
        data.pop("_rerun"), data.pop("_earlier_meta"))
    assert meta["command"] == ("MAPFRAME_BENCH_MORE_SEEDS_CELLS=4:20 MAPFRAME_BENCH_PEER_CAP="
                               "1500 python benchmarks/run.py peers_more_seeds")
    assert "rerun of cells N = 4, B = 20, the other rows kept from 1 earlier" in meta["machine"]
    with pytest.raises(SystemExit, match="have seeds \\[3\\], this run \\[4\\]"):
        ms.recorded_cells([4])
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(tmp_path / "none"))
    first = re.escape("run `python benchmarks/run.py peers_more_seeds --results ")
    with pytest.raises(SystemExit, match=first):
        ms.recorded_cells([3])


def test_report_names_a_changed_peer_cap():
    cell = {**_cell(), "peer_overhead_cap_s": 1500.0}
    text = ms.report({"recorded_seeds": [0, 1], "new_seeds": [3], "check_seed": [0],
                      "cells": [cell]})
    assert "Peer runs here could spend up to 1500 s of own overhead" in text
    assert "(the peers benchmark's cap at N = 3: 480 s)" in text
    for n, usual in ((3, 480.0), (8, 240.0)):  # the usual cap at N: no line
        text = ms.report({"recorded_seeds": [0, 1], "new_seeds": [3], "check_seed": [0],
                          "cells": [{**cell, "n": n, "peer_overhead_cap_s": usual}]})
        assert "could spend" not in text


def test_a_cell_rerun_checks_the_recorded_cells_before_it_runs(tmp_path, monkeypatch):
    (tmp_path / "peers.json").write_text(json.dumps({"seeds": [0], "rows": []}))
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv(ms.CELLS_ENV, "4:20")

    def no_work(*_args):
        raise AssertionError("the run started before the recorded cells were read")

    monkeypatch.setattr(bp, "_setting", no_work)
    monkeypatch.setattr(bp, "_run_job", no_work)
    with pytest.raises(SystemExit, match=re.escape("peers_more_seeds.json is missing")):
        ms.run()


class _InProcess:
    """A stand-in for the process pool: runs the jobs here, with the test's patches."""

    def __init__(self, max_workers: int) -> None:
        pass

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn, jobs):
        return [fn(job) for job in jobs]


def test_rerun_of_modes_keeps_every_other_row(tmp_path, monkeypatch):
    # After a change to mapframe only its modes need rerunning: the chosen modes' new-seed
    # rows are replaced, every method's recorded seeds are read again from peers.json (as a
    # full run reads them), and nothing else changes.
    front, plain = ms.FRONT, "mapframe Plain MAP"

    def row(n: int, b: int, seed: int, method: str, v: float) -> dict:
        return {"n": n, "budget": b, "seed": seed, "method": method, "hv_fraction": v}

    (tmp_path / "peers.json").write_text(json.dumps({"seeds": [0], "rows": [
        row(3, 20, 0, front, 0.70), row(3, 20, 0, plain, 0.60),
        row(3, 20, 0, "random search", 0.50), row(3, 20, 0, "mapframe later mode", 0.99)]}))

    def cell(n: int, b: int) -> dict:
        return {"n": n, "budget": b, "check_max_diff": 0.0, "check_rows": 3,
                "new": {front: {3: 0.1}, plain: {3: 0.2}, "random search": {3: 0.3}},
                "recorded": {front: {0: 0.4}, plain: {0: 0.65}, "random search": {0: 0.5}}}

    (tmp_path / "peers_more_seeds.json").write_text(json.dumps({
        "new_seeds": [3], "recorded_seeds": [0], "check_seed": [0],
        "cells": [cell(3, 20), cell(4, 20)],
        "_meta": {"machine": "old", "seconds": 5.0, "command": "c"}}))
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv(ms.CELLS_ENV, "3:20")
    monkeypatch.setenv(bp.MODES_ENV, front)
    monkeypatch.setattr(ms, "NEW_SEEDS", [3])
    monkeypatch.setattr(ms, "ProcessPoolExecutor", _InProcess)
    monkeypatch.setattr(bp, "_setting", lambda n: None)
    jobs = []

    def run_job(job: dict) -> list[dict]:
        jobs.append(job)
        v = 0.70 if job["seed"] == 0 else 0.75  # seed 0 reproduces peers.json's row
        return [row(job["n"], job["budget"], job["seed"], job["mode"], v)]

    monkeypatch.setattr(bp, "_run_job", run_job)
    data = ms.run()
    assert {(j["n"], j["budget"], j["seed"], j["mode"]) for j in jobs} == {
        (3, 20, 0, front), (3, 20, 3, front)}
    first, second = data["cells"]

    def by_seed(part: str, method: str) -> dict[int, float]:  # JSON keys are strings
        return {int(s): v for s, v in first[part][method].items()}

    assert by_seed("new", front) == {3: 0.75} and by_seed("recorded", front) == {0: 0.70}
    assert by_seed("new", plain) == {3: 0.2} and by_seed("recorded", plain) == {0: 0.60}
    assert by_seed("new", "random search") == {3: 0.3}
    assert first["check_max_diff"] == 0.0 and first["check_rows"] == 1
    assert second == json.loads(json.dumps(cell(4, 20)))  # the other cell as recorded
    assert by_seed("recorded", "random search") == {0: 0.50}
    assert "mapframe later mode" not in first["recorded"]  # a mode without new seeds
    assert data["_rerun"]["what"] == f"mapframe modes {front} in cells N = 3, B = 20"
    assert data["_rerun"]["env"] == (f'{bp.MODES_ENV}="{front}" {ms.CELLS_ENV}=3:20')
