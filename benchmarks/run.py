"""Run mapframe's benchmarks and write docs/benchmarks.md.

    python benchmarks/run.py                 # every benchmark
    python benchmarks/run.py plain_map       # just one (others keep their stored results)
    python benchmarks/run.py --quick         # a smoke run with fewer budgets and seeds

Each benchmark stores its raw numbers in benchmarks/results/<name>.json; docs/benchmarks.md is
regenerated from all stored results, so every number there comes from a rerunnable command (a
benchmark without stored results here keeps its section of the page as it is).

A benchmark may rerun part of its recorded results (``MAPFRAME_BENCH_PEERS_MODES``,
``MAPFRAME_BENCH_MORE_SEEDS_CELLS``): its ``run()`` then returns the merged results with two
extra keys, ``_rerun`` (what this run covered: ``env``, the settings that chose it, and
``what`` or ``n`` + ``modes``) and ``_earlier_meta`` (the recorded ``_meta``), which
:func:`merged_meta` turns into a ``_meta`` whose ``parts`` list every run behind the rows.
The peer-cap settings in :data:`RECORDED_ENV` are written into every recorded command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine  # noqa: E402

BENCHMARKS = {
    "plain_map": ("Front quality: Plain MAP vs random search", "benchmarks.bench_plain_map"),
    "fit_solve": ("Surrogate fit + front solve time", "benchmarks.bench_fit_solve"),
    "preference": ("Preference-weighted score: MAP vs single-model merging (Table 4)",
                   "benchmarks.bench_preference"),
    "strategies": ("Merge strategies under MAP: front, preference score and cost per strategy",
                   "benchmarks.bench_strategies"),
    "bayesian": ("Bayesian MAP: adaptive sampling vs Plain MAP", "benchmarks.bench_bayesian"),
    "nested": ("Nested MAP vs Plain MAP on many tasks", "benchmarks.bench_nested"),
    "peers": ("Head-to-head: mapframe vs BoTorch, Optuna, random and grid search",
              "benchmarks.bench_peers"),
    "peers_more_seeds": ("Head-to-head's close cells on more seeds",
                         "benchmarks.bench_peers_more_seeds"),
    "search_reference": ("Dense validation reference: how many evaluations a plain search "
                         "needs to match mapframe's proposed front",
                         "benchmarks.bench_search_reference"),
    "verification": ("Verification rule and handed-over front (peers setting, N = 3)",
                     "benchmarks.bench_verification"),
    "acquisition": ("Adaptive search: BoTorch qLogNEHVI in the front sampler's loop vs the "
                    "front sampler", "benchmarks.bench_acquisition"),
    "vision": ("Vision plugin: the CLIP evaluator's cost per evaluation",
               "benchmarks.bench_vision"),
    "strategies_vision": ("Vision plugin: merge strategies under MAP on the tiny CLIP tasks",
                          "benchmarks.bench_strategies_vision"),
    "llm": ("LLM plugin: memory and merge throughput on sharded multi-GB checkpoints",
            "benchmarks.bench_llm"),
    "distributed": ("Executors: in-process vs process pool vs Ray vs Dask",
                    "benchmarks.bench_distributed"),
    "scale": ("Scale: one 16-task study with 10 010 evaluations, phase by phase",
              "benchmarks.bench_scale"),
    "gpu": ("GPU: the vision and LLM plugins' CUDA paths against the CPU",
            "benchmarks.bench_gpu"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)} "
                        "(default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer budgets/seeds (smoke test)")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--doc", default=str(HERE.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    # Benchmarks that build on another's results read them from this folder too.
    os.environ["MAPFRAME_BENCH_RESULTS"] = str(results.resolve())
    for name in args.names or list(BENCHMARKS):
        _title, module = BENCHMARKS[name]
        mod = importlib.import_module(module)
        why = mod.unavailable() if hasattr(mod, "unavailable") else None
        if why and not args.names:  # asked for by name, its run() says why in one line
            print(f"skipping {name}: {why}", flush=True)
            continue
        print(f"running {name} ...", flush=True)
        t0 = time.perf_counter()
        data = mod.run(quick=args.quick)
        data["_meta"] = {"machine": machine(), "seconds": time.perf_counter() - t0,
                         "quick": args.quick,
                         "command": command_env()
                         + f"python benchmarks/run.py {name}"
                         + (" --quick" if args.quick else "")}
        if "_rerun" in data:  # a partial rerun merged into the recorded results
            data["_meta"] = merged_meta(data["_meta"], data.pop("_rerun"),
                                        data.pop("_earlier_meta"))
        (results / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))
        print(f"  done in {data['_meta']['seconds']:.0f} s", flush=True)
    write_doc(results, Path(args.doc))
    print(f"wrote {args.doc}")
    return 0


#: Settings read from the environment that change a benchmark's results; a recorded command
#: names those that were set.
RECORDED_ENV = ("MAPFRAME_BENCH_PEER_CAP", "MAPFRAME_BENCH_PEER_CAP_MANY")


def command_env() -> str:
    """``NAME=value `` for each of :data:`RECORDED_ENV` set in this run's environment."""
    return "".join(f"{k}={os.environ[k]} " for k in RECORDED_ENV if k in os.environ)


