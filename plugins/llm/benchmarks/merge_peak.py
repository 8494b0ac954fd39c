"""Peak memory one streamed merge adds: the growth of the process's resident memory during
one merge (after a warm-up merge), sampled every 2 ms, for the README's memory table.

    python plugins/llm/benchmarks/merge_peak.py ties /models/base /models/ft0 /models/ft1

STRATEGY is ``task_arithmetic``, ``ties``, ``dare_task_arithmetic`` or ``dare_ties``; the
base folder must hold a tokenizer. Prints the growth in MB and in float32 copies of ``L``,
the largest tensor's size.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from mapframe_llm.causal import CausalLMEvaluator

from mapframe.executors.base import MergeSpec
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.merging.ties_dare import DareTaskArithmetic, DareTies, TiesMerging

STRATEGIES = {"task_arithmetic": TaskArithmetic, "ties": TiesMerging,
              "dare_task_arithmetic": DareTaskArithmetic, "dare_ties": DareTies}


def rss_mb() -> float:
    """The process's resident memory in MB (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main(strategy: str, base: str, finetuned: list[str]) -> None:
    torch.set_num_threads(1)
    n = len(finetuned)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "text.txt"
        data.write_text("a short text to score .\n")
        ev = CausalLMEvaluator(tasks=[{"name": f"t{i}", "data": str(data)} for i in range(n)],
                               device="cpu", max_length=16, merge_threads=1)
        spec = MergeSpec(STRATEGIES[strategy](), base,
                         {f"t{i}": p for i, p in enumerate(finetuned)},
                         loader=ev.load_task_vectors)
        ev.setup(spec.build())
        try:
            ev.merge(np.linspace(0.2, 0.4, n))  # warm-up: one-off allocations
            tv = ev.task_vectors()
            largest = max(int(np.prod(tv.shape(k))) for k in tv.keys())
            before = rss_mb()
            top, stop = [before], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    top[0] = max(top[0], rss_mb())
                    time.sleep(0.002)

            thread = threading.Thread(target=sample)
            thread.start()
            ev.merge(np.full(n, 0.3))
            stop.set()
            thread.join()
        finally:
            ev.close()
    grown = top[0] - before
    print(f"{strategy}, N = {n}: one merge grew the process by {grown:.0f} MB = "
          f"{grown / (largest * 4 / 1e6):.1f} L float32 (L = {largest / 1e6:.1f}M elements)")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in STRATEGIES:
        raise SystemExit(f"usage: merge_peak.py {{{','.join(STRATEGIES)}}} BASE FT [FT ...]")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
