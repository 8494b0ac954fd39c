"""Merge strategies under MAP on the vision plugin's tiny CLIP tasks.

The protocol of the digits benchmark above (`benchmarks/bench_strategies.py`: the same
strategies, budget, two search boxes, preferences, hypervolume against the pooled front and
cost columns) on the vision plugin's example (`mapframe-vision example`): the tiny CLIP
`mapframe-tiny-vit` (random "pretrained" weights; its text tower builds the zero-shot heads)
with one image-tower fine-tune per task (150 Adam steps, the example's settings), N = 2
(digits, digits_rot90) and N = 4 (+ digits_inverted, fashion) tasks. Each task's test images
(the first 720) are halved: MAP searches on the first half (validation) and its front is scored
on the second (test). Runs in the plugin's environment (see the vision benchmark above):
`python benchmarks/run.py strategies_vision`. CPU, one torch thread, one seed (0): the run
takes about 19 minutes on the machine below, so its ± are 0 and its small differences are
within noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from benchmarks import bench_strategies
from benchmarks.bench_strategies import STRATEGIES, new_results, run_setting

TASKS = ["digits", "digits_rot90", "digits_inverted", "fashion"]
NS = [2, 4]
SEEDS = [0]  # one seed: a full N = 4 run already takes about 15 minutes here
EVAL_IMAGES = 720
CACHE = Path(os.environ.get("MAPFRAME_CACHE", Path.home() / ".cache" / "mapframe")) / "bench"


class ClipProblem:
    """The tiny CLIP tasks as the digits benchmark's problem: checkpoints, task vectors, and
    evaluators on the validation and test halves of each task's test images."""

    def __init__(self, prepared: dict[str, Any], folders: dict[str, dict[str, str]],
                 tasks: list[str], work: Path) -> None:
        from mapframe.executors.base import MergeSpec
        from mapframe.merging.task_arithmetic import TaskArithmetic

        self.tasks = list(tasks)
        self.prepared, self.folders, self.work = prepared, folders, work
        self.checkpoints = {"pretrained": prepared["pretrained"],
                            "finetuned": {t: prepared["finetuned"][t] for t in tasks}}
        ev = self._make("validation")
        self.task_vectors = MergeSpec(TaskArithmetic(), self.checkpoints["pretrained"],
                                      self.checkpoints["finetuned"],
                                      prepare=ev.prepare_checkpoint).build().task_vectors

    def evaluator_spec(self, split: str) -> dict[str, Any]:
        from mapframe_vision.toy import TINY_CLIP_NAME

        return {"name": "clip", "model": TINY_CLIP_NAME,
                "model_config": self.prepared["model_config"],
                "pretrained": self.prepared["pretrained"], "device": "cpu", "batch_size": 256,
                "head_cache": str(self.work / "heads"),
                "tasks": [{"name": t, "data": self.folders[split][t],
                           "classnames": self.prepared["classnames"][t]} for t in self.tasks]}

    def _make(self, split: str) -> Any:
        from mapframe_vision.clip import ClipEvaluator

        spec = dict(self.evaluator_spec(split))
        spec.pop("name")
        return ClipEvaluator(**spec)

    def evaluator(self, strategy: Any, split: str) -> Any:
        """A ready evaluator on ``split`` that merges with ``strategy``."""
        from mapframe.executors.base import MergeSpec
        from mapframe.merging import MergeStrategy
        from mapframe.plugin import get_registry

        ev = self._make(split)
        strat = cast("MergeStrategy", get_registry().create("merge_strategy", strategy))
        ev.setup(MergeSpec(strat, self.checkpoints["pretrained"], self.checkpoints["finetuned"],
                           prepare=ev.prepare_checkpoint).build())
        return ev


def prepare(work: Path) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The example's checkpoints for every task (trained once, cached under ``work``) and
    the validation/test halves of each task's test images as image folders."""
    from mapframe_vision.cli import prepare_example
    from mapframe_vision.toy import task_images, write_image_folder

    prepared = prepare_example(work, TASKS, steps=150, eval_images=EVAL_IMAGES)
    folders: dict[str, dict[str, str]] = {"validation": {}, "test": {}}
    for t in TASKS:
        x, y, names = task_images(t, "test", limit=EVAL_IMAGES)
        half = len(y) // 2
        for split, sl in (("validation", slice(0, half)), ("test", slice(half, None))):
            folder = work / "halves" / split / t
            if not folder.is_dir():
                write_image_folder(folder, x[sl], y[sl], names)
            folders[split][t] = str(folder)
    return prepared, folders


def run(quick: bool = False, ns: list[int] | None = None,
        strategies: list[str] | None = None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    work = CACHE / "strategies-vision"
    prepared, folders = prepare(work)
    out = new_results(SEEDS[:1] if quick else SEEDS, strategies or list(STRATEGIES))
    out["example_accuracy"] = prepared["accuracy"]
    for n in ns or (NS[:1] if quick else NS):
        run_setting(out, ClipProblem(prepared, folders, TASKS[:n], work))
    return out


def report(data: dict[str, Any]) -> str:
    acc = ", ".join(f"{t} {100 * a:.1f} %" for t, a in data["example_accuracy"].items())
    return (f"Fine-tuned image towers' own test accuracy (whole test split): {acc}.\n\n"
            + bench_strategies.report(data))
