"""The ``causal_lm`` evaluator: per-task loss or perplexity of a merged causal language model."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mapframe.errors import ConfigError, EvaluationError
from mapframe.problem import Task
from mapframe_llm.base import HFEvaluator, _positive_int, task_range
from mapframe_llm.data import (
    TextTask,
    build_lm_examples,
    causal_lm_nll,
    lm_batches,
    parse_tasks,
    read_records,
)

if TYPE_CHECKING:
    import torch

__all__ = ["METRICS", "CausalLMEvaluator", "Scorer"]

METRICS = ("loss", "perplexity")
#: ``scorer(model, tokenizer, records, device) -> float``: a user's metric for one task.
Scorer = Callable[[Any, Any, Sequence[Mapping[str, object]], "torch.device"], float]
_SCORER_KEYS = ("scorer", "direction", "range")


@dataclass(frozen=True)
class _ScorerSpec:
    path: str
    fn: Scorer
    direction: Literal["max", "min"]
    low: float
    high: float


def _load_scorer(task: str, value: object) -> Scorer:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(f"task {task!r}: scorer must be 'module:function' (importable), got "
                          f"{value!r}")
    module, attr = value.split(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"task {task!r}: scorer module {module!r} cannot be imported ({exc}); "
                          "put it on PYTHONPATH or install it") from None
    except AttributeError:
        raise ConfigError(f"task {task!r}: module {module!r} has no {attr!r} (scorer "
                          f"{value!r})") from None
    if not callable(fn):
        raise ConfigError(f"task {task!r}: scorer {value!r} is not callable")
    return fn  # type: ignore[no-any-return]


class CausalLMEvaluator(HFEvaluator):
    """Loss (mean token negative log-likelihood) or perplexity of a merged causal LM on each
    task's held-out text: the paper's multilingual Llama-3 objective.

    ``tasks`` is a list of ``{name, data, ...}``: ``data`` is a ``.txt`` (documents separated
    by blank lines), ``.jsonl``, ``.json``, ``.csv`` or ``.tsv`` file whose records are
    plain text (``text_field``), prompt + completion (only the completion is scored) or chat
    ``messages`` (only the last, assistant, message is scored); ``max_samples`` takes the
    first records. A task may instead bring its own metric: ``scorer: "module:function"``
    called as ``scorer(model, tokenizer, records, device) -> float`` (generation-based
    metrics: exact match, pass rate...), with ``direction`` (``max``/``min``) and ``range``.

    Settings: ``metric`` (``loss`` or ``perplexity``, both minimised), ``batch_size``,
    ``max_length`` (longer texts are scored in windows), ``max_tokens`` (scored tokens per
    task), ``chat_template`` (render prompts as user turns), ``dtype`` (``auto`` keeps the
    checkpoint's), ``device``, ``storage`` (``disk``/``ram``: where the checkpoints are
    read from during merges), ``tokenizer`` (default: the pretrained folder's),
    ``attn_implementation`` (passed to transformers).
    """

    name: ClassVar[str] = "causal_lm"

    def __init__(self, tasks: Sequence[Mapping[str, Any] | TextTask], metric: str = "loss",
                 batch_size: int = 8, max_length: int = 512, max_tokens: int | None = None,
                 chat_template: bool = False, dtype: str = "auto", device: str = "auto",
                 storage: str = "disk", tokenizer: str | None = None,
                 attn_implementation: str | None = None,
                 trust_remote_code: bool = False, reader: str = "pread",
                 merge_threads: int | None = None) -> None:
        super().__init__(batch_size=batch_size, max_length=max_length, dtype=dtype,
                         device=device, storage=storage, tokenizer=tokenizer,
                         trust_remote_code=trust_remote_code, reader=reader,
                         merge_threads=merge_threads)
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self._metric = metric
        self._max_tokens = _positive_int("max_tokens", max_tokens, allow_none=True)
        if not isinstance(chat_template, bool):
            raise ConfigError(f"chat_template must be true or false, got {chat_template!r}")
        self._chat_template = chat_template
        if attn_implementation is not None and not isinstance(attn_implementation, str):
            raise ConfigError("attn_implementation must be a string such as 'sdpa' or 'eager'")
        self._attn = attn_implementation
        self._scorers: dict[str, _ScorerSpec] = {}
        plain: list[Mapping[str, Any] | TextTask] = []
        for item in tasks if isinstance(tasks, Sequence) and not isinstance(tasks, str) else []:
            if isinstance(item, Mapping) and "scorer" in item:
                name = str(item.get("name"))
                spec = self._parse_scorer(name, item)
                self._scorers[name] = spec
                item = {k: v for k, v in item.items() if k not in _SCORER_KEYS}
            plain.append(item)
        self._specs = parse_tasks(plain if plain else tasks, kind="lm")
        self._tasks = []
        for s in self._specs:
            sc = self._scorers.get(s.name)
            if sc is not None:
                self._tasks.append(Task(s.name, sc.direction, sc.low, sc.high))
            elif metric == "loss":
                self._tasks.append(Task(s.name, "min", 0.0, math.inf))
            else:
                self._tasks.append(Task(s.name, "min", 1.0, math.inf))

    @staticmethod
    def _parse_scorer(name: str, item: Mapping[str, Any]) -> _ScorerSpec:
        fn = _load_scorer(name, item["scorer"])
        direction = item.get("direction", "max")
        if direction != "max" and direction != "min":
            raise ConfigError(f"task {name!r}: direction must be max or min, got {direction!r}")
        low, high = task_range(name, item.get("range", [-math.inf, math.inf]))
        path = item["scorer"] if isinstance(item["scorer"], str) else (
            f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}")
        return _ScorerSpec(path, fn, direction, low, high)

    @property
    def tasks(self) -> list[Task]:
        """One objective per task: loss or perplexity (minimised), or the scorer's metric."""
        return list(self._tasks)

    @property
    def metric(self) -> str:
        return self._metric

    def describe(self) -> dict[str, Any]:
        tasks = []
        for s in self._specs:
            d: dict[str, Any] = {"name": s.name, "data": str(s.data)}
            for f, default in (("text_field", "text"), ("prompt_field", "prompt"),
                               ("completion_field", "completion"),
                               ("messages_field", "messages")):
                if getattr(s, f) != default:
                    d[f] = getattr(s, f)
            if s.max_samples is not None:
                d["max_samples"] = s.max_samples
            sc = self._scorers.get(s.name)
            if sc is not None:
                d.update(scorer=sc.path, direction=sc.direction, range=[sc.low, sc.high])
            tasks.append(d)
        return {"name": self.name, "tasks": tasks, "metric": self._metric,
                "max_tokens": self._max_tokens, "chat_template": self._chat_template,
                "attn_implementation": self._attn, **self._settings()}

    # -- setup -------------------------------------------------------------------------------

    def build_model(self) -> torch.nn.Module:
        """The pretrained causal LM, on the evaluator's device in its dtype (every merge
        overwrites its weights)."""
        return self.load_causal_lm(self._attn)  # type: ignore[no-any-return]

    def prepare(self) -> None:
        """Read every task's records and tokenise those the built-in metric scores."""
        self._records: dict[str, list[dict[str, object]]] = {}
        self._batches: dict[str, list[dict[str, torch.Tensor]]] = {}
        self._n_tokens: dict[str, int] = {}
        pad = self._tokenizer.pad_token_id
        for s in self._specs:
            records = read_records(s)
            self._records[s.name] = records
            if s.name in self._scorers:
                continue
            examples = build_lm_examples(records, self._tokenizer, task=s,
                                         max_length=self.max_length,
                                         max_tokens=self._max_tokens,
                                         chat_template=self._chat_template)
            self._batches[s.name] = lm_batches(examples, self.batch_size, pad)
            self._n_tokens[s.name] = sum(e.scored for e in examples)
            top = max(int(b["input_ids"].max()) for b in self._batches[s.name])
            self.check_token_id(top, f"task {s.name!r}: the tokenizer produces token id")

    @property
    def scored_tokens(self) -> dict[str, int]:
        """Scored tokens per task (after windows and ``max_tokens``), known after setup."""
        return dict(getattr(self, "_n_tokens", {}))

    # -- evaluation --------------------------------------------------------------------------

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """The loss or perplexity of ``model`` on task ``task``'s tokens, or its scorer's
        metric."""
        spec = self._specs[task]
        sc = self._scorers.get(spec.name)
        if sc is not None:
            try:
                value = float(sc.fn(model, self._tokenizer, self._records[spec.name],
                                    self.model_device()))
            except Exception as exc:
                raise EvaluationError(f"task {spec.name!r}: scorer {sc.path} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
            return value
        total, count = causal_lm_nll(model, self._batches[spec.name], self.model_device())
        loss = total / count if count else math.nan
        if not math.isfinite(loss):
            return math.nan
        return loss if self._metric == "loss" else math.exp(min(loss, 700.0))
