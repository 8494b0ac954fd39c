"""Task vectors of Hugging Face checkpoints, streamed tensor by tensor into one resident model.

:func:`load_task_vectors` opens the pretrained model folder and each fine-tune (a model
folder, a ``.safetensors`` file or a PEFT LoRA adapter folder), checks that they fit together
(architecture, vocabulary, tokenizer, every tensor's shape) before anything is evaluated,
and returns :class:`StreamedTaskVectors`. Nothing is subtracted up front: a merge computes

    θ(c) = (1 − Σ_full c_i) θ0 + Σ_full c_i θ_i + Σ_lora c_j · scale_j B_j A_j

chunk by chunk of each tensor, accumulating in float32 and writing the result in the
resident model's own dtype. The checkpoints stay where the user chose (``storage``):

- ``disk``: read from the safetensors shards for each merge (page cache permitting, at
  memory speed). Extra memory: per merge thread, one float32 accumulator and one read
  buffer of ``chunk_elements`` each (12 MB by default), plus the LoRA factors.
- ``ram``: the pretrained and fine-tuned weights are read once and kept in memory, in their
  stored dtype: ``(N + 1) ×`` one checkpoint on top of the resident model.

Coefficients ``e_i`` reproduce fine-tune ``i`` bit for bit and ``0`` reproduces the base,
whatever the dtype, because the pretrained weights are weighted, not subtracted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import CheckpointError, ConfigError
from mapframe.merging.checkpoints import TaskVectors
from mapframe_llm.folders import ModelFolder, config_value, torch_dtype
from mapframe_llm.lora import LoraAdapter, LowRankDelta, is_adapter_folder

if TYPE_CHECKING:
    import torch

__all__ = ["READERS", "STORAGES", "StreamedTaskVectors", "bind_resident", "key_aligner",
           "load_task_vectors"]

logger = logging.getLogger(__name__)

STORAGES = ("disk", "ram")
READERS = ("mmap", "pread")
#: Elements per chunk of a tensor during a merge (4 MB of float32 accumulator).
CHUNK_ELEMENTS = 1 << 20

#: Largest shard a model-folder export writes (what ``save_pretrained`` uses by default).
DEFAULT_SHARD_BYTES = 5 * 10**9
#: The file that marks a folder as a mapframe export (coefficients, strategy, study).
EXPORT_MARKER = "mapframe_merge.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")

#: Config entries that fix the weights' shapes: fine-tunes must agree with the base on them.
_ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "head_dim", "n_embd", "n_layer", "n_head", "n_inner",
              "dim", "n_layers", "n_heads", "hidden_dim", "num_experts", "num_local_experts")
_VOCAB_KEYS = ("vocab_size", "n_vocab")

#: ``fetch(r0, r1, s, e, raw)``: rows ``[r0, r1)`` = elements ``[s, e)`` of one merge term,
#: read into the byte buffer ``raw`` when it has to be copied.
_Fetch = Callable[[int, int, int, int, "torch.Tensor"], "torch.Tensor"]


# -- key names ---------------------------------------------------------------------------------

def key_aligner(reference: Collection[str], keys: Collection[str]) -> Callable[[str], str]:
    """A renaming of ``keys`` onto ``reference``'s names: the identity, or adding or
    stripping one leading component (``bert.``, ``model.``, ``transformer.``...),
    whichever matches the most keys. Task-model checkpoints name the encoder
    ``bert.encoder...`` where the base model's own file says ``encoder...``."""
    ref = set(reference)

    def identity(k: str) -> str:
        return k

    def strip(prefix: str) -> Callable[[str], str]:
        return lambda k: k[len(prefix):] if k.startswith(prefix) else k

    def add(prefix: str) -> Callable[[str], str]:
        return lambda k: k if k in ref else prefix + k

    candidates: list[Callable[[str], str]] = [identity]
    candidates += [strip(f"{x}.") for x in sorted({k.split(".", 1)[0] for k in keys if "." in k})]
    candidates += [add(f"{x}.") for x in sorted({k.split(".", 1)[0] for k in ref if "." in k})]
    scores = [sum(f(k) in ref for k in keys) for f in candidates]
    return candidates[scores.index(max(scores))]


