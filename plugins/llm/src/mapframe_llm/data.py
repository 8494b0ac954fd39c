"""Held-out text for the language-model evaluators: task configs, data files, tokenised
examples, batching and the scoring loops.

A task's ``data`` is one file; its ending picks the format:

* ``.txt``: documents separated by one or more blank lines;
* ``.jsonl``: one JSON object (or a bare JSON string: a text record) per line;
* ``.json``: a list of objects or strings;
* ``.csv`` / ``.tsv``: a header row, then one record per row.

A record of a language-model task is one of three kinds, decided per record by its fields:

1. ``messages`` (``messages_field``): a chat, a list of ``{role, content}`` whose last
   message is the assistant's; only the assistant's last reply is scored. Needs a tokenizer
   with a chat template.
2. ``prompt`` + ``completion`` (``prompt_field``, ``completion_field``): only the
   completion (and the EOS token appended to it) is scored.
3. ``text`` (``text_field``): every token is scored.

When a record holds the fields of more than one kind, the first kind in this order wins.

Scored tokens: a causal LM predicts token ``t`` from the tokens before it, so the first
token of an example is never predicted. Throughout this module, the *scored tokens* of an
example are its positions ``t >= 1`` with ``labels[t] != -100``
(:attr:`LMExample.scored`); :func:`build_lm_examples` caps and :func:`causal_lm_nll`
counts exactly these.

A record of a classification task has a text (``text_field``) and a label
(``label_field``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mapframe.errors import ConfigError, EvaluationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "LMExample",
    "LabelledSet",
    "TextTask",
    "build_labelled",
    "build_lm_examples",
    "causal_lm_nll",
    "classification_accuracy",
    "lm_batches",
    "parse_tasks",
    "read_records",
]

#: Label of a token that is not scored (the ``ignore_index`` of PyTorch's cross-entropy).
IGNORE_INDEX = -100
#: File endings :func:`read_records` reads.
FORMATS: tuple[str, ...] = (".txt", ".jsonl", ".json", ".csv", ".tsv")

_COMMON_KEYS = ("name", "data", "text_field", "max_samples")
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "lm": ("prompt_field", "completion_field", "messages_field"),
    "classification": ("label_field", "labels"),
}
# Roughly 1 GiB of float32 log-probabilities at a time in causal_lm_nll.
_CE_CHUNK_ELEMENTS = 1 << 28


@dataclass(frozen=True)
class TextTask:
    """One evaluation task: a name, a data file and the record fields to read.

    ``labels`` (classification only) are the label names, index = class id; ``max_samples``
    keeps the first N records of the file.
    """

    name: str
    data: Path
    text_field: str = "text"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    label_field: str = "label"
    labels: tuple[str, ...] | None = None
    max_samples: int | None = None


# -- task configs -------------------------------------------------------------------------------
def parse_tasks(
    raw: object,
    *,
    kind: Literal["lm", "classification"],
    base_dir: str | Path | None = None,
) -> list[TextTask]:
    """Validate the ``tasks`` list of an evaluator config.

    ``raw`` is a non-empty list of mappings (or :class:`TextTask` objects) with at least
    ``name`` and ``data``; names are unique; a relative ``data`` path is resolved against
    ``base_dir`` when given (the config file's folder), and the file must exist in one of
    :data:`FORMATS`. ``kind`` decides the fields allowed besides the common ones: ``lm``
    tasks take ``prompt_field``, ``completion_field`` and ``messages_field``;
    ``classification`` tasks take ``label_field`` and ``labels``.
    """
    if kind not in _KIND_KEYS:
        raise ConfigError(f"unknown task kind {kind!r}; use 'lm' or 'classification'")
    example = ("{name: wiki, data: heldout/wiki.jsonl}" if kind == "lm"
               else "{name: sst2, data: heldout/sst2.csv, labels: [negative, positive]}")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
        raise ConfigError(f"tasks must be a non-empty list of mappings such as {example}, "
                          f"got {raw!r}")
    tasks: list[TextTask] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        task = item if isinstance(item, TextTask) else _parse_task(item, f"tasks[{i}]", kind,
                                                                  example, base_dir)
        if kind == "lm" and task.labels is not None:
            raise ConfigError(f"task {task.name!r}: 'labels' applies only to classification "
                              "tasks; remove it (a language-model task scores its text)")
        if task.name in seen:
            raise ConfigError(f"task name {task.name!r} is used twice; task names must be "
                              "unique")
        seen.add(task.name)
        tasks.append(task)
    return tasks


def _parse_task(value: object, where: str, kind: str, example: str,
                base_dir: str | Path | None) -> TextTask:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a task must be a mapping such as {example}, got {value!r}")
    allowed = _COMMON_KEYS + _KIND_KEYS[kind]
    keys = [str(k) for k in value]
    other = "classification" if kind == "lm" else "lm"
    wrong_kind = [k for k in keys if k in _KIND_KEYS[other]]
    label = value.get("name")
    who = f"task {label!r}" if isinstance(label, str) and label else where
    if wrong_kind:
        raise ConfigError(f"{who}: field(s) {wrong_kind} apply only to {other} tasks; allowed "
                          f"here: {', '.join(allowed)}")
    unknown = sorted(k for k in keys if k not in allowed)
    if unknown:
        raise ConfigError(f"{who}: unknown field(s) {unknown} (allowed: {', '.join(allowed)})")
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: each task needs a 'name' (a non-empty string), as in "
                          f"{example}")
    where = f"task {name!r}"
    data = value.get("data")
    if data is None:
        raise ConfigError(f"{where}: missing 'data': the path of the evaluation file "
                          f"({', '.join(FORMATS)})")
    if not isinstance(data, (str, os.PathLike)) or not os.fspath(data):
        raise ConfigError(f"{where}: 'data' must be a file path, got {data!r}")
    path = Path(os.path.expanduser(os.fspath(data)))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    _check_suffix(path, name)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"{where}: evaluation file {what}: {path}; give the path of a "
                          f"{'/'.join(FORMATS)} file (relative paths are read from "
                          f"{base_dir if base_dir is not None else 'the working directory'})")
    fields: dict[str, str] = {}
    for key in ("text_field",) + _KIND_KEYS[kind]:
        if key == "labels" or key not in value:
            continue
        v = value[key]
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}: {key} must be a field name (a non-empty string), "
                              f"got {v!r}")
        fields[key] = v
    ms = value.get("max_samples")
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or ms < 1):
        raise ConfigError(f"{where}: max_samples must be a positive integer or null, "
                          f"got {ms!r}")
    labels = _parse_labels(value.get("labels"), where)
    return TextTask(name=name, data=path, labels=labels, max_samples=ms, **fields)


def _parse_labels(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{where}: labels must be a non-empty list of label names, index = "
                          f"class id (e.g. [negative, positive]), got {value!r}")
    names: list[str] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
            raise ConfigError(f"{where}: labels must be non-empty strings, got {v!r}")
        names.append(str(v))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: label name(s) {dup} appear twice in labels; each class "
                          "needs its own name")
    return tuple(names)


def _check_suffix(path: Path, task: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"task {task!r}: cannot read {path}: unsupported file type "
                          f"{suffix or '(no ending)'!r}; supported: {', '.join(FORMATS)} "
                          "(.txt: documents separated by blank lines; .jsonl: one JSON object "
                          "per line; .json: a list; .csv/.tsv: a header row)")
    return suffix


# -- reading files ------------------------------------------------------------------------------
def read_records(task: TextTask) -> list[dict[str, object]]:
    """The records of ``task``'s data file (the first ``max_samples`` when set).

    ``.txt`` documents and bare JSON strings become ``{task.text_field: text}``; records
    whose values are all empty are dropped. A file with no record left is a
    :class:`ConfigError`, as is a malformed line (named by its line number).
    """
    path = Path(task.data)
    suffix = _check_suffix(path, task.name)
    if not path.is_file():
        raise ConfigError(f"task {task.name!r}: evaluation file not found: {path}")
    try:
        if suffix == ".txt":
            records = _read_txt(path, task)
        elif suffix == ".jsonl":
            records = _read_jsonl(path, task)
        elif suffix == ".json":
            records = _read_json(path, task)
        else:
            records = _read_csv(path, task, "\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task {task.name!r}: {path} is not UTF-8 text ({exc}); save it as "
                          "UTF-8") from None
    records = [r for r in records if not _blank(r)]
    if task.max_samples is not None:
        records = records[:task.max_samples]
    if not records:
        raise ConfigError(
            f"task {task.name!r}: evaluation file {path} holds no text; give it at least one "
            f"non-empty record ({_format_hint(suffix, task)})"
        )
    return records


def _format_hint(suffix: str, task: TextTask) -> str:
    if suffix == ".txt":
        return "documents separated by blank lines"
    if suffix == ".jsonl":
        return f'one JSON object per line, such as {{"{task.text_field}": "..."}}'
    if suffix == ".json":
        return f'a list such as [{{"{task.text_field}": "..."}}]'
    return f"a header row naming the fields (e.g. {task.text_field}), then one row per record"


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, Mapping):
        return all(_blank(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return not value
    return False


def _read_txt(path: Path, task: TextTask) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    docs = (d.strip() for d in re.split(r"\n\s*\n", text))
    return [{task.text_field: d} for d in docs if d]


def _record(value: object, task: TextTask, where: str) -> dict[str, object]:
    if isinstance(value, str):
        return {task.text_field: value}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    raise ConfigError(f"task {task.name!r}: {where} is a JSON {type(value).__name__}; each "
                      f'record must be an object such as {{"{task.text_field}": "..."}} or a '
                      "string")


def _read_jsonl(path: Path, task: TextTask) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"task {task.name!r}: {path}, line {lineno}: not valid JSON ({exc.msg}, "
                    f"column {exc.colno}); a .jsonl file holds one JSON object per line"
                ) from None
            records.append(_record(value, task, f"{path}, line {lineno}"))
    return records


def _read_json(path: Path, task: TextTask) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"task {task.name!r}: {path}, line {exc.lineno}: not valid JSON ({exc.msg}, column "
            f"{exc.colno}); a .json file holds one list of records (for one record per line, "
            "name it .jsonl)"
        ) from None
    if not isinstance(value, list):
        raise ConfigError(f"task {task.name!r}: {path} holds a JSON {type(value).__name__}; "
                          f'it must hold a list of records such as [{{"{task.text_field}": '
                          '"..."}, ...] or of strings')
    return [_record(v, task, f"{path}, item {i}") for i, v in enumerate(value)]


def _read_csv(path: Path, task: TextTask, delimiter: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 2**31 - 1))  # long documents in one cell
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            try:
                for row in reader:
                    if None in row:
                        raise ConfigError(
                            f"task {task.name!r}: {path}, line {reader.line_num}: more values "
                            f"than the header has columns ({len(reader.fieldnames or [])}); "
                            "quote values that hold the delimiter"
                        )
                    records.append({str(k): v for k, v in row.items()})
            except csv.Error as exc:
                raise ConfigError(f"task {task.name!r}: {path}, line {reader.line_num}: "
                                  f"{exc}; check the quoting") from None
    finally:
        csv.field_size_limit(old_limit)
    return records


# -- language-model examples --------------------------------------------------------------------
@dataclass(frozen=True)
class LMExample:
    """One token sequence to score: ``labels`` has the length of ``input_ids``, with
    :data:`IGNORE_INDEX` (-100) at tokens that are not scored."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and labels "
                             f"({len(self.labels)}) differ in length")

    @property
    def scored(self) -> int:
        """The number of scored tokens: positions ``t >= 1`` whose label is not -100."""
        return _n_scored(self.labels)


