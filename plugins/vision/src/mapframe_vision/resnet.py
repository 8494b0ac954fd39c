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

Importing this module is cheap: torch and torchvision are imported on first use.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe.evaluators.base import Evaluator
from mapframe.problem import Task
from mapframe_vision._common import (
    check_count,
    check_metric,
    check_preload,
    check_state_shapes,
    check_task_mapping,
    drop_attributes,
    make_resident,
    merge_resident,
    metric_tasks,
    parse_task_list,
    synchronize,
)
from mapframe_vision.data import EvalSet, TaskSpec, describe_data, load_dataset
from mapframe_vision.runtime import (
    autocast,
    check_precision,
    resolve_device,
    score_classifier,
)

if TYPE_CHECKING:
    import torch

    from mapframe.merging.merger import Merger

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

#: The torchvision ResNets ``arch`` may name: ``(block, layers)``.
ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
_BLOCKS: tuple[str, ...] = ("basic", "bottleneck")
_STANDARD_WIDTH = 64

#: ImageNet normalisation of torchvision's ResNet weights.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Settings of the head refit (``refit: true`` uses these; a mapping overrides some).
REFIT_DEFAULTS: dict[str, Any] = {
    "steps": 100,
    "lr": 0.01,
    "batch_size": 64,
    "weight_decay": 0.0,
    "max_samples": None,
    "optimizer": "adam",
    "seed": 0,
}
_OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "model.")


# ---------------------------------------------------------------------------------------------
# architecture


@dataclass(frozen=True)
class _Arch:
    """A parsed ``arch``: block kind, blocks per stage, stem width (64 for torchvision's)."""

    block: str
    layers: tuple[int, int, int, int]
    width: int
    label: str

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features the head reads: ``8 * width * expansion``."""
        return 8 * self.width * self.expansion


def _parse_arch(arch: Any) -> _Arch:
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ConfigError(
                f"unknown ResNet arch {arch!r}; use one of {', '.join(ARCHS)} or a mapping "
                "{block: basic|bottleneck, layers: [n1, n2, n3, n4], width: 64}"
            )
        block, layers = ARCHS[arch]
        return _Arch(block, layers, _STANDARD_WIDTH, arch)
    if isinstance(arch, _Arch):
        return arch
    if not isinstance(arch, Mapping):
        raise ConfigError(
            f"arch must be a torchvision ResNet name ({', '.join(ARCHS)}) or a mapping "
            f"{{block, layers, width}}, got {type(arch).__name__}"
        )
    unknown = sorted(set(map(str, arch)) - {"block", "layers", "width"})
    if unknown:
        raise ConfigError(f"arch: unknown field(s) {unknown} (allowed: block, layers, width)")
    block = arch.get("block", "basic")
    if block not in _BLOCKS:
        raise ConfigError(f"arch.block must be 'basic' or 'bottleneck', got {block!r}")
    raw = arch.get("layers")
    if (
        not isinstance(raw, Sequence)
        or isinstance(raw, (str, bytes))
        or len(raw) != 4
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in raw)
    ):
        raise ConfigError(
            f"arch.layers must be 4 positive integers (blocks per stage, e.g. [2, 2, 2, 2] "
            f"for resnet18), got {raw!r}"
        )
    width = arch.get("width", _STANDARD_WIDTH)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"arch.width must be a positive integer (64 in torchvision's "
                          f"ResNets), got {width!r}")
    lay = (int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))
    label = next((n for n, (b, ls) in ARCHS.items()
                  if b == block and ls == lay and width == _STANDARD_WIDTH), None)
    if label is None:
        label = f"{{block: {block}, layers: {list(lay)}, width: {width}}}"
    return _Arch(block, lay, width, label)


@functools.cache
def _resnet_class() -> type[torch.nn.Module]:
    """A torchvision ``ResNet`` whose stage widths are ``w, 2w, 4w, 8w`` (torchvision: 64)."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    class _WidthResNet(ResNet):
        """torchvision's ``ResNet`` with stem width ``width``; keys and forward unchanged."""

        def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int],
                     num_classes: int, width: int) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = width
            self.dilation = 1
            self.groups = 1
            self.base_width = 64  # torchvision's width_per_group, not the stem width
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, width, layers[0])
            self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
            self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
            self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width * block.expansion, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    _WidthResNet.__module__ = __name__
    _WidthResNet.__name__ = _WidthResNet.__qualname__ = "WidthResNet"
    return _WidthResNet


