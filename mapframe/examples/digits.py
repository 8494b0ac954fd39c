"""A real, fully offline MAP example: merging fine-tunes of a small MLP on 8x8 digits.

Everything here runs on a laptop CPU in seconds and downloads nothing:

* **Data** — scikit-learn's bundled ``load_digits`` (1797 images of 8x8 pixels, 10 classes),
  pixels scaled to ``[0, 1]``, split once, stratified, with a fixed seed into
  train / validation / test (50 / 25 / 25 %).
* **Task variants** (:data:`TASKS`) — each an input transform and/or a label map of the
  original problem: rotated, mirrored, transposed, inverted or shifted images, and permuted
  labels. The pretrained model is poor on all of them (1–45 % validation accuracy); each
  fine-tune is good on its own one (89–96 %).
* **Model** — :class:`DigitsNet`, ``Linear(64, 256)-ReLU-Linear(256, 256)-ReLU-Linear(256, 10)``.
  It is pretrained on the original digits, then fine-tuned per variant with the classification
  head (``head.*``) frozen, so the task vectors live in the backbone, like CLIP fine-tunes.
* **Checkpoints** — :func:`prepare_checkpoints` trains them (deterministically, single-threaded,
  a few seconds for all eight variants) and caches them as safetensors files with a manifest.
* **Evaluation** — :class:`DigitsEvaluator` (config name ``"digits"``) merges a whole batch of
  coefficient vectors at once with :meth:`Merger.merge_batch
  <mapframe.merging.merger.Merger.merge_batch>` and runs all merged models in one vectorised
  forward pass (``torch.func.functional_call`` under ``torch.vmap``).
* **Config** — :func:`digits_study_config` builds the study configuration that
  ``mapframe example`` writes and runs.

Typical use::

    from mapframe.examples.digits import prepare_checkpoints, digits_study_config
    ckpts = prepare_checkpoints(tasks=["rot90", "flip"])          # trains once, then cached
    config = digits_study_config("results/digits", ["rot90", "flip"], checkpoints=ckpts)

Importing this module is cheap: torch and scikit-learn are imported on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from mapframe._imports import optional_import
from mapframe.errors import CheckpointError, ConfigError, MapframeError
from mapframe.evaluators.base import Evaluator
from mapframe.problem import Task

if TYPE_CHECKING:
    import torch

    from mapframe.merging.merger import Merger

    class DigitsNet(torch.nn.Module):
        """Typing stub; the real class is built on first access (see ``_digits_net_class``)."""

        fc1: torch.nn.Linear
        fc2: torch.nn.Linear
        head: torch.nn.Linear

        def __init__(self, hidden: int = ...) -> None: ...

        def forward(self, x: torch.Tensor) -> torch.Tensor: ...


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

logger = logging.getLogger(__name__)

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

#: Name of the cache sub-folder; bumped when data, variants or training change incompatibly.
CACHE_VERSION = "digits-v1"

_N_PIXELS = 64
_N_CLASSES = 10
_SPLIT_SEED = 0
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "mapframe-digits-checkpoints"
# Floats of hidden activations one vectorised forward pass may hold (8 MiB): on CPU, larger
# passes spill out of cache and get slower per model (measured: 16 models per pass of 450
# samples at hidden=256 beat 256 models per pass by ~1.7x).
_ACTIVATION_BUDGET = 1 << 21


@dataclass(frozen=True)
class TrainingSettings:
    """How the example's checkpoints are trained (recorded in the cache manifest).

    Pretraining: Adam on the original digits (all parameters). Fine-tuning: SGD with momentum on
    one task variant, head frozen, starting from the pretrained weights. Small learning rate
    and few epochs keep the task vectors moderate (``||τ_i|| / ||θ0||`` about 0.2–0.4 for
    this tiny model) while each fine-tune reaches > 85 % validation accuracy on its task.
    """

    hidden: int = 256
    seed: int = 0
    batch_size: int = 32
    pretrain_epochs: int = 20
    pretrain_lr: float = 3e-3
    finetune_epochs: int = 20
    finetune_lr: float = 5e-3
    finetune_momentum: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        """The settings plus the data split and variant definitions they were applied to."""
        return {
            **dataclasses.asdict(self),
            "split_seed": _SPLIT_SEED,
            "variants": {k: list(v) for k, v in _VARIANTS.items()},
        }


#: The settings :func:`prepare_checkpoints` trains with.
TRAINING = TrainingSettings()


# ---------------------------------------------------------------------------------------------
# data


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


# ---------------------------------------------------------------------------------------------
# model


@functools.cache
def _digits_net_class() -> type[DigitsNet]:
    import torch

    class _DigitsNet(torch.nn.Module):
        """The example's MLP: ``fc1`` and ``fc2`` are the backbone, ``head`` the classifier.

        Parameter names (``fc1.weight``, ``fc1.bias``, ``fc2.*``, ``head.*``) are stable:
        checkpoints are this module's ``state_dict``. Inputs are flattened 8x8 images
        ``(..., 64)``; outputs are logits ``(..., 10)``.
        """

        def __init__(self, hidden: int = TRAINING.hidden) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(_N_PIXELS, hidden)
            self.fc2 = torch.nn.Linear(hidden, hidden)
            self.head = torch.nn.Linear(hidden, _N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            h = torch.relu(self.fc2(h))
            return self.head(h)

    _DigitsNet.__module__ = __name__
    _DigitsNet.__name__ = _DigitsNet.__qualname__ = "DigitsNet"
    return cast("type[DigitsNet]", _DigitsNet)


def __getattr__(name: str) -> Any:
    # DigitsNet subclasses torch.nn.Module; build it on first access so that importing this
    # module does not import torch.
    if name == "DigitsNet":
        return _digits_net_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# training


@contextlib.contextmanager
def _deterministic_training() -> Iterator[None]:
    """Single-threaded, with the global torch RNG restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _task_seed(task: str, settings: TrainingSettings) -> int:
    # Depends on the task's name only, so a task's checkpoint is the same whichever other
    # tasks are trained with it.
    return (settings.seed * 1_000_003 + zlib.crc32(task.encode("utf-8"))) % (2**31 - 1)


