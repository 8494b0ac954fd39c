"""Evaluation data for the vision evaluators: image datasets, class names, checks, batching.

A task's ``data`` is one of

* a folder in ``ImageFolder`` layout (``<root>/<class>/<image>``, classes sorted by name);
* ``{"dataset": "package.module:factory", "kwargs": {...}}``: a function (or class) that
  returns a torch ``Dataset`` of ``(image, label)`` pairs; it is called with
  ``transform=<the model's preprocessing>`` plus ``kwargs``;
* from Python, any ``Dataset`` object (apply the model's preprocessing yourself, or let the
  evaluator do it: PIL images are transformed, tensors are used as they are).

Evaluation sets are small compared to training sets and are read once per merge, so
:class:`EvalSet` decodes and preprocesses them once and keeps the tensors in memory when they
fit (``preload``), which removes image decoding from every evaluation after the first.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mapframe.errors import ConfigError
from mapframe_vision._common import check_task_mapping, parse_task_list

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "EvalSet",
    "TaskSpec",
    "describe_data",
    "load_dataset",
    "parse_tasks",
    "resolve_class_names",
]

logger = logging.getLogger(__name__)

#: File endings an ``ImageFolder`` accepts (torchvision's list).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class TaskSpec:
    """One evaluation task as a config gives it (see the evaluators' ``tasks`` argument)."""

    name: str
    data: Any
    classnames: Any = None
    templates: Any = None
    max_samples: int | None = None

    @classmethod
    def parse(cls, value: Any, where: str) -> TaskSpec:
        check_task_mapping(
            value, where, "{name: MNIST, data: /data/mnist/test, classnames: preset}",
            {"name", "data", "classnames", "templates", "max_samples"},
        )
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: each task needs a 'name' (a non-empty string)")
        if value.get("data") is None:
            raise ConfigError(
                f"task {name!r}: missing 'data': an ImageFolder path or "
                "{dataset: 'module:factory', kwargs: {...}}"
            )
        ms = value.get("max_samples")
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or ms < 1):
            raise ConfigError(f"task {name!r}: max_samples must be a positive integer or null, "
                              f"got {ms!r}")
        return cls(name, value["data"], value.get("classnames"), value.get("templates"), ms)


def parse_tasks(tasks: Any) -> list[TaskSpec]:
    """Validate the ``tasks`` list of an evaluator config (names unique, at least one)."""
    return parse_task_list(tasks, "{name, data, classnames, ...}",
                           lambda t, where: t if isinstance(t, TaskSpec)
                           else TaskSpec.parse(t, where))


def _import_object(ref: str, where: str) -> Any:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"{where}: expected 'package.module:name', got {ref!r}")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _check_image_folder(root: Path, task: str) -> None:
    if not root.is_dir():
        raise ConfigError(
            f"task {task!r}: image folder not found: {root} (ImageFolder layout: "
            "<root>/<class name>/<image files>)"
        )
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(
            f"task {task!r}: {root} has no class sub-folders; an ImageFolder holds one folder "
            "per class (<root>/<class name>/<image files>)"
        )
    for c in classes:
        for _, _, files in os.walk(c):
            if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
                return
    raise ConfigError(
        f"task {task!r}: the image folder {root} holds no images (looked for "
        f"{', '.join(IMAGE_EXTENSIONS)} under its {len(classes)} class folders)"
    )


def load_dataset(spec: TaskSpec, transform: Callable[[Any], Any] | None) -> Dataset[Any]:
    """The task's ``Dataset`` with ``transform`` applied to its images."""
    data = spec.data
    if isinstance(data, (str, os.PathLike)):
        from torchvision.datasets import ImageFolder

        root = Path(os.path.expanduser(os.fspath(data)))
        _check_image_folder(root, spec.name)
        # Class folders without images are kept (their labels stay in place), not an error.
        ds = ImageFolder(str(root), transform=transform, allow_empty=True)
        hidden = {i for i, c in enumerate(ds.classes) if c.startswith(".")}
        if hidden:  # .ipynb_checkpoints and the like are no classes: drop them, relabel
            keep = [c for i, c in enumerate(ds.classes) if i not in hidden]
            index = {c: j for j, c in enumerate(keep)}
            ds.samples = [(p, index[ds.classes[y]]) for p, y in ds.samples if y not in hidden]
            ds.imgs, ds.targets = ds.samples, [y for _, y in ds.samples]
            ds.classes, ds.class_to_idx = keep, index
        return ds
    if isinstance(data, Mapping):
        ref = data.get("dataset")
        if not isinstance(ref, str):
            raise ConfigError(f"task {spec.name!r}: data needs 'dataset: package.module:factory'"
                              " (or give a folder path)")
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"task {spec.name!r}: data.kwargs must be a mapping")
        factory = _import_object(ref, f"task {spec.name!r}")
        try:
            ds = factory(transform=transform, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"task {spec.name!r}: {ref}(transform=..., **kwargs) failed: "
                              f"{exc}") from None
        _check_len(ds, spec.name)
        return ds  # type: ignore[no-any-return]
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        _check_len(data, spec.name)
        return cast("Dataset[Any]", _Transformed(data, transform))
    raise ConfigError(f"task {spec.name!r}: data must be an image folder path, "
                      f"{{dataset: 'module:factory'}} or a Dataset, got {type(data).__name__}")


