"""What the plugin's evaluators share: settings, checkpoint loading and the resident model."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe.evaluators import Evaluator
from mapframe_llm.runtime import DTYPES, resolve_device, resolve_dtype
from mapframe_llm.taskvectors import READERS, STORAGES, StreamedTaskVectors, load_task_vectors

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors
    from mapframe.merging.merger import Merger

__all__ = ["HFEvaluator"]


def _positive_int(name: str, value: object, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        more = " or null" if allow_none else ""
        raise ConfigError(f"{name} must be a positive integer{more}, got {value!r}")
    return value


class HFEvaluator(Evaluator):
    """Base of evaluators over Hugging Face checkpoints merged into one resident model.

    Checkpoints are read by :func:`~mapframe_llm.taskvectors.load_task_vectors` (model
    folders with sharded safetensors, ``.safetensors`` files, LoRA adapters), checked before
    anything is evaluated, and merged in place into the model :meth:`build_model` returns,
    streaming each tensor from ``storage``. Subclasses implement :meth:`build_model`,
    :meth:`prepare_data` and :meth:`score_task`.
    """

    needs_merger: ClassVar[bool] = True
    #: One merge per call: each result is stored the moment it exists.
    max_batch_size: int | None = 1
    #: Fine-tunes may carry tensors the base lacks (per-task heads).
    allow_heads: ClassVar[bool] = False

    def __init__(self, *, batch_size: int = 8, max_length: int = 512, dtype: str = "auto",
                 device: str = "auto", storage: str = "disk", tokenizer: str | None = None,
                 trust_remote_code: bool = False, reader: str = "pread",
                 merge_threads: int | None = None) -> None:
        self._batch_size = _positive_int("batch_size", batch_size)
        self._max_length = _positive_int("max_length", max_length)
        if self._max_length is not None and self._max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {device!r}")
        if storage not in STORAGES:
            raise ConfigError(
                f"storage must be disk (read the checkpoints for each merge; little memory) or "
                f"ram (keep them in memory: (N + 1) x one checkpoint), got {storage!r}")
        if reader not in READERS:
            raise ConfigError(f"reader must be pread (copy each chunk of the shards into a "
                              f"buffer) or mmap (map the shards), got {reader!r}")
        self._merge_threads = _positive_int("merge_threads", merge_threads, allow_none=True)
        if tokenizer is not None and not isinstance(tokenizer, str):
            raise ConfigError(f"tokenizer must be a folder path or null, got {tokenizer!r}")
        self._dtype = dtype
        self._device_name = device
        self._storage = storage
        self._reader = reader
        self._tokenizer_path = tokenizer
        self._trust_remote_code = bool(trust_remote_code)
        self._timings = {"merges": 0, "merge_s": 0.0, "score_s": 0.0, "setup_s": 0.0}
        #: The resident model's merged tensors, keyed like the task vectors (set by
        #: :meth:`build_model`).
        self._params: dict[str, torch.Tensor] = {}

    # -- settings ----------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        assert self._batch_size is not None
        return self._batch_size

    @property
    def max_length(self) -> int:
        assert self._max_length is not None
        return self._max_length

    @property
    def storage(self) -> str:
        return self._storage

    @property
    def timings(self) -> dict[str, float]:
        """Merges done, seconds merging and scoring since :meth:`setup`, and setup seconds."""
        return dict(self._timings)

    def _settings(self) -> dict[str, Any]:
        # reader and merge_threads change how fast a merge runs, never its bits (tested), so
        # they stay out of the study's fingerprint: a study resumes across them.
        return {"batch_size": self._batch_size, "max_length": self._max_length,
                "dtype": self._dtype, "device": self._device_name, "storage": self._storage,
                "tokenizer": self._tokenizer_path, "trust_remote_code": self._trust_remote_code}

    # -- checkpoints -------------------------------------------------------------------------

    def load_task_vectors(self, pretrained: str, finetuned: Mapping[str, str]
                          ) -> TaskVectors | None:
        """Open the Hugging Face checkpoints (folders, files or LoRA adapters) and check them
        against each other; see :func:`~mapframe_llm.taskvectors.load_task_vectors`."""
        return load_task_vectors(pretrained, finetuned, storage=self._storage,
                                 allow_heads=self.allow_heads, reader=self._reader,
                                 threads=self._merge_threads)

    # -- lifecycle ---------------------------------------------------------------------------

    def task_vectors(self) -> StreamedTaskVectors:
        tv = self.merger.task_vectors
        if not isinstance(tv, StreamedTaskVectors):
            raise ConfigError(
                f"evaluator {self.name!r} reads Hugging Face checkpoints itself: give the study "
                "checkpoints as paths (pretrained: model folder, finetuned: {task: folder}), "
                "not task vectors built in memory")
        return tv

    def base_folder(self) -> Path:
        tv = self.task_vectors()
        folder = tv.base_folder
        if folder.config is None:
            raise CheckpointError(
                f"evaluator {self.name!r} builds the model from the pretrained checkpoint's "
                f"config.json, which {folder.path} lacks: give the Hugging Face model folder "
                "(config.json + safetensors), not a bare weights file")
        return folder.path

    def stored_dtype(self) -> torch.dtype:
        from mapframe_llm.folders import torch_dtype

        tv = self.task_vectors()
        for k in tv.keys():
            return torch_dtype(tv.base_folder.info(k).dtype)
        import torch

        return torch.float32

    def setup(self, merger: Merger | None) -> None:
        """Build the resident model from the pretrained folder, bind its tensors to the task
        vectors, load the tokenizer and tokenise every task's evaluation data."""
        super().setup(merger)
        t0 = time.perf_counter()
        self._device = resolve_device(self._device_name)
        self._torch_dtype = resolve_dtype(self._dtype, self.stored_dtype())
        self._tokenizer = self.load_tokenizer()
        self.build_model()
        self.prepare_data()
        self._timings = {"merges": 0, "merge_s": 0.0, "score_s": 0.0,
                         "setup_s": time.perf_counter() - t0}

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        path = self._tokenizer_path or str(self.base_folder())
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self._trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"evaluator {self.name!r}: no tokenizer could be loaded from {path} ({exc}); "
                "save the tokenizer beside the model (tokenizer.save_pretrained) or set "
                "tokenizer: <folder>") from None
        if tok.pad_token_id is None:
            # Padding positions are masked out of attention and loss: any id will do.
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        return tok

    def build_model(self) -> None:
        """Build the resident model(s) and bind their tensors (``self._params``)."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Read and tokenise the evaluation data."""
        raise NotImplementedError

    def score_task(self, index: int) -> float:
        """The metric of task ``index`` for the model as it is now."""
        raise NotImplementedError

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        return self.evaluate_tasks(coefficients, range(len(self.tasks)))

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Merge each row in place, then score only ``tasks`` (their data alone is read)."""
        import torch

        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        cols = list(tasks)
        out = np.empty((C.shape[0], len(cols)))
        with torch.no_grad():
            for b, c in enumerate(C):
                t0 = time.perf_counter()
                self.merger.merge_into(self._params, c)
                if self._device.type == "cuda":
                    torch.cuda.synchronize(self._device)
                t1 = time.perf_counter()
                for j, i in enumerate(cols):
                    out[b, j] = self.score_task(i)
                self._timings["merges"] += 1
                self._timings["merge_s"] += t1 - t0
                self._timings["score_s"] += time.perf_counter() - t1
        return out

    def close(self) -> None:
        """Drop the resident model and close the checkpoint files."""
        merger = getattr(self, "_merger", None)
        if merger is not None and isinstance(merger.task_vectors, StreamedTaskVectors):
            merger.task_vectors.close()
        self._params = {}
        if hasattr(self, "_model"):
            del self._model
