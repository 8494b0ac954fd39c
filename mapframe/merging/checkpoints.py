"""Loading checkpoints safely and building task vectors ``τ_i = θ_i − θ0`` once."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe._files import give_default_mode
from mapframe.errors import CheckpointError, MapframeWarning

if TYPE_CHECKING:
    import torch

__all__ = [
    "CheckpointHook",
    "CheckpointLoader",
    "PickleRefusedError",
    "TaskVectors",
    "load_state_dict",
    "save_state_dict",
    "sniff_checkpoint_format",
]

logger = logging.getLogger(__name__)

#: ``hook(state_dict, source) -> state_dict``: adapts a loaded checkpoint (e.g. keeps the image
#: tower of a full CLIP model and renames its keys); see ``Evaluator.prepare_checkpoint``.
CheckpointHook = Callable[[dict[str, "torch.Tensor"], str], dict[str, "torch.Tensor"]]
#: ``loader(pretrained, {task: path}) -> TaskVectors | None``: an evaluator's own checkpoint
#: reader (folders, adapters, streamed task vectors); see ``Evaluator.load_task_vectors``.
CheckpointLoader = Callable[[str, Mapping[str, str]], "TaskVectors | None"]

_SAFETENSORS = (".safetensors",)
_TORCH = (".pt", ".pth", ".bin", ".ckpt")
#: Suffixes of other weight formats: an export path ending in one is refused (mapframe writes
#: safetensors; a file named so would not load where that name says).
_NOT_SAFETENSORS = (*_TORCH, ".gguf", ".onnx", ".h5", ".npz", ".npy", ".pkl", ".pickle",
                    ".msgpack")


#: Keys under which training scripts save the state dict beside other things: Lightning
#: (``state_dict``), timm / DeiT / MAE (``model``), the PyTorch tutorial
#: (``model_state_dict``), DeepSpeed (``module``).
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")


class PickleRefusedError(CheckpointError):
    """A checkpoint needs full unpickling (which runs code from the file) and
    ``allow_pickle`` was not given; ``path`` is the file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:  # sent back from worker processes whole
        return (type(self), (str(self), self.path))


def _pickle_protocol(path: Path) -> int | None:
    """The pickle protocol of a torch file (its ``data.pkl`` for a zip archive), if known."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
                if not names:
                    return None
                with archive.open(names[0]) as fh:
                    head = fh.read(2)
        else:
            with open(path, "rb") as fh:
                head = fh.read(2)
    except (OSError, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _torch_load(path: Path, weights_only: bool) -> Any:
    """``torch.load`` on the CPU. Without torch's warning about a pickle protocol other than
    torch.save's 2 (``Detected pickle protocol 4 ...``): such a file is read, or refused,
    either way (filtered only for such files: the filter's lock is process-wide)."""
    import torch

    if not weights_only or _pickle_protocol(path) in (None, 2):
        return torch.load(str(path), map_location="cpu", weights_only=weights_only)
    from mapframe._warning_filters import warning_filters

    with warning_filters() as filters:
        filters.ignore(message="Detected pickle protocol", category=UserWarning)
        return torch.load(str(path), map_location="cpu", weights_only=weights_only)


def _n_tensors(obj: Any) -> int:
    import torch

    if not isinstance(obj, Mapping):
        return 0
    return sum(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        wrapped = [k for k, v in obj.items() if k in _WRAPPERS and _n_tensors(v)]
        if len(wrapped) > 1:
            raise CheckpointError(
                f"{path}: the checkpoint holds more than one state dict ("
                f"{' and '.join(repr(k) for k in wrapped)}); re-save the one to merge alone "
                f"with torch.save(checkpoint[{wrapped[0]!r}], path)")
        if wrapped:
            obj = obj[wrapped[0]]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), found "
            f"{type(obj).__name__}; save it with torch.save(model.state_dict(), path)"
        )
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
    if not out:
        nested = [(str(k), _n_tensors(v)) for k, v in obj.items() if _n_tensors(v)]
        if nested:
            k, n = nested[0]
            raise CheckpointError(
                f"{path}: the checkpoint holds no tensors at its top level; its entry {k!r} "
                f"holds {n} tensors (a state dict under a key mapframe does not unwrap: "
                f"{', '.join(_WRAPPERS)}); re-save it with "
                f"torch.save(checkpoint[{k!r}], path)")
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return out


