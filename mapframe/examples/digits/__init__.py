"""A real, fully offline MAP example: merging fine-tunes of a small MLP on 8x8 digits.

Everything here runs on a laptop CPU in seconds and downloads nothing:

* **Data** (:mod:`~mapframe.examples.digits.data`) — scikit-learn's bundled ``load_digits``
  (1797 images of 8x8 pixels, 10 classes), pixels scaled to ``[0, 1]``, split once,
  stratified, with a fixed seed into train / validation / test (50 / 25 / 25 %).
* **Task variants** (:data:`TASKS`) — each an input transform and/or a label map of the
  original problem: rotated, mirrored, transposed, inverted or shifted images, and permuted
  labels. The pretrained model is poor on all of them (1–45 % validation accuracy); each
  fine-tune is good on its own one (89–96 %).
* **Model** (:mod:`~mapframe.examples.digits.model`) — :class:`DigitsNet`,
  ``Linear(64, 256)-ReLU-Linear(256, 256)-ReLU-Linear(256, 10)``. It is pretrained on the
  original digits, then fine-tuned per variant with the classification head (``head.*``)
  frozen, so the task vectors live in the backbone, like CLIP fine-tunes.
* **Checkpoints** (:mod:`~mapframe.examples.digits.training`) — :func:`prepare_checkpoints`
  trains them (deterministically, single-threaded, a few seconds for all eight variants) and
  caches them as safetensors files with a manifest.
* **Evaluation** (:mod:`~mapframe.examples.digits.evaluator`) — :class:`DigitsEvaluator`
  (config name ``"digits"``), a :class:`~mapframe.evaluators.base.ModelEvaluator` that
  merges a whole batch of coefficient vectors at once with :meth:`Merger.merge_batch
  <mapframe.merging.merger.Merger.merge_batch>` and runs all merged models in one
  vectorised forward pass (``torch.func.functional_call`` under ``torch.vmap``).
* **Config** (:mod:`~mapframe.examples.digits.config`) — :func:`digits_study_config` builds
  the study configuration that ``mapframe example`` writes and runs.

Typical use::

    from mapframe.examples.digits import prepare_checkpoints, digits_study_config
    ckpts = prepare_checkpoints(tasks=["rot90", "flip"])          # trains once, then cached
    config = digits_study_config("results/digits", ["rot90", "flip"], checkpoints=ckpts)

Importing this package is cheap: torch and scikit-learn are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mapframe.examples.digits.config import default_budget, digits_study_config
from mapframe.examples.digits.data import _VARIANTS as _VARIANTS
from mapframe.examples.digits.data import (
    DEFAULT_TASKS,
    EVAL_SPLITS,
    METRICS,
    SPLITS,
    TASK_DESCRIPTIONS,
    TASKS,
    task_data,
)
from mapframe.examples.digits.data import _variant_data as _variant_data
from mapframe.examples.digits.evaluator import DigitsEvaluator
from mapframe.examples.digits.model import _digits_net_class
from mapframe.examples.digits.training import (
    CACHE_VERSION,
    TRAINING,
    TrainingSettings,
    cache_root,
    checkpoint_paths,
    prepare_checkpoints,
)

# _VARIANTS, _variant_data and _digits_net_class stay importable from the package, as from
# the single module it replaces. Tests that monkeypatch training helpers patch
# mapframe.examples.digits.training, the module that reads them.

if TYPE_CHECKING:
    from mapframe.examples.digits.model import DigitsNet

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_TASKS",
    "EVAL_SPLITS",
    "METRICS",
    "SPLITS",
    "TASKS",
    "TASK_DESCRIPTIONS",
    "TRAINING",
    "DigitsEvaluator",
    "DigitsNet",
    "TrainingSettings",
    "cache_root",
    "checkpoint_paths",
    "default_budget",
    "digits_study_config",
    "prepare_checkpoints",
    "task_data",
]


def __getattr__(name: str) -> Any:
    # DigitsNet subclasses torch.nn.Module; build it on first access so that importing this
    # package does not import torch.
    if name == "DigitsNet":
        return _digits_net_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
