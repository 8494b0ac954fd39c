"""The digits example's data: scikit-learn's bundled 8x8 digits, split once, and the task
variants (input transforms and label maps) the fine-tunes learn.

Importing this module is cheap: scikit-learn is imported on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from mapframe._imports import optional_import
from mapframe.errors import ConfigError

__all__ = [
    "DEFAULT_TASKS",
    "EVAL_SPLITS",
    "METRICS",
    "SPLITS",
    "TASKS",
    "TASK_DESCRIPTIONS",
    "task_data",
]

#: The task variants, in canonical order. Each is ``(input transform, label map)`` below.
TASKS: tuple[str, ...] = (
    "rot90",
    "flip",
    "vflip",
    "transpose",
    "invert",
    "roll",
    "shift_labels",
    "reverse_labels",
)

#: The two tasks the README's example merges: their front is a genuine curve.
DEFAULT_TASKS: tuple[str, ...] = ("rot90", "flip")

#: One line per task variant, for listings and docs.
TASK_DESCRIPTIONS: dict[str, str] = {
    "rot90": "images rotated 90 degrees counter-clockwise",
    "flip": "images mirrored left-right",
    "vflip": "images mirrored top-bottom",
    "transpose": "images transposed (rows and columns swapped)",
    "invert": "pixel intensities inverted (1 - x)",
    "roll": "images shifted cyclically 3 pixels to the right",
    "shift_labels": "original images, labels y -> (y + 3) mod 10",
    "reverse_labels": "original images, labels y -> 9 - y",
}

# task -> (input transform, label map); the transforms are defined in _transform_images and
# _map_labels. Tasks that share an input transform share one forward pass in the evaluator.
_VARIANTS: dict[str, tuple[str, str]] = {
    "rot90": ("rot90", "identity"),
    "flip": ("flip", "identity"),
    "vflip": ("vflip", "identity"),
    "transpose": ("transpose", "identity"),
    "invert": ("invert", "identity"),
    "roll": ("roll", "identity"),
    "shift_labels": ("identity", "shift3"),
    "reverse_labels": ("identity", "reverse"),
}

#: Data splits of :func:`task_data`; the evaluator scores on :data:`EVAL_SPLITS` only.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
EVAL_SPLITS: tuple[str, ...] = ("validation", "test")
#: Metrics of :class:`DigitsEvaluator`: accuracy in [0, 1] (maximise) or cross-entropy (minimise).
METRICS: tuple[str, ...] = ("accuracy", "loss")

_N_PIXELS = 64
_N_CLASSES = 10
_SPLIT_SEED = 0


def _check_tasks(tasks: Sequence[str] | str) -> list[str]:
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise ConfigError(f"give at least one digits task; available: {', '.join(TASKS)}")
    unknown = [t for t in names if t not in _VARIANTS]
    if unknown:
        raise ConfigError(
            f"unknown digits task(s) {', '.join(map(repr, unknown))}; available: "
            f"{', '.join(TASKS)}"
        )
    dupes = sorted({t for t in names if names.count(t) > 1})
    if dupes:
        raise ConfigError(f"digits tasks must be unique; repeated: {', '.join(dupes)}")
    return names


def _check_split_and_metric(split: str, metric: str) -> None:
    """One-line :class:`~mapframe.errors.ConfigError` for a split or metric the evaluator
    does not know."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"unknown digits split {split!r}; available: {', '.join(EVAL_SPLITS)}")
    if metric not in METRICS:
        raise ConfigError(f"unknown digits metric {metric!r}; available: {', '.join(METRICS)}")


@functools.cache
def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (images (n, 8, 8) float32 in [0, 1], labels (n,) int64)``, read-only."""
    datasets = optional_import("sklearn.datasets", "example", "the digits example")
    model_selection = optional_import("sklearn.model_selection", "example", "the digits example")
    digits = datasets.load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0).astype(np.float32)
    labels = np.asarray(digits.target, dtype=np.int64)
    index = np.arange(labels.size)
    train, rest = model_selection.train_test_split(
        index, train_size=0.5, stratify=labels, random_state=_SPLIT_SEED
    )
    val, test = model_selection.train_test_split(
        rest, train_size=0.5, stratify=labels[rest], random_state=_SPLIT_SEED
    )
    out = {}
    for name, idx in (("train", train), ("validation", val), ("test", test)):
        idx = np.sort(idx)
        x, y = images[idx], labels[idx]
        x.flags.writeable = False
        y.flags.writeable = False
        out[name] = (x, y)
    return out


def _transform_images(name: str, images: np.ndarray) -> np.ndarray:
    if name == "identity":
        out = images
    elif name == "rot90":
        out = np.rot90(images, 1, axes=(1, 2))
    elif name == "flip":
        out = images[:, :, ::-1]
    elif name == "vflip":
        out = images[:, ::-1, :]
    elif name == "transpose":
        out = images.transpose(0, 2, 1)
    elif name == "invert":
        out = 1.0 - images
    elif name == "roll":
        out = np.roll(images, 3, axis=2)
    else:  # pragma: no cover - _VARIANTS only names the transforms above
        raise AssertionError(name)
    return np.array(out, dtype=np.float32, order="C")  # a fresh, writable copy


def _map_labels(name: str, labels: np.ndarray) -> np.ndarray:
    if name == "identity":
        out = labels
    elif name == "shift3":
        out = (labels + 3) % _N_CLASSES
    elif name == "reverse":
        out = (_N_CLASSES - 1) - labels
    else:  # pragma: no cover - _VARIANTS only names the maps above
        raise AssertionError(name)
    return np.array(out, dtype=np.int64, order="C")


def _variant_data(transform: str, label_map: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in SPLITS:
        raise ConfigError(f"unknown digits split {split!r}; available: {', '.join(SPLITS)}")
    images, labels = _splits()[split]
    x = _transform_images(transform, images).reshape(len(labels), _N_PIXELS)
    return x, _map_labels(label_map, labels)


def task_data(task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, 64)`` float32 in ``[0, 1]`` and labels ``(n,)`` int64 of one task variant.

    ``split`` is ``"train"``, ``"validation"`` or ``"test"``; ``task`` is one of :data:`TASKS`
    or ``"original"`` (the untransformed digits the pretrained model learns).
    """
    if task == "original":
        return _variant_data("identity", "identity", split)
    (name,) = _check_tasks([task])
    return _variant_data(*_VARIANTS[name], split)