def _n_scored(labels: Sequence[int]) -> int:
    return sum(1 for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX)


def build_lm_examples(
    records: Sequence[Mapping[str, object]],
    tokenizer: Any,
    *,
    task: TextTask,
    max_length: int,
    max_tokens: int | None = None,
    chat_template: bool = False,
) -> list[LMExample]:
    """Tokenise ``records`` into examples of at most ``max_length`` tokens.

    Text records are tokenised with the tokenizer's special tokens and scored in full;
    prompt + completion records score the completion (plus ``eos_token_id``) only, the
    prompt rendered as a user turn through the chat template first when ``chat_template``;
    chat records score the last (assistant) message only. See the module docstring.

    A sequence longer than ``max_length`` is split into windows of ``max_length`` tokens
    that overlap by one token: window ``k`` starts at ``k * (max_length - 1)``, so the
    token a window cannot predict (its first) is the last token of the window before, where
    it was scored. Every token of the sequence but the first is thus scored exactly once,
    whatever ``max_length``. Windows with no scored token are dropped.

    ``max_tokens`` caps the scored tokens over the task: examples are taken in order and
    the one that crosses the cap is cut so that exactly ``max_tokens`` are scored.
    """
    where = f"task {task.name!r}"
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"{where}: max_length must be an integer >= 2 (tokens per example), "
                          f"got {max_length!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool)
                                   or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"{where}: max_tokens must be a positive integer or null, "
                          f"got {max_tokens!r}")
    if chat_template and getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            f"{where}: chat_template is on but the tokenizer has no chat template; use an "
            "instruction-tuned model's tokenizer (one with a chat template) or set "
            "chat_template: false"
        )
    examples: list[LMExample] = []
    total = 0
    for number, record in enumerate(records, 1):
        seq = _record_tokens(record, number, tokenizer, task, chat_template)
        if seq is None:
            continue
        ids, labels = seq
        for w_ids, w_labels in _windows(ids, labels, max_length):
            n = _n_scored(w_labels)
            if n == 0:
                continue
            if max_tokens is not None and total + n >= max_tokens:
                cut = _cut_after(w_labels, max_tokens - total)
                examples.append(LMExample(tuple(w_ids[:cut]), tuple(w_labels[:cut])))
                return examples
            examples.append(LMExample(tuple(w_ids), tuple(w_labels)))
            total += n
    if not examples:
        raise ConfigError(
            f"{where}: the evaluation file {task.data} gives no token to score (each example "
            "needs at least two tokens and a scored one after the first); check that its "
            f"records hold text ({task.text_field!r}, {task.prompt_field!r} + "
            f"{task.completion_field!r} or {task.messages_field!r})"
        )
    return examples


