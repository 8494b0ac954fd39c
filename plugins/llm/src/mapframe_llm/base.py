"""What the plugin's evaluators share: settings, checkpoint loading and the resident model.

:class:`HFEvaluator` is mapframe's :class:`~mapframe.evaluators.ModelEvaluator` template
applied to Hugging Face checkpoints: the template checks coefficients and task indices,
merges each row into the resident model and scores the requested tasks; this class adds
the settings every evaluator of the plugin takes, reads the checkpoints itself (model
folders, sharded safetensors, LoRA adapters), loads the tokenizer and keeps timings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe.evaluators.base import Evaluator, ModelEvaluator
from mapframe.settings import bool_setting
from mapframe_llm.runtime import DTYPES, resolve_device, resolve_dtype
from mapframe_llm.taskvectors import (
    READERS,
    STORAGES,
    StreamedTaskVectors,
    bind_resident,
    load_task_vectors,
)

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


def task_range(name: str, rng: Any) -> tuple[float, float]:
    """A task's ``range: [low, high]`` setting as floats, low < high (one-line errors)."""
    try:
        low, high = (float(x) for x in rng)
    except (TypeError, ValueError):
        raise ConfigError(f"task {name!r}: range must be [low, high] (use .inf for "
                          f"unbounded), got {rng!r}") from None
    if not low < high:
        raise ConfigError(f"task {name!r}: range needs low < high, got {rng!r}")
    return low, high


class HFEvaluator(ModelEvaluator):
    """Base of evaluators over Hugging Face checkpoints merged into one resident model.

    Checkpoints are read by :func:`~mapframe_llm.taskvectors.load_task_vectors` (model
    folders with sharded safetensors, ``.safetensors`` files, LoRA adapters), checked before
    anything is evaluated, and merged in place into the model :meth:`build_model` returns,
    streaming each tensor from ``storage``. :meth:`setup` resolves the device and dtype and
    loads the tokenizer, then runs the template (:meth:`build_model`, :meth:`bind_parameters`
    through :func:`~mapframe_llm.taskvectors.bind_resident`, :meth:`prepare`). Subclasses
    implement :meth:`build_model` (return the model, on :meth:`device` in ``_torch_dtype``),
    :meth:`prepare` (read and tokenise the evaluation data) and :meth:`score_task`.
    """

    needs_merger: ClassVar[bool] = True
    #: Checkpoints are folders, sharded files or adapters: :meth:`load_task_vectors` reads them.
    reads_checkpoints: ClassVar[bool] = True
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
        self._trust_remote_code = bool_setting(trust_remote_code, "trust_remote_code")
        self._timings = {"merges": 0, "merge_s": 0.0, "score_s": 0.0, "setup_s": 0.0}

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

    #: The settings :meth:`load_task_vectors` depends on (with the class's ``allow_heads``).
    CHECKPOINT_SETTINGS: ClassVar[tuple[str, ...]] = ("storage", "reader", "merge_threads")

    @classmethod
    def for_checkpoints(cls, settings: Mapping[str, Any]) -> HFEvaluator:
        """The checkpoint reader alone, for export from a results folder: built from the
        saved ``storage``, ``reader`` and ``merge_threads`` only, so that a folder someone
        sent neither imports a task's ``scorer`` module nor reads its data or lm-eval tasks.
        Only :meth:`load_task_vectors` and :meth:`prepare_checkpoint` are called on it."""
        handler = cls.__new__(cls)
        HFEvaluator.__init__(handler, **{k: settings[k] for k in cls.CHECKPOINT_SETTINGS
                                         if k in settings})
        return handler

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
        """Resolve the device and dtype, load the tokenizer, then build the resident model
        from the pretrained folder, bind its tensors to the task vectors and tokenise every
        task's evaluation data (the template's :meth:`build_model`, :meth:`bind_parameters`,
        :meth:`prepare`)."""
        t0 = time.perf_counter()
        # The merger check first (its message is the one a study without checkpoints needs);
        # the device, dtype and tokenizer below read the checkpoints through it.
        Evaluator.setup(self, merger)
        self._device = resolve_device(self._device_name)
        self._torch_dtype = resolve_dtype(self._dtype, self.stored_dtype())
        self._tokenizer = self.load_tokenizer()
        super().setup(merger)
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

    def load_causal_lm(self, attn_implementation: str | None = None) -> Any:
        """The pretrained causal LM of :meth:`base_folder`, on the evaluator's device in its
        dtype, in eval mode without gradients (every merge overwrites its weights)."""
        from transformers import AutoModelForCausalLM

        folder = self.base_folder()
        kwargs: dict[str, Any] = {"dtype": self._torch_dtype,
                                  "trust_remote_code": self._trust_remote_code}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"evaluator {self.name!r}: transformers cannot build a causal LM from {folder} "
                f"({exc}); the pretrained checkpoint must be a causal language model folder"
            ) from None
        model = model.to(self.model_device()).eval()
        model.requires_grad_(False)
        return model

    def check_token_id(self, top: int, what: str) -> None:
        """Refuse, with a one-line :class:`ConfigError`, a token id ``top`` past the resident
        model's input embedding rows (the tokenizer belongs to another model); ``what`` says
        where the id comes from (``"task 'qa': the tokenizer produces token id"``)."""
        model: Any = self.resident_model
        vocab = int(model.get_input_embeddings().weight.shape[0])
        if top >= vocab:
            raise ConfigError(
                f"{what} {top}, but the model's vocabulary has {vocab} entries: the tokenizer "
                "belongs to another model (set tokenizer: to the base model's own)")

    def model_device(self) -> torch.device:
        """The torch device the ``device`` setting resolved to (known after :meth:`setup`)."""
        device: torch.device | None = getattr(self, "_device", None)
        if device is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return device

    def bind_parameters(self, merger: Merger, model: torch.nn.Module
                        ) -> dict[str, torch.Tensor]:
        """The resident model's merged tensors, keyed like the streamed task vectors
        (:func:`~mapframe_llm.taskvectors.bind_resident`: checkpoint names aligned to the
        model's, tied tensors written once, non-merged tensors copied in once)."""
        return bind_resident(model, self.task_vectors())

    # -- evaluation (the template's steps, timed) ----------------------------------------------

    def merge(self, coefficients: np.ndarray) -> None:
        """Write the merge for ``coefficients`` into the resident model (counted and timed
        in :attr:`timings`)."""
        t0 = time.perf_counter()
        super().merge(coefficients)
        self._timings["merges"] += 1
        self._timings["merge_s"] += time.perf_counter() - t0

    def score_tasks(self, model: torch.nn.Module, tasks: Sequence[int]) -> list[float]:
        """Score only ``tasks`` (their data alone is read), timed in :attr:`timings`."""
        t0 = time.perf_counter()
        scores = super().score_tasks(model, tasks)
        self._timings["score_s"] += time.perf_counter() - t0
        return scores

    def close(self) -> None:
        """Drop the resident model and close the checkpoint files."""
        merger = getattr(self, "_merger", None)
        if merger is not None and isinstance(merger.task_vectors, StreamedTaskVectors):
            merger.task_vectors.close()
        super().close()