def _fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    model.eval()


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=-1).numpy()
    return float(np.mean(pred == y))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _pretrain(settings: TrainingSettings) -> tuple[dict[str, torch.Tensor], float]:
    """Train on the original digits; return the state dict and its validation accuracy."""
    import torch

    x, y = task_data("original", "train")
    with _deterministic_training():
        torch.manual_seed(settings.seed)
        model = _digits_net_class()(settings.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=settings.pretrain_lr)
        _fit(model, opt, x, y, settings.pretrain_epochs, settings.batch_size, settings.seed)
    return _state(model), _accuracy(model, *task_data("original", "validation"))


def _finetune(
    task: str, base: Mapping[str, torch.Tensor], settings: TrainingSettings
) -> tuple[dict[str, torch.Tensor], float]:
    """Fine-tune the backbone on one task variant, head frozen; return state and val. accuracy."""
    import torch

    x, y = task_data(task, "train")
    with _deterministic_training():
        model = _digits_net_class()(settings.hidden)
        model.load_state_dict(dict(base))
        for p in model.head.parameters():
            p.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            trainable, lr=settings.finetune_lr, momentum=settings.finetune_momentum
        )
        seed = _task_seed(task, settings)
        _fit(model, opt, x, y, settings.finetune_epochs, settings.batch_size, seed)
    return _state(model), _accuracy(model, *task_data(task, "validation"))