def load_state_dict(
    path: str | os.PathLike[str], allow_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Load a checkpoint as a dict of CPU tensors.

    ``.safetensors`` files load with safetensors; ``.pt``/``.pth``/``.bin``/``.ckpt`` with
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A whole
    pickled ``nn.Module`` (``torch.save(model)``, as the task-vectors checkpoints are) is read
    without running its code: a restricted unpickler replaces every class and function the
    file names by an inert stand-in and collects the module tree's parameters and persistent
    buffers under their ``state_dict`` keys (the original classes need not be importable).
    Anything else that needs full unpickling is refused unless ``allow_pickle=True``:
    unpickling runs code from the file, so only do it for files you trust. A state dict
    saved beside other things under one of ``state_dict``, ``model``, ``model_state_dict``
    or ``module`` (Lightning, timm, the PyTorch tutorial, DeepSpeed) is unwrapped.
    """
    p = Path(path)
    if p.is_dir():
        weights = sorted(f.name for f in p.iterdir() if f.is_file()
                         and f.suffix.lower() in (*_SAFETENSORS, *_TORCH))
        which = (f"the weights file in it ({', '.join(weights[:3])})" if weights
                 else "a weights file")
        raise CheckpointError(
            f"{p} is a folder, not a checkpoint file; give {which}, or use an evaluator "
            "that reads model folders (such as the LLM plugin's, for sharded Hugging Face "
            "models)")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} (check the path in your config)")
    suffix = p.suffix.lower()
    # What the bytes are decides how to read them, not the file's name.
    kind = sniff_checkpoint_format(p)
    if kind == "safetensors" and suffix not in _SAFETENSORS:
        logger.info("%s: a safetensors file despite its %r suffix; read as safetensors",
                    p, suffix)
        suffix = ".safetensors"
    elif kind in ("zip", "pickle") and suffix in _SAFETENSORS:
        raise CheckpointError(
            f"{p}: a torch checkpoint ({'zip archive' if kind == 'zip' else 'pickle'}), not a "
            "safetensors file, despite its name; rename it to .pt (or convert it to "
            "safetensors)")
    elif kind == "unknown" and suffix in _TORCH:
        with open(p, "rb") as fh:  # the first bytes only: the file may be large
            head = fh.read(8)
        raise CheckpointError(
            f"{p}: not a checkpoint (neither a torch zip archive, a pickle nor safetensors: "
            "it starts with bytes "
            f"{head.hex(' ')}); check it is the right, completely written file")
    if suffix in _SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from None
    if suffix not in _TORCH:
        raise CheckpointError(
            f"{p}: unknown checkpoint format {suffix!r}; use .safetensors or a torch state dict "
            f"({', '.join(_TORCH)})"
        )
    try:
        obj = _torch_load(p, weights_only=True)
    except pickle.UnpicklingError:
        # A whole pickled module (torch.save(model)): read its tensors without running code.
        from mapframe.merging._pickle_reader import read_module_tensors

        try:
            tensors = read_module_tensors(str(p))
        except Exception:
            tensors = None
        if tensors:
            logger.info("%s: read %d tensors from a pickled module without unpickling its "
                        "code", p, len(tensors))
            return tensors
        if not allow_pickle:
            raise PickleRefusedError(
                f"{p}: refused to unpickle this checkpoint (it holds Python objects beyond "
                "tensors and no module tree mapframe can read safely, and unpickling runs "
                "code from the file); convert it to safetensors, or set allow_pickle: true "
                "if you trust the file", p
            ) from None
        try:
            obj = _torch_load(p, weights_only=False)
        except Exception as exc2:
            raise CheckpointError(f"{p}: could not be unpickled ({exc2})") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{p}: not a readable torch checkpoint ({exc})") from None
    return _unwrap(obj, p)


def _vector_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype task vectors of a ``dtype`` tensor are computed and kept in: float64 for
    float64 tensors, else float32 (where the difference of two bf16/fp16 values is exact)."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32


def _tied_keys(base: Mapping[str, torch.Tensor],
               others: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, str]:
    """``{key: first key}`` for the floating-point keys of ``base`` that are the same tensor
    as an earlier key (one storage, offset, shape and stride: a tied embedding and LM head,
    as ``torch.save(model.state_dict())`` keeps them), and that hold equal values in each of
    ``others`` too (a fine-tune that untied them keeps them apart)."""
    import torch

    first: dict[tuple[Any, ...], str] = {}
    tied: dict[str, str] = {}
    for k, t in base.items():
        if not torch.is_floating_point(t) or t.numel() == 0:
            continue
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):  # tensors without a storage
            continue
        view = (t.device, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view not in first:
            first[view] = k
        elif all(o[k] is o[first[view]] or torch.equal(o[k], o[first[view]])
                 for o in others):
            tied[k] = first[view]
    return tied


def sniff_checkpoint_format(path: str | os.PathLike[str]) -> str:
    """What a checkpoint file holds by its first bytes: ``"safetensors"`` (an 8-byte
    little-endian header length, then a JSON header), ``"zip"`` (torch's default format),
    ``"pickle"`` (torch's legacy format) or ``"unknown"``."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = os.fstat(fh.fileno()).st_size
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def save_state_dict(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save tensors to a ``.safetensors`` file (contiguous CPU copies; metadata as strings)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(data, str(p), metadata=dict(metadata or {}))
    give_default_mode(p)  # safetensors writes 0600 (a private temporary file)
    return p


class TaskVectors:
    """Pretrained weights ``θ0`` and the task vectors ``τ_i = θ_i − θ0``, built once.

    Task vectors are stored per tensor, stacked over tasks (``vectors(key)`` has shape
    ``(N, *shape)``), so merges read one contiguous block per tensor. Only floating-point
    tensors take part in merging; other entries (integer buffers such as BatchNorm counters)
    are kept from the pretrained checkpoint. Task vectors of bf16/fp16 tensors are held in
    float32 (twice the checkpoint's memory for them), where ``θ_i − θ0`` is exact; a merge
    accumulates in float32 and is rounded once into the tensor's dtype, so ``c = e_i``
    gives ``θ_i`` bit for bit. float64 tensors keep float64 task vectors, and the linear
    merges (task arithmetic and its reweightings, through :meth:`combine_into`) accumulate
    them in float64, so there ``c = 0`` gives ``θ0`` bit for bit and ``c = e_i`` gives
    ``θ_i`` to float64 rounding (about 1e-16 relative); the masked, spectral and spherical
    strategies compute in float32 (about 1e-7 relative).

    Tied tensors (keys of the pretrained state dict that share one storage, such as an
    embedding and a tied LM head, when the fine-tunes hold equal values under them too) are
    held once: their base and task vectors are the same tensors, and :meth:`tied_key` names
    the first key, by which seeded strategies draw their masks, so every merge gives them
    one value.
    """

    def __init__(
        self,
        base: Mapping[str, torch.Tensor],
        finetuned: Sequence[Mapping[str, torch.Tensor]],
        task_names: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        base_source: str | None = None,
    ) -> None:
        import torch

        if not finetuned:
            raise CheckpointError("at least one fine-tuned checkpoint is needed")
        names = list(task_names) if task_names is not None else [
            f"task{i}" for i in range(len(finetuned))
        ]
        if len(names) != len(finetuned):
            raise CheckpointError(
                f"{len(names)} task names for {len(finetuned)} fine-tuned checkpoints"
            )
        srcs = list(sources) if sources is not None else names
        base_keys = set(base)
        self._base: dict[str, torch.Tensor] = {}
        self._other: dict[str, torch.Tensor] = {}
        for i, ft in enumerate(finetuned):
            keys = set(ft)
            if keys != base_keys:
                missing = sorted(base_keys - keys)[:3]
                extra = sorted(keys - base_keys)[:3]
                raise CheckpointError(
                    f"checkpoint {srcs[i]} does not match the pretrained checkpoint's keys "
                    f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}); all "
                    "checkpoints must come from the same architecture"
                )
            for k in base:
                if tuple(ft[k].shape) != tuple(base[k].shape):
                    raise CheckpointError(
                        f"checkpoint {srcs[i]}: tensor {k!r} has shape {tuple(ft[k].shape)}, "
                        f"the pretrained one has {tuple(base[k].shape)}; all checkpoints must "
                        "come from the same architecture"
                    )
        self._vectors: dict[str, torch.Tensor] = {}
        self._tied = _tied_keys(base, finetuned)
        for k, b in base.items():
            if not torch.is_floating_point(b):
                self._other[k] = b.clone()
                continue
            if k in self._tied:  # the same tensor as an earlier key: held once
                self._base[k] = self._base[self._tied[k]]
                self._vectors[k] = self._vectors[self._tied[k]]
                continue
            # The task vectors' dtype (float32, float64 for float64 checkpoints): computing
            # a float64 θ_i − θ0 in float32 lost 1e-7 of every merge.
            wide = _vector_dtype(b.dtype)
            b32 = b.detach().to(wide)
            if not torch.isfinite(b32).all():
                where = f" {base_source}" if base_source else ""
                raise CheckpointError(
                    f"tensor {k!r} of the pretrained checkpoint{where} holds NaN or infinite "
                    "values; check that file (every task vector is measured from it)")
            stacked = torch.stack(
                [ft[k].detach().to(wide) - b32 for ft in finetuned]
            )
            if not torch.isfinite(stacked).all():
                bad = [srcs[i] for i in range(len(finetuned))
                       if not torch.isfinite(stacked[i]).all()]
                raise CheckpointError(
                    f"tensor {k!r} holds NaN or infinite values in the fine-tuned "
                    f"checkpoint(s) {', '.join(bad)}; check those files (or their training)"
                )
            self._base[k] = b.detach().clone()
            # Task vectors of low-precision checkpoints stay in float32: rounding θ_i - θ0 to
            # bf16 and the merge to bf16 again missed θ_i itself (c = e_i) in 6.5 % of
            # entries. In float32 the difference of two bf16/fp16 values is exact, so a merge
            # is rounded once, when it is written back in the checkpoint's dtype.
            self._vectors[k] = stacked
        self.task_names: list[str] = names
        self.sources: list[str] = srcs
        for message in self.degeneracies():
            warnings.warn(message, MapframeWarning, stacklevel=2)

    @classmethod
    def from_files(
        cls,
        pretrained: str | os.PathLike[str],
        finetuned: Mapping[str, str | os.PathLike[str]],
        allow_pickle: bool = False,
        prepare: CheckpointHook | None = None,
    ) -> TaskVectors:
        """Load ``pretrained`` and each ``{task: path}`` in ``finetuned`` and subtract.

        ``prepare(state, path)``, when given, adapts each loaded state dict before the
        checks (an evaluator's :meth:`~mapframe.evaluators.Evaluator.prepare_checkpoint`).
        """

        def load(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
            state = load_state_dict(path, allow_pickle=allow_pickle)
            return prepare(state, os.fspath(path)) if prepare is not None else state

        base = load(pretrained)
        fts = [load(p) for p in finetuned.values()]
        return cls(base, fts, list(finetuned), [str(p) for p in finetuned.values()],
                   base_source=str(pretrained))

    @classmethod
    def from_vectors(
        cls,
        pretrained: Mapping[str, torch.Tensor],
        vectors: Sequence[Mapping[str, torch.Tensor]],
        task_names: Sequence[str] | None = None,
    ) -> TaskVectors:
        """Build from the pretrained state dict and task vectors given directly (one
        ``{key: τ}`` per task over the floating-point tensors), without subtracting.

        Used for merged models that become new "fine-tuned" models (nested merging).
        """
        import torch

        names = list(task_names) if task_names is not None else [
            f"task{i}" for i in range(len(vectors))]
        if not vectors or len(names) != len(vectors):
            raise CheckpointError(f"{len(names)} names for {len(vectors)} task vectors")
        self = cls.__new__(cls)
        self._base, self._other, self._vectors = {}, {}, {}
        for k, b in pretrained.items():
            if not torch.is_floating_point(b):
                self._other[k] = b.clone()
                continue
            for i, v in enumerate(vectors):
                if k not in v or tuple(v[k].shape) != tuple(b.shape):
                    raise CheckpointError(
                        f"task vector {names[i]!r} lacks tensor {k!r} or has the wrong shape")
        self._tied = _tied_keys(pretrained, vectors)
        for k, b in pretrained.items():
            if not torch.is_floating_point(b):
                continue
            if k in self._tied:
                self._base[k] = self._base[self._tied[k]]
                self._vectors[k] = self._vectors[self._tied[k]]
                continue
            self._base[k] = b.detach().clone()
            self._vectors[k] = torch.stack(
                [v[k].detach().to(_vector_dtype(b.dtype)) for v in vectors])
        self.task_names = names
        self.sources = list(names)
        return self

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """The pretrained state dict (merged and kept tensors), sharing storage."""
        return {**self._base, **self._other}

    def vector(self, i: int) -> dict[str, torch.Tensor]:
        """Task vector ``i`` as ``{key: τ_i}`` (views, no copies)."""
        return {k: v[i] for k, v in self._vectors.items()}

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def keys(self) -> Iterator[str]:
        """Names of the merged (floating-point) tensors."""
        return iter(self._vectors)

    def base(self, key: str) -> torch.Tensor:
        return self._base[key]

    def tied_key(self, key: str) -> str:
        """The first key of the tensor ``key`` is tied to (shares its storage with in the
        checkpoints), or ``key`` itself. Strategies that draw random masks seed them by this
        name, so tied keys get the same mask and one merged value."""
        return getattr(self, "_tied", {}).get(key, key)

    def vectors(self, key: str) -> torch.Tensor:
        """The task vectors of one tensor, stacked: shape ``(N, *shape)``."""
        return self._vectors[key]

    def combine_into(self, key: str, coefficients: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``θ0 + Σ_i c_i τ_i`` of tensor ``key`` into ``out`` (accumulated in float32,
        float64 for float64 checkpoints, written in ``out``'s dtype). ``coefficients`` is a
        float32 tensor of shape ``(N,)``.

        Linear merges (task arithmetic and every strategy reweighting it) go through this one
        method, so a subclass that keeps its task vectors elsewhere (read from disk tensor by
        tensor, or as low-rank factors) overrides it to stream them instead of stacking them.
        """
        import torch

        vectors = self.vectors(key)
        # float64 checkpoints are merged in float64: in float32, c = 0 and c = e_i missed θ0
        # and θ_i by about 1e-7.
        dt = torch.float64 if vectors.dtype == torch.float64 else torch.float32
        acc = torch.tensordot(coefficients.to(dt), vectors.to(dt), dims=1)
        acc += self.base(key).to(dt)
        out.copy_(acc)

    def combine_batch_into(self, key: str, coefficients: torch.Tensor, out: torch.Tensor) -> None:
        """:meth:`combine_into` for ``B`` coefficient rows at once: ``coefficients`` is
        ``(B, N)`` float32, ``out`` is ``(B, *shape)``.

        Each row is computed exactly as :meth:`combine_into` computes it alone, so a merge's
        weights never depend on which other merges share its batch: executors batch the same
        jobs differently (one call in process, a few per worker elsewhere) and must get the
        same metrics. (One matrix product over the batch would be faster, but the kernel the
        BLAS picks, and so the last bit of every weight, changes with the batch size.)
        """
        for b in range(coefficients.shape[0]):
            self.combine_into(key, coefficients[b], out[b])

    def unmerged(self) -> dict[str, torch.Tensor]:
        """Tensors kept from the pretrained checkpoint (non floating-point)."""
        return dict(self._other)

    def export_merged(
        self,
        merge: Callable[[MutableMapping[str, torch.Tensor]], None],
        path: str | os.PathLike[str],
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Save a merged model at ``path`` and return where it went.

        ``merge(params)`` overwrites each tensor in ``params`` (any subset of :meth:`keys`)
        with its merged value. The default writes one ``.safetensors`` file under the
        pretrained tensor names (``.safetensors`` is appended to a path without a suffix; a
        suffix of another weight format, such as ``.pt``/``.bin``, is a one-line
        :class:`~mapframe.errors.ConfigError`, as no such file is written).
        An existing file at the final path is replaced only when it is an earlier mapframe
        export (else a one-line :class:`~mapframe.errors.ConfigError`). Task vectors read
        from model folders override this to write a folder the model's library loads
        (sharded, with its config and tokenizer).
        """
        from mapframe.errors import ConfigError
        from mapframe.export.point import refuse_to_overwrite

        p = Path(path)
        if p.suffix.lower() in _NOT_SAFETENSORS:
            # A safetensors file under a torch name: torch.load cannot read it.
            raise ConfigError(
                f"cannot export to {p}: mapframe writes safetensors, not a {p.suffix} file; "
                "give a path ending in .safetensors (or without a suffix)")
        if not p.suffix:
            p = p.with_suffix(".safetensors")
        # Checked on the path actually written: the caller's check saw the path without the
        # suffix appended here, and "pretrained" replaced the user's pretrained.safetensors.
        refuse_to_overwrite(p)
        tensors = {k: self.base(k).clone() for k in self.keys()}
        merge(tensors)
        tensors.update(self.unmerged())
        return save_state_dict(tensors, p, metadata)

    def degeneracies(self) -> list[str]:
        """One message per zero task vector (a fine-tune equal to the pretrained model) and
        per group of identical task vectors (the same fine-tune given twice): their
        coefficients trade nothing off, so the front would show trade-offs that do not
        exist. Emitted as :class:`~mapframe.errors.MapframeWarning` when the vectors are
        built."""
        import torch

        n = self.n_tasks
        # Per task: max |tau| and a cheap signature (sum of tau) over all tensors, with no
        # copy of the stacked tensors (amax/amin, not abs(); a float32 sum, not a float64
        # copy). The signature only pre-filters: identical vectors give identical sums in
        # one process, and candidates are then compared exactly with torch.equal.
        peak = [0.0] * n
        total = [0.0] * n
        for v in self._vectors.values():
            flat = v.reshape(n, -1)
            if flat.shape[1] == 0:
                continue
            top = torch.maximum(flat.amax(dim=1), -flat.amin(dim=1)).tolist()
            sums = flat.sum(dim=1, dtype=torch.float32).tolist()
            for i, (m, t) in enumerate(zip(top, sums)):
                peak[i] = max(peak[i], float(m))
                total[i] += float(t)
        out = [f"task vector {self.task_names[i]!r} is zero: checkpoint {self.sources[i]} "
               "equals the pretrained one, so its coefficient changes nothing; give the "
               "fine-tuned checkpoint (or drop the task)" for i in range(n) if peak[i] == 0]
        seen: set[int] = set()
        for i in range(n):
            if i in seen or peak[i] == 0:
                continue
            same = [j for j in range(i + 1, n) if j not in seen and peak[j] == peak[i]
                    and total[j] == total[i]
                    and all(torch.equal(v[i], v[j]) for v in self._vectors.values())]
            if same:
                seen.update(same)
                group = [self.task_names[k] for k in (i, *same)]
                files = [self.sources[k] for k in (i, *same)]
                out.append(f"task vectors {', '.join(map(repr, group))} are identical "
                           f"(checkpoints {', '.join(files)}): the same fine-tune given "
                           "more than once; the front shows trade-offs between them that "
                           "do not exist; give each task its own checkpoint")
        return out

    def norm_ratios(self) -> list[float]:
        """``||τ_i|| / ||θ0||`` per task (MAP's Taylor argument wants these small)."""
        import torch

        base_sq = sum(float(torch.sum(self._base[k].float() ** 2)) for k in self._base)
        out = []
        for i in range(self.n_tasks):
            tv_sq = sum(float(torch.sum(self._vectors[k][i].float() ** 2)) for k in self._vectors)
            out.append((tv_sq / base_sq) ** 0.5 if base_sq > 0 else float("inf"))
        return out

    def fingerprint(self) -> dict[str, object]:
        """An identity of the loaded weights, so that a store never mixes evaluations of
        different in-memory task vectors: names, counts, squared norms (readable) and a
        SHA-256 digest of every tensor's bytes (norms alone take a negated, permuted or
        swapped task vector for the original)."""
        import torch

        def sq(t: Any) -> float:
            # float64 sums: a float32 sum's rounding depends on torch's thread count (the
            # same weights gave 46.8608301431 with 1 thread, 46.8608291894 with 2), which
            # made a study resumed under another thread count look like a different one.
            return float(torch.sum(t.double() ** 2))

        norms = [sum(sq(self._vectors[k][i]) for k in self._vectors)
                 for i in range(self.n_tasks)]
        base = sum(sq(v) for v in self._base.values())
        # 10 significant digits: identical weights agree whatever the summation order
        # (float64 sums differ by about 1e-15 relative); different weights practically never do.
        return {"tasks": list(self.task_names), "tensors": len(self._vectors),
                "params": sum(v[0].numel() for v in self._vectors.values()),
                "base_sq_norm": float(f"{base:.10g}"),
                "task_sq_norms": [float(f"{x:.10g}") for x in norms],
                "digest": self._content_digest()}

    def _content_digest(self) -> str:
        """SHA-256 over the names, dtypes, shapes and bytes of the base weights, the other
        tensors and each task's vector, in a fixed order (exact: no thread-dependent sums).
        Kept until a tensor changes in place (torch counts each tensor's in-place writes), as
        a study asks for it more than once."""
        import hashlib

        import torch

        tensors = [*self._base.values(), *self._other.values(), *self._vectors.values()]
        key = (tuple(sorted(self._base)), tuple(sorted(self._other)),
               tuple(sorted(self._vectors)), tuple((id(t), t._version) for t in tensors))
        cached = getattr(self, "_digest_cache", None)
        if cached is not None and cached[0] == key:
            return str(cached[1])
        h = hashlib.sha256()

        def feed(label: str, t: Any) -> None:
            t = t.detach().cpu().contiguous()
            h.update(f"{label}|{t.dtype}|{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)

        for k in sorted(self._base):
            feed(f"base:{k}", self._base[k])
        for k in sorted(self._other):
            feed(f"other:{k}", self._other[k])
        for i in range(self.n_tasks):
            for k in sorted(self._vectors):
                feed(f"task{i}:{k}", self._vectors[k][i])
        digest = h.hexdigest()[:32]
        self._digest_cache = (key, digest)
        return digest

    def nbytes(self) -> int:
        held = {id(v): v for v in (*self._vectors.values(), *self._base.values())}
        return sum(v.numel() * v.element_size() for v in held.values())  # tied: counted once
