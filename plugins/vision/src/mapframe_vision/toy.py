"""Small offline models and data: the runnable example, the tests and the benchmark use them.

* :data:`TINY_CLIP_CONFIG` — a ViT CLIP small enough to train on a laptop CPU in seconds,
  registered with open_clip through its own config mechanism
  (:func:`write_tiny_clip_config` + ``open_clip.add_model_config``).
* Image tasks from data that ships in packages: scikit-learn's digits (8×8, upscaled) and the
  real Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` package, rendered as RGB
  images (:func:`task_images`) and written as ``ImageFolder`` trees (:func:`write_image_folder`).
* :func:`make_clip_checkpoints` — a "pretrained" tiny CLIP (random init: no weights can be
  downloaded here) and one fine-tune of its image tower per task, trained for real against
  the task's frozen zero-shot head, as task arithmetic fine-tunes CLIP.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DIGIT_NAMES",
    "FASHION_MNIST_DIR",
    "FASHION_NAMES",
    "TINY_CLIP_CONFIG",
    "TINY_CLIP_NAME",
    "TOY_TASKS",
    "FashionMNIST",
    "make_clip_checkpoints",
    "task_images",
    "write_image_folder",
    "write_tiny_clip_config",
]

#: The tiny CLIP's open_clip model name.
TINY_CLIP_NAME = "mapframe-tiny-vit"
#: Its open_clip config: 32×32 images, 8×8 patches, 2 blocks of width 64; a 2-block text
#: tower over open_clip's own BPE vocabulary (the tokenizer ships with open_clip).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                   "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2},
}
#: Where Debian's ``dataset-fashion-mnist`` installs the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "ankle boot")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Task name -> (source, image transform); see :func:`task_images`.
TOY_TASKS: dict[str, tuple[str, str]] = {
    "digits": ("digits", "none"),
    "digits_rot90": ("digits", "rot90"),
    "digits_inverted": ("digits", "invert"),
    "fashion": ("fashion", "none"),
}


def write_tiny_clip_config(folder: str | os.PathLike[str]) -> Path:
    """Write :data:`TINY_CLIP_CONFIG` as ``<folder>/mapframe-tiny-vit.json`` (the file name is
    the model name open_clip gives it) and register it with open_clip in this process."""
    import open_clip

    path = Path(folder) / f"{TINY_CLIP_NAME}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
    open_clip.add_model_config(path)
    return path


class FashionMNIST:
    """The real Fashion-MNIST idx files as a ``Dataset`` of ``(PIL RGB image, label)``.

    ``split`` is ``train`` (60 000) or ``test`` (10 000); ``limit`` keeps the first
    ``limit`` images. Raises a :class:`~mapframe.errors.ConfigError` naming the Debian
    package when the files are not installed.
    """

    def __init__(self, root: str = FASHION_MNIST_DIR, split: str = "test",
                 transform: Any = None, limit: int | None = None) -> None:
        prefix = {"train": "train", "test": "t10k"}.get(split)
        if prefix is None:
            raise ConfigError(f"Fashion-MNIST split must be train or test, got {split!r}")
        img = Path(root) / f"{prefix}-images-idx3-ubyte.gz"
        lab = Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
        if not img.is_file() or not lab.is_file():
            raise ConfigError(
                f"Fashion-MNIST files not found in {root} (need {img.name}, {lab.name}); on "
                "Debian/Ubuntu: apt-get install dataset-fashion-mnist"
            )
        self.images = _read_idx(img)
        self.targets = _read_idx(lab).astype(np.int64).tolist()
        if limit is not None:
            self.images, self.targets = self.images[:limit], self.targets[:limit]
        self.classes = list(FASHION_NAMES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        im = Image.fromarray(self.images[i]).convert("RGB")
        return (self.transform(im) if self.transform is not None else im), self.targets[i]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim < 1:
        raise ConfigError(f"{path}: not an idx file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ConfigError(f"{path}: truncated idx file")
    return arr.reshape(dims)


def task_images(task: str, split: str, limit: int | None = None,
                size: int = 32) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images uint8 (n, size, size, 3), labels, class names)`` of a toy task's split.

    Digits: scikit-learn's 1 797 images, split 60/40 (``train``/``test``) with a fixed
    seed, scaled to 0-255 and enlarged. Fashion-MNIST: the package's own train/test files.
    """
    if task not in TOY_TASKS:
        raise ConfigError(f"unknown toy task {task!r}; available: {', '.join(TOY_TASKS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got {split!r}")
    source, transform = TOY_TASKS[task]
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        rng = np.random.default_rng(0)
        order = rng.permutation(len(d.target))
        cut = int(0.6 * len(order))
        idx = order[:cut] if split == "train" else order[cut:]
        x = (d.images[idx] / 16.0 * 255.0).astype(np.uint8)
        y = d.target[idx].astype(np.int64)
        names = list(DIGIT_NAMES)
    else:
        ds = FashionMNIST(split=split, limit=None)
        x, y = ds.images, np.asarray(ds.targets, dtype=np.int64)
        names = list(FASHION_NAMES)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if transform == "rot90":
        x = np.rot90(x, k=1, axes=(1, 2))
    elif transform == "invert":
        x = 255 - x
    out = _resize_rgb(np.ascontiguousarray(x), size)
    return out, y, names