# ---------------------------------------------------------------------------------------------
# checkpoint cache


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder the example's checkpoints live in: ``<cache>/digits-v1``.

    ``<cache>`` is ``cache_dir`` if given, else the environment variable ``MAPFRAME_CACHE``,
    else ``~/.cache/mapframe``.
    """
    if cache_dir is None:
        env = os.environ.get("MAPFRAME_CACHE")
        base = Path(env) if env else Path.home() / ".cache" / "mapframe"
    else:
        base = Path(cache_dir)
    return base.expanduser().absolute() / CACHE_VERSION


def _pretrained_file() -> str:
    return "pretrained.safetensors"


def _finetuned_file(task: str) -> str:
    return f"finetuned-{task}.safetensors"


def checkpoint_paths(
    cache_dir: str | os.PathLike[str] | None = None, tasks: Sequence[str] = TASKS
) -> dict[str, Any]:
    """Where :func:`prepare_checkpoints` puts the checkpoints, without training anything.

    Returns ``{"pretrained": Path, "finetuned": {task: Path}}``.
    """
    names = _check_tasks(tasks)
    root = cache_root(cache_dir)
    return {
        "pretrained": root / _pretrained_file(),
        "finetuned": {t: root / _finetuned_file(t) for t in names},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _atomic_save(
    state: Mapping[str, torch.Tensor], path: Path, task: str, settings: TrainingSettings
) -> str:
    """Write a safetensors file under a temporary name, then rename it; return its SHA-256."""
    from mapframe.merging.checkpoints import save_state_dict

    # One metadata entry: safetensors writes several in an arbitrary order, and identical
    # training should give byte-identical files.
    info = {"cache": CACHE_VERSION, "task": task, "settings": settings.to_dict()}
    metadata = {"mapframe.examples.digits": json.dumps(info, sort_keys=True)}
    tmp = _temp_name(path)
    try:
        save_state_dict(state, tmp, metadata)
        digest = _sha256(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return digest


def _write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    path = root / _MANIFEST
    tmp = _temp_name(path)
    try:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fresh_manifest(settings: TrainingSettings) -> dict[str, Any]:
    return {
        "format": _MANIFEST_FORMAT,
        "version": CACHE_VERSION,
        "settings": settings.to_dict(),
        "pretrained": None,
        "finetuned": {},
    }


def _read_manifest(root: Path, settings: TrainingSettings) -> dict[str, Any]:
    """The cache's manifest if it was written for ``settings``; else an empty one."""
    fresh = _fresh_manifest(settings)
    path = root / _MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return fresh
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable digits cache manifest %s (%s)", path, exc)
        return fresh
    if not isinstance(data, dict) or any(
        data.get(k) != fresh[k] for k in ("format", "version", "settings")
    ):
        logger.info("digits cache %s was trained with other settings; retraining", root)
        return fresh
    if not isinstance(data.get("finetuned"), dict):
        return fresh
    return data


