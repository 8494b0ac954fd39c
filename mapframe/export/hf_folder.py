"""Write a merged model as a Hugging Face model folder, shard by shard.

The folder is what ``save_pretrained`` writes and ``from_pretrained`` loads: the
pretrained folder's config, generation config and tokenizer files (when the pretrained
checkpoint is, or sits in, such a folder), the merged weights under the pretrained tensor
names and dtypes as one ``model.safetensors``, or, past ``max_shard_bytes``, as
``model-0000k-of-0000N.safetensors`` shards listed by ``model.safetensors.index.json``
(transformers' layout and default 5 GB limit). Shards are merged and written one at a time,
so memory holds one shard beside the task vectors. Only safetensors is needed: no
transformers import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe._files import give_default_mode
from mapframe.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "EXPORT_MARKER",
    "INDEX_NAME",
    "hf_source_folder",
    "parse_size",
    "shard_names",
    "staged_export_folder",
    "write_hf_folder",
]

#: transformers' default shard limit (``save_pretrained(max_shard_size="5GB")``).
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
#: The file that marks a folder as a mapframe export (the LLM plugin writes the same one):
#: only such a folder is ever replaced.
EXPORT_MARKER = "mapframe_merge.json"
INDEX_NAME = "model.safetensors.index.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
#: Files of the pretrained folder an export does not copy: weights, their indexes, and the
#: pretrained model's own card (the export writes its own).
_NOT_COPIED = ("README.md", ".gitattributes")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``"5GB"``, ``"200MB"``, ``"1.5GiB"`` or ``1000000``
    (decimal units as transformers' ``max_shard_size``; ``KiB``/``MiB``/``GiB`` binary)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else ""
        if m is None or unit not in _UNITS:
            raise ConfigError(f"a shard size is a number of bytes with a unit, e.g. 5GB or "
                              f"200MB, got {text!r}")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1:
        raise ConfigError(f"the shard size must be positive, got {text!r}")
    return value


def shard_names(n: int) -> list[str]:
    """File names of ``n`` shards: ``model.safetensors`` alone, else transformers'
    ``model-00001-of-0000n.safetensors``."""
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def hf_source_folder(pretrained: str | os.PathLike[str] | None) -> Path | None:
    """The Hugging Face model folder of the pretrained checkpoint: the path itself when it
    is a folder with ``config.json``, the folder holding it when that folder has one, else
    ``None``."""
    if pretrained is None:
        return None
    p = Path(pretrained)
    for folder in (p, p.parent) if not p.is_dir() else (p,):
        if (folder / "config.json").is_file():
            return folder
    return None


def _copy_side_files(source: Path, target: Path) -> None:
    for f in sorted(source.iterdir()):
        if (f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES)
                and not f.name.endswith(".index.json") and f.name not in _NOT_COPIED
                and f.name != EXPORT_MARKER):
            shutil.copy2(f, target / f.name)


@contextlib.contextmanager
def staged_export_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A folder to build an export in, beside ``path``, moved to ``path`` when the block
    completes (removed if it raises); an existing ``path`` is replaced only when it is an
    earlier mapframe export (it holds :data:`EXPORT_MARKER`). The files get the user's
    usual mode (safetensors writes 0600)."""
    out = Path(path)
    if out.exists() and not (out / EXPORT_MARKER).is_file():
        raise CheckpointError(
            f"cannot export the merged model to {out}: it exists and is not an earlier "
            "mapframe export; choose another path or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    give_default_mode(*(f for f in out.iterdir() if f.is_file()))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def write_hf_folder(
    task_vectors: TaskVectors,
    merge: Callable[[MutableMapping[str, torch.Tensor]], None],
    path: str | os.PathLike[str],
    *,
    source_folder: str | os.PathLike[str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    metadata: Mapping[str, Any] | None = None,
    files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write the merged model as a Hugging Face folder at ``path`` and return ``path``.

    ``merge(params)`` overwrites each tensor of ``params`` (merged keys of
    ``task_vectors``) with its merged value; kept tensors (integer buffers) are copied from
    the pretrained checkpoint. ``source_folder``'s side files (config, tokenizer,
    generation config) are copied; ``files`` are written last (``{name: text or bytes}``,
    e.g. the model card). ``metadata`` goes into ``mapframe_merge.json``. The folder is
    built beside ``path`` and moved into place when complete; an existing ``path`` is
    replaced only when it is an earlier mapframe export.
    """
    from safetensors.torch import save_file

    if max_shard_bytes < 1:
        raise ConfigError(f"max_shard_bytes must be positive, got {max_shard_bytes!r}")
    with staged_export_folder(path) as tmp:
        if source_folder is not None:
            _copy_side_files(Path(source_folder), tmp)
        merged = list(task_vectors.keys())
        kept = task_vectors.unmerged()
        written: list[list[str]] = []
        total = 0

        def flush(group: dict[str, torch.Tensor]) -> None:
            merge({k: v for k, v in group.items() if k not in kept})
            save_file({k: v.contiguous() for k, v in group.items()},
                      str(tmp / f".shard-{len(written)}"), metadata={"format": "pt"})
            written.append(list(group))

        def tensors() -> Iterable[tuple[str, torch.Tensor]]:
            for k in merged:
                yield k, task_vectors.base(k).clone()
            yield from kept.items()

        group: dict[str, torch.Tensor] = {}
        size = 0
        for key, tensor in tensors():
            nbytes = _nbytes(tensor)
            if group and size + nbytes > max_shard_bytes:
                flush(group)
                group, size = {}, 0
            group[key] = tensor
            size += nbytes
            total += nbytes
        if group or not written:
            flush(group)
        del group
        names = shard_names(len(written))
        weight_map: dict[str, str] = {}
        for i, keys in enumerate(written):
            (tmp / f".shard-{i}").rename(tmp / names[i])
            weight_map.update(dict.fromkeys(keys, names[i]))
        if len(written) > 1:
            (tmp / INDEX_NAME).write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / EXPORT_MARKER).write_text(json.dumps(dict(metadata or {}), indent=1,
                                                    default=str))
        for name, content in (files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
    return Path(path)