def build_resnet(arch: str | Mapping[str, Any], num_classes: int = 1000) -> torch.nn.Module:
    """A randomly initialised torchvision ResNet (``weights=None``; nothing is downloaded).

    ``arch`` is a torchvision name (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
    ``resnet152``) or ``{block: basic|bottleneck, layers: [n1, n2, n3, n4], width: w}``: a
    :class:`torchvision.models.ResNet` with stage widths ``w, 2w, 4w, 8w`` (torchvision's
    are ``w = 64``), whose state-dict keys are torchvision's. The head is ``fc``.
    """
    import torchvision.models as tvm
    from torchvision.models.resnet import BasicBlock, Bottleneck

    a = _parse_arch(arch)
    if isinstance(arch, str):
        model: torch.nn.Module = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        return model
    block = BasicBlock if a.block == "basic" else Bottleneck
    return _resnet_class()(block, list(a.layers), num_classes, a.width)  # type: ignore[call-arg]


def _infer_arch(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """A guess of the architecture a ResNet-like state dict comes from (for error messages)."""
    stem = shapes.get("conv1.weight")
    if stem is None or len(stem) != 4:
        return None
    layers = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in shapes
               if (m := re.match(rf"layer{stage}\.(\d+)\.", k)) is not None}
        if not idx:
            return None
        layers.append(max(idx) + 1)
    block = "bottleneck" if "layer1.0.conv3.weight" in shapes else "basic"
    width = int(stem[0])
    for name, (b, ls) in ARCHS.items():
        if b == block and list(ls) == layers and width == _STANDARD_WIDTH:
            return name
    return f"{{block: {block}, layers: {layers}, width: {width}}}"