def _entry_ok(root: Path, entry: Any, filename: str) -> bool:
    """A manifest entry is trusted if its file exists and still has the recorded hash."""
    if not isinstance(entry, dict) or entry.get("file") != filename:
        return False
    path = root / filename
    try:
        return path.is_file() and _sha256(path) == entry.get("sha256")
    except OSError:
        return False


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder where the platform has ``fcntl`` (POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic renames still keep files whole
        yield
        return
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def prepare_checkpoints(
    cache_dir: str | os.PathLike[str] | None = None,
    tasks: Sequence[str] = TASKS,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) the pretrained and fine-tuned checkpoints; return their paths.

    Returns ``{"pretrained": Path, "finetuned": {task: Path}}`` with safetensors files under
    :func:`cache_root` ``(cache_dir)``. A checkpoint is reused when the cache's
    ``manifest.json`` was written with the current :data:`TRAINING` settings, the file still
    has the SHA-256 the manifest records, and (for a fine-tune) it was trained from the cached
    pretrained checkpoint; otherwise it is (re)trained. ``force=True`` retrains everything
    requested. Files are written under a temporary name and renamed into place, and the
    manifest is updated after each file, so an interrupted run never leaves a file that is
    trusted later. Training is deterministic and per-task seeded: a task's checkpoint is the
    same whichever other tasks are requested with it.
    """
    names = _check_tasks(tasks)
    settings = TRAINING
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MapframeError(
            f"cannot create the digits checkpoint cache {root} ({exc}); pass another "
            "cache_dir or set MAPFRAME_CACHE"
        ) from None
    paths = checkpoint_paths(cache_dir, names)
    with _cache_lock(root):
        manifest = _fresh_manifest(settings) if force else _read_manifest(root, settings)
        base: dict[str, torch.Tensor] | None = None
        if not _entry_ok(root, manifest["pretrained"], _pretrained_file()):
            start = time.perf_counter()
            base, acc = _pretrain(settings)
            seconds = time.perf_counter() - start
            digest = _atomic_save(base, paths["pretrained"], "original", settings)
            manifest = _fresh_manifest(settings)
            manifest["pretrained"] = {
                "file": _pretrained_file(),
                "sha256": digest,
                "validation_accuracy": acc,
                "train_seconds": round(seconds, 3),
            }
            _write_manifest(root, manifest)
            logger.info("digits: pretrained in %.2fs, validation accuracy %.3f", seconds, acc)
        base_sha = manifest["pretrained"]["sha256"]
        for task in names:
            entry = manifest["finetuned"].get(task)
            if _entry_ok(root, entry, _finetuned_file(task)) and (
                entry.get("pretrained_sha256") == base_sha
            ):
                continue
            if base is None:
                from mapframe.merging.checkpoints import load_state_dict

                base = load_state_dict(paths["pretrained"])
            start = time.perf_counter()
            state, acc = _finetune(task, base, settings)
            seconds = time.perf_counter() - start
            digest = _atomic_save(state, paths["finetuned"][task], task, settings)
            manifest["finetuned"][task] = {
                "file": _finetuned_file(task),
                "sha256": digest,
                "pretrained_sha256": base_sha,
                "validation_accuracy": acc,
                "train_seconds": round(seconds, 3),
            }
            _write_manifest(root, manifest)
            logger.info(
                "digits: fine-tuned %r in %.2fs, validation accuracy %.3f", task, seconds, acc
            )
    return paths


# ---------------------------------------------------------------------------------------------
# evaluator


class DigitsEvaluator(Evaluator):
    """Scores merges of :class:`DigitsNet` checkpoints on digits task variants, batch-wise.

    Args:
        tasks: the task variants to score (columns of :meth:`evaluate`), names from
            :data:`TASKS`. They usually are the fine-tuned checkpoints' tasks in the same
            order, but need not be: the number of coefficients is set by the merger's
            checkpoints, the objectives by ``tasks``.
        split: ``"validation"`` (for the study) or ``"test"`` (for a final, held-out report).
        metric: ``"accuracy"`` (maximise, in [0, 1]) or ``"loss"`` (mean cross-entropy,
            minimise, in [0, inf)).
        device: torch device for the merged weights and the forward pass.
        max_batch_size: most merges held in memory at once; larger batches are evaluated in
            chunks of this size (``None``: no cap).

    :meth:`setup` caches each task's transformed inputs and labels as tensors.
    :meth:`evaluate` writes all B merged models into reusable ``(B, *shape)`` buffers with
    one :meth:`~mapframe.merging.merger.Merger.merge_batch` call and runs them together with
    ``torch.vmap`` over ``torch.func.functional_call``; tasks sharing an input transform
    (``shift_labels``, ``reverse_labels``) share one forward pass. A model whose logits are
    not finite gets NaN accuracy.
    """

    name: ClassVar[str] = "digits"
    needs_merger: ClassVar[bool] = True

    def __init__(
        self,
        tasks: Sequence[str] = DEFAULT_TASKS,
        split: str = "validation",
        metric: str = "accuracy",
        device: str = "cpu",
        max_batch_size: int | None = 256,
    ) -> None:
        self._task_names = _check_tasks(tasks)
        if split not in EVAL_SPLITS:
            raise ConfigError(
                f"unknown digits split {split!r}; available: {', '.join(EVAL_SPLITS)}"
            )
        if metric not in METRICS:
            raise ConfigError(
                f"unknown digits metric {metric!r}; available: {', '.join(METRICS)}"
            )
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise ConfigError(
                f"max_batch_size must be a positive integer or null, got {max_batch_size!r}"
            )
        self.split = split
        self.metric = metric
        self.device = str(device)
        self.max_batch_size = max_batch_size
        if metric == "accuracy":
            self._tasks = [Task(t, "max", 0.0, 1.0) for t in self._task_names]
        else:
            self._tasks = [Task(t, "min", 0.0, math.inf) for t in self._task_names]
        self._ready = False

    @property
    def tasks(self) -> list[Task]:
        """One :class:`~mapframe.problem.Task` per task variant, named as in :data:`TASKS`."""
        return list(self._tasks)

    def describe(self) -> dict[str, Any]:
        """Name and settings, ``tasks`` included (as the config spells them)."""
        desc = super().describe()
        return {"name": desc.pop("name"), "tasks": list(self._task_names), **desc}

    def setup(self, merger: Merger | None) -> None:
        """Build the resident model on ``device``, check the checkpoints, cache the data."""
        super().setup(merger)
        assert merger is not None
        import torch
        from torch.func import functional_call, vmap

        device = self._torch_device()
        tv = merger.task_vectors
        merged_keys = set(tv.keys())
        if "fc1.weight" not in merged_keys:
            raise CheckpointError(
                "the digits evaluator needs DigitsNet checkpoints (tensors fc1.*, fc2.*, "
                "head.*); create them with mapframe.examples.digits.prepare_checkpoints"
            )
        hidden = int(tv.base("fc1.weight").shape[0])
        model = _digits_net_class()(hidden).to(device).eval()
        merger.resident_params(model)  # checks names and shapes; copies unmerged tensors
        state = model.state_dict()
        self._shapes = {
            k: (tuple(v.shape), v.dtype) for k, v in state.items() if k in merged_keys
        }
        fixed = {k: v for k, v in state.items() if k not in merged_keys}

        def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, fixed), (x,))

        self._forward = vmap(forward, in_dims=(0, None))
        self._model = model

        # One input tensor per distinct transform; per task: its transform and labels.
        self._inputs: dict[str, torch.Tensor] = {}
        self._labels: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for col, task in enumerate(self._task_names):
            transform, label_map = _VARIANTS[task]
            x, y = _variant_data(transform, label_map, self.split)
            if transform not in self._inputs:
                self._inputs[transform] = torch.from_numpy(x).to(device)
                self._labels[transform] = []
            self._labels[transform].append((col, torch.from_numpy(y).to(device)))
        n_max = max(len(x) for x in self._inputs.values())
        self._models_per_pass = max(1, _ACTIVATION_BUDGET // (n_max * max(hidden, _N_CLASSES)))
        self._buffers: dict[str, torch.Tensor] = {}
        self._capacity = 0
        self._ready = True

    def _torch_device(self) -> torch.device:
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid torch device {self.device!r} ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device {self.device!r} asked for, but torch sees no CUDA device; use "
                "device: cpu"
            )
        return device

    def _merge_buffers(self, b: int) -> dict[str, torch.Tensor]:
        """Views of ``b`` merged models into buffers reused across calls (grown on demand)."""
        import torch

        if b > self._capacity:
            self._buffers = {}  # free the old buffers before allocating bigger ones
            device = self._model.fc1.weight.device
            self._buffers = {
                k: torch.empty((b, *shape), dtype=dtype, device=device)
                for k, (shape, dtype) in self._shapes.items()
            }
            self._capacity = b
        return {k: v[:b] for k, v in self._buffers.items()}

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """Metrics ``(B, T)`` for coefficient vectors ``(B, N)``, one row per merged model."""
        return self._evaluate_columns(self._coefficients(coefficients), None)

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Metrics of only the tasks ``tasks``: test images of other tasks are not run."""
        cols = [int(t) for t in tasks]
        if any(not 0 <= t < len(self._task_names) for t in cols):
            raise ConfigError(f"task indices {cols} out of range for "
                              f"{len(self._task_names)} tasks")
        return self._evaluate_columns(self._coefficients(coefficients), cols)[:, cols]

    def _coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        if not self._ready:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        C = np.asarray(coefficients, dtype=float)
        if C.ndim == 1:
            C = C[None, :]
        n = self.merger.n_tasks
        if C.ndim != 2 or C.shape[1] != n:
            raise ConfigError(
                f"coefficients must have shape (B, {n}) (one per fine-tuned checkpoint), got "
                f"{np.shape(coefficients)}"
            )
        return C

    def _evaluate_columns(self, C: np.ndarray, cols: Sequence[int] | None) -> np.ndarray:
        import torch

        out = np.full((C.shape[0], len(self._task_names)), np.nan, dtype=float)
        step = self.max_batch_size or max(1, C.shape[0])
        with torch.no_grad():
            for start in range(0, C.shape[0], step):
                chunk = C[start : start + step]
                out[start : start + len(chunk)] = self._evaluate_chunk(chunk, cols)
        return out

    def _evaluate_chunk(self, C: np.ndarray, cols: Sequence[int] | None = None) -> np.ndarray:
        import torch

        b = C.shape[0]
        params = self._merge_buffers(b)
        self.merger.merge_batch(C, params)
        out = torch.full((b, len(self._task_names)), math.nan, dtype=torch.float64)
        step = self._models_per_pass
        wanted = None if cols is None else set(cols)
        for transform, x in self._inputs.items():
            labels = [(col, y) for col, y in self._labels[transform]
                      if wanted is None or col in wanted]
            if not labels:
                continue  # no requested task uses these images
            for s in range(0, b, step):
                e = min(b, s + step)
                logits = self._forward({k: v[s:e] for k, v in params.items()}, x)
                for col, y in labels:
                    out[s:e, col] = self._metric(logits, y)
        return out.numpy()

    def _metric(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-model metric for logits ``(m, n, 10)`` and labels ``(n,)``: CPU float64 ``(m,)``."""
        import torch

        m, n = logits.shape[0], logits.shape[1]
        if self.metric == "accuracy":
            correct = (logits.argmax(dim=-1) == y).sum(dim=1).cpu()
            acc = correct.to(torch.float64) / n
            finite = torch.isfinite(logits).flatten(1).all(dim=1).cpu()
            return torch.where(finite, acc, torch.full_like(acc, math.nan))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(m * n, -1), y.repeat(m), reduction="none"
        )
        return loss.reshape(m, n).cpu().to(torch.float64).mean(dim=1)

    def close(self) -> None:
        """Drop the cached data, buffers and model."""
        for attr in ("_inputs", "_labels", "_buffers", "_forward", "_model", "_shapes"):
            self.__dict__.pop(attr, None)
        self._capacity = 0
        self._ready = False


# ---------------------------------------------------------------------------------------------
# study configuration


def default_budget(n_tasks: int) -> int:
    """Evaluations the example spends: twice the quadratic's ``(N+1)(N+2)/2`` parameters,
    at least 20 (N=2: 20, N=3: 20, N=4: 30, N=8: 90)."""
    if n_tasks < 1:
        raise ConfigError(f"the number of tasks must be positive, got {n_tasks}")
    return max((n_tasks + 1) * (n_tasks + 2), 20)


def digits_study_config(
    output_dir: str | os.PathLike[str],
    tasks: Sequence[str] = DEFAULT_TASKS,
    budget: int | None = None,
    checkpoints: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    split: str = "validation",
    metric: str = "accuracy",
    preference: Sequence[float] | None = None,
    verify: int = 5,
) -> dict[str, Any]:
    """The study configuration (a plain dict, ready for YAML) of the digits example.

    ``tasks`` are both the fine-tuned checkpoints merged and the objectives. ``budget``
    defaults to :func:`default_budget` ``(len(tasks))``. ``checkpoints`` is what
    :func:`prepare_checkpoints` returned; without it the paths are those
    :func:`checkpoint_paths` ``(cache_dir, tasks)`` gives (nothing is trained here: run
    :func:`prepare_checkpoints` before the study).
    """
    names = _check_tasks(tasks)
    if split not in EVAL_SPLITS:
        raise ConfigError(f"unknown digits split {split!r}; available: {', '.join(EVAL_SPLITS)}")
    if metric not in METRICS:
        raise ConfigError(f"unknown digits metric {metric!r}; available: {', '.join(METRICS)}")
    if budget is None:
        budget = default_budget(len(names))
    elif isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget must be a positive integer, got {budget!r}")
    if checkpoints is None:
        checkpoints = checkpoint_paths(cache_dir, names)
    finetuned = checkpoints.get("finetuned") or {}
    missing = [t for t in names if t not in finetuned]
    if "pretrained" not in checkpoints or missing:
        raise ConfigError(
            "checkpoints must hold 'pretrained' and a 'finetuned' path per task; missing: "
            f"{', '.join(missing) or 'pretrained'}"
        )
    out = Path(output_dir)
    return {
        "study": {
            "name": f"digits-{len(names)}tasks",
            "budget": budget,
            "seed": 0,
            "output": str(out),
            "storage": str(out / "evaluations.sqlite"),
            "search_bounds": [0.0, 1.0],
            "verify": verify,
            "preference": None if preference is None else [float(p) for p in preference],
            "export": preference is not None,
        },
        "evaluator": {"name": "digits", "tasks": names, "split": split, "metric": metric},
        "checkpoints": {
            "pretrained": str(checkpoints["pretrained"]),
            "finetuned": {t: str(finetuned[t]) for t in names},
        },
        "merge_strategy": "task_arithmetic",
        "sampler": "sobol",
        "surrogate": "auto",
        "front_solver": "auto",
    }
