"""The `clip` evaluator of the vision plugin (`plugins/vision`): the cost of one evaluation
with the resident model merged in place, against rebuilding and reloading the model for every
evaluation (what a naive merge-then-evaluate script does), the zero-shot throughput, and
memory over many merges. Two sizes: the tiny CLIP of the plugin's example (2 tasks, the whole
719-image digits test split each) and open_clip's real ViT-B-32 architecture (random weights:
no pretrained weights can be downloaded here; speed and memory do not depend on the values) on
224×224 images.
Runs in the plugin's environment: `pip install "torch==2.15.0" "torchvision==0.29.2"
"open_clip_torch==3.3.0" -e . -e ./plugins/vision`, then
`python benchmarks/run.py vision`. CPU only; the CUDA path (`device: cuda`, fp16 autocast)
is measured by `python benchmarks/run.py gpu` (its own section below)."""

from __future__ import annotations

import gc
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _setup(work: Path, model: str, size: int, n_images: int, tasks: list[str],
           model_config: str | None, device: str = "cpu",
           precision: str = "auto") -> tuple[Any, Any, dict[str, Any]]:
    import open_clip
    import torch
    from mapframe_vision.clip import ClipEvaluator
    from mapframe_vision.toy import task_images, write_image_folder

    from mapframe.executors.base import MergeSpec
    from mapframe.merging.checkpoints import save_state_dict
    from mapframe.merging.task_arithmetic import TaskArithmetic

    if model_config:
        open_clip.add_model_config(model_config)
    torch.manual_seed(0)
    full = open_clip.create_model(model, pretrained=None)
    pre = save_state_dict(full.state_dict(), work / f"{model}-pre.safetensors")
    ft = {}
    for i, t in enumerate(tasks):
        g = torch.Generator().manual_seed(i + 1)
        sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) * v.std().nan_to_num(0.02)
              for k, v in full.visual.state_dict().items()}
        ft[t] = str(save_state_dict(sd, work / f"{model}-{t}.safetensors"))
    del full
    specs = []
    for t in tasks:
        x, y, names = task_images(t, "test", limit=n_images, size=size)
        folder = write_image_folder(work / f"data-{size}" / t, x, y, names)
        specs.append({"name": t, "data": str(folder), "classnames": names})
    ev = ClipEvaluator(tasks=specs, model=model, model_config=model_config,
                       pretrained=str(pre), head_cache=str(work / "heads"), device=device,
                       precision=precision, batch_size=64)
    spec = MergeSpec(TaskArithmetic(), str(pre), ft, prepare=ev.prepare_checkpoint)
    return ev, spec, {"pretrained": str(pre), "finetuned": ft}


