"""The close-cells-on-more-seeds benchmark (benchmarks/bench_peers_more_seeds.py): its pieces.

What is checked: a cell's jobs are the peers benchmark's (every peer of that N, cut at its
budgets up to B, every mapframe mode charged), charged rows are read without proposal rows or
unreached budgets, the paired difference and its standard error are computed per seed, and
the report names the best peer and the count of seeds ahead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_peers as bp
from benchmarks import bench_peers_more_seeds as ms


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
