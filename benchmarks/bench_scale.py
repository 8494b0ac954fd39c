"""One large study, phase by phase: 16 tasks, 10 010 evaluations, against an earlier mapframe.

A Plain MAP study (`sampler: sobol`, `surrogate: quadratic`, `verify: 10`, a preference) on 16
exact quadratic objectives `1 - ||c - e_i||^2` (instant, so every second is mapframe's own),
then `result.save` (front.png included) and `write_report`. The same script runs twice, each
in its own process: on the current code and on the mapframe of an earlier commit
(`MAPFRAME_BENCH_SCALE_BASE`, default `dd7e643`, the code before the scale fixes of
2026-12-07; `git archive` of that commit's `mapframe/`). Per phase: CPU seconds and the
process's peak resident memory during that phase (Linux: the peak is reset before each phase
through `/proc/self/clear_refs`). Both runs must hand over the same front and selection (the
fixes change no result); the table says whether they did. CPU seconds, not wall time: the
machine may be shared. Since the second pass of 2026-12-07, `import mapframe` leaves scipy
until it is needed, so the current run's search phase includes importing `scipy.stats` for
the Sobol' sampler (about 0.8 s, paid before at import, outside every phase); the combine
phase keeps only the non-dominated measured points before checking what they dominate
(10.3 s to 1.2 s). Since the third pass, report.html embeds the evaluations only through its
figures, not their raw values a second time (14.0 MB to 7.8 MB; plotly.js is 4.8 MB of it);
that run's CPU seconds were measured while the machine's 2 cores were shared with other
work (the base's too: compare the two columns, not with earlier runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("MAPFRAME_BENCH_SCALE_BASE", "dd7e643")
N_TASKS = 16
BUDGET = 10_010
PHASES = ("search", "fit", "solve", "verify", "combine", "result", "select", "check", "finish")


def _status() -> dict[str, float]:
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(out: Path, budget: int) -> None:
    """Run the study, save it and write its report, printing one JSON row per phase."""
    import warnings

    import mapframe
    import mapframe.study as study_module
    from mapframe import MergeStudy
    from mapframe.report import write_report

    warnings.simplefilter("ignore")
    (out / "mapframe_file.txt").write_text(str(mapframe.__file__))
    rows: list[dict[str, Any]] = []

    def phase(name: str, fn: Any, *a: Any, **k: Any) -> Any:
        resettable = _reset_peak()
        cpu = time.process_time()
        value = fn(*a, **k)
        rows.append({"phase": name, "cpu_s": time.process_time() - cpu,
                     "peak_mb": _status()["VmHWM"] if resettable else None})
        return value

    for name in PHASES:
        method = getattr(study_module.MergeStudy, f"_{name}", None)
        if method is not None:
            def timed(self: Any, *a: Any, _m: Any = method, _n: str = name, **k: Any) -> Any:
                return phase(_n, _m, self, *a, **k)
            setattr(study_module.MergeStudy, f"_{name}", timed)
    targets = np.eye(N_TASKS)

    def objective(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        return 1 - ((C[:, None, :] - targets[None]) ** 2).sum(axis=2)

    study = MergeStudy(objective=objective, task_names=[f"t{i}" for i in range(N_TASKS)],
                       budget=budget, sampler="sobol", surrogate="quadratic", seed=0,
                       verify=10, preference=[1.0] * N_TASKS)
    result = study.run()
    folder = out / "results"
    phase("save (front.png included)", result.save, folder)
    phase("report", write_report, folder)
    front = result.front
    np.savez(out / "front.npz", C=front.coefficients, P=front.predicted,
             R=np.nan_to_num(front.real, nan=-9.0),
             selected=np.array([-1 if result.selected is None else result.selected]))
    (out / "rows.json").write_text(json.dumps({
        "rows": rows, "front_size": len(front),
        "report_mb": (folder / "report.html").stat().st_size / 1e6}))


def _run_tree(pythonpath: str | None, out: Path, budget: int) -> dict[str, Any]:
    # Run from ``out``, not the repository (``python -m`` puts the working folder first on
    # sys.path, where the repository's own mapframe/ would win over ``pythonpath``'s).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([p for p in (pythonpath, str(ROOT)) if p])}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", "--child", str(out),
                    str(budget)], cwd=out, env=env, check=True)
    where = (out / "mapframe_file.txt").read_text()
    expected = Path(pythonpath or ROOT) / "mapframe"
    if Path(where).resolve().parent != expected.resolve():
        raise RuntimeError(f"the run imported {where}, not the mapframe under {expected}")
    data = json.loads((out / "rows.json").read_text())
    data["wall_s"] = time.perf_counter() - t0
    return data


def unavailable() -> str | None:
    if not Path("/proc/self/status").exists():
        return "needs Linux's /proc to read a process's peak memory"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return "needs git and this repository's history (it runs an earlier commit too)"
    return None


def run(quick: bool = False) -> dict[str, Any]:
    budget = 2_000 if quick else BUDGET
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base-tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", BASE, "mapframe"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        runs = {}
        for label, path in (("base", str(tree)), ("current", None)):
            out = Path(tmp) / label
            out.mkdir()
            runs[label] = _run_tree(path, out, budget)
            runs[label]["front"] = {k: v.tolist() for k, v in np.load(out / "front.npz").items()}
    same = all(np.array_equal(np.asarray(runs["base"]["front"][k]),
                              np.asarray(runs["current"]["front"][k]))
               for k in ("C", "P", "R", "selected"))
    for r in runs.values():
        del r["front"]
    return {"base": BASE, "budget": budget, "n_tasks": N_TASKS, "runs": runs,
            "same_front_and_selection": bool(same)}


def report(data: dict[str, Any]) -> str:
    base, now = data["runs"]["base"], data["runs"]["current"]
    by_phase = {r["phase"]: r for r in base["rows"]}
    lines = [f"{data['n_tasks']} tasks, {data['budget']} evaluations; base: commit "
             f"`{data['base']}`. Same front and selection in both runs: "
             f"{'yes' if data['same_front_and_selection'] else '**no**'}.", "",
             "| phase | CPU s (base) | CPU s (now) | peak MB (base) | peak MB (now) |",
             "|---|---|---|---|---|"]

    def mb(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f}"

    for r in now["rows"]:
        b = by_phase.get(r["phase"], {})
        lines.append(f"| {r['phase']} | {b.get('cpu_s', float('nan')):.2f} | "
                     f"{r['cpu_s']:.2f} | {mb(b.get('peak_mb'))} | {mb(r['peak_mb'])} |")
    total_b = sum(r["cpu_s"] for r in base["rows"])
    total_n = sum(r["cpu_s"] for r in now["rows"])
    peak_b = max((r["peak_mb"] or 0) for r in base["rows"])
    peak_n = max((r["peak_mb"] or 0) for r in now["rows"])
    lines += [f"| **all phases** | {total_b:.1f} | {total_n:.1f} | {peak_b:.0f} | "
              f"{peak_n:.0f} |", "",
              f"report.html: {base['report_mb']:.1f} MB (base), {now['report_mb']:.1f} MB "
              f"(now); front {now['front_size']} points."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("run it through benchmarks/run.py scale")