def _resize_rgb(x: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)
                                .convert("RGB")) for im in x])


def write_image_folder(root: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray,
                       classnames: Sequence[str]) -> Path:
    """Write images as PNG files in ``ImageFolder`` layout: ``<root>/<NN_class>/<i>.png``.

    Class folders are numbered so that sorting them keeps label order; names are
    ``00_zero``, ``01_one``, ... (give ``classnames`` explicitly to the evaluator).
    """
    from PIL import Image

    root = Path(root)
    for c, name in enumerate(classnames):
        (root / f"{c:02d}_{name.replace(' ', '_')}").mkdir(parents=True, exist_ok=True)
    for i, (im, y) in enumerate(zip(images, labels)):
        name = classnames[int(y)].replace(" ", "_")
        Image.fromarray(im).save(root / f"{int(y):02d}_{name}" / f"{i:05d}.png")
    return root


def _to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    import torch

    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def make_clip_checkpoints(
    out_dir: str | os.PathLike[str],
    tasks: Sequence[str],
    steps: int = 60,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    train_limit: int | None = 2000,
    templates: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Train the toy CLIP checkpoints into ``out_dir``; returns their paths and accuracies.

    ``out_dir/model/mapframe-tiny-vit.json`` is the model config; ``pretrained.safetensors``
    the full "pretrained" CLIP (random init, ``seed``; text tower included: it builds the
    heads); ``<task>/finetuned.safetensors`` each task's fine-tuned image tower. Fine-tuning
    trains the image tower only (Adam, ``steps`` steps) against the task's zero-shot head,
    frozen, as task arithmetic does.
    """
    import open_clip
    import torch

    from mapframe.merging.checkpoints import save_state_dict
    from mapframe_vision.heads import build_zeroshot_head, resolve_templates

    out = Path(out_dir)
    cfg = write_tiny_clip_config(out / "model")
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    model.eval()
    pre_path = save_state_dict(model.state_dict(), out / "pretrained.safetensors")
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    scale = float(model.logit_scale.detach().exp())
    result: dict[str, Any] = {"model_config": str(cfg), "pretrained": str(pre_path),
                              "finetuned": {}, "accuracy": {}}
    base_visual = {k: v.clone() for k, v in model.visual.state_dict().items()}
    for t, task in enumerate(tasks):
        x_np, y_np, names = task_images(task, "train", limit=train_limit)
        tmpl = (templates or {}).get(task) or resolve_templates(task, None)
        head = build_zeroshot_head(model.encode_text, tokenizer, scale, names, tmpl)
        x = _to_tensor(x_np, mean, std)
        y = torch.as_tensor(y_np)
        model.visual.load_state_dict(base_visual)
        visual = model.visual
        visual.train()
        opt = torch.optim.Adam(visual.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed * 1000 + t)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (batch_size,), generator=g)
            f = visual(x[idx])
            logits = (f / f.norm(dim=-1, keepdim=True)) @ head.T
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        visual.eval()
        xt, yt, _ = task_images(task, "test")
        with torch.no_grad():
            f = visual(_to_tensor(xt, mean, std))
            acc = float(((f / f.norm(dim=-1, keepdim=True) @ head.T).argmax(-1)
                         == torch.as_tensor(yt)).float().mean())
        path = save_state_dict(visual.state_dict(), out / task / "finetuned.safetensors")
        result["finetuned"][task] = str(path)
        result["accuracy"][task] = acc
    model.visual.load_state_dict(base_visual)
    (out / "checkpoints.json").write_text(json.dumps(result, indent=1))
    return result
