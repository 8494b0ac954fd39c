"""Tasks and images of :class:`~mapframe_vision.resnet.ResNetEvaluator`: the task spec
(evaluation data, head, refit data), its description for the study's fingerprint, and the
default ImageNet preprocessing.

Importing this module is cheap: torchvision is imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mapframe.errors import ConfigError
from mapframe_vision._common import check_task_mapping, parse_task_list
from mapframe_vision.data import TaskSpec, describe_data

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNetTaskSpec",
    "default_transform",
    "describe_resnet_task",
    "parse_resnet_tasks",
]

#: ImageNet normalisation of torchvision's ResNet weights.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ResNetTaskSpec(TaskSpec):
    """A task of :class:`~mapframe_vision.resnet.ResNetEvaluator`:
    :class:`~mapframe_vision.data.TaskSpec`'s ``name``, ``data`` and ``max_samples``, plus
    ``head`` (where the task's classification head comes from) and ``refit_data`` (the
    labelled split the head is re-fitted on)."""

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


def parse_resnet_tasks(tasks: Any) -> list[ResNetTaskSpec]:
    """The evaluator's ``tasks`` list checked and parsed (names unique)."""
    return parse_task_list(tasks, "{name, data, max_samples, head, refit_data}",
                           ResNetTaskSpec.parse)


def describe_resnet_task(spec: ResNetTaskSpec) -> dict[str, Any]:
    """``spec`` as a config would spell it (JSON-compatible: datasets given as objects and
    state dicts are named by type); unset optional fields are left out."""
    out: dict[str, Any] = {"name": spec.name, "data": describe_data(spec.data)}
    if spec.max_samples is not None:
        out["max_samples"] = spec.max_samples
    if spec.head is not None:
        out["head"] = _describe_head(spec.head)
    if spec.refit_data is not None:
        out["refit_data"] = describe_data(spec.refit_data)
    return out


def _describe_head(head: Any) -> Any:
    if isinstance(head, (str, os.PathLike)):
        return os.fspath(head)
    shapes = {str(k): list(getattr(v, "shape", ())) for k, v in head.items()}
    return f"<state dict {shapes}>"


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
