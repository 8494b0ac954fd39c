"""Set-up for plugin test suites that run small torch / Hugging Face models offline.

Call :func:`offline_test_environment` at the top of a ``conftest.py``, before anything
imports ``huggingface_hub`` or ``torch`` (both read their settings once, at import), and
:func:`limit_torch_threads` from ``pytest_configure``::

    from mapframe.testing.environment import limit_torch_threads, offline_test_environment

    offline_test_environment()

    def pytest_configure(config):
        limit_torch_threads()

This module imports nothing heavy (``mapframe.testing`` itself imports only mapframe's core,
numpy and pytest).
"""

from __future__ import annotations

import os

__all__ = ["limit_torch_threads", "offline_test_environment"]


def offline_test_environment() -> None:
    """Never reach the network (Hugging Face offline mode), draw plots without a display,
    and under pytest-xdist give each worker (and the processes it starts) one OpenMP thread.

    Parallel workers share the cores: spinning OpenMP threads of tiny models oversubscribe
    them, which made these suites two to ten times slower on a busy 2-core machine. Settings
    already in the environment win, except ``HF_HUB_OFFLINE``, which is forced to ``1``.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def limit_torch_threads() -> None:
    """One torch intra-op thread in an xdist worker whose ``OMP_NUM_THREADS`` is 1 (torch
    may already have been imported with its own default)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("OMP_NUM_THREADS") == "1":
        import torch

        torch.set_num_threads(1)
