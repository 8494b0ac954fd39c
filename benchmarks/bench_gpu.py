"""The plugins' CUDA paths on a GPU, against the CPU of the same machine in the same run:
the vision plugin's `clip` evaluator (`device: cuda`, fp16 autocast; open_clip's ViT-B-32 and
ViT-L-14 architectures with random weights, as in the CPU section above), the LLM plugin's
`causal_lm` evaluator on the sharded 0.54 B-parameter Llama checkpoints of the LLM section
(`device: cuda`, bf16), and both plugins' examples end to end (`mapframe-vision example`,
`mapframe-llm example`) with the GPU visible and hidden (`CUDA_VISIBLE_DEVICES=`).
Runs only where CUDA is available (a one-line exit elsewhere), in an environment with both
plugins: `pip install torch torchvision "open_clip_torch==3.3.0" transformers -e .
-e ./plugins/vision -e ./plugins/llm`, then `python benchmarks/run.py gpu`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Seconds after which the remaining parts are skipped (a lent GPU machine is time-boxed).
TIME_LIMIT_S = float(os.environ.get("MAPFRAME_BENCH_GPU_LIMIT_S", "420"))
#: Seconds one example run may take before it is stopped (and recorded as a timeout).
EXAMPLE_TIMEOUT_S = float(os.environ.get("MAPFRAME_BENCH_GPU_EXAMPLE_TIMEOUT_S", "240"))
#: Which parts run (comma-separated; all by default), e.g. to rerun one on a new machine.
PARTS = os.environ.get("MAPFRAME_BENCH_GPU_PARTS", "llm,vision,examples")
#: ``cuda`` normally; ``cpu`` rehearses every step of this benchmark on a machine without one.
GPU = os.environ.get("MAPFRAME_BENCH_GPU_DEVICE", "cuda")


def _vision(quick: bool) -> list[dict[str, Any]]:
    import torch

    from benchmarks.bench_vision import _case

    torch.set_num_threads(os.cpu_count() or 1)  # the CPU row uses every core (run.py sets 1)
    tasks = ["digits", "digits_rot90"]
    rows = []
    for device in (GPU, "cpu"):  # fewer timed evaluations on the (slower) CPU
        gpu = device != "cpu"
        rows.append(_case("ViT-B-32 (random weights)", "ViT-B-32", 224, 16 if quick else 128,
                          tasks, None, reps=4 if gpu and not quick else 2,
                          leak_merges=10 if gpu and not quick else 2, device=device))
    rows.append(_case("ViT-L-14 (random weights)", "ViT-L-14", 224, 16 if quick else 256,
                      tasks, None, reps=2 if quick else 4, leak_merges=2 if quick else 10,
                      device=GPU, reload=False))
    return rows


def _llm(quick: bool) -> dict[str, Any]:
    from benchmarks.bench_llm import SIZES, _checkpoints, _child, _warm_page_cache

    size = "quick" if quick else "full"
    t0 = time.perf_counter()
    work, written = _checkpoints(size)
    generate_s = time.perf_counter() - t0
    threads = os.cpu_count() or 1
    common = {"work": str(work), "threads": threads,
              "copy_elements": SIZES[size]["copy_elements"]}
    _warm_page_cache(work)
    rows = [{"mode": f"{device} {storage}",
             **_child("evaluator", {**common, "storage": storage, "device": device})}
            for device, storage in ((GPU, "disk"), (GPU, "ram"), ("cpu", "disk"))]
    return {"size": size, "model": SIZES[size]["model"], "checkpoints": written,
            "generate_s": generate_s, "threads": threads, "rows": rows}


def _example(argv: list[str], gpu: bool, out: Path) -> dict[str, Any]:
    command = " ".join([Path(argv[0]).name, *argv[1:]])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)  # run.py's 1 thread: the examples run as a user's would
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*argv, "-o", str(out), "-q"], env=env, capture_output=True,
                              text=True, timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"command": command, "gpu": gpu, "rc": "timeout",
                "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    summary = out / "summary.json"
    data = json.loads(summary.read_text()) if summary.exists() else {}
    ready = [line for line in proc.stderr.splitlines() if line.startswith("ready in")]
    selected = data.get("selected") or {}
    tasks = [t["name"] for t in data.get("tasks", [])]
    return {"command": command, "gpu": gpu, "rc": proc.returncode, "wall_s": wall,
            "stderr_tail": proc.stderr[-600:] if proc.returncode else "",
            "prepared": ready[-1] if ready else "",
            "evaluations": data.get("n_search_evaluations"),
            "front_size": data.get("front_size"),
            "selected_source": selected.get("source"),
            "selected": {t: selected.get(f"real_{t}", selected.get(f"predicted_{t}"))
                         for t in tasks if selected}}


def _examples(quick: bool) -> list[dict[str, Any]]:
    bindir = Path(sys.executable).parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in (("vision", [str(bindir / "mapframe-vision"), "example",
                                       "--preference", "0.5,0.5"]),
                           ("llm", [str(bindir / "mapframe-llm"), "example",
                                    "--preference", "0.5,0.5"])):
            for gpu in ((True, False) if GPU == "cuda" else (False,)):
                rows.append({"plugin": name, **_example(
                    argv + (["--steps", "20"] if quick else []), gpu,
                    Path(tmp) / f"{name}-{'gpu' if gpu else 'cpu'}")})
    return rows


def _gpu_name() -> str:
    import torch

    if GPU != "cuda":
        return f"no GPU ({GPU} rehearsal)"
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"{torch.cuda.device_count()} device(s)")


def unavailable() -> str | None:
    """Why this benchmark cannot run here (``None`` when it can)."""
    try:
        import torch
    except ImportError:
        return "needs torch"
    if GPU == "cuda" and not torch.cuda.is_available():
        return (f"CUDA is not available here (torch {torch.__version__}); run it on a "
                "machine with a GPU, or set MAPFRAME_BENCH_GPU_DEVICE=cpu to rehearse it on "
                "the CPU")
    return None


def run(quick: bool = False) -> dict[str, Any]:
    why = unavailable()
    if why:
        raise SystemExit(f"bench gpu: {why}")
    t0 = time.perf_counter()
    data: dict[str, Any] = {"gpu": _gpu_name(), "device": GPU, "skipped": [],
                            "parts_s": {}}
    for part, fn in (("llm", _llm), ("vision", _vision), ("examples", _examples)):
        if part not in PARTS.split(","):
            continue
        if time.perf_counter() - t0 > TIME_LIMIT_S:
            data["skipped"].append(part)
            continue
        start = time.perf_counter()
        data[part] = fn(quick)
        data["parts_s"][part] = time.perf_counter() - start
        partial = os.environ.get("MAPFRAME_BENCH_GPU_PARTIAL")
        if partial:  # what is done so far survives a run cut off at its time limit
            Path(partial).write_text(json.dumps(data, indent=1, default=float))
    return data


def _cpu_vision_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The CPU row of each vision model: the reference of its GPU rows."""
    return {r["model"]: r for r in rows if r["device"] == "cpu"}