def _check_len(ds: Any, task: str) -> None:
    try:
        n = len(ds)
    except TypeError:
        raise ConfigError(f"task {task!r}: the dataset has no length; evaluation needs a "
                          "map-style Dataset") from None
    if n == 0:
        raise ConfigError(f"task {task!r}: the dataset is empty")


class _Transformed:
    """A user's Dataset with the model's preprocessing applied to PIL images."""

    def __init__(self, base: Any, transform: Callable[[Any], Any] | None) -> None:
        self.base, self.transform = base, transform
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[i]
        if self.transform is not None and not _is_tensor(x):
            x = self.transform(x)
        return x, y


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def resolve_class_names(
    spec: TaskSpec, dataset: Any, presets: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Class names for a zero-shot head: a list, a text file (one per line), ``"folder"``
    (the ImageFolder's class folders, ``_`` read as a space), ``"preset"`` (the task's name in
    the shipped presets) or a preset's name; by default the dataset's ``classes``."""
    value = spec.classnames
    if isinstance(value, str):
        if presets is not None and (value == "preset" or value in presets):
            key = spec.name if value == "preset" else value
            if key not in presets:
                raise ConfigError(
                    f"task {spec.name!r}: no class-name preset {key!r}; presets: "
                    f"{', '.join(sorted(presets))}; give classnames as a list or a file"
                )
            return list(presets[key])
        if value == "folder":
            return _dataset_classes(spec, dataset, required=True)
        path = Path(os.path.expanduser(value))
        if not path.is_file():
            raise ConfigError(
                f"task {spec.name!r}: classnames {value!r} is neither a file, 'folder', "
                "'preset' nor a preset name"
            )
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if not names:
            raise ConfigError(f"task {spec.name!r}: the class-name file {path} is empty")
        return names
    if isinstance(value, Sequence) and not isinstance(value, (bytes, str)):
        names = [str(v) for v in value]
        if not names or any(not n.strip() for n in names):
            raise ConfigError(f"task {spec.name!r}: classnames must be non-empty strings")
        return names
    if value is not None:
        raise ConfigError(f"task {spec.name!r}: classnames must be a list, a file path, "
                          f"'folder' or a preset name, got {value!r}")
    return _dataset_classes(spec, dataset, required=True)


def _dataset_classes(spec: TaskSpec, dataset: Any, required: bool) -> list[str]:
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(c).replace("_", " ") for c in classes]
    raise ConfigError(
        f"task {spec.name!r}: no class names: the zero-shot head needs one name per label. "
        "Give classnames: [name, ...], a text file with one name per line, or a preset name, "
        "or use an ImageFolder (its folder names are the classes)"
    )


def check_class_count(name: str, dataset: Any, n_classes: int) -> None:
    """A one-line :class:`ConfigError` when a dataset that lists its classes (an
    ImageFolder's class folders) has another number of them than the head has rows: labels
    are indices into the dataset's own list, so a missing class folder shifts every label
    after it onto the wrong head row (silently: they all stay below the head's size)."""
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, (list, tuple)) and classes and len(classes) != n_classes:
        shown = ", ".join(map(str, classes[:6])) + (", ..." if len(classes) > 6 else "")
        raise ConfigError(
            f"task {name!r}: the dataset has {len(classes)} classes ({shown}) but the head "
            f"has {n_classes} classes; each head row is one class, in the dataset's label "
            "order: give a dataset with a folder for every class, or class names for exactly "
            "its classes")


def check_numeric_folder_order(name: str, dataset: Any) -> None:
    """A one-line :class:`ConfigError` when class names that do not come from the dataset (a
    preset or a list, in numeric class order) meet class folders named by unpadded numbers:
    an ImageFolder sorts them as text (0, 1, 10, 11, ..., 2), so label 2 is folder "10"."""
    classes = getattr(dataset, "classes", None)
    if not (isinstance(classes, (list, tuple)) and classes
            and all(isinstance(c, str) and c.isdigit() for c in classes)):
        return
    if list(classes) != sorted(classes, key=int):
        width = max(len(c) for c in classes)
        raise ConfigError(
            f"task {name!r}: the class folders are numbers sorted as text "
            f"({', '.join(classes[:4])}, ...), so their labels do not follow the class "
            "names' numeric order; rename the folders with leading zeros "
            f"({', '.join(str(i).zfill(width) for i in range(3))}, ...) or give "
            "classnames: folder")


class EvalSet:
    """A task's evaluation images and labels, batched on the evaluation device.

    With ``preload`` (``True``, ``False`` or ``"auto"``: when the preprocessed tensors take
    at most ``preload_limit_gb``), the dataset is decoded once and kept as one tensor (as the
    preprocessing produced it, so results equal the streamed ones exactly); otherwise it
    streams through a ``DataLoader`` every evaluation.
    """

    def __init__(
        self,
        name: str,
        dataset: Any,
        n_classes: int,
        batch_size: int = 128,
        num_workers: int = 0,
        max_samples: int | None = None,
        preload: bool | str = "auto",
        preload_limit_gb: float = 4.0,
        device: str = "cpu",
    ) -> None:
        import torch
        from torch.utils.data import Subset

        self.name = name
        self.n_classes = n_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        check_class_count(name, dataset, n_classes)
        n = len(dataset)
        if max_samples is not None and max_samples < n:
            # A fixed random subset (seed 0): the same images for every merge and every run.
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(n, generator=g)[:max_samples].sort().values.tolist()
            dataset = Subset(dataset, idx)
        self.dataset = dataset
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        first, _ = dataset[0]
        if not isinstance(first, torch.Tensor):
            raise ConfigError(
                f"task {name!r}: the dataset yields {type(first).__name__}, not an image tensor;"
                " give it the model's preprocessing (transform=...) or use an ImageFolder"
            )
        self.image_shape = tuple(first.shape)
        per_image = first.numel() * first.element_size()
        size_gb = per_image * len(dataset) / 1e9
        if preload == "auto":
            preload = size_gb <= preload_limit_gb
        if preload:
            self._preload()
        else:
            self._labels = self._all_labels()
        self._check_labels()

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers,
                          pin_memory=self.device.startswith("cuda"))

    def _all_labels(self) -> torch.Tensor:
        import torch

        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == len(self.dataset):
            return torch.as_tensor(list(targets), dtype=torch.long)
        return torch.as_tensor([int(self.dataset[i][1]) for i in range(len(self.dataset))],
                               dtype=torch.long)

    def _preload(self) -> None:
        import torch

        xs, ys = [], []
        for x, y in self._loader():
            xs.append(x)
            ys.append(torch.as_tensor(y, dtype=torch.long))
        self._images = torch.cat(xs)
        self._labels = torch.cat(ys)
        logger.info("task %s: %d images preloaded (%.1f MB)", self.name, len(self._labels),
                    self._images.numel() * self._images.element_size() / 1e6)

    def _check_labels(self) -> None:
        assert self._labels is not None
        lo, hi = int(self._labels.min()), int(self._labels.max())
        if lo < 0 or hi >= self.n_classes:
            bad = hi if hi >= self.n_classes else lo
            raise ConfigError(
                f"task {self.name!r}: the dataset has label {bad} but the head has "
                f"{self.n_classes} classes (labels must be 0..{self.n_classes - 1}); check "
                "the class names (one per label, in label order) or the dataset"
            )

    @property
    def labels(self) -> torch.Tensor:
        assert self._labels is not None
        return self._labels

    def batches(self, dtype: torch.dtype) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches on the evaluation device, images as ``dtype``."""
        if self._images is not None:
            assert self._labels is not None
            for s in range(0, len(self._labels), self.batch_size):
                x = self._images[s:s + self.batch_size]
                y = self._labels[s:s + self.batch_size]
                yield (x.to(self.device, non_blocking=True).to(dtype),
                       y.to(self.device, non_blocking=True))
            return
        for x, y in self._loader():
            yield (x.to(self.device, non_blocking=True).to(dtype),
                   y.to(self.device, non_blocking=True))


def describe_data(data: Any) -> Any:
    """A task's ``data`` as a config would spell it: paths as strings, mappings with
    non-JSON values as their repr, Dataset objects as ``<Type of N items>``."""
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, Mapping):
        return {str(k): (v if isinstance(v, (str, int, float, bool, type(None), list, dict))
                         else repr(v)) for k, v in data.items()}
    try:
        n = len(data)
    except TypeError:
        n = None
    return f"<{type(data).__name__}{'' if n is None else f' of {n} items'}>"