def _cut_after(labels: Sequence[int], need: int) -> int:
    """The length of the shortest prefix of ``labels`` that has ``need`` scored tokens."""
    seen = 0
    for t in range(1, len(labels)):
        if labels[t] != IGNORE_INDEX:
            seen += 1
            if seen == need:
                return t + 1
    return len(labels)


def _windows(ids: list[int], labels: list[int],
             max_length: int) -> Iterator[tuple[list[int], list[int]]]:
    start = 0
    while True:
        yield ids[start:start + max_length], labels[start:start + max_length]
        if start + max_length >= len(ids):
            return
        start += max_length - 1


def _present(record: Mapping[str, object], field: str) -> bool:
    v = record.get(field)
    return v is not None and v != ""


def _encode(tokenizer: Any, text: str, special: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=special)["input_ids"]
    return [int(i) for i in ids]


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation: bool,
            where: str) -> str:
    try:
        out = tokenizer.apply_chat_template(messages, tokenize=False,
                                            add_generation_prompt=generation)
    except Exception as exc:  # jinja errors (e.g. roles must alternate) and the like
        raise ConfigError(f"{where}: the tokenizer's chat template failed on this chat: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, str):
        raise ConfigError(f"{where}: the chat template rendered {type(out).__name__}, "
                          "not text")
    return out


def _string(record: Mapping[str, object], field: str, where: str) -> str:
    v = record[field]
    if not isinstance(v, str):
        raise ConfigError(f"{where}: field {field!r} must be a string, got "
                          f"{type(v).__name__}")
    return v


def _record_tokens(record: Mapping[str, object], number: int, tokenizer: Any, task: TextTask,
                   chat_template: bool) -> tuple[list[int], list[int]] | None:
    where = f"task {task.name!r}, record {number} of {task.data}"
    if not isinstance(record, Mapping):
        raise ConfigError(f"{where}: a record must be a mapping of fields, got "
                          f"{type(record).__name__}")
    if _present(record, task.messages_field):
        return _chat_tokens(record[task.messages_field], tokenizer, task, where)
    if _present(record, task.prompt_field) and _present(record, task.completion_field):
        prompt = _string(record, task.prompt_field, where)
        completion = _string(record, task.completion_field, where)
        if chat_template:
            text = _render(tokenizer, [{"role": "user", "content": prompt}], True, where)
            prompt_ids = _encode(tokenizer, text, special=False)
        else:
            prompt_ids = _encode(tokenizer, prompt, special=True)
        completion_ids = _encode(tokenizer, completion, special=False)
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, int) and (not completion_ids or completion_ids[-1] != eos):
            completion_ids.append(eos)
        return (prompt_ids + completion_ids,
                [IGNORE_INDEX] * len(prompt_ids) + completion_ids)
    if _present(record, task.text_field):
        ids = _encode(tokenizer, _string(record, task.text_field, where), special=True)
        return ids, list(ids)
    looked = (task.text_field, task.prompt_field, task.completion_field, task.messages_field)
    if any(record.get(f) == "" for f in looked):
        return None  # an empty cell (a .csv row with nothing to score): nothing to do
    also = ""
    if _present(record, task.prompt_field):
        also = f" (it has {task.prompt_field!r} but no {task.completion_field!r})"
    elif _present(record, task.completion_field):
        also = f" (it has {task.completion_field!r} but no {task.prompt_field!r})"
    raise ConfigError(
        f"{where}: the record has none of the fields looked for{also}: {task.text_field!r} "
        f"(text), {task.prompt_field!r} + {task.completion_field!r} (prompt and completion) or "
        f"{task.messages_field!r} (a chat); it has {sorted(map(str, record))}; rename the "
        "fields or set text_field / prompt_field / completion_field / messages_field"
    )


