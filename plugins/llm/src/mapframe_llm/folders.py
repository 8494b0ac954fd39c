"""Reading Hugging Face model folders tensor by tensor: sharded safetensors, checked first.

A :class:`ModelFolder` is a ``save_pretrained`` directory (``config.json`` + either one
``model.safetensors`` or shards listed by ``model.safetensors.index.json``) or a single
``.safetensors`` file. Opening one reads only the shards' headers: every shard the index
names must exist, every tensor must be in the shard the index says, and every tensor's bytes
must lie inside its file (a truncated download is caught here, not mid-study). Tensors are
then read on demand, whole or a slice of their elements at a time, with ``os.preadv`` into
a buffer the caller owns: nothing is memory-mapped into the process, so reading a 16 GB
checkpoint never grows the resident set beyond that buffer.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["ModelFolder", "TensorInfo", "torch_dtype"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024
_PAGE = mmap.PAGESIZE

#: safetensors dtype names -> (torch dtype attribute, bytes per element).
_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
    "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2),
    "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
_FLOATS = {"F64", "F32", "F16", "BF16"}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (``"BF16"`` -> ``torch.bfloat16``)."""
    import torch

    dtype: torch.dtype = getattr(torch, _DTYPES[name][0])
    return dtype


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are: its file, absolute byte offset, dtype and shape."""

    key: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        """Merged tensors: float64/32/16 and bfloat16 (not float8, not integers)."""
        return self.dtype in _FLOATS

    @property
    def itemsize(self) -> int:
        return _DTYPES[self.dtype][1]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file, checked against the file's size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            n = int.from_bytes(raw, "little")
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: not a valid safetensors file ({exc}); the file may be truncated or "
            "corrupt: download or save it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a valid safetensors file (header is not a mapping)")
    out: dict[str, TensorInfo] = {}
    start = 8 + n
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = str(meta["dtype"])
            shape = tuple(int(s) for s in meta["shape"])
            lo, hi = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {key!r} has a malformed header entry") from None
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"{path}: tensor {key!r} has dtype {dtype}, which mapframe-llm cannot read "
                f"(supported: {', '.join(_DTYPES)})")
        expected = math.prod(shape) * _DTYPES[dtype][1]
        if hi - lo != expected or lo < 0 or start + hi > size:
            raise CheckpointError(
                f"{path}: tensor {key!r} does not fit in the file (bytes {lo}..{hi} of a "
                f"{size - start}-byte data section, {expected} expected); the file is truncated "
                "or corrupt: download or save it again")
        out[key] = TensorInfo(key, path, dtype, shape, start + lo, hi - lo)
    return out


def _pread_into(fd: int, out: memoryview, pos: int, lock: Any) -> int:
    """Read up to ``len(out)`` bytes at offset ``pos`` into ``out``; the number read.

    ``os.preadv`` where the OS has it (a positional read: threads need no lock); elsewhere
    (Windows) a seek and a read under ``lock``.
    """
    if hasattr(os, "preadv"):
        return int(os.preadv(fd, [out], pos))
    with lock:
        os.lseek(fd, pos, os.SEEK_SET)
        data = os.read(fd, len(out))
    out[: len(data)] = data
    return len(data)


class ModelFolder:
    """One checkpoint: a Hugging Face model folder or a single ``.safetensors`` file.

    ``role`` names it in error messages (``"the pretrained checkpoint"``,
    ``"fine-tuned checkpoint 'french'"``). Only headers are read on construction; see
    :meth:`read` and :meth:`read_flat` for the data.
    """

    def __init__(self, path: str | os.PathLike[str], role: str = "checkpoint") -> None:
        self.path = Path(path).expanduser()
        self.role = role
        self.config: dict[str, Any] | None = None
        self._fds: dict[Path, int] = {}
        self._maps: dict[Path, mmap.mmap] = {}
        self._lock = threading.RLock()
        if self.path.is_file():
            if self.path.suffix != ".safetensors":
                raise CheckpointError(
                    f"{role} {self.path}: not a .safetensors file; give a Hugging Face model "
                    "folder (config.json + safetensors shards) or a .safetensors file")
            self.tensors = read_header(self.path)
            self.files = [self.path]
        elif self.path.is_dir():
            self.config = self._read_config()
            self.files, self.tensors = self._read_folder()
        else:
            raise CheckpointError(f"{role} not found: {self.path} (check the path)")
        if not self.tensors:
            raise CheckpointError(f"{role} {self.path} holds no tensors")

    # -- opening -------------------------------------------------------------------------

    def _read_config(self) -> dict[str, Any] | None:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            return None
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.role}: {cfg} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.role}: {cfg} is not a JSON object")
        return data

    def _read_folder(self) -> tuple[list[Path], dict[str, TensorInfo]]:
        index = self.path / INDEX_FILE
        if index.is_file():
            return self._read_index(index)
        single = self.path / SINGLE_FILE
        if single.is_file():
            return [single], read_header(single)
        shards = sorted(self.path.glob("*.safetensors"))
        if (self.path / "adapter_config.json").is_file():
            raise CheckpointError(
                f"{self.role} {self.path} is a PEFT adapter folder, not a model folder; "
                "adapters can be fine-tuned checkpoints, but the pretrained checkpoint must be "
                "the full base model")
        if not shards:
            bins = sorted(p.name for p in self.path.glob("*.bin"))
            hint = (f" It holds PyTorch weights ({', '.join(bins[:3])}): re-save them as "
                    "safetensors with model.save_pretrained(folder, safe_serialization=True)."
                    if bins else "")
            raise CheckpointError(
                f"{self.role} {self.path} holds no safetensors weights (no {INDEX_FILE}, no "
                f"{SINGLE_FILE}).{hint}")
        tensors: dict[str, TensorInfo] = {}
        for shard in shards:
            for key, info in read_header(shard).items():
                if key in tensors:
                    raise CheckpointError(
                        f"{self.role} {self.path}: tensor {key!r} is in both "
                        f"{tensors[key].file.name} and {shard.name}, and there is no "
                        f"{INDEX_FILE} saying which to use")
                tensors[key] = info
        return shards, tensors

    def _read_index(self, index: Path) -> tuple[list[Path], dict[str, TensorInfo]]:
        try:
            data = json.loads(index.read_text())
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(
                f"{self.role}: {index} is not a valid safetensors index (a JSON object with "
                "a 'weight_map' of tensor -> shard file)") from None
        names = sorted(set(map(str, weight_map.values())))
        missing = [n for n in names if not (self.path / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{self.role} {self.path}: shard {missing[0]} is listed in {INDEX_FILE} but "
                f"is not in the folder ({len(missing)} of {len(names)} shards missing); the "
                "download is incomplete: fetch the missing shard(s) again")
        headers = {n: read_header(self.path / n) for n in names}
        tensors: dict[str, TensorInfo] = {}
        for key, shard in weight_map.items():
            info = headers[str(shard)].get(key)
            if info is None:
                raise CheckpointError(
                    f"{self.role} {self.path}: {INDEX_FILE} puts tensor {key!r} in {shard}, "
                    "but that shard does not hold it; the index and the shards come from "
                    "different saves: save or download the model again")
            tensors[key] = info
        return [self.path / n for n in names], tensors

    # -- facts ---------------------------------------------------------------------------

    def keys(self) -> Iterator[str]:
        return iter(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def info(self, key: str) -> TensorInfo:
        return self.tensors[key]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data (what one copy of this checkpoint takes in memory)."""
        return sum(t.nbytes for t in self.tensors.values())

    def identity(self) -> list[tuple[str, int, int]]:
        """(file name, size, mtime_ns) of every file read: a cheap identity of the weights."""
        out = []
        for f in self.files:
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
        return out

    # -- data ----------------------------------------------------------------------------

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file)
                if fd is None:
                    try:
                        fd = os.open(file, os.O_RDONLY)
                    except OSError as exc:
                        raise CheckpointError(f"{self.role}: {file} cannot be opened "
                                              f"({exc.strerror or exc})") from None
                    self._fds[file] = fd
        return fd

    def read_bytes_into(self, key: str, start: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes of tensor ``key`` from byte ``start`` of its data."""
        info = self.tensors[key]
        fd = self._fd(info.file)
        pos, done, want = info.offset + start, 0, len(out)
        while done < want:
            got = _pread_into(fd, out[done:], pos + done, self._lock)
            if got <= 0:
                raise CheckpointError(
                    f"{self.role}: {info.file} ended while reading tensor {key!r}; the file "
                    "changed or was truncated after it was opened")
            done += got

    def read_flat(self, key: str, start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
        """Elements ``[start, stop)`` of tensor ``key`` (flattened), read into ``buffer``
        (a 1-D ``uint8`` tensor of at least that many bytes); returns a typed view of it."""
        info = self.tensors[key]
        size = info.itemsize
        nbytes = (stop - start) * size
        raw = buffer[:nbytes]
        self.read_bytes_into(key, start * size, raw.numpy().data)
        return raw.view(torch_dtype(info.dtype))

    def _map(self, file: Path) -> mmap.mmap:
        mm = self._maps.get(file)
        if mm is None:
            with self._lock:  # merges read one folder from several threads
                mm = self._maps.get(file)
                if mm is None:
                    mm = mmap.mmap(self._fd(file), 0, access=mmap.ACCESS_READ)
                    self._maps[file] = mm
        return mm

    def view_range(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``[start, stop)`` of tensor ``key`` as a read-only view of the memory-mapped
        file (no copy), left mapped until :meth:`release_range`. Safe to call from several
        threads at once; never write to the view."""
        import torch

        info = self.tensors[key]
        size = info.itemsize
        lo = info.offset + start * size
        mm = self._map(info.file)
        with warnings.catch_warnings():  # the mapping is read-only; the view is only read
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(mm, dtype=torch.uint8, count=(stop - start) * size,
                                   offset=lo)
        return raw.view(torch_dtype(info.dtype))

    def release_range(self, key: str, start: int, stop: int) -> None:
        """Drop the whole pages inside elements ``[start, stop)`` of tensor ``key`` from this
        process's resident set (they stay in the page cache)."""
        info = self.tensors[key]
        mm = self._maps.get(info.file)
        if mm is None or not hasattr(mm, "madvise"):
            return
        lo = info.offset + start * info.itemsize
        hi = info.offset + stop * info.itemsize
        first = -(-lo // _PAGE) * _PAGE
        last = hi // _PAGE * _PAGE
        if last > first:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, first, last - first)

    def read(self, key: str) -> torch.Tensor:
        """The whole tensor ``key``, freshly allocated in its stored dtype and shape."""
        import torch

        info = self.tensors[key]
        out = torch.empty(info.shape, dtype=torch_dtype(info.dtype))
        if info.nbytes:
            self.read_bytes_into(key, 0, out.view(-1).view(torch.uint8).numpy().data)
        return out

    def close(self) -> None:
        for mm in self._maps.values():
            with contextlib.suppress(BufferError):  # a view still alive keeps it open
                mm.close()
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # File descriptors and mappings do not travel to other processes.
        state["_fds"], state["_maps"] = {}, {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __repr__(self) -> str:
        return (f"ModelFolder({str(self.path)!r}, {len(self.tensors)} tensors, "
                f"{self.nbytes / 1e9:.2f} GB in {len(self.files)} file(s))")


def config_value(config: Mapping[str, Any] | None, *names: str) -> Any:
    """The first of ``names`` present in a model config (also looked up in ``text_config``,
    where multimodal models keep their language model's settings)."""
    if not config:
        return None
    for scope in (config, config.get("text_config") or {}):
        for n in names:
            if isinstance(scope, Mapping) and n in scope:
                return scope[n]
    return None
