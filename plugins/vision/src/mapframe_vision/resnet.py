"""Merging torchvision ResNets fine-tuned on different datasets, each with its own head.

The MAP paper's appendix merges ResNet-18s fine-tuned on different datasets. Each fine-tune
has its own classification head (``fc``), with as many outputs as its dataset has classes,
so the heads cannot be merged: :class:`ResNetEvaluator` merges the backbones only and
classifies each task with that task's own fine-tuned head, optionally re-fitting the head on
features of the merged backbone after every merge (``refit``).

Checkpoints are state dicts of a torchvision ResNet (``torch.save(model.state_dict())`` or
safetensors), possibly wrapped in ``module.``/``model.`` (``DataParallel``, Lightning). The
architecture is a torchvision name (``resnet18`` ... ``resnet152``) or a reduced-width
ResNet built by :func:`build_resnet` from ``{block, layers, width}`` (same key names as
torchvision's, handy for small experiments and tests).

A config::

    evaluator:
      name: resnet
      arch: resnet18
      metric: accuracy
      tasks:
        - {name: cars, data: /data/cars/val, refit_data: /data/cars/train}
        - {name: dtd, data: /data/dtd/val, refit_data: /data/dtd/train, max_samples: 1000}
      refit: {steps: 100, lr: 0.01, batch_size: 64}
    checkpoints:
      pretrained: ckpt/resnet18_imagenet.pt
      finetuned: {cars: ckpt/cars.pt, dtd: ckpt/dtd.safetensors}

The evaluator lives here; its parts live beside it: the architectures in
:mod:`~mapframe_vision.resnet_arch`, the task specs and preprocessing in
:mod:`~mapframe_vision.resnet_data`, and the heads (loading, refit) in
:mod:`~mapframe_vision.resnet_heads`. Their public names are importable from this module too.

Importing this module is cheap: torch and torchvision are imported on first use.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.evaluators.base import ModelEvaluator
from mapframe.problem import Task
from mapframe.settings import bool_setting
from mapframe_vision._common import (
    check_count,
    check_metric,
    check_preload,
    drop_attributes,
    freeze_on_device,
    metric_index,
    metric_tasks,
    synchronize,
)
from mapframe_vision.data import EvalSet, TaskSpec, load_dataset
from mapframe_vision.resnet_arch import (
    ARCHS,
    backbone_shapes,
    build_resnet,
    checkpoint_backbone,
    parse_arch,
    strip_wrapper_prefix,
)
from mapframe_vision.resnet_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNetTaskSpec,
    default_transform,
    describe_resnet_task,
    parse_resnet_tasks,
)
from mapframe_vision.resnet_heads import REFIT_DEFAULTS, load_head, parse_refit, refit_head
from mapframe_vision.runtime import (
    autocast,
    check_precision,
    resolve_device,
    score_classifier,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REFIT_DEFAULTS",
    "ResNetEvaluator",
    "ResNetTaskSpec",
    "build_resnet",
    "default_transform",
    "strip_wrapper_prefix",
]

logger = logging.getLogger(__name__)


@dataclass
class _MergeCost:
    """The cost of the latest merge and of scoring it so far (for the per-merge log line)."""

    coefficients: list[float]
    merge_s: float
    refit_s: float = 0.0
    score_s: float = 0.0


class ResNetEvaluator(ModelEvaluator):
    """Accuracy (or loss) of merged torchvision ResNet backbones, each task with its own head.

    Args:
        tasks: one mapping per task: ``name``; ``data`` (the evaluation split: an
            ``ImageFolder`` root, ``{dataset: "module:factory", kwargs: {...}}``, or from
            Python a ``Dataset``); ``max_samples`` (a fixed random subset, for quick
            searches); ``head`` (a checkpoint path holding ``<head_prefix>weight`` and
            ``<head_prefix>bias``, or from Python such a state dict; default: the head of the
            fine-tuned checkpoint whose task name is the task's ``name``); ``refit_data``
            (the labelled split the head is re-fitted on; required when ``refit`` is on).
            Labels must be ``0 .. classes - 1`` of the task's head.
        arch: a torchvision ResNet name (``resnet18``, ``resnet34``, ``resnet50``,
            ``resnet101``, ``resnet152``) or ``{block: basic|bottleneck, layers: [1, 1, 1, 1],
            width: 16}`` for a reduced-width one (see :func:`build_resnet`).
        metric: ``accuracy`` (maximise, in [0, 1]) or ``loss`` (cross-entropy, minimise).
        head_prefix: key prefix of the classification head in the checkpoints (``fc.`` in
            torchvision's ResNets); those tensors are not merged.
        refit: ``false``/``null`` (score with the fine-tuned heads as they are), ``true``, or
            ``{steps: 100, lr: 0.01, batch_size: 64, weight_decay: 0.0, max_samples: null,
            optimizer: adam, seed: 0}``: after each merge, re-train every task's linear head
            on the merged backbone's features of its ``refit_data`` (``max_samples``: a fixed
            subset), for ``steps`` mini-batch steps from the fine-tuned head, with a fixed
            seed (the same merge always gives the same head).
        image_size: crop size of the default preprocessing (:func:`default_transform`).
        resize_size: the shorter side images are resized to before the crop (``None``:
            ``round(image_size * 256 / 224)``, torchvision's ImageNet setting).
        transform: (Python only) a callable replacing the default preprocessing, applied to
            the PIL images of both the evaluation and the refit data.
        batch_size, num_workers: evaluation batching (``num_workers`` for streamed data).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:<i>``.
        precision: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``amp``, ``bf16``.
        preload: keep preprocessed images in memory (``auto``: when a task's tensors take at
            most ``preload_limit_gb``).
        allow_pickle: let ``head`` files (and the fine-tuned checkpoints read for their heads)
            be fully unpickled (only for files you trust).

    Checkpoints: :meth:`prepare_checkpoint` drops the head tensors (so fine-tunes on datasets
    with different class counts merge), strips a ``module.``/``model.`` wrapper prefix, and
    checks the remaining keys and shapes against ``arch``.

    The evaluation follows :class:`~mapframe.evaluators.ModelEvaluator`'s template:
    :meth:`setup` builds one resident backbone (``fc`` replaced by the identity; the
    :attr:`model`) on ``device`` (:meth:`build_model`), then each task's head and evaluation
    set (:meth:`prepare`). Each evaluation writes ``θ(c)`` into the resident backbone in place
    (:meth:`merge`: no reload, no copy) and scores each requested task with its head
    (:meth:`score_task`, which re-fits the head first when ``refit`` is on); a model whose
    logits are not finite scores NaN.

    Cost: without refit, an evaluation is one forward pass per evaluation image. With refit,
    each evaluation also runs the merged backbone over every task's ``refit_data`` and trains
    the heads, which makes every evaluation cost more, usually several times more when
    ``refit_data`` is larger than ``data``. :meth:`cost` reports the seconds spent merging,
    re-fitting and scoring; each evaluation's refit time is logged at INFO, and the totals
    when the evaluator closes.
    """

    name: ClassVar[str] = "resnet"
    needs_merger: ClassVar[bool] = True
    #: One merge per call: each evaluation is a full pass over the evaluation sets.
    max_batch_size: int | None = 1

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any] | TaskSpec],
        arch: str | Mapping[str, Any] = "resnet18",
        metric: str = "accuracy",
        head_prefix: str = "fc.",
        refit: bool | Mapping[str, Any] | None = None,
        image_size: int = 224,
        resize_size: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        device: str = "auto",
        precision: str = "auto",
        preload: bool | str = "auto",
        preload_limit_gb: float = 4.0,
        allow_pickle: bool = False,
    ) -> None:
        self._specs = parse_resnet_tasks(tasks)
        self._arch = parse_arch(arch)
        check_metric(metric)
        if not isinstance(head_prefix, str) or not head_prefix:
            raise ConfigError(f"head_prefix must be a non-empty string such as 'fc.', got "
                              f"{head_prefix!r}")
        self._refit = parse_refit(refit)
        if self._refit is not None:
            lacking = [s.name for s in self._specs if s.refit_data is None]
            if lacking:
                raise ConfigError(
                    f"refit is on but task(s) {', '.join(map(repr, lacking))} have no "
                    "refit_data: give each task a labelled split to re-fit its head on "
                    "(refit_data: /path/to/train/ImageFolder), or set refit: false"
                )
            same = [s.name for s in self._specs if _same_data(s.refit_data, s.data)]
            if same:
                raise ConfigError(
                    f"task(s) {', '.join(map(repr, same))} re-fit their head on the data they "
                    "are scored on (refit_data is data): the head would learn the labels it "
                    "is scored on; give refit_data another labelled split (e.g. train)")
        for arg, val, low in (("image_size", image_size, 1), ("batch_size", batch_size, 1),
                              ("num_workers", num_workers, 0)):
            check_count(arg, val, low)
        if resize_size is not None and (
            isinstance(resize_size, bool) or not isinstance(resize_size, int)
            or resize_size < image_size
        ):
            raise ConfigError(f"resize_size must be an integer >= image_size ({image_size}) or "
                              f"null, got {resize_size!r}")
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be a callable (image -> tensor), got "
                              f"{type(transform).__name__}")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {device!r}")
        check_preload(preload)
        if (isinstance(preload_limit_gb, bool) or not isinstance(preload_limit_gb, (int, float))
                or not preload_limit_gb >= 0):
            raise ConfigError(f"preload_limit_gb must be a non-negative number, got "
                              f"{preload_limit_gb!r}")
        self.arch: str | dict[str, Any] = arch if isinstance(arch, str) else {
            "block": self._arch.block, "layers": list(self._arch.layers),
            "width": self._arch.width}
        self.metric = metric
        self.head_prefix = head_prefix
        self.image_size = image_size
        self.resize_size = resize_size
        self._transform = transform
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self._device: str | None = None
        self.precision = check_precision(precision)
        self.preload = preload
        self.preload_limit_gb = float(preload_limit_gb)
        self.allow_pickle = bool_setting(allow_pickle, "allow_pickle")
        self._tasks = metric_tasks(self._specs, metric)
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._ready = False
        self._cost = self._zero_cost()
        self._merge_cost: _MergeCost | None = None
        #: Per task, the last refit: seconds, samples, steps, loss before and after.
        self._last_refit: dict[str, dict[str, float]] = {}

    # -- description -------------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """One accuracy (or loss) objective per task, in the order of ``tasks``."""
        return list(self._tasks)

    @property
    def refit(self) -> dict[str, Any] | None:
        """The refit settings with defaults filled in, or ``None`` when refit is off."""
        return None if self._refit is None else dict(self._refit)

    def describe(self) -> dict[str, Any]:
        """Settings as a config would spell them (JSON-compatible; datasets given as objects
        and state dicts are named by type, a custom transform by its qualified name)."""
        transform = None
        if self._transform is not None:
            t = self._transform
            transform = getattr(t, "__qualname__", None) or type(t).__qualname__
            transform = f"{getattr(t, '__module__', '')}:{transform}"
        return {
            "name": self.name,
            "tasks": [describe_resnet_task(s) for s in self._specs],
            "arch": self.arch if isinstance(self.arch, str) else dict(self.arch),
            "metric": self.metric,
            "head_prefix": self.head_prefix,
            "refit": self.refit,
            "image_size": self.image_size,
            "resize_size": self.resize_size,
            "transform": transform,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "device": self.device,
            "precision": self.precision,
            "preload": self.preload,
            "preload_limit_gb": self.preload_limit_gb,
            "allow_pickle": self.allow_pickle,
        }

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        """The preprocessing applied to images: ``transform`` or :func:`default_transform`."""
        if self._transform is not None:
            return self._transform
        return default_transform(self.image_size, self.resize_size)

    # -- checkpoints -------------------------------------------------------------------------
    def prepare_checkpoint(
        self, state: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """The backbone of a ResNet checkpoint: without the head (keys starting with
        ``head_prefix``) and without a ``module.``/``model.`` prefix that every key carries.

        Raises :class:`~mapframe.errors.CheckpointError` naming ``source`` when nothing but
        the head is left, or when the keys or shapes are not those of ``arch`` (the message
        lists a few missing/unexpected keys and a guess of the checkpoint's architecture).
        """
        if self._shapes is None:
            self._shapes = backbone_shapes(self.arch)
        return checkpoint_backbone(state, source, self._arch, self.head_prefix, self._shapes)

    # -- setup (ModelEvaluator's template: build_model, bind_parameters, prepare) ------------
    def build_model(self) -> torch.nn.Module:
        """The resident backbone: ``arch`` with ``fc`` replaced by the identity, on
        ``device``, in eval mode and without gradients (merges overwrite its weights)."""
        import torch

        self._device = resolve_device(self.device)
        model = build_resnet(self.arch, num_classes=1)
        model.fc = torch.nn.Identity()
        return freeze_on_device(model, self._device)

    def model_device(self) -> torch.device:
        """The torch device of the resident backbone (``device`` resolved; ``auto`` picks
        CUDA when available)."""
        import torch

        return torch.device(self._device or resolve_device(self.device))

    def prepare(self) -> None:
        """Each task's head (its fine-tuned one, kept to start every refit from), evaluation
        set and, when refit is on, refit set."""
        import torch

        device = self._resolved_device()
        preprocess = self.preprocess
        self._finetuned_heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._heads: dict[str, torch.nn.Linear] = {}
        self._sets: dict[str, EvalSet] = {}
        self._refit_sets: dict[str, EvalSet] = {}
        for spec in self._specs:
            weight, bias = load_head(spec, self.merger.task_vectors,
                                     head_prefix=self.head_prefix,
                                     feature_dim=self._arch.feature_dim,
                                     arch_label=self._arch.label,
                                     allow_pickle=self.allow_pickle)
            self._finetuned_heads[spec.name] = (weight.to(device), bias.to(device))
            head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(device)
            head.requires_grad_(False)
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.copy_(bias)
            self._heads[spec.name] = head.eval()
            n_classes = int(weight.shape[0])
            ds = load_dataset(spec, preprocess)
            self._sets[spec.name] = EvalSet(
                spec.name, ds, n_classes, batch_size=self.batch_size,
                num_workers=self.num_workers, max_samples=spec.max_samples,
                preload=self.preload, preload_limit_gb=self.preload_limit_gb,
                device=device)
            if self._refit is not None:
                rspec = TaskSpec(f"{spec.name} (refit_data)", spec.refit_data)
                rds = load_dataset(rspec, preprocess)
                self._refit_sets[spec.name] = EvalSet(
                    rspec.name, rds, n_classes, batch_size=self.batch_size,
                    num_workers=self.num_workers, max_samples=self._refit["max_samples"],
                    preload=self.preload, preload_limit_gb=self.preload_limit_gb,
                    device=device)
        self._cost = self._zero_cost()
        self._merge_cost = None
        self._last_refit = {}
        self._ready = True

    def _resolved_device(self) -> str:
        """``device`` as resolved by :meth:`build_model` (a string such as ``cuda:0``)."""
        if self._device is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return self._device

    # -- accessors ---------------------------------------------------------------------------
    @property
    def heads(self) -> dict[str, torch.nn.Linear]:
        """Each task's head as used by the latest evaluation (re-fitted when refit is on)."""
        self._check_ready()
        return dict(self._heads)

    @property
    def finetuned_heads(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each task's fine-tuned head as loaded: ``(weight, bias)``; refits start here."""
        self._check_ready()
        return {k: (w.clone(), b.clone()) for k, (w, b) in self._finetuned_heads.items()}

    @property
    def last_refit(self) -> dict[str, dict[str, float]]:
        """Per task, the last refit's seconds, samples, steps and loss before/after."""
        return {k: dict(v) for k, v in self._last_refit.items()}

    def cost(self) -> dict[str, float]:
        """Cumulative cost since :meth:`setup`: ``evaluations`` (merges), ``merge_s``,
        ``refit_s``, ``score_s`` (seconds), ``refits`` (heads re-fitted), ``tasks_scored``,
        and ``refit_s_per_evaluation``."""
        out = dict(self._cost)
        out["refit_s_per_evaluation"] = out["refit_s"] / out["evaluations"] if (
            out["evaluations"]) else 0.0
        return out

    @staticmethod
    def _zero_cost() -> dict[str, float]:
        return {"evaluations": 0, "merge_s": 0.0, "refit_s": 0.0, "score_s": 0.0,
                "refits": 0, "tasks_scored": 0}

    def _check_ready(self) -> None:
        if not self._ready:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")

    # -- evaluation (ModelEvaluator's template: merge, score_tasks -> score_task) -------------
    def merge(self, coefficients: np.ndarray) -> None:
        """Write ``θ(c)`` into the resident backbone (timed, CUDA work included)."""
        t0 = time.perf_counter()
        super().merge(coefficients)
        merge_s = time.perf_counter() - t0
        self._merge_cost = _MergeCost(np.round(coefficients, 4).tolist(), merge_s)
        self._cost["evaluations"] += 1
        self._cost["merge_s"] += merge_s

    def score_tasks(self, model: torch.nn.Module, tasks: Sequence[int]) -> list[float]:
        """Re-fit (when refit is on) and score ``tasks`` for the latest merge; add the time
        to :meth:`cost` and log it at INFO."""
        values = super().score_tasks(model, tasks)
        self._cost["tasks_scored"] += len(tasks)
        if self._refit is not None:
            self._cost["refits"] += len(tasks)
        row = self._merge_cost
        if row is not None:
            if self._refit is not None:
                logger.info("resnet: c=%s merged in %.3f s, %d head refit(s) in %.3f s, "
                            "scored in %.3f s", row.coefficients, row.merge_s, len(tasks),
                            row.refit_s, row.score_s)
            else:
                logger.info("resnet: c=%s merged in %.3f s, scored in %.3f s (no refit)",
                            row.coefficients, row.merge_s, row.score_s)
            self._merge_cost = None
        return values

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """Accuracy (or loss) of ``model`` with task ``task``'s head on its evaluation set,
        after re-fitting that head on ``model``'s features when refit is on."""
        name = self._specs[task].name
        refit_s = self._refit_head(model, name) if self._refit is not None else 0.0
        t0 = time.perf_counter()
        res = score_classifier(functools.partial(self._logits, model, name), self._sets[name],
                               self._resolved_device(), self.precision)
        score_s = time.perf_counter() - t0
        self._cost["refit_s"] += refit_s
        self._cost["score_s"] += score_s
        if self._merge_cost is not None:
            self._merge_cost.refit_s += refit_s
            self._merge_cost.score_s += score_s
        return res[metric_index(self.metric)]

    def logits(self, task: str, images: torch.Tensor) -> torch.Tensor:
        """Logits of the resident (currently merged) backbone with ``task``'s head."""
        return self._logits(self.resident_model, task, images)

    def _logits(self, backbone: torch.nn.Module, task: str,
                images: torch.Tensor) -> torch.Tensor:
        return self._heads[task](backbone(images).float())

    def _features(self, backbone: torch.nn.Module,
                  evalset: EvalSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled float32 features of ``backbone`` and the labels, on the device."""
        import torch

        feats, labels = [], []
        with torch.no_grad(), autocast(self._resolved_device(), self.precision):
            for x, y in evalset.batches(torch.float32):
                feats.append(backbone(x).float())
                labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def _refit_head(self, backbone: torch.nn.Module, task: str) -> float:
        """Re-fit ``task``'s head on ``backbone``'s features of its ``refit_data``, starting
        from the fine-tuned head; return the seconds it took."""
        assert self._refit is not None
        t0 = time.perf_counter()
        feats, labels = self._features(backbone, self._refit_sets[task])
        info = refit_head(self._heads[task], self._finetuned_heads[task], feats, labels,
                          self._refit)
        synchronize(self._resolved_device())
        seconds = time.perf_counter() - t0
        info["seconds"] = seconds
        self._last_refit[task] = info
        logger.debug("resnet: task %s head refit on %d samples, %d steps, loss %.4f -> %.4f "
                     "(%.3f s)", task, int(info["samples"]), int(info["steps"]),
                     info["loss_before"], info["loss_after"], seconds)
        return seconds

    def close(self) -> None:
        """Log the cost summary; drop the resident backbone, heads and preloaded images."""
        if self._ready:
            c = self.cost()
            if c["evaluations"]:
                logger.info(
                    "resnet: %d evaluations: %.2f s merging, %.2f s re-fitting %d heads "
                    "(%.3f s per evaluation), %.2f s scoring %d tasks",
                    c["evaluations"], c["merge_s"], c["refit_s"], c["refits"],
                    c["refit_s_per_evaluation"], c["score_s"], c["tasks_scored"])
        super().close()
        drop_attributes(self, ("_heads", "_finetuned_heads", "_sets", "_refit_sets"))
        self._ready = False


def _same_data(a: Any, b: Any) -> bool:
    """Whether two tasks' data specs name the same data (paths compared resolved)."""
    if isinstance(a, str) and isinstance(b, str):
        def resolved(p: str) -> str:
            return os.path.realpath(os.path.expanduser(p))

        return resolved(a) == resolved(b)
    return a is not None and a == b