def strip_wrapper_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without a ``module.`` or ``model.`` prefix that *every* key carries
    (repeatedly, so ``module.model.`` goes too)."""
    out = dict(state)
    while out:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def default_transform(
    image_size: int = 224, resize_size: int | None = None
) -> Callable[[Any], Any]:
    """torchvision's ImageNet evaluation preprocessing: ``Resize(resize_size)`` (shorter side;
    default ``round(image_size * 256 / 224)``, 256 for 224), ``CenterCrop(image_size)``,
    ``ToTensor``, ``Normalize`` with the ImageNet mean and std; images are converted to RGB."""
    from torchvision import transforms as T

    size = resize_size if resize_size is not None else round(image_size * 256 / 224)
    return T.Compose([  # type: ignore[no-any-return]
        T.Lambda(_to_rgb),
        T.Resize(size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _to_rgb(img: Any) -> Any:
    mode = getattr(img, "mode", None)
    return img.convert("RGB") if mode is not None and mode != "RGB" else img


# ---------------------------------------------------------------------------------------------
# tasks


@dataclass
class ResNetTaskSpec(TaskSpec):
    """A task of :class:`ResNetEvaluator`: :class:`~mapframe_vision.data.TaskSpec`'s ``name``,
    ``data`` and ``max_samples``, plus ``head`` (where the task's classification head comes
    from) and ``refit_data`` (the labelled split the head is re-fitted on)."""

    head: Any = None
    refit_data: Any = None

    @classmethod
    def parse(cls, value: Any, where: str) -> ResNetTaskSpec:
        """Validate one ``{name, data, max_samples, head, refit_data}`` mapping."""
        if isinstance(value, ResNetTaskSpec):
            return value
        if isinstance(value, TaskSpec):
            value = {"name": value.name, "data": value.data, "max_samples": value.max_samples}
        check_task_mapping(
            value, where, "{name: cars, data: /data/cars/val, refit_data: /data/cars/train}",
            {"name", "data", "max_samples", "head", "refit_data"},
        )
        base = TaskSpec.parse({k: v for k, v in value.items() if k in
                               ("name", "data", "max_samples")}, where)
        head = value.get("head")
        if head is not None and not isinstance(head, (str, os.PathLike, Mapping)):
            raise ConfigError(
                f"task {base.name!r}: head must be the path of a checkpoint holding the head "
                f"tensors (or, from Python, a state dict), got {type(head).__name__}"
            )
        return cls(base.name, base.data, max_samples=base.max_samples, head=head,
                   refit_data=value.get("refit_data"))


def _parse_tasks(tasks: Any) -> list[ResNetTaskSpec]:
    return parse_task_list(tasks, "{name, data, max_samples, head, refit_data}",
                           ResNetTaskSpec.parse)


def _describe_head(head: Any) -> Any:
    if head is None:
        return None
    if isinstance(head, (str, os.PathLike)):
        return os.fspath(head)
    shapes = {str(k): list(getattr(v, "shape", ())) for k, v in head.items()}
    return f"<state dict {shapes}>"


def _parse_refit(refit: Any) -> dict[str, Any] | None:
    if refit is None or refit is False:
        return None
    if refit is True:
        return dict(REFIT_DEFAULTS)
    if not isinstance(refit, Mapping):
        raise ConfigError(
            "refit must be false/null (no refit), true (defaults) or a mapping {steps: 100, "
            f"lr: 0.01, batch_size: 64, weight_decay: 0.0, max_samples: null}}, got {refit!r}"
        )
    unknown = sorted(set(map(str, refit)) - set(REFIT_DEFAULTS))
    if unknown:
        raise ConfigError(f"refit: unknown field(s) {unknown} (allowed: "
                          f"{', '.join(REFIT_DEFAULTS)})")
    out = {**REFIT_DEFAULTS, **refit}

    def is_int(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, np.integer))

    def is_num(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))

    if not is_int(out["steps"]) or out["steps"] < 1:
        raise ConfigError(f"refit.steps must be a positive integer, got {out['steps']!r}")
    if not is_num(out["lr"]) or not math.isfinite(out["lr"]) or out["lr"] <= 0:
        raise ConfigError(f"refit.lr must be a positive number, got {out['lr']!r}")
    if not is_int(out["batch_size"]) or out["batch_size"] < 1:
        raise ConfigError(f"refit.batch_size must be a positive integer, got "
                          f"{out['batch_size']!r}")
    wd = out["weight_decay"]
    if not is_num(wd) or not math.isfinite(wd) or wd < 0:
        raise ConfigError(f"refit.weight_decay must be a non-negative number, got {wd!r}")
    ms = out["max_samples"]
    if ms is not None and (not is_int(ms) or ms < 1):
        raise ConfigError(f"refit.max_samples must be a positive integer or null, got {ms!r}")
    if out["optimizer"] not in _OPTIMIZERS:
        raise ConfigError(f"refit.optimizer must be one of {', '.join(_OPTIMIZERS)}, got "
                          f"{out['optimizer']!r}")
    if not is_int(out["seed"]):
        raise ConfigError(f"refit.seed must be an integer, got {out['seed']!r}")
    return {"steps": int(out["steps"]), "lr": float(out["lr"]),
            "batch_size": int(out["batch_size"]), "weight_decay": float(wd),
            "max_samples": None if ms is None else int(ms), "optimizer": out["optimizer"],
            "seed": int(out["seed"])}


# ---------------------------------------------------------------------------------------------
# evaluator


class ResNetEvaluator(Evaluator):
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

    :meth:`setup` builds one resident backbone (``fc`` replaced by the identity) on
    ``device`` and each task's head and evaluation set. Each evaluation writes ``θ(c)`` into
    the resident backbone in place (no reload, no copy) and scores every task with its head;
    a model whose logits are not finite scores NaN.

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
        self._specs = _parse_tasks(tasks)
        self._arch = _parse_arch(arch)
        check_metric(metric)
        if not isinstance(head_prefix, str) or not head_prefix:
            raise ConfigError(f"head_prefix must be a non-empty string such as 'fc.', got "
                              f"{head_prefix!r}")
        self._refit = _parse_refit(refit)
        if self._refit is not None:
            lacking = [s.name for s in self._specs if s.refit_data is None]
            if lacking:
                raise ConfigError(
                    f"refit is on but task(s) {', '.join(map(repr, lacking))} have no "
                    "refit_data: give each task a labelled split to re-fit its head on "
                    "(refit_data: /path/to/train/ImageFolder), or set refit: false"
                )
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
        self.precision = check_precision(precision)
        self.preload = preload
        self.preload_limit_gb = float(preload_limit_gb)
        self.allow_pickle = bool(allow_pickle)
        self._tasks = metric_tasks(self._specs, metric)
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._ready = False
        self._cost = self._zero_cost()
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
        tasks = []
        for s in self._specs:
            d: dict[str, Any] = {"name": s.name, "data": describe_data(s.data)}
            if s.max_samples is not None:
                d["max_samples"] = s.max_samples
            if s.head is not None:
                d["head"] = _describe_head(s.head)
            if s.refit_data is not None:
                d["refit_data"] = describe_data(s.refit_data)
            tasks.append(d)
        return {
            "name": self.name,
            "tasks": tasks,
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
    def _backbone_shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape of the backbone (``fc`` dropped) of ``arch``, built on the meta
        device (no memory, no initialisation cost)."""
        if self._shapes is None:
            import torch

            with torch.device("meta"):
                model = build_resnet(self.arch, num_classes=1)
            self._shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()
                            if not k.startswith("fc.")}
        return self._shapes

    def prepare_checkpoint(
        self, state: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """The backbone of a ResNet checkpoint: without the head (keys starting with
        ``head_prefix``) and without a ``module.``/``model.`` prefix that every key carries.

        Raises :class:`~mapframe.errors.CheckpointError` naming ``source`` when nothing but
        the head is left, or when the keys or shapes are not those of ``arch`` (the message
        lists a few missing/unexpected keys and a guess of the checkpoint's architecture).
        """
        state = strip_wrapper_prefix(state)
        out = {k: v for k, v in state.items() if not k.startswith(self.head_prefix)}
        if not out:
            raise CheckpointError(
                f"checkpoint {source}: no backbone tensors left after dropping the head "
                f"(keys starting with {self.head_prefix!r}); is it a ResNet state dict?"
            )
        expected = self._backbone_shapes()
        guess = _infer_arch({k: tuple(v.shape) for k, v in out.items()})
        hint = f" (it looks like {guess})" if guess and guess != self._arch.label else ""
        check_state_shapes(
            out, expected, source,
            misfit=f"is not a torchvision ResNet of arch {self._arch.label}",
            model=f"a ResNet of arch {self._arch.label}", varies="width", hint=hint,
            fix="set arch to the one it was fine-tuned from",
            keys_fix=("set arch to the one it was fine-tuned from, or head_prefix (now "
                      f"{self.head_prefix!r}) to the key prefix of its classification head"),
        )
        return out

    # -- setup -------------------------------------------------------------------------------
    def setup(self, merger: Merger | None) -> None:
        """Build the resident backbone, the heads, the evaluation sets and the refit sets."""
        super().setup(merger)
        assert merger is not None
        import torch

        self._device = resolve_device(self.device)
        model = build_resnet(self.arch, num_classes=1)
        model.fc = torch.nn.Identity()
        # The merged tensors, sharing storage with the resident backbone on its device; this
        # also checks the checkpoints' names and shapes and copies the integer buffers in.
        self._backbone, self._params = make_resident(model, self._device, merger)
        preprocess = self.preprocess
        self._finetuned_heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._heads: dict[str, torch.nn.Linear] = {}
        self._sets: dict[str, EvalSet] = {}
        self._refit_sets: dict[str, EvalSet] = {}
        for spec in self._specs:
            weight, bias = self._load_head(spec, merger)
            self._finetuned_heads[spec.name] = (weight.to(self._device), bias.to(self._device))
            head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(self._device)
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
                device=self._device)
            if self._refit is not None:
                rspec = TaskSpec(f"{spec.name} (refit_data)", spec.refit_data)
                rds = load_dataset(rspec, preprocess)
                self._refit_sets[spec.name] = EvalSet(
                    rspec.name, rds, n_classes, batch_size=self.batch_size,
                    num_workers=self.num_workers, max_samples=self._refit["max_samples"],
                    preload=self.preload, preload_limit_gb=self.preload_limit_gb,
                    device=self._device)
        self._cost = self._zero_cost()
        self._last_refit = {}
        self._ready = True

    def _load_head(
        self, spec: ResNetTaskSpec, merger: Merger
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (classes, features), bias (classes,))`` of a task's head, float32, CPU."""
        import torch

        from mapframe.merging.checkpoints import load_state_dict

        if spec.head is None:
            tv = merger.task_vectors
            if spec.name not in tv.task_names:
                raise ConfigError(
                    f"task {spec.name!r}: no fine-tuned checkpoint is named {spec.name!r} "
                    f"(checkpoints: {', '.join(tv.task_names)}), so its head cannot be found: "
                    "name the task like its checkpoint or give head: <checkpoint path>"
                )
            source = tv.sources[tv.task_names.index(spec.name)]
            if not os.path.isfile(source):
                raise ConfigError(
                    f"task {spec.name!r}: the task vectors were given in memory, so the "
                    "fine-tuned head cannot be read from a file; give head: <checkpoint path>"
                    " (or a state dict)"
                )
            state: Mapping[str, Any] = load_state_dict(source, allow_pickle=self.allow_pickle)
        elif isinstance(spec.head, (str, os.PathLike)):
            source = os.fspath(spec.head)
            state = load_state_dict(source, allow_pickle=self.allow_pickle)
        else:
            source = f"the head state dict of task {spec.name!r}"
            state = spec.head
        state = strip_wrapper_prefix(state)
        wkey, bkey = f"{self.head_prefix}weight", f"{self.head_prefix}bias"
        weight = state.get(wkey)
        if weight is None and "weight" in state and len(state) <= 2:
            wkey, bkey = "weight", "bias"  # a bare Linear state dict
            weight = state["weight"]
        if not isinstance(weight, torch.Tensor):
            found = sorted(k for k in state if k.endswith(("weight", "bias")))[-4:]
            raise CheckpointError(
                f"task {spec.name!r}: {source} holds no head tensor {wkey!r} (head_prefix "
                f"{self.head_prefix!r}; last weight/bias keys: {found}); set head_prefix or "
                "give head: <checkpoint path>"
            )
        bias = state.get(bkey)
        feat = self._arch.feature_dim
        if weight.ndim != 2 or weight.shape[1] != feat or weight.shape[0] < 1:
            raise CheckpointError(
                f"task {spec.name!r}: head {wkey!r} in {source} has shape "
                f"{tuple(weight.shape)}, but the backbone of arch {self._arch.label} gives "
                f"{feat} features: expected (classes, {feat}); the head comes from another "
                "architecture"
            )
        if bias is None:
            bias = torch.zeros(weight.shape[0])
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
            raise CheckpointError(
                f"task {spec.name!r}: head bias {bkey!r} in {source} has shape "
                f"{tuple(getattr(bias, 'shape', ()))}, expected ({weight.shape[0]},)"
            )
        return weight.detach().float().cpu(), bias.detach().float().cpu()

    # -- accessors ---------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        """The resident backbone (``fc`` is the identity) holding the latest merge."""
        self._check_ready()
        return self._backbone

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

    # -- evaluation --------------------------------------------------------------------------
    def logits(self, task: str, images: torch.Tensor) -> torch.Tensor:
        """Logits of the resident (currently merged) backbone with ``task``'s head."""
        return self._heads[task](self._backbone(images).float())

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """Merge each row into the resident backbone and score every task: ``(B, T)``."""
        return self.evaluate_tasks(coefficients, range(len(self._specs)))

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Merge each row and re-fit and score only the tasks ``tasks`` (indices into
        :attr:`tasks`): ``(B, len(tasks))``; other tasks' data is not read."""
        self._check_ready()
        idx = [int(t) for t in tasks]
        if any(not 0 <= t < len(self._specs) for t in idx):
            raise ConfigError(f"task indices {idx} out of range for {len(self._specs)} tasks")
        C = np.asarray(coefficients, dtype=float)
        if C.ndim == 1:
            C = C[None, :]
        n = self.merger.n_tasks
        if C.ndim != 2 or C.shape[1] != n:
            raise ConfigError(
                f"coefficients must have shape (B, {n}) (one per fine-tuned checkpoint), got "
                f"{np.shape(coefficients)}"
            )
        out = np.empty((C.shape[0], len(idx)))
        key = 0 if self.metric == "accuracy" else 1
        for b, c in enumerate(C):
            merge_s = merge_resident(self.merger, self._params, c, self._device)
            refit_s = score_s = 0.0
            for j, i in enumerate(idx):
                name = self._specs[i].name
                if self._refit is not None:
                    refit_s += self._refit_head(name)
                t1 = time.perf_counter()
                res = score_classifier(functools.partial(self.logits, name), self._sets[name],
                                       self._device, self.precision)
                score_s += time.perf_counter() - t1
                out[b, j] = res[key]
            self._cost["evaluations"] += 1
            self._cost["merge_s"] += merge_s
            self._cost["refit_s"] += refit_s
            self._cost["score_s"] += score_s
            self._cost["tasks_scored"] += len(idx)
            if self._refit is not None:
                self._cost["refits"] += len(idx)
                logger.info("resnet: c=%s merged in %.3f s, %d head refit(s) in %.3f s, "
                            "scored in %.3f s", np.round(c, 4).tolist(), merge_s, len(idx),
                            refit_s, score_s)
            else:
                logger.info("resnet: c=%s merged in %.3f s, scored in %.3f s (no refit)",
                            np.round(c, 4).tolist(), merge_s, score_s)
        return out

    def _features(self, evalset: EvalSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled float32 features of the resident backbone and the labels, on the device."""
        import torch

        feats, labels = [], []
        with torch.no_grad(), autocast(self._device, self.precision):
            for x, y in evalset.batches(torch.float32):
                feats.append(self._backbone(x).float())
                labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def _refit_head(self, task: str) -> float:
        """Re-fit ``task``'s head on the merged backbone's features of its ``refit_data``,
        starting from the fine-tuned head; return the seconds it took."""
        import torch
        import torch.nn.functional as F

        assert self._refit is not None
        cfg = self._refit
        t0 = time.perf_counter()
        head = self._heads[task]
        w0, b0 = self._finetuned_heads[task]
        with torch.no_grad():
            head.weight.copy_(w0)
            head.bias.copy_(b0)
        feats, labels = self._features(self._refit_sets[task])
        info: dict[str, float] = {"samples": float(len(labels)), "steps": 0.0,
                                  "loss_before": math.nan, "loss_after": math.nan}
        if bool(torch.isfinite(feats).all()):
            with torch.no_grad():
                info["loss_before"] = float(F.cross_entropy(head(feats), labels))
            head.train()
            params = [head.weight, head.bias]
            for p in params:
                p.requires_grad_(True)
            if cfg["optimizer"] == "adam":
                opt: torch.optim.Optimizer = torch.optim.Adam(
                    params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
            else:
                opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9,
                                      weight_decay=cfg["weight_decay"])
            gen = torch.Generator().manual_seed(cfg["seed"])
            n = len(labels)
            bs = min(cfg["batch_size"], n)
            order = torch.randperm(n, generator=gen)
            pos = 0
            with torch.enable_grad():
                for _ in range(cfg["steps"]):
                    if pos + bs > n:
                        order, pos = torch.randperm(n, generator=gen), 0
                    batch = order[pos:pos + bs].to(feats.device)
                    pos += bs
                    loss = F.cross_entropy(head(feats[batch]), labels[batch])
                    if not bool(torch.isfinite(loss)):
                        break  # a diverged refit: the head's logits will score NaN
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    info["steps"] += 1
            for p in params:
                p.requires_grad_(False)
                p.grad = None
            head.eval()
            with torch.no_grad():
                info["loss_after"] = float(F.cross_entropy(head(feats), labels))
        synchronize(self._device)
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
        drop_attributes(self, ("_backbone", "_params", "_heads", "_finetuned_heads", "_sets",
                               "_refit_sets"))
        self._ready = False
