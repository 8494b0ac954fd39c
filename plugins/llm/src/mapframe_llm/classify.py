"""The ``text_classification`` evaluator: per-task accuracy of a merged encoder, each task
scored through its own fine-tuned classification head."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from mapframe.errors import CheckpointError, ConfigError
from mapframe.problem import Task
from mapframe_llm.base import HFEvaluator
from mapframe_llm.data import (
    LabelledSet,
    TextTask,
    build_labelled,
    classification_accuracy,
    parse_tasks,
    read_records,
)

if TYPE_CHECKING:
    import torch

__all__ = ["TextClassificationEvaluator"]


class TextClassificationEvaluator(HFEvaluator):
    """Accuracy per task of an encoder (BERT, RoBERTa, MiniLM...) whose body is merged and
    whose classification heads stay per task.

    The pretrained checkpoint is the bare encoder folder (``AutoModel``); each fine-tuned
    checkpoint is an ``AutoModelForSequenceClassification`` folder named like its task.
    Tensors a fine-tune has and the base lacks (``classifier.*``) are that task's head: the
    merge covers the shared encoder only, and task ``t`` is scored with the merged encoder
    and head ``t``. One encoder is resident; each head module is attached to it (no copies).

    ``tasks`` is a list of ``{name, data, text_field, label_field, labels, max_samples}``
    (``.jsonl``/``.json``/``.csv``/``.tsv`` records with a text and a label); labels are
    class ids or names (``labels``, else the fine-tune's ``id2label``, else sorted names).
    """

    name: ClassVar[str] = "text_classification"
    allow_heads: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[Mapping[str, Any] | TextTask], batch_size: int = 32,
                 max_length: int = 128, dtype: str = "auto", device: str = "auto",
                 storage: str = "disk", tokenizer: str | None = None,
                 trust_remote_code: bool = False, reader: str = "pread",
                 merge_threads: int | None = None) -> None:
        super().__init__(batch_size=batch_size, max_length=max_length, dtype=dtype,
                         device=device, storage=storage, tokenizer=tokenizer,
                         trust_remote_code=trust_remote_code, reader=reader,
                         merge_threads=merge_threads)
        self._specs = parse_tasks(tasks, kind="classification")
        self._tasks = [Task(s.name, "max", 0.0, 1.0) for s in self._specs]

    @property
    def tasks(self) -> list[Task]:
        """One accuracy objective (maximised, in [0, 1]) per task."""
        return list(self._tasks)

    def describe(self) -> dict[str, Any]:
        tasks = []
        for s in self._specs:
            d: dict[str, Any] = {"name": s.name, "data": str(s.data)}
            if s.text_field != "text":
                d["text_field"] = s.text_field
            if s.label_field != "label":
                d["label_field"] = s.label_field
            if s.labels is not None:
                d["labels"] = list(s.labels)
            if s.max_samples is not None:
                d["max_samples"] = s.max_samples
            tasks.append(d)
        return {"name": self.name, "tasks": tasks, **self._settings()}

    # -- setup -------------------------------------------------------------------------------

    def build_model(self) -> torch.nn.Module:
        """The pretrained encoder, on the evaluator's device in its dtype: the one resident
        model every merge overwrites (the heads attach to it in :meth:`prepare`)."""
        from transformers import AutoModel

        folder = self.base_folder()
        try:
            encoder = AutoModel.from_pretrained(str(folder), dtype=self._torch_dtype,
                                                trust_remote_code=self._trust_remote_code)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"evaluator 'text_classification': transformers cannot build an "
                              f"encoder from {folder} ({exc})") from None
        encoder = encoder.to(self.model_device()).eval()
        encoder.requires_grad_(False)
        return encoder

    def prepare(self) -> None:
        """Attach each task's fine-tuned head to the resident encoder, then read and label
        each task's data."""
        self._attach_heads()
        self._read_data()

    def _attach_heads(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        tv = self.task_vectors()
        device = self.model_device()
        self._heads: dict[str, Any] = {}
        for spec in self._specs:
            if spec.name not in tv.task_names:
                raise ConfigError(
                    f"task {spec.name!r}: no fine-tuned checkpoint is named {spec.name!r} "
                    f"(checkpoints: {', '.join(tv.task_names)}), so its classification head "
                    "cannot be found: name each task like its fine-tuned checkpoint")
            head = tv.head(spec.name)
            if not head:
                raise CheckpointError(
                    f"fine-tuned checkpoint {spec.name!r} has no tensors beyond the encoder's, "
                    "so it has no classification head (is it an AutoModelForSequence"
                    "Classification folder? LoRA adapters carry no head here)")
            source = tv.sources[tv.task_names.index(spec.name)]
            try:
                cfg = AutoConfig.from_pretrained(source,
                                                 trust_remote_code=self._trust_remote_code)
                with torch.device("meta"):
                    task_model = AutoModelForSequenceClassification.from_config(
                        cfg, trust_remote_code=self._trust_remote_code)
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"fine-tuned checkpoint {spec.name!r} ({source}): transformers cannot "
                    f"build its sequence-classification model ({exc})") from None
            prefix = task_model.base_model_prefix
            if not prefix or not hasattr(task_model, prefix):
                raise CheckpointError(
                    f"fine-tuned checkpoint {spec.name!r}: its model class "
                    f"{type(task_model).__name__} has no separable encoder")
            setattr(task_model, prefix, self.resident_model)  # the one resident, merged encoder
            for child_name, child in task_model.named_children():
                if child_name != prefix:
                    child.to_empty(device=device)
                    child.to(self._torch_dtype)
            result = task_model.load_state_dict(head, strict=False)
            unloaded = [k for k in result.missing_keys if not k.startswith(prefix + ".")]
            if unloaded or result.unexpected_keys:
                raise CheckpointError(
                    f"fine-tuned checkpoint {spec.name!r}: its head tensors do not fit its "
                    f"model class (missing: {unloaded[:3]}, unexpected: "
                    f"{list(result.unexpected_keys)[:3]})")
            self._heads[spec.name] = task_model.eval()

    def _read_data(self) -> None:
        self._data: dict[str, LabelledSet] = {}
        for spec in self._specs:
            model = self._heads[spec.name]
            n = int(model.config.num_labels)
            if spec.labels is None:
                id2label = getattr(model.config, "id2label", None) or {}
                names = [str(id2label.get(j, id2label.get(str(j), ""))) for j in range(n)]
                if all(names) and not all(re.fullmatch(r"LABEL_\d+", x) for x in names):
                    spec = dataclasses.replace(spec, labels=tuple(names))
            self._data[spec.name] = build_labelled(read_records(spec), spec, num_labels=n)

    # -- evaluation --------------------------------------------------------------------------

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """The accuracy on task ``task`` of ``model`` (the merged encoder) under that task's
        own head."""
        spec = self._specs[task]
        classifier = self._heads[spec.name]  # holds ``model`` as its encoder

        def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            out: torch.Tensor = classifier(**batch).logits
            return out

        acc = classification_accuracy(logits, self._tokenizer, self._data[spec.name],
                                      batch_size=self.batch_size, max_length=self.max_length,
                                      device=self.model_device())
        return acc if math.isfinite(acc) else math.nan

    def close(self) -> None:
        """Drop the heads (they hold the resident encoder), the model and the files."""
        self.__dict__.pop("_heads", None)
        super().close()