def _chat_tokens(value: object, tokenizer: Any, task: TextTask,
                 where: str) -> tuple[list[int], list[int]]:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            f"{where}: a {task.messages_field!r} record needs a chat template but the "
            "tokenizer has none; use an instruction-tuned model's tokenizer (one with a chat "
            "template) or give text / prompt + completion records instead"
        )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < 2:
        raise ConfigError(f"{where}: {task.messages_field!r} must be a list of at least two "
                          "{role, content} messages ending with the assistant's reply")
    messages: list[dict[str, Any]] = []
    for j, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or m.get("content") is None:
            raise ConfigError(f"{where}: message {j} must be a mapping with 'role' and "
                              f"'content', got {m!r}")
        messages.append(dict(m))
    if messages[-1]["role"] != "assistant":
        raise ConfigError(f"{where}: the last message must be the assistant's (the reply to "
                          f"score), got role {messages[-1]['role']!r}")
    prompt = _render(tokenizer, messages[:-1], True, where)
    full = _render(tokenizer, messages, False, where)
    if not full.startswith(prompt):
        raise ConfigError(
            f"{where}: the chat template renders the chat without its last message "
            "(with the generation prompt) as text that does not start the full chat; the "
            "reply cannot be told apart; give prompt + completion records instead"
        )
    prompt_ids = _encode(tokenizer, prompt, special=False)
    completion_ids = _encode(tokenizer, full[len(prompt):], special=False)
    return (prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids)