def merged_meta(meta: dict[str, Any], rerun: dict[str, Any], earlier: dict[str, Any]
                ) -> dict[str, Any]:
    """``_meta`` of results that a partial rerun (``rerun``: what it ran, and the ``env``
    settings that chose it) merged into earlier ones: ``parts`` lists this run first, then
    the earlier parts; ``command`` and ``seconds`` are this run's, ``machine`` tells the
    page about the other parts."""
    env = str(rerun.get("env", ""))
    this = {**meta, **rerun, "command": f"{env} {meta['command']}".strip()}
    earlier_parts = list(earlier.get("parts") or ([earlier] if earlier else []))
    parts = [this, *earlier_parts]
    what = rerun.get("what")
    if not what:
        modes = ", ".join(str(m) for m in rerun.get("modes", [])) or "every row"
        what = f"{modes} at N = {', '.join(str(n) for n in rerun.get('n', []))}"
    total = sum(float(p.get("seconds", 0)) for p in parts)
    return {**this, "parts": parts,
            "machine": f"{meta['machine']}: rerun of {what}, the other rows kept "
                       f"from {len(parts) - 1} earlier part(s) (`_meta.parts` of the results "
                       f"file lists each part's machine, date and time; {total:.0f} s in all)"}


def _sections(doc: Path) -> dict[str, str]:
    """The sections of the current page by title (``## title`` lines), without the title."""
    if not doc.exists():
        return {}
    out: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    for line in [*doc.read_text().splitlines(), "## "]:
        if line.startswith("## "):
            if title is not None:
                out[title] = "\n".join(body).strip("\n")
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    return out


def write_doc(results: Path, doc: Path) -> None:
    parts = [
        "# Benchmarks",
        "",
        "Every number on this page was measured by `python benchmarks/run.py` (one section per "
        "benchmark; `python benchmarks/run.py NAME` reruns one). Raw results are in "
        "`benchmarks/results/`. Methods are compared within one run, so ratios are more "
        "trustworthy than absolute times on a noisy machine.",
        "",
    ]
    kept = _sections(doc)
    for name, (title, module) in BENCHMARKS.items():
        path = results / f"{name}.json"
        if not path.exists():  # results not here: keep the page's section as it is
            if title in kept:
                parts += [f"## {title}", "", kept[title], ""]
            continue
        data = json.loads(path.read_text())
        meta = data["_meta"]
        mod = importlib.import_module(module)
        if hasattr(mod, "plot"):  # pictures go beside the page that shows them
            mod.plot(data, doc.parent / "images")
        parts += [f"## {title}", "", (mod.__doc__ or "").strip(), "",
                  f"Command: `{meta['command']}` — {meta['machine']}; took "
                  f"{meta['seconds']:.0f} s.", "", mod.report(data).rstrip(), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
