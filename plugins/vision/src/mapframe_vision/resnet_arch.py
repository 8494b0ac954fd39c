"""ResNet architectures for :class:`~mapframe_vision.resnet.ResNetEvaluator`: parsing
``arch`` (a torchvision name or ``{block, layers, width}``), building the model, and telling
from a checkpoint's keys which architecture it comes from.

Importing this module is cheap: torch and torchvision are imported on first use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mapframe.errors import CheckpointError, ConfigError
from mapframe_vision._common import check_state_shapes

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCHS",
    "ResNetArch",
    "backbone_shapes",
    "build_resnet",
    "checkpoint_backbone",
    "infer_arch",
    "parse_arch",
    "strip_wrapper_prefix",
]

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
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "model.")


@dataclass(frozen=True)
class ResNetArch:
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


def parse_arch(arch: Any) -> ResNetArch:
    """``arch`` (a name of :data:`ARCHS`, a ``{block, layers, width}`` mapping or a parsed
    :class:`ResNetArch`) checked and parsed; a :class:`~mapframe.errors.ConfigError` says
    what is wrong otherwise."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ConfigError(
                f"unknown ResNet arch {arch!r}; use one of {', '.join(ARCHS)} or a mapping "
                "{block: basic|bottleneck, layers: [n1, n2, n3, n4], width: 64}"
            )
        block, layers = ARCHS[arch]
        return ResNetArch(block, layers, _STANDARD_WIDTH, arch)
    if isinstance(arch, ResNetArch):
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
    return ResNetArch(block, lay, width, label)


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

    a = parse_arch(arch)
    if isinstance(arch, str):
        model: torch.nn.Module = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        return model
    block = BasicBlock if a.block == "basic" else Bottleneck
    return _resnet_class()(block, list(a.layers), num_classes, a.width)  # type: ignore[call-arg]


def infer_arch(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
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


def backbone_shapes(arch: str | Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the backbone (``fc`` dropped) of ``arch`` (as :func:`build_resnet`
    takes it), built on the meta device (no memory, no initialisation cost)."""
    import torch

    with torch.device("meta"):
        model = build_resnet(arch, num_classes=1)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith("fc.")}


def checkpoint_backbone(
    state: Mapping[str, torch.Tensor],
    source: str,
    arch: ResNetArch,
    head_prefix: str,
    expected: Mapping[str, tuple[int, ...]],
) -> dict[str, torch.Tensor]:
    """The backbone tensors of the ResNet checkpoint ``state`` (read from ``source``):
    without the head (keys starting with ``head_prefix``) and without a ``module.``/``model.``
    prefix that every key carries, checked against the ``expected`` shapes of ``arch``
    (:func:`backbone_shapes`); a :class:`~mapframe.errors.CheckpointError` naming ``source``
    and a guess of the checkpoint's architecture otherwise."""
    state = strip_wrapper_prefix(state)
    out = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    if not out:
        raise CheckpointError(
            f"checkpoint {source}: no backbone tensors left after dropping the head "
            f"(keys starting with {head_prefix!r}); is it a ResNet state dict?"
        )
    guess = infer_arch({k: tuple(v.shape) for k, v in out.items()})
    hint = f" (it looks like {guess})" if guess and guess != arch.label else ""
    check_state_shapes(
        out, expected, source,
        misfit=f"is not a torchvision ResNet of arch {arch.label}",
        model=f"a ResNet of arch {arch.label}", varies="width", hint=hint,
        fix="set arch to the one it was fine-tuned from",
        keys_fix=("set arch to the one it was fine-tuned from, or head_prefix (now "
                  f"{head_prefix!r}) to the key prefix of its classification head"),
    )
    return out
