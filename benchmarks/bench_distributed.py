"""Executors: wall time of one fixed-budget study in this process, in a local process pool,
on Ray actors and on Dask workers (2 workers each), and the cost of sending one evaluation
to a worker.

Three workloads, each a full `MergeStudy.run()` (Sobol design, quadratic surrogates, front,
3 verified points) with the same seed under every executor:

* *digits example*: the built-in offline example (`mapframe example`: 2 tasks, the
  pretrained MLP and its rot90/flip fine-tunes; one evaluation merges in place and scores
  the 719-image validation split per task), budget 24; the evaluator takes up to 256
  coefficient vectors per call, so the in-process executor evaluates a round in one call;
* *CPU-bound evaluation*: the same study shape with a black-box objective that burns about
  0.1 s of single-threaded CPU per point (float32 matmuls), budget 24, one point per call:
  the work a worker does per evaluation on a CPU-only machine;
* *dispatch overhead*: a no-op objective, one point per call, budget 200: wall time per
  evaluation minus the in-process executor's = what sending a job to a worker and its
  result back costs.

*startup* is the executor's `start()` (workers launched, evaluator set up in each; for
Ray and Dask also a local cluster started) plus `shutdown()`, measured separately with
the digits evaluator; the study wall times include it. Every study's front (coefficients
and predicted metrics) is compared with the in-process one: *same front* means equal bit
for bit. Workers run torch single-threaded; the in-process executor uses the machine's
threads. Runs in the core environment with `pip install -e ".[ray,dask]"`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mapframe import MergeStudy
from mapframe.examples import digits

TASKS = ["rot90", "flip"]
WORKERS = 2
EXECUTORS: list[tuple[str, Any]] = [
    ("inprocess", "inprocess"),
    ("process", {"name": "process", "workers": WORKERS}),
    ("ray", {"name": "ray", "workers": WORKERS}),
    ("dask", {"name": "dask", "workers": WORKERS}),
]


def cpu_work(c: np.ndarray) -> np.ndarray:
    """About 0.1 s of single-threaded float32 matmuls, then a smooth two-task objective."""
    import torch

    g = torch.Generator().manual_seed(int(abs(float(c.sum())) * 1e6) % 2**31)
    a = torch.randn(256, 256, generator=g)
    for _ in range(int(os.environ.get("MAPFRAME_BENCH_REPEATS", REPEATS))):
        a = torch.tanh(a @ a * 0.05)
    x = np.asarray(c, dtype=float)
    return np.array([1.0 - np.sum((x - 0.3) ** 2), 1.0 - np.sum((x - 0.7) ** 2)])


def no_op(c: np.ndarray) -> np.ndarray:
    x = np.asarray(c, dtype=float)
    return np.array([1.0 - np.sum((x - 0.3) ** 2), 1.0 - np.sum((x - 0.7) ** 2)])


#: Matmul repetitions in :func:`cpu_work` (calibrated once per run to ~0.1 s).
REPEATS = 40


def _calibrate() -> float:
    global REPEATS
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        os.environ["MAPFRAME_BENCH_REPEATS"] = str(REPEATS)
        t0 = time.perf_counter()
        cpu_work(np.array([0.1, 0.2]))
        per = (time.perf_counter() - t0) / REPEATS
        REPEATS = max(1, round(0.1 / per))
        os.environ["MAPFRAME_BENCH_REPEATS"] = str(REPEATS)  # workers read it
        t0 = time.perf_counter()
        cpu_work(np.array([0.1, 0.2]))
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def _study(workload: str, executor: Any, budget: int, ck: dict[str, Any]) -> MergeStudy:
    common: dict[str, Any] = {"budget": budget, "seed": 0, "sampler": "sobol",
                              "storage": "memory", "executor": executor, "verify": 3}
    if workload == "digits":
        return MergeStudy(evaluator=digits.DigitsEvaluator(tasks=TASKS, split="validation"),
                          checkpoints=ck, search_bounds=(0.0, 1.0), **common)
    fn = cpu_work if workload == "cpu" else no_op
    return MergeStudy(evaluator={"name": "callable", "function": f"{__name__}:{fn.__name__}",
                                 "tasks": ["a", "b"], "vectorized": False, "batch_size": 1},
                      n_coefficients=2, search_bounds=(0.0, 1.0), **common)


def _startup(executor: Any, ck: dict[str, Any]) -> float:
    from mapframe.executors.base import MergeSpec
    from mapframe.merging import TaskArithmetic
    from mapframe.plugin import get_registry

    ex = get_registry().create("executor", executor)
    spec = MergeSpec(TaskArithmetic(), str(ck["pretrained"]),
                     {t: str(p) for t, p in ck["finetuned"].items()})
    t0 = time.perf_counter()
    ex.start(digits.DigitsEvaluator(tasks=TASKS, split="validation"), spec)  # type: ignore[attr-defined]
    ex.shutdown()  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def _run(workload: str, executor: Any, budget: int, ck: dict[str, Any]) -> dict[str, Any]:
    study = _study(workload, executor, budget, ck)
    t0 = time.perf_counter()
    res = study.run()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "n": res.n_evaluated, "front_X": res.front.coefficients.tolist(),
            "front_F": res.front.predicted.tolist()}


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    # Workers (spawned processes, Ray workers, Dask nannies) import this module by name.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ck = digits.prepare_checkpoints(tasks=TASKS)
    per_point = _calibrate()
    budgets = {"digits": 24, "cpu": 12 if quick else 24, "noop": 60 if quick else 200}
    rows: list[dict[str, Any]] = []
    for label, executor in EXECUTORS:
        row: dict[str, Any] = {"executor": label,
                               "workers": 1 if label == "inprocess" else WORKERS}
        row["startup_s"] = _startup(executor, ck)
        for workload, budget in budgets.items():
            row[workload] = _run(workload, executor, budget, ck)
        rows.append(row)
    ref = rows[0]
    for row in rows:
        for workload in budgets:
            r = row[workload]
            r["same_front"] = (np.array_equal(r["front_X"], ref[workload]["front_X"])
                               and np.array_equal(r["front_F"], ref[workload]["front_F"]))
            r["ratio"] = r["wall_s"] / ref[workload]["wall_s"]
            del r["front_X"], r["front_F"]
        row["dispatch_ms"] = 1000 * ((row["noop"]["wall_s"] - row["startup_s"])
                                     - (ref["noop"]["wall_s"] - ref["startup_s"])
                                     ) / row["noop"]["n"]
    return {"rows": rows, "budgets": budgets, "cpu_point_s": per_point, "repeats": REPEATS,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def report(data: dict[str, Any]) -> str:
    b = data["budgets"]
    lines = [
        f"Machine: {data['cpus']} CPUs; the in-process executor uses {data['threads']} torch "
        f"thread(s), workers one each. CPU-bound point: {data['cpu_point_s']:.3f} s "
        "single-threaded. Study wall times include the executor's startup; ratio = wall ÷ "
        "in-process wall of the same workload (lower is faster).",
        "",
        f"| executor | workers | startup s | digits example ({b['digits']} evals) s | ratio "
        f"| CPU-bound ({b['cpu']} evals) s | ratio | no-op ({b['noop']} evals) s "
        "| dispatch ms/eval | same front |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        same = all(r[w]["same_front"] for w in b)
        lines.append(
            f"| {r['executor']} | {r['workers']} | {r['startup_s']:.2f} | "
            f"{r['digits']['wall_s']:.2f} | {r['digits']['ratio']:.2f}× | "
            f"{r['cpu']['wall_s']:.2f} | {r['cpu']['ratio']:.2f}× | "
            f"{r['noop']['wall_s']:.2f} | {r['dispatch_ms']:.2f} | {'yes' if same else 'no'} |")
    lines += [
        "",
        "*dispatch ms/eval* = (no-op study wall − startup) ÷ evaluations, minus the same for "
        "the in-process executor: the round trip of one job to a worker and its result back "
        "(0 for in-process by construction).",
    ]
    return "\n".join(lines)