# -- compatibility checks ----------------------------------------------------------------------

def _tokenizer_vocab(folder: Path) -> tuple[str, Any] | None:
    """What defines a folder's token ids: tokenizer.json's vocabulary and added tokens, or
    the bytes of vocab.txt / vocab.json + merges.txt / tokenizer.model."""
    tj = folder / "tokenizer.json"
    if tj.is_file():
        try:
            data = json.loads(tj.read_text())
            vocab = (data.get("model") or {}).get("vocab")
            added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens") or [])
            return "tokenizer.json", (vocab, added)
        except (OSError, ValueError, AttributeError):
            return None
    for names in (("vocab.txt",), ("vocab.json", "merges.txt"), ("tokenizer.model",)):
        if all((folder / n).is_file() for n in names):
            return "+".join(names), tuple((folder / n).read_bytes() for n in names)
    return None


def _token_count(vocab: tuple[str, Any]) -> int | None:
    kind, value = vocab
    if kind == "tokenizer.json":
        v, added = value
        return (len(v) if v is not None else 0) + len({i for i, _ in added} - set(
            v.values() if isinstance(v, dict) else []))
    if kind == "vocab.txt":
        return len(value[0].splitlines())
    return None


def check_tokenizers(base: Path, other: Path, role: str) -> None:
    """Raise when ``other``'s tokenizer maps text to other ids than ``base``'s."""
    if not (base.is_dir() and other.is_dir()):
        return
    a, b = _tokenizer_vocab(base), _tokenizer_vocab(other)
    if a is None or b is None or a[0] != b[0] or a == b:
        return
    na, nb = _token_count(a), _token_count(b)
    sizes = f" ({nb} tokens, the pretrained tokenizer has {na})" if na and nb and na != nb else ""
    raise CheckpointError(
        f"{role} has a different tokenizer vocabulary than the pretrained checkpoint{sizes}: "
        f"{other} vs {base}. Merged weights only make sense when every model maps text to the "
        "same token ids; a fine-tune that added or changed tokens cannot be merged by task "
        "arithmetic. Use fine-tunes made from this base model with its tokenizer")


def check_configs(base: Mapping[str, Any] | None, other: Mapping[str, Any] | None,
                  role: str) -> None:
    """Raise when a fine-tune's config describes another architecture or vocabulary."""
    if not base or not other:
        return
    mt_a, mt_b = base.get("model_type"), other.get("model_type")
    if mt_a and mt_b and mt_a != mt_b:
        raise CheckpointError(
            f"{role} is a {mt_b!r} model, the pretrained checkpoint a {mt_a!r} model: all "
            "checkpoints must share one architecture")
    va, vb = config_value(base, *_VOCAB_KEYS), config_value(other, *_VOCAB_KEYS)
    if va is not None and vb is not None and va != vb:
        raise CheckpointError(
            f"{role} has a vocabulary of {vb} tokens, the pretrained checkpoint {va}: the "
            "fine-tune resized its embeddings (added tokens), so its embedding and output "
            "matrices cannot be merged with the base's. Use fine-tunes that keep the base "
            "vocabulary")
    for k in _ARCH_KEYS:
        a, b = config_value(base, k), config_value(other, k)
        if a is not None and b is not None and a != b:
            raise CheckpointError(
                f"{role} has {k} = {b}, the pretrained checkpoint {a}: it is another "
                "architecture (or model size); all checkpoints must come from the same base")


def _shape_error(role: str, key: str, got: Sequence[int], want: Sequence[int],
                 vocab: int | None) -> CheckpointError:
    if (vocab is not None and len(got) == 2 and len(want) == 2 and vocab == want[0]
            and got[0] != want[0] and got[1] == want[1]):
        return CheckpointError(
            f"{role}: {key!r} has {got[0]} rows, the pretrained checkpoint {want[0]}: the "
            "vocabulary sizes differ (the fine-tune added tokens). Its embeddings cannot be "
            "merged with the base's; use fine-tunes that keep the base vocabulary")
    return CheckpointError(
        f"{role}: tensor {key!r} has shape {list(got)}, the pretrained checkpoint has "
        f"{list(want)}: the checkpoints come from different architectures")


# -- task sources ------------------------------------------------------------------------------