def _reload_eval(ev: Any, merger: Any, c: np.ndarray) -> float:
    """A naive evaluation: build a fresh model, load the merged state dict, score."""
    import open_clip
    import torch
    from mapframe_vision.runtime import score_classifier

    device = str(ev.model_device())
    t0 = time.perf_counter()
    model = open_clip.create_model(ev.model, pretrained=None).visual.eval()
    model.load_state_dict(merger.merged_state_dict(c))
    model.to(device)
    with torch.no_grad():
        for name, evalset in ev._sets.items():
            head = ev.heads[name]

            def logits(x: Any, head: Any = head) -> Any:
                f = model(x).float()
                return (f / f.norm(dim=-1, keepdim=True)) @ head.T

            score_classifier(logits, evalset, device, ev.precision)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _gpu_mb(device: str) -> dict[str, float]:
    """Memory allocated by torch on ``device`` now and at its peak, in MB (empty on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return {}
    torch.cuda.synchronize()
    return {"allocated": torch.cuda.memory_allocated(device) / 1e6,
            "peak": torch.cuda.max_memory_allocated(device) / 1e6}


def _case(label: str, model: str, size: int, n_images: int, tasks: list[str],
          model_config: str | None, reps: int, leak_merges: int, device: str = "cpu",
          precision: str = "auto", reload: bool = True) -> dict[str, Any]:
    """One model on one device: resident evaluations (timed), reloads (timed when
    ``reload``), then ``leak_merges`` further merges for the memory growth. The scores of
    the timed evaluations are returned too (for comparing devices on the same merges)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ev, spec, _ = _setup(work, model, size, n_images, tasks, model_config, device,
                             precision)
        t0 = time.perf_counter()
        merger = spec.build()
        ev.setup(merger)
        setup_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        C = rng.uniform(0, 1, size=(reps, len(tasks)))
        ev.evaluate(C[:1])  # warm-up
        t0 = time.perf_counter()
        scores = ev.evaluate(C)
        resident = (time.perf_counter() - t0) / reps
        timings = ev.timings
        reload_s = (float(np.median([_reload_eval(ev, merger, c)
                                     for c in C[: max(2, reps // 2)]])) if reload else None)
        gc.collect()
        rss0, gpu0 = _rss_mb(), _gpu_mb(device)
        ev.evaluate(rng.uniform(0, 1, size=(leak_merges, len(tasks))))
        gc.collect()
        rss1, gpu1 = _rss_mb(), _gpu_mb(device)
        n_params = sum(p.numel() for p in ev._model.parameters())
        images = sum(len(s) for s in ev._sets.values())
        resolved = str(ev.model_device())
        ev.close()
    row = {"label": label, "model": model, "image_size": size, "tasks": len(tasks),
           "device": resolved, "precision": precision,
           "images_per_eval": images, "visual_params": n_params, "setup_s": setup_s,
           "resident_eval_s": resident, "reload_eval_s": reload_s,
           "merge_s": timings["merge_s"] / timings["merges"],
           "images_per_s": timings["images"] / timings["score_s"],
           "rss_growth_mb": rss1 - rss0, "leak_merges": leak_merges,
           "threads": torch.get_num_threads(),
           "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
           "scores": np.asarray(scores).tolist()}
    if gpu1:
        row.update(gpu_peak_mb=gpu1["peak"], gpu_growth_mb=gpu1["allocated"] - gpu0["allocated"])
    return row


def run(quick: bool = False) -> dict[str, Any]:
    import torch
    from mapframe_vision.toy import write_tiny_clip_config

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = str(write_tiny_clip_config(tmp))
        rows.append(_case("tiny CLIP (example)", "mapframe-tiny-vit", 32,
                          200 if quick else 1000, ["digits", "digits_rot90"], cfg,
                          reps=3 if quick else 10, leak_merges=10 if quick else 50))
    rows.append(_case("ViT-B-32 (random weights)", "ViT-B-32", 224, 16 if quick else 64,
                      ["digits", "digits_rot90"], None, reps=2 if quick else 4,
                      leak_merges=3 if quick else 10))
    return {"rows": rows}


def report(data: dict[str, Any]) -> str:
    lines = [
        "Per evaluation = merge the task vectors into the model + classify every task's images. "
        "*Resident* is the evaluator (one model, weights overwritten in place); *reload* builds "
        "the model and loads the merged state dict each time. Memory growth = resident-set "
        "change over the listed number of further merges (after a warm-up).",
        "",
        "| model | images / eval | resident s / eval | reload s / eval | reload / resident "
        "| merge s | images/s | setup s | RSS growth (MB) over merges |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['label']} ({r['visual_params'] / 1e6:.1f} M image-tower params, "
            f"{r['image_size']}px) | {r['images_per_eval']} | {r['resident_eval_s']:.3f} | "
            f"{r['reload_eval_s']:.3f} | {r['reload_eval_s'] / r['resident_eval_s']:.2f}× | "
            f"{r['merge_s']:.3f} | {r['images_per_s']:.0f} | {r['setup_s']:.1f} | "
            f"{r['rss_growth_mb']:+.1f} over {r['leak_merges']} |")
    lines += ["", "GPU throughput (device: cuda, fp16 autocast): measured on a lent GPU "
              "machine, against the CPU of that machine, in the section \"GPU: the vision and "
              "LLM plugins' CUDA paths against the CPU\" (`python benchmarks/run.py gpu`).",
              ""]
    return "\n".join(lines)
