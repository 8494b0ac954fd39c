"""``mapframe-vision``: the plugin's small offline example.

``mapframe-vision example`` trains a tiny CLIP (:mod:`mapframe_vision.toy`) and one
fine-tune of its image tower per task, writes each task's evaluation images as an
``ImageFolder``, writes a study config that uses the ``clip`` evaluator, and runs it with
``mapframe run``: the same path a user's 8-task ViT-B/32 config takes, on a CPU in about a
minute, with nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["example_config", "main", "prepare_example"]

DEFAULT_TASKS = ("digits", "fashion")



def _plain(text: str) -> str:
    """Docstring markup (``name``, :mod:`x`) as plain text, for --help."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")

def _fashion_available() -> bool:
    from mapframe_vision.toy import FASHION_MNIST_DIR

    return (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").is_file()


def prepare_example(work: str | os.PathLike[str], tasks: Sequence[str], steps: int = 150,
                    eval_images: int = 1000) -> dict[str, Any]:
    """Train the example's checkpoints and write its evaluation folders under ``work`` (done
    once: a second call with the same settings reuses them)."""
    from mapframe_vision.toy import make_clip_checkpoints, task_images, write_image_folder

    work = Path(work)
    stamp = {"tasks": list(tasks), "steps": steps, "eval_images": eval_images, "version": 1}
    marker = work / "example.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("stamp") == stamp:
            return dict(done["result"])
    result = make_clip_checkpoints(work / "checkpoints", tasks, steps=steps)
    result["data"] = {}
    result["classnames"] = {}
    for task in tasks:
        x, y, names = task_images(task, "test", limit=eval_images)
        folder = work / "data" / task
        write_image_folder(folder, x, y, names)
        result["data"][task] = str(folder)
        result["classnames"][task] = names
    marker.write_text(json.dumps({"stamp": stamp, "result": result}, indent=1))
    return result


def example_config(prepared: dict[str, Any], output: str | os.PathLike[str],
                   budget: int = 12, preference: Sequence[float] | None = None
                   ) -> dict[str, Any]:
    """The study config of the example (what ``mapframe run`` reads)."""
    from mapframe_vision.toy import TINY_CLIP_NAME

    tasks = list(prepared["finetuned"])
    cfg: dict[str, Any] = {
        "study": {"name": "clip-example", "budget": budget, "output": str(output),
                  "verify": 3},
        "evaluator": {
            "name": "clip",
            "model": TINY_CLIP_NAME,
            "model_config": prepared["model_config"],
            "pretrained": prepared["pretrained"],
            "head_cache": str(Path(output) / "heads"),
            "tasks": [{"name": t, "data": prepared["data"][t],
                       "classnames": prepared["classnames"][t]} for t in tasks],
        },
        "checkpoints": {"pretrained": prepared["pretrained"],
                        "finetuned": dict(prepared["finetuned"])},
        "sampler": "sobol",  # Plain MAP in one batch, as the digits and LLM examples
    }
    if preference is not None:
        # A preference selects one merged model: export it (selected.safetensors).
        cfg["study"]["preference"] = list(preference)
        cfg["study"]["export"] = True
    return cfg


def cmd_example(args: argparse.Namespace) -> int:
    import yaml

    from mapframe.cli import main as mapframe_main
    from mapframe.cli import preference_for

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else list(DEFAULT_TASKS)
    if "fashion" in tasks and not _fashion_available():
        sys.stderr.write("Fashion-MNIST is not installed (apt-get install "
                         "dataset-fashion-mnist); using digits_rot90 instead\n")
        tasks = [("digits_rot90" if t == "fashion" else t) for t in tasks]
    pref = preference_for(args.preference, tasks)  # a bad one fails before any training
    output = Path(args.output or "results/clip-example").absolute()
    work = Path(args.work or output / "work")
    sys.stderr.write(f"preparing the CLIP example ({', '.join(tasks)}): tiny CLIP, one "
                     "fine-tune per task (trained once, then reused) ...\n")
    t0 = time.perf_counter()
    prepared = prepare_example(work, tasks, steps=args.steps)
    acc = ", ".join(f"{t} {a:.3f}" for t, a in prepared["accuracy"].items())
    sys.stderr.write(f"ready in {time.perf_counter() - t0:.1f}s; fine-tuned accuracy on own "
                     f"task: {acc}\n")
    cfg = example_config(prepared, output, budget=args.budget, preference=pref)
    output.mkdir(parents=True, exist_ok=True)
    cfg_path = output / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sys.stderr.write(f"config written to {cfg_path}; running: mapframe run {cfg_path}\n")
    argv = ["run", str(cfg_path)]
    if args.quiet:
        argv.append("--quiet")
    return mapframe_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapframe-vision",
                                     description=_plain(__doc__.split("\n")[0]))
    sub = parser.add_subparsers(dest="command")
    ex = sub.add_parser("example", help="train a tiny CLIP and run a 2-task study offline")
    ex.add_argument("--tasks", help=f"comma-separated toy tasks (default: "
                    f"{','.join(DEFAULT_TASKS)}; also digits_rot90, digits_inverted)")
    ex.add_argument("--output", "-o", help="results folder (default results/clip-example)")
    ex.add_argument("--work", help="where checkpoints and images go (default OUTPUT/work)")
    ex.add_argument("--budget", type=int, default=12, help="search evaluations (default 12)")
    ex.add_argument("--steps", type=int, default=150, help="fine-tuning steps per task")
    ex.add_argument("--preference", help="one weight per task, e.g. 0.5,0.5: selects (and "
                    "exports) one merged model")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    ex.set_defaults(func=cmd_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapframe-vision`` command."""
    from mapframe.cli import dispatch

    return dispatch(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