def _cpu_llm_row(llm: dict[str, Any]) -> dict[str, Any] | None:
    """The LLM rows' CPU reference (``None`` when the CPU was not measured)."""
    return next((r for r in llm["rows"] if r["device"] == "cpu"), None)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a and b else "—"


def _vision_report(rows: list[dict[str, Any]]) -> list[str]:
    cpu = _cpu_vision_rows(rows)
    lines = [
        "**Vision: the `clip` evaluator.** One evaluation = merge 2 task vectors into the "
        "resident image tower + classify every task's images (224 px). *Speed-up* = CPU s / "
        "GPU s per evaluation in this run. *Score diff* = largest difference in accuracy "
        "between the GPU (fp16 autocast) and the CPU (fp32) on the same merges.",
        "",
        "| model | device | images / eval | s / eval | reload s / eval | merge s | images/s "
        "| setup s | GPU peak MB | GPU growth MB over merges | speed-up | score diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = cpu.get(r["model"]) if r["device"] != "cpu" else None
        diff = "—"
        if ref:  # the same merges: both draw their coefficient rows from one seeded stream
            k = min(len(r["scores"]), len(ref["scores"]))
            diff = f"{np.max(np.abs(np.subtract(r['scores'][:k], ref['scores'][:k]))):.4f}"
        reload = f"{r['reload_eval_s']:.3f}" if r.get("reload_eval_s") else "—"
        peak = f"{r['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in r else "—"
        growth = (f"{r['gpu_growth_mb']:+.1f} over {r['leak_merges']}"
                  if "gpu_growth_mb" in r else "—")
        lines.append(
            f"| {r['label']} ({r['visual_params'] / 1e6:.1f} M) | {r['device']} "
            f"({'fp16 autocast' if r['device'] != 'cpu' else 'fp32'}) | "
            f"{r['images_per_eval']} | {r['resident_eval_s']:.3f} | {reload} | "
            f"{r['merge_s']:.4f} | {r['images_per_s']:.0f} | {r['setup_s']:.1f} | {peak} | "
            f"{growth} | {_ratio(ref['resident_eval_s'], r['resident_eval_s']) if ref else '—'}"
            f" | {diff} |")
    return [*lines, ""]


def _llm_report(llm: dict[str, Any]) -> list[str]:
    ck = llm["checkpoints"]
    cpu = _cpu_llm_row(llm)
    lines = [
        f"**LLM: the `causal_lm` evaluator** on a Llama of {ck['params'] / 1e9:.2f} B "
        f"parameters ({ck['checkpoint_bytes'] / 1e9:.2f} GB per bf16 checkpoint, base + "
        f"{len(llm['rows'][0]['scores'][0])} fine-tunes, sharded), {llm['threads']} CPU "
        "threads. *Cycle* = merge 4 task vectors + score 4 tasks (the process's first "
        "evaluation; the *2nd cycle* is its next one, without one-off costs such as CUDA's "
        "first-use initialisation); *merge* = the merge alone (median of 3); merge GB/s "
        "counts every checkpoint byte read and the merged model written. *Loss diff* = "
        "largest difference in the cycle's per-task losses from the CPU's.",
        "",
        "| device, storage | setup s | cycle merge s | cycle score s | 2nd cycle score s "
        "| merge s | merge GB/s | GPU peak GB | process RSS after setup GB | loss diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in llm["rows"]:
        diff = (f"{np.max(np.abs(np.subtract(r['scores'], cpu['scores']))):.4f}"
                if cpu is not None and r is not cpu else "—")
        peak = f"{r['gpu_peak_bytes'] / 1e9:.2f}" if "gpu_peak_bytes" in r else "—"
        steady = f"{r['cycle2_score_s']:.2f}" if "cycle2_score_s" in r else "not measured"
        lines.append(
            f"| {r['mode']} | {r['setup_s']:.1f} | {r['cycle_merge_s']:.2f} | "
            f"{r['cycle_score_s']:.2f} | {steady} | {r['merge_s']:.2f} | {r['merge_gbps']:.1f} | "
            f"{peak} | "
            f"{r['setup_rss'] / 1e9:.2f} | {diff} |")
    return [*lines, ""]


def _examples_report(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "**Examples end to end** (first run: training the fine-tunes, the study with "
        "preference 0.5,0.5, the report), with the GPU visible and hidden. The selected "
        "point's metrics are measured ones where it was verified (accuracy for vision, "
        "loss for the LLM example):",
        "",
        "| command | GPU visible | rc | wall s | of which training the fine-tunes s "
        "| search evaluations | front points | selected point (source): metrics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sel = ", ".join(f"{t} {v:.3f}" for t, v in (r.get("selected") or {}).items()
                        if isinstance(v, (int, float)))
        if sel:
            sel = f"({r.get('selected_source')}) {sel}"
        ready = re.match(r"ready in ([0-9.]+)s", r.get("prepared") or "")
        lines.append(f"| `{r['command']}` | {'yes' if r['gpu'] else 'no'} | {r['rc']} | "
                     f"{r['wall_s']:.1f} | {ready.group(1) if ready else '—'} | "
                     f"{r.get('evaluations') or '—'} | "
                     f"{r.get('front_size') or '—'} | {sel or '—'} |")
    return [*lines, ""]


def _verdict(slow: float, fast: float) -> str:
    """``"N× faster"`` when ``fast`` beats ``slow`` by over a quarter, ``"N× slower"`` when it
    loses by over a quarter, else ``"about the same"``."""
    if slow > 1.25 * fast:
        return f"{slow / fast:.1f}× faster"
    if fast > 1.25 * slow:
        return f"{fast / slow:.1f}× slower"
    return "about the same"


def _llm_scoring(gpu_rows: list[dict[str, Any]], cpu: dict[str, Any]) -> str:
    """The LLM rows' scoring times compared, from the steady-state cycle where it was run."""
    steady = [r for r in gpu_rows if "cycle2_score_s" in r]
    if steady and "cycle2_score_s" in cpu:
        best = min(steady, key=lambda r: r["cycle2_score_s"])
        return (f" Scoring the 4 tasks in a steady-state cycle (2nd cycle): "
                f"{best['cycle2_score_s']:.2f} s on the GPU ({best['mode']}) against "
                f"{cpu['cycle2_score_s']:.2f} s on the CPU, "
                f"{_verdict(cpu['cycle2_score_s'], best['cycle2_score_s'])}.")
    return (" The cycle's scoring time is each process's first evaluation; on the GPU it "
            "includes CUDA's first-use initialisation (one-off), so it is no steady-state "
            "scoring speed (this run predates the 2nd-cycle measurement).")


def _llm_reading(llm: dict[str, Any]) -> list[str]:
    """The LLM rows' merge and scoring times, each GPU row against the CPU row of the same
    storage."""
    gpu_rows = [r for r in llm["rows"] if r["device"] != "cpu"]
    ref = _cpu_llm_row(llm)
    if not gpu_rows or ref is None:
        return []
    storage = ref["mode"].split()[-1]
    same = [r for r in gpu_rows if r["mode"].split()[-1] == storage]
    parts = []
    for r in same:
        verdict = _verdict(ref["merge_s"], r["merge_s"])
        parts.append(
            f"a merge with the weights on the GPU takes {r['merge_s']:.2f} s ({r['mode']}) "
            f"against {ref['merge_s']:.2f} s on the CPU ({ref['mode']}), {verdict}: the "
            f"streamed merge is computed on {llm['threads']} CPU threads and copied into the "
            "weights chunk by chunk wherever they live")
    others = [f"{r['merge_s']:.2f} s ({r['mode']})" for r in gpu_rows if r not in same]
    if others:
        parts.append("with the task vectors held in RAM instead of read from the "
                     "checkpoints: " + ", ".join(others))
    text = "; ".join(parts) + "." if parts else ""
    return [f"- LLM: {text}{_llm_scoring(gpu_rows, ref)}"]


def _examples_reading(rows: list[dict[str, Any]]) -> list[str]:
    """Each example's wall time with the GPU visible against hidden."""
    pairs: dict[str, dict[bool, dict[str, Any]]] = {}
    for r in rows:
        pairs.setdefault(r["command"], {})[r["gpu"]] = r
    out = []
    for cmd, pair in pairs.items():
        if True in pair and False in pair and pair[True]["rc"] == 0 == pair[False]["rc"]:
            with_gpu, without = pair[True]["wall_s"], pair[False]["wall_s"]
            verdict = _verdict(without, with_gpu)
            out.append(f"- `{cmd}`: {with_gpu:.0f} s with the GPU visible, {without:.0f} s "
                       f"hidden, {verdict} (the example trains its fine-tunes on the CPU "
                       "either way, and its models are tiny).")
    return out


def _reading(data: dict[str, Any]) -> list[str]:
    """What the rows say, each sentence computed from them."""
    out = []
    vision = data.get("vision") or []
    cpu = _cpu_vision_rows(vision)
    for r in vision:
        ref = cpu.get(r["model"])
        if r["device"] == "cpu":
            continue
        if ref is None:
            out.append(
                f"- Vision, {r['model']} (GPU only): {r['resident_eval_s']:.2f} s per "
                f"evaluation of {r['images_per_eval']} images, of which the merge takes "
                f"{r['merge_s'] * 1e3:.0f} ms ({r['merge_s'] / r['resident_eval_s']:.0%}).")
            continue
        reload = (f"; rebuilding and reloading the model for each evaluation costs "
                  f"{r['reload_eval_s']:.2f} s there "
                  f"({r['reload_eval_s'] / r['resident_eval_s']:.0f}× the resident evaluator)"
                  if r.get("reload_eval_s") else "")
        out.append(
            f"- Vision, {r['model']}: one evaluation takes {r['resident_eval_s']:.2f} s on the "
            f"GPU against {ref['resident_eval_s']:.2f} s on {ref['threads']} CPU threads "
            f"({ref['resident_eval_s'] / r['resident_eval_s']:.0f}× faster){reload}. The "
            f"merge itself ({r['merge_s'] * 1e3:.0f} ms on the GPU row, "
            f"{ref['merge_s'] * 1e3:.0f} ms on the CPU row) is computed on the CPU and copied "
            "into the resident weights: the task vectors stay in host memory.")
    growth = [r["gpu_growth_mb"] for r in vision if "gpu_growth_mb" in r]
    if growth:
        out.append(f"- GPU memory does not grow with merges: at most {max(growth):+.1f} MB "
                   "after the listed further merges on every GPU row.")
    llm = data.get("llm")
    if llm:
        out.extend(_llm_reading(llm))
    out.extend(_examples_reading(data.get("examples") or []))
    return ["**Reading.**", "", *out, ""] if out else []


def report(data: dict[str, Any]) -> str:
    lines = [f"GPU: {data['gpu']}.", "", *data.get("notes", []), ""]
    if "vision" in data:
        lines += _vision_report(data["vision"])
    if "llm" in data:
        lines += _llm_report(data["llm"])
    if "examples" in data:
        lines += _examples_report(data["examples"])
    lines += _reading(data)
    if data.get("skipped"):
        lines += [f"Not run (the run's time limit was reached first): "
                  f"{', '.join(data['skipped'])}.", ""]
    return "\n".join(lines)