def lm_batches(
    examples: Sequence[LMExample],
    batch_size: int,
    pad_id: int,
    *,
    sort_by_length: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Right-padded CPU batches of ``input_ids``, ``attention_mask`` (1 on real tokens) and
    ``labels`` (-100 on padding).

    With ``sort_by_length`` (the default) the examples are ordered by length, longest first
    (a stable sort, so the order is deterministic) before batching: less padding, and the
    largest batch comes first, so a too large ``batch_size`` fails at once. Otherwise the
    given order is kept. Sums over all batches do not depend on the order.
    """
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = list(examples)
    if sort_by_length:
        order.sort(key=lambda e: -len(e.input_ids))
    batches: list[dict[str, torch.Tensor]] = []
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
            mask[row, :n] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _autocast(device: torch.device,
              dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    import torch

    if dtype is not None and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def causal_lm_nll(
    model: Any,
    batches: Sequence[Mapping[str, torch.Tensor]],
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> tuple[float, int]:
    """The summed negative log-likelihood of the scored tokens of ``batches``, and their
    number (the task's mean loss is their ratio).

    Logits at position ``t`` predict the label at ``t + 1``; log-softmax is taken in float32.
    Padding (attention mask 0, label -100) changes nothing: the result equals scoring every
    example alone. ``autocast`` (a dtype) runs the model under CUDA autocast; it is ignored
    on other devices. Put the model in eval mode first (dropout). A diverged model gives a
    non-finite total, which the caller should treat as an invalid evaluation.
    """
    import torch
    import torch.nn.functional as F

    config = getattr(model, "config", None)
    # No KV cache: it would hold every layer's keys and values until the forward ends.
    extra = {"use_cache": False} if getattr(config, "use_cache", None) is not None else {}
    total = 0.0
    count = 0
    with torch.inference_mode():
        for batch in batches:
            labels = batch["labels"].to(device, non_blocking=True)
            shifted = labels[:, 1:]
            scored = shifted != IGNORE_INDEX
            n = int(scored.sum())
            if n == 0:
                continue
            with _autocast(device, autocast):
                out = model(input_ids=batch["input_ids"].to(device, non_blocking=True),
                            attention_mask=batch["attention_mask"].to(device,
                                                                      non_blocking=True),
                            **extra)
            logits = out.logits if hasattr(out, "logits") else out[0]
            picked = logits[:, :-1][scored]
            targets = shifted[scored]
            step = max(1, _CE_CHUNK_ELEMENTS // max(1, picked.shape[-1]))
            batch_sum = torch.zeros((), dtype=torch.float32, device=picked.device)
            for s in range(0, n, step):
                batch_sum += F.cross_entropy(picked[s:s + step].float(), targets[s:s + step],
                                             reduction="sum")
            total += float(batch_sum)
            count += n
    return total, count


# -- classification -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledSet:
    """A classification task's texts, their class ids and the names of the classes."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def _as_index(value: str) -> int | None:
    v = value.strip()
    return int(v) if re.fullmatch(r"-?\d+", v) else None


def build_labelled(
    records: Sequence[Mapping[str, object]],
    task: TextTask,
    num_labels: int | None = None,
) -> LabelledSet:
    """Texts (``task.text_field``) and class ids (``task.label_field``) of ``records``.

    A label is a class id (an integer, or its digits as text as in a .csv file) or a label
    name: one of ``task.labels`` when given (index = class id), otherwise the names found in
    the file, sorted. Without names, integer labels are named ``"0" .. "K-1"`` (``K`` =
    ``num_labels`` when given, else the largest label + 1). ``num_labels``, the class count
    of the model's head, must cover every label name.
    """
    where = f"task {task.name!r}"
    if not records:
        raise ConfigError(f"{where}: the evaluation file {task.data} holds no records")
    texts: list[str] = []
    raw: list[int | str] = []
    for number, record in enumerate(records, 1):
        at = f"{where}, record {number} of {task.data}"
        text = record.get(task.text_field)
        if not isinstance(text, str):
            raise ConfigError(
                f"{at}: no text: field {task.text_field!r} is "
                f"{'missing' if text is None else type(text).__name__}; the record has "
                f"{sorted(map(str, record))} (set text_field to name the text field)"
            )
        label = record.get(task.label_field)
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if label is None or isinstance(label, bool) or not isinstance(label, (int, str)):
            raise ConfigError(
                f"{at}: no label: field {task.label_field!r} is "
                f"{'missing' if label is None else repr(label)}; a label is a class id or a "
                "label name (set label_field to name the label field)"
            )
        texts.append(text)
        raw.append(label.strip() if isinstance(label, str) else label)

    names = task.labels
    ids: list[int] = []
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        for number, v in enumerate(raw, 1):
            if isinstance(v, str) and v in index:
                ids.append(index[v])
                continue
            k = v if isinstance(v, int) else _as_index(v)
            if k is None or not 0 <= k < len(names):
                raise ConfigError(
                    f"{where}, record {number} of {task.data}: unknown label {v!r}; allowed: "
                    f"{list(names)} or their class ids 0..{len(names) - 1} (the task's "
                    "labels)"
                )
            ids.append(k)
    elif all(isinstance(v, int) or _as_index(v) is not None for v in raw):
        ints = [v if isinstance(v, int) else _as_index(v) for v in raw]
        top = max(i for i in ints if i is not None)
        k_classes = num_labels if num_labels is not None else top + 1
        for number, k in enumerate(ints, 1):
            if k is None or not 0 <= k < k_classes:
                raise ConfigError(
                    f"{where}, record {number} of {task.data}: label {k} is out of range; "
                    f"allowed: class ids 0..{k_classes - 1}"
                    + (" (the model's head has that many classes)" if num_labels else "")
                )
            ids.append(k)
        names = tuple(str(i) for i in range(k_classes))
    else:
        numeric = [n for n, v in enumerate(raw, 1) if isinstance(v, int)]
        if numeric:
            raise ConfigError(
                f"{where}, record {numeric[0]} of {task.data}: label {raw[numeric[0] - 1]!r} "
                "is a class id but other records use label names; use one or the other, or "
                "list the names in the task's labels (index = class id)"
            )
        names = tuple(sorted({str(v) for v in raw}))
        index = {n: i for i, n in enumerate(names)}
        ids = [index[str(v)] for v in raw]
    if num_labels is not None and num_labels < len(names):
        raise ConfigError(
            f"{where}: {len(names)} labels ({', '.join(names[:10])}"
            f"{', ...' if len(names) > 10 else ''}) but the model's classification head has "
            f"{num_labels} classes; use a model whose head has {len(names)} or more, or check "
            "the task's labels and label_field"
        )
    return LabelledSet(tuple(texts), tuple(ids), tuple(names))


def classification_accuracy(
    logits_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    tokenizer: Any,
    data: LabelledSet,
    *,
    batch_size: int,
    max_length: int,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> float:
    """The top-1 accuracy of ``logits_fn`` on ``data``, in [0, 1].

    Texts are tokenised ``batch_size`` at a time (padded, truncated to ``max_length``),
    moved to ``device`` and passed to ``logits_fn``, which returns ``(batch, classes)``
    logits. Logits that are not finite (a diverged model) give NaN, an invalid evaluation.
    ``autocast`` as in :func:`causal_lm_nll`.
    """
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(data.texts) == 0:
        raise ConfigError("classification_accuracy: the evaluation set is empty")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ConfigError("the tokenizer has no padding token, which batching needs; use a "
                          "tokenizer with one (or set tokenizer.pad_token, e.g. to its EOS or "
                          "UNK token)")
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(data.texts), batch_size):
            texts = list(data.texts[s:s + batch_size])
            enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            batch = {k: v.to(device, non_blocking=True) for k, v in enc.items()}
            with _autocast(device, autocast):
                logits = logits_fn(batch)
            if logits.ndim != 2 or logits.shape[0] != len(texts):
                raise EvaluationError(f"the classifier returned logits of shape "
                                      f"{tuple(logits.shape)} for {len(texts)} texts; expected "
                                      f"({len(texts)}, classes)")
            if not bool(torch.isfinite(logits).all()):
                return math.nan
            target = torch.tensor(data.labels[s:s + batch_size], device=logits.device)
            correct += int((logits.argmax(dim=-1) == target).sum())
    return correct / len(data.texts)
