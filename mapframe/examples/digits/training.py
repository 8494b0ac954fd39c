"""Training the digits example's checkpoints, and the cache they are kept in.

:func:`prepare_checkpoints` pretrains :class:`~mapframe.examples.digits.DigitsNet` on the
original digits, fine-tunes it once per task variant with the head frozen (deterministically,
single-threaded, a few seconds for all eight variants), and caches the results as
safetensors files under :func:`cache_root`, with a ``manifest.json`` recording the
:data:`TRAINING` settings and each file's SHA-256. The cache folder is locked while it is
written, files are renamed into place, and the manifest is rewritten after each file, so
concurrent or interrupted runs never leave a file that is trusted later.

Importing this module is cheap: torch and scikit-learn are imported on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import MapframeError
from mapframe.examples.digits.data import _SPLIT_SEED, _VARIANTS, TASKS, _check_tasks, task_data
from mapframe.examples.digits.model import DEFAULT_HIDDEN, _digits_net_class

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHE_VERSION",
    "TRAINING",
    "TrainingSettings",
    "cache_root",
    "checkpoint_paths",
    "prepare_checkpoints",
]

logger = logging.getLogger(__name__)

#: Name of the cache sub-folder; bumped when data, variants or training change incompatibly.
CACHE_VERSION = "digits-v1"

_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "mapframe-digits-checkpoints"


@dataclass(frozen=True)
class TrainingSettings:
    """How the example's checkpoints are trained (recorded in the cache manifest).

    Pretraining: Adam on the original digits (all parameters). Fine-tuning: SGD with momentum on
    one task variant, head frozen, starting from the pretrained weights. Small learning rate
    and few epochs keep the task vectors moderate (``||τ_i|| / ||θ0||`` about 0.2–0.4 for
    this tiny model) while each fine-tune reaches > 85 % validation accuracy on its task.
    """

    hidden: int = DEFAULT_HIDDEN
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