@dataclass
class _Full:
    """A fully fine-tuned checkpoint: canonical key -> its own key."""

    folder: ModelFolder
    keys: dict[str, str]
    heads: list[str] = field(default_factory=list)
    ram: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Lora:
    """An adapter: canonical key -> low-rank delta, or the adapter's key of a full tensor."""

    adapter: LoraAdapter
    deltas: dict[str, LowRankDelta | str]
    ram: dict[str, torch.Tensor] = field(default_factory=dict)


class StreamedTaskVectors(TaskVectors):
    """Task vectors that are never stacked: merges stream the checkpoints tensor by tensor.

    Build it with :func:`load_task_vectors`. Linear merge strategies (task arithmetic and
    its reweightings: soup, scalar, preference) go through :meth:`combine_into`, which
    reads each tensor in chunks; strategies that need a tensor's task vectors side by side
    (TIES, DARE, SLERP) get them from :meth:`vectors`, one tensor at a time (``N`` float32
    copies of the largest tensor at once).
    """

    def __init__(self, base: ModelFolder, tasks: Mapping[str, _Full | _Lora],
                 storage: str = "disk", chunk_elements: int = CHUNK_ELEMENTS,
                 reader: str = "pread", threads: int | None = None) -> None:
        if storage not in STORAGES:
            raise ConfigError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if reader not in READERS:
            raise ConfigError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
        if reader == "pread" and not hasattr(os, "preadv"):  # Windows: no positional reads
            logger.info("os.preadv is not available on this platform: reading with mmap")
            reader = "mmap"
        self.base_folder = base
        self.storage = storage
        #: How ``disk`` storage reads: ``pread`` (copies each chunk into this thread's buffer)
        #: or ``mmap`` (zero-copy views of the mapped shards, pages dropped from the process
        #: after use). ``pread`` is the default: mapping costs a page fault per few pages and
        #: dropping them a TLB flush on every core, and with several merge threads ``mmap``
        #: measured 1.4–1.9× slower than ``pread`` (docs/benchmarks.md, LLM section).
        #: Where the OS has no ``os.preadv`` (Windows), ``pread`` falls back to ``mmap``.
        self.reader = reader
        self.chunk_elements = int(chunk_elements)
        self._tasks = dict(tasks)
        self.task_names = list(tasks)
        self.sources = [str(t.folder.path if isinstance(t, _Full) else t.adapter.path)
                        for t in tasks.values()]
        self._merged = [k for k in base.keys() if base.info(k).is_float]
        self._kept = [k for k in base.keys() if not base.info(k).is_float]
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        #: Threads that merge chunks of a tensor side by side (``None``: torch's thread
        #: count at merge time).
        self.threads = threads
        self._ram_base: dict[str, torch.Tensor] = {}
        self._tls: threading.local | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        if storage == "ram":
            self._load_into_ram()

    # -- memory ------------------------------------------------------------------------------

    def _load_into_ram(self) -> None:
        for k in self.base_folder.keys():
            self._ram_base[k] = self.base_folder.read(k).reshape(-1)
        for t in self._tasks.values():
            if isinstance(t, _Full):
                for ck, fk in t.keys.items():
                    t.ram[ck] = t.folder.read(fk).reshape(-1)
            else:
                for ck, d in t.deltas.items():
                    if isinstance(d, str):
                        t.ram[ck] = t.adapter.folder.read(d).reshape(-1)

    def memory_cost(self) -> dict[str, int]:
        """Bytes this object holds in memory, and bytes one merge reads."""
        held = sum(t.numel() * t.element_size() for t in self._ram_base.values())
        low_rank = 0
        for t in self._tasks.values():
            held += sum(x.numel() * x.element_size() for x in t.ram.values())
            if isinstance(t, _Lora):
                low_rank += sum(d.nbytes for d in t.deltas.values()
                                if isinstance(d, LowRankDelta))
        buffers = self.chunk_elements * (4 + 8) * self._merge_threads()
        size = self.base_folder.nbytes
        read = size + sum(t.folder.nbytes for t in self._tasks.values() if isinstance(t, _Full))
        return {"checkpoint_bytes": size, "held_bytes": held + low_rank,
                "low_rank_bytes": low_rank, "buffer_bytes": buffers, "merge_read_bytes": read}

    def describe_memory(self) -> str:
        """One line saying where the task vectors live and what they cost."""
        m = self.memory_cost()
        if self.storage == "ram":
            return (f"task vectors in RAM: {_size(m['held_bytes'])} held (pretrained + "
                    f"{self.n_tasks} fine-tunes in their stored dtype; one checkpoint is "
                    f"{_size(m['checkpoint_bytes'])}), plus the resident model")
        extra = m["buffer_bytes"] + m["held_bytes"]
        return (f"task vectors on disk: each merge reads {_size(m['merge_read_bytes'])} from "
                f"the checkpoints; extra memory {_size(extra)} (chunk buffers + LoRA factors), "
                f"plus the resident model ({_size(m['checkpoint_bytes'])} at the stored dtype)")

    # -- TaskVectors API ---------------------------------------------------------------------

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def keys(self) -> Iterator[str]:
        return iter(self._merged)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.base_folder.info(key).shape

    def base(self, key: str) -> torch.Tensor:
        if key in self._ram_base:
            return self._ram_base[key].view(self.shape(key))
        return self.base_folder.read(key)

    def unmerged(self) -> dict[str, torch.Tensor]:
        return {k: self.base(k) for k in self._kept}

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """The whole pretrained state dict (reads every tensor: one checkpoint in memory)."""
        return {k: self.base(k) for k in self.base_folder.keys()}

    def head(self, task: str) -> dict[str, torch.Tensor]:
        """Tensors of ``task``'s checkpoint that the pretrained one lacks (a classification
        head), under the checkpoint's own names; empty for adapters."""
        t = self._tasks[task]
        if not isinstance(t, _Full):
            return {}
        return {fk: t.folder.read(fk) for fk in t.heads}

    def _buffers_for(self, elements: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This thread's float32 accumulator and byte buffer, of at least ``elements``."""
        import torch

        tls = self._tls
        if tls is None:
            tls = self._tls = threading.local()
        bufs = getattr(tls, "buffers", None)
        if bufs is None or bufs[0].numel() < elements:
            n = max(elements, self.chunk_elements)
            bufs = (torch.empty(n, dtype=torch.float32), torch.empty(n * 8, dtype=torch.uint8))
            tls.buffers = bufs
        return bufs

    def _merge_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        import torch

        return max(1, torch.get_num_threads())

    def _pool_for(self, n_chunks: int) -> ThreadPoolExecutor | None:
        """Threads that merge a tensor's chunks side by side (``None``: merge here).

        Each pool thread runs torch single-threaded: a merge's ops are short, and one chunk
        per core beats every op forking onto every core. The caller's own torch thread
        count is left as it is.
        """
        threads = self._merge_threads()
        if threads <= 1 or n_chunks <= 1:
            return None
        if self._pool is None or self._pool_size != threads:
            if self._pool is not None:
                self._pool.shutdown()
            import torch

            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mapframe-merge",
                                            initializer=torch.set_num_threads, initargs=(1,))
            self._pool_size = threads
        return self._pool

    def _rows(self, key: str) -> tuple[int, int]:
        shape = self.shape(key)
        if not shape:
            return 1, 1
        rows = shape[0]
        return rows, max(1, int(_prod(shape) // rows)) if rows else 1

    def _source(self, folder: ModelFolder, fkey: str, ram: Mapping[str, torch.Tensor],
                ckey: str, mapped: list[tuple[ModelFolder, str]]) -> _Fetch:
        """``fetch(r0, r1, s, e, raw)``: elements ``[s, e)`` of a stored tensor."""
        if ckey in ram:
            data = ram[ckey]
            return lambda r0, r1, s, e, raw: data[s:e]
        if self.reader == "mmap":
            mapped.append((folder, fkey))
            return lambda r0, r1, s, e, raw: folder.view_range(fkey, s, e)
        return lambda r0, r1, s, e, raw: folder.read_flat(fkey, s, e, raw)

    def _terms(self, key: str, c: Sequence[float]
               ) -> tuple[float, list[tuple[float, Any]]]:
        """The base's weight and the non-zero terms of ``θ(c)`` for one tensor."""
        w0 = 1.0
        terms: list[tuple[float, Any]] = []
        for ci, t in zip(c, self._tasks.values()):
            if isinstance(t, _Full):
                w0 -= ci
                if ci != 0.0:
                    terms.append((ci, t))
            else:
                d = t.deltas.get(key)
                if d is None or ci == 0.0:
                    continue
                if isinstance(d, str):
                    w0 -= ci
                terms.append((ci, t))
        return w0, terms

    def combine_into(self, key: str, coefficients: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``θ(c)`` of tensor ``key`` into ``out``, streaming chunk by chunk (chunks
        side by side on :attr:`threads` threads)."""
        import torch

        c = [float(x) for x in coefficients.reshape(-1).tolist()]
        w0, terms = self._terms(key, c)
        target = out.view(-1) if out.is_contiguous() else torch.empty(
            out.numel(), dtype=out.dtype)
        rows, row_len = self._rows(key)
        step = max(1, self.chunk_elements // row_len)
        mapped: list[tuple[ModelFolder, str]] = []
        sources: list[tuple[float, _Fetch]] = []
        if w0 != 0.0:
            sources.append((w0, self._source(self.base_folder, key, self._ram_base, key,
                                             mapped)))
        for ci, t in terms:
            sources.append((ci, self._fetcher(t, key, mapped)))

        def merge_rows(r0: int) -> None:
            r1 = min(rows, r0 + step)
            s, e = r0 * row_len, r1 * row_len
            acc_buf, raw = self._buffers_for(e - s)
            acc = acc_buf[: e - s]
            if not sources:  # every weight is zero
                acc.zero_()
            for j, (w, fetch) in enumerate(sources):
                # Each read lands in this thread's buffer (or is a view of the mapped file)
                # and is consumed before the next; mixed-dtype kernels convert on the fly.
                x = fetch(r0, r1, s, e, raw)
                if j == 0:
                    # Converted first, then scaled in float32: ``torch.mul(x, w, out=acc)``
                    # would compute in x's dtype (a Python scalar does not promote) and
                    # round the term to bf16/fp16 before accumulating.
                    acc.copy_(x)  # w = 1 reproduces the stored values exactly
                    if w != 1.0:
                        acc.mul_(w)
                else:
                    acc.add_(x, alpha=w)
            target[s:e].copy_(acc)
            for folder, fkey in mapped:  # the process never holds more than the chunks
                folder.release_range(fkey, s, e)

        starts = range(0, rows, step)
        pool = self._pool_for(len(starts))
        if pool is None:
            for r0 in starts:
                merge_rows(r0)
        else:
            list(pool.map(merge_rows, starts))
        n = rows * row_len
        for folder, fkey in mapped:  # pages straddling two chunks
            folder.release_range(fkey, 0, n)
        if target.data_ptr() != out.data_ptr():
            out.copy_(target.view(out.shape))

    def _fetcher(self, t: _Full | _Lora, key: str, mapped: list[tuple[ModelFolder, str]]
                 ) -> _Fetch:
        """``fetch(r0, r1, s, e, raw)``: rows ``[r0, r1)`` (elements ``[s, e)``) of a term."""
        if isinstance(t, _Full):
            return self._source(t.folder, t.keys[key], t.ram, key, mapped)
        d = t.deltas[key]
        if isinstance(d, str):
            return self._source(t.adapter.folder, d, t.ram, key, mapped)
        return lambda r0, r1, s, e, raw: d.rows(r0, r1)

    def combine_batch_into(self, key: str, coefficients: torch.Tensor,
                           out: torch.Tensor) -> None:
        for b in range(coefficients.shape[0]):
            self.combine_into(key, coefficients[b], out[b])

    def vectors(self, key: str) -> torch.Tensor:
        """``(N, *shape)`` float32 task vectors of one tensor (materialised: used by
        strategies that are not linear in ``c``)."""
        import torch

        base = self.base(key).to(torch.float32).reshape(-1)
        rows, _ = self._rows(key)
        out = torch.zeros((self.n_tasks, base.numel()), dtype=torch.float32)
        for i, t in enumerate(self._tasks.values()):
            if isinstance(t, _Full):
                out[i] = t.ram[key] if key in t.ram else t.folder.read(t.keys[key]).reshape(-1)
                out[i] -= base
            else:
                d = t.deltas.get(key)
                if d is None:
                    continue
                if isinstance(d, str):
                    saved = t.ram[key] if key in t.ram else t.adapter.folder.read(d).reshape(-1)
                    out[i] = saved.to(torch.float32) - base
                else:
                    out[i] = d.rows(0, rows)
        return out.view(self.n_tasks, *self.shape(key))

    def vector(self, i: int) -> dict[str, torch.Tensor]:
        """Task vector ``i`` over every merged tensor (materialised: one model's worth)."""
        return {k: self.vectors(k)[i] for k in self._merged}

    def norm_ratios(self) -> list[float]:
        """``||τ_i|| / ||θ0||`` per task (reads every checkpoint once)."""
        import torch

        base_sq, tv_sq = 0.0, [0.0] * self.n_tasks
        for k in self._merged:
            base_sq += float(torch.sum(self.base(k).float() ** 2))
            v = self.vectors(k)
            for i in range(self.n_tasks):
                tv_sq[i] += float(torch.sum(v[i] ** 2))
        return [(x / base_sq) ** 0.5 if base_sq > 0 else float("inf") for x in tv_sq]

    def fingerprint(self) -> dict[str, object]:
        """The files behind the task vectors (names, sizes, modification times): cheap."""
        files: dict[str, object] = {"pretrained": self.base_folder.identity()}
        for name, t in self._tasks.items():
            files[name] = (t.folder.identity() if isinstance(t, _Full)
                           else t.adapter.folder.identity())
        return {"tasks": list(self.task_names), "tensors": len(self._merged), "files": files}

    def nbytes(self) -> int:
        return self.memory_cost()["held_bytes"]

    def _folders(self) -> list[ModelFolder]:
        return [self.base_folder] + [t.folder if isinstance(t, _Full) else t.adapter.folder
                                     for t in self._tasks.values()]

    def export_merged(self, merge: Callable[[MutableMapping[str, torch.Tensor]], None],
                      path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None,
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
        """Save the merged model as a Hugging Face model folder at ``path`` (or as one
        ``.safetensors`` file when ``path`` ends in ``.safetensors``).

        The folder is what ``save_pretrained`` writes and ``from_pretrained`` loads: the
        pretrained folder's config, generation config and tokenizer files, the merged weights
        in the pretrained checkpoint's tensor names and dtypes, in shards of at most
        ``max_shard_bytes`` (one ``model.safetensors`` when they fit; else
        ``model-0000i-of-0000n.safetensors`` and ``model.safetensors.index.json``), plus
        ``mapframe_merge.json`` (coefficients, strategy, study, predicted metrics). Shards are
        merged and written one at a time, so memory never holds more than one shard. The
        folder is built beside ``path`` and moved into place when complete; an existing
        ``path`` is replaced only if it is an earlier mapframe export. Per-task heads of the
        fine-tunes are not part of it (the merged model has the pretrained architecture).
        """
        import torch
        from safetensors.torch import save_file

        out = Path(path)
        if out.suffix == ".safetensors":
            return super().export_merged(merge, out, metadata)
        if max_shard_bytes < 1:
            raise ConfigError(f"max_shard_bytes must be positive, got {max_shard_bytes!r}")
        from mapframe.export.hf_folder import shard_names, staged_export_folder

        with staged_export_folder(out) as tmp:
            base = self.base_folder
            if base.path.is_dir():
                for f in sorted(base.path.iterdir()):
                    if f.is_file() and not _is_weight_file(f.name):
                        shutil.copy2(f, tmp / f.name)
            shards: list[list[str]] = [[]]
            size = 0
            for k in base.keys():
                nbytes = base.info(k).nbytes
                if shards[-1] and size + nbytes > max_shard_bytes:
                    shards.append([])
                    size = 0
                shards[-1].append(k)
                size += nbytes
            merged = set(self._merged)
            weight_map: dict[str, str] = {}
            total = 0
            meta = {"format": "pt", **dict(metadata or {})}
            names = shard_names(len(shards))
            for i, group in enumerate(shards):
                name = names[i]
                tensors: dict[str, torch.Tensor] = {}
                for k in group:
                    info = base.info(k)
                    tensors[k] = (torch.empty(info.shape, dtype=torch_dtype(info.dtype))
                                  if k in merged else self.base(k))
                merge({k: v for k, v in tensors.items() if k in merged})
                save_file(tensors, str(tmp / name), metadata=meta)
                total += sum(base.info(k).nbytes for k in group)
                weight_map.update(dict.fromkeys(group, name))
                del tensors
            if len(shards) > 1:
                (tmp / "model.safetensors.index.json").write_text(json.dumps(
                    {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
            info_out: dict[str, Any] = {"pretrained": str(base.path),
                                        "finetuned": dict(zip(self.task_names, self.sources))}
            for k, v in (metadata or {}).items():
                try:
                    info_out[k] = json.loads(v)
                except ValueError:
                    info_out[k] = v
            (tmp / EXPORT_MARKER).write_text(json.dumps(info_out, indent=1))
        return out

    def close(self) -> None:
        """Close the checkpoint files (reopened on the next read)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool, self._pool_size = None, 0
        for folder in self._folders():
            folder.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # Buffers and threads are per process: rebuilt on first use.
        state["_tls"], state["_pool"], state["_pool_size"] = None, None, 0
        return state


def _is_weight_file(name: str) -> bool:
    """Weights and weight indexes of a model folder (not copied into an export)."""
    return name.endswith(_WEIGHT_SUFFIXES) or name.endswith((".index.json",))


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# -- loading -----------------------------------------------------------------------------------

def _full_source(base: ModelFolder, folder: ModelFolder, role: str, allow_heads: bool,
                 vocab: int | None) -> _Full:
    check_configs(base.config, folder.config, role)
    check_tokenizers(base.path, folder.path, role)
    ref = set(base.keys())
    rename = key_aligner(ref, list(folder.keys()))
    keys: dict[str, str] = {}
    heads: list[str] = []
    for fk in folder.keys():
        ck = rename(fk)
        if ck in ref:
            keys[ck] = fk
        else:
            heads.append(fk)
    if heads and not allow_heads:
        extra = sorted(heads)[:4]
        raise CheckpointError(
            f"{role} has tensors the pretrained checkpoint lacks ({', '.join(extra)}"
            f"{', ...' if len(heads) > 4 else ''}): it is another architecture, or a task model "
            "with its own head; the causal_lm evaluator merges checkpoints of one architecture "
            "(text_classification keeps per-task heads)")
    # Integer buffers (position ids...) are kept from the base; newer savers omit them.
    missing = sorted(k for k in ref - set(keys) if base.info(k).is_float)
    if missing:
        raise CheckpointError(
            f"{role} lacks tensors of the pretrained checkpoint ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); all checkpoints must hold the same "
            "model (if shards are missing, download the checkpoint again)")
    for ck, fk in keys.items():
        a, b = folder.info(fk), base.info(ck)
        if a.shape != b.shape:
            raise _shape_error(role, fk, a.shape, b.shape, vocab)
        if a.is_float != b.is_float:
            raise CheckpointError(
                f"{role}: tensor {fk!r} is {a.dtype}, the pretrained one {b.dtype}; the "
                "checkpoints come from different models")
    return _Full(folder, keys, heads)


def _lora_source(base: ModelFolder, path: Path, role: str) -> _Lora:
    adapter = LoraAdapter(path, role)
    check_tokenizers(base.path, path, role)
    targets = adapter.targets()
    rename = key_aligner(set(base.keys()), targets)
    deltas = adapter.bind(base, {name: rename(name) for name in targets})
    for ck in deltas:
        if not base.info(ck).is_float:
            raise CheckpointError(f"{role} changes {ck!r}, which is not a floating-point tensor")
    return _Lora(adapter, deltas)


def load_task_vectors(pretrained: str | Path, finetuned: Mapping[str, str | Path], *,
                      storage: str = "disk", allow_heads: bool = False,
                      chunk_elements: int = CHUNK_ELEMENTS, reader: str = "pread",
                      threads: int | None = None) -> StreamedTaskVectors:
    """Open and check the pretrained checkpoint and each ``{task: path}`` fine-tune.

    ``pretrained`` is a Hugging Face model folder (or one ``.safetensors`` file); each
    fine-tune is a model folder, a ``.safetensors`` file or a PEFT LoRA adapter folder.
    Every check (shards present, architecture, vocabulary, tokenizer, tensor names and
    shapes, adapters against this base) runs here, before any evaluation. ``allow_heads``
    lets full fine-tunes carry tensors the base lacks (per-task classification heads, see
    :meth:`StreamedTaskVectors.head`). ``storage`` is ``"disk"`` or ``"ram"`` (see the
    module docstring for what each costs). ``reader`` is how ``disk`` storage reads the
    shards: ``"pread"`` (default) or ``"mmap"`` (see :attr:`StreamedTaskVectors.reader`).
    ``threads`` merge chunks of each tensor side by side (default: torch's thread count).
    """
    if storage not in STORAGES:
        raise ConfigError(f"storage must be one of {', '.join(STORAGES)} (disk: read the "
                          f"checkpoints for each merge; ram: keep them in memory), got "
                          f"{storage!r}")
    if not finetuned:
        raise CheckpointError("at least one fine-tuned checkpoint is needed")
    base = ModelFolder(pretrained, "the pretrained checkpoint")
    vocab = config_value(base.config, *_VOCAB_KEYS)
    tasks: dict[str, _Full | _Lora] = {}
    for name, path in finetuned.items():
        role = f"fine-tuned checkpoint {name!r} ({Path(path).expanduser()})"
        p = Path(path).expanduser()
        if p.is_dir() and is_adapter_folder(p):
            tasks[str(name)] = _lora_source(base, p, role)
        else:
            tasks[str(name)] = _full_source(base, ModelFolder(p, role), role, allow_heads, vocab)
    tv = StreamedTaskVectors(base, tasks, storage=storage, chunk_elements=chunk_elements,
                             reader=reader, threads=threads)
    logger.info("%s", tv.describe_memory())
    return tv


# -- the resident model ------------------------------------------------------------------------

def bind_resident(model: torch.nn.Module, tv: StreamedTaskVectors) -> dict[str, torch.Tensor]:
    """Map the resident ``model``'s tensors onto the task vectors' keys.

    Returns ``{key: tensor}`` for every merged key (tensors share the model's storage: a
    merge writes straight into the model). Non-floating tensors of the checkpoint are
    copied in once. Tied tensors (an output layer sharing the input embedding) are written
    once. A model tensor the checkpoint lacks, or a shape that differs, raises
    :class:`CheckpointError`.
    """
    import torch

    state = model.state_dict(keep_vars=False)
    names = list(state)
    ref = set(tv.base_folder.keys())
    rename = key_aligner(ref, names)
    merged = set(tv.keys())
    params: dict[str, torch.Tensor] = {}
    bound: set[int] = set()
    merged_ptrs: set[int] = set()
    unmatched: list[str] = []
    with torch.no_grad():
        for name in names:
            t = state[name]
            ck = rename(name)
            if ck not in ref:
                unmatched.append(name)
                continue
            want = tv.shape(ck)
            if tuple(t.shape) != tuple(want):
                raise CheckpointError(
                    f"the model's tensor {name!r} has shape {list(t.shape)}, the checkpoint's "
                    f"{ck!r} has {list(want)}: the model was built for another architecture")
            bound.add(t.data_ptr())
            if ck in merged:
                if t.data_ptr() in merged_ptrs:
                    continue  # tied to a tensor that is merged already
                merged_ptrs.add(t.data_ptr())
                params[ck] = t
            else:
                t.copy_(tv.base(ck))
    # A tensor the file lacks is fine when it is tied to one it has (GPT-2's lm_head).
    missing = [n for n in unmatched if state[n].data_ptr() not in bound]
    if missing:
        raise CheckpointError(
            f"the model has tensors the pretrained checkpoint lacks ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); the model class does not match the "
            "checkpoint (or its loader renames tensors mapframe-llm cannot follow)")
    unbound = sorted(merged - set(params))
    if unbound:
        logger.warning("%d checkpoint tensors have no counterpart in the model and are not "
                       "merged: %s", len(unbound), ", ".join(unbound[:5]))
    return params
