"""Shared fixtures of the mapframe-llm tests: tiny language models and a real encoder,
trained for real, offline.

Session-scoped (built lazily, once per test process, under pytest's temporary folders;
nothing is downloaded, nothing is written to ``~/.cache``):

* ``lm_files`` -> :class:`LMFiles`: :func:`mapframe_llm.toy.make_lm_checkpoints` with a tiny
  **Llama** (grouped-query attention, untied embeddings): a BPE tokenizer, a base pre-trained
  on the mixture of the toy corpora, one full fine-tune and one PEFT LoRA adapter per task of
  :data:`LM_TASKS`, every model a sharded float32 Hugging Face directory, and each task's
  held-out text (``lang_a`` as ``.txt``, ``lang_b`` as ``.jsonl``).
* ``gpt2_files`` -> :class:`LMFiles`: the same with a tiny **GPT-2** (tied embeddings,
  ``Conv1D`` layers; the LoRA adapters target ``c_attn``).
* ``lm_bf16_files`` -> :class:`LMFiles`: ``lm_files``' base and fine-tunes re-saved in
  **bfloat16** (same tokenizer, data, LoRA adapters and float32-measured losses).
* ``cls_files`` -> :class:`ClsFiles`: :func:`mapframe_llm.toy.make_classification_checkpoints`:
  the real all-MiniLM-L6-v2 encoder fine-tuned with a classification head on each task of
  :data:`CLS_TASKS`, and each task's labelled test JSONL.

Helpers for any test file (also as attributes of the ``llm_helpers`` fixture):
:func:`read_texts`, :func:`load_state`, :func:`reference_merge`, :func:`load_causal_lm`,
:func:`load_classifier`; and the fixture objects' methods (``task_configs``,
``evaluator_kwargs``, ``checkpoints``, ``model``, ``merged_model``, ``loss``,
``merged_classifier``, ``accuracy_of``).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mapframe.testing.environment import limit_torch_threads, offline_test_environment

# Before anything imports huggingface_hub or torch (they read these once): never try the
# network; one OpenMP thread per xdist worker.
offline_test_environment()


def pytest_configure(config: pytest.Config) -> None:
    limit_torch_threads()


#: Tasks (toy corpora) of the language-model fixtures.
LM_TASKS: tuple[str, ...] = ("lang_a", "lang_b")
#: Tasks of the classification fixture.
CLS_TASKS: tuple[str, ...] = ("sentiment", "topic")


@dataclass(frozen=True)
class LMFiles:
    """Paths and measurements of a toy causal-LM fixture (every path absolute, a ``str``)."""

    root: Path
    #: ``llama`` or ``gpt2``.
    arch: str
    #: Dtype the model directories were saved in: ``float32`` or ``bfloat16``.
    dtype: str
    tasks: tuple[str, ...]
    #: The tokenizer directory (the same files are also in every model directory).
    tokenizer: str
    #: The base model's directory (sharded safetensors + index + tokenizer).
    base: str
    #: Task -> the full fine-tune's directory (same layout as ``base``).
    finetuned: dict[str, str]
    #: Task -> PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors;
    #: its ``base_model_name_or_path`` is the float32 ``base``).
    lora: dict[str, str]
    #: Task -> held-out evaluation file: ``.txt`` (documents separated by blank lines) for
    #: ``lang_a``, ``.jsonl`` (``{"text": ...}`` per line) for ``lang_b``.
    data: dict[str, str]
    #: Task -> the same documents as ``.txt`` / as ``.jsonl``, whichever ``data`` picked.
    data_txt: dict[str, str]
    data_jsonl: dict[str, str]
    #: Task -> training documents (``.jsonl``, ``text`` field).
    train_data: dict[str, str]
    #: ``{"base" | fine-tuned task: {task: loss}}``: :func:`mapframe_llm.toy.lm_loss` (mean
    #: next-token loss of ``<s> text``, max 128 tokens) of each model on each task's
    #: held-out documents, measured in float32 while building.
    losses: dict[str, dict[str, float]]
    #: ``{LoRA task: {task: loss}}``, the same for base + adapter.
    lora_losses: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Task -> ``||θ_t − θ0|| / ||θ0||`` of its full fine-tune.
    task_vector_ratio: dict[str, float] = field(default_factory=dict)
    #: Seconds the build took.
    seconds: float = 0.0

    @classmethod
    def from_result(cls, result: Mapping[str, Any], tasks: Sequence[str]) -> LMFiles:
        """From what :func:`~mapframe_llm.toy.make_lm_checkpoints` returned."""
        return cls(root=Path(result["root"]), arch=str(result["arch"]),
                   dtype=str(result["dtype"]), tasks=tuple(tasks),
                   tokenizer=result["tokenizer"], base=result["base"],
                   finetuned=dict(result["finetuned"]), lora=dict(result["lora"]),
                   data=dict(result["data"]), data_txt=dict(result["data_txt"]),
                   data_jsonl=dict(result["data_jsonl"]),
                   train_data=dict(result["train_data"]),
                   losses={k: dict(v) for k, v in result["losses"].items()},
                   lora_losses={k: dict(v) for k, v in result["lora_losses"].items()},
                   task_vector_ratio=dict(result["task_vector_ratio"]),
                   seconds=float(result["seconds"]))

    def task_configs(self, names: Sequence[str] | None = None,
                     **extra: Any) -> list[dict[str, Any]]:
        """``tasks`` entries of a ``causal_lm`` evaluator for ``names`` (default: all)."""
        return [{"name": t, "data": self.data[t], **extra} for t in (names or self.tasks)]

    def evaluator_kwargs(self, tasks: Sequence[Mapping[str, Any]] | None = None,
                         **overrides: Any) -> dict[str, Any]:
        """``causal_lm`` evaluator arguments for this fixture (CPU, float32, loss, the
        example's batch size and max length)."""
        kw: dict[str, Any] = {
            "tasks": list(tasks) if tasks is not None else self.task_configs(),
            "metric": "loss", "batch_size": 8, "max_length": 128, "dtype": "float32",
            "device": "cpu", "storage": "disk",
        }
        kw.update(overrides)
        return kw

    def checkpoints(self, lora: bool | Sequence[str] = False) -> dict[str, Any]:
        """``checkpoints`` section: ``base`` and the full fine-tunes, with the LoRA adapter
        instead for the tasks of ``lora`` (``True``: every task)."""
        use = set(self.tasks if lora is True else (lora or ()))
        return {"pretrained": self.base,
                "finetuned": {t: self.lora[t] if t in use else self.finetuned[t]
                              for t in self.tasks}}

    def texts(self, task: str) -> list[str]:
        """The held-out documents of ``task``."""
        return read_texts(self.data_jsonl[task])

    def model(self, name: str = "base") -> Any:
        """The float32 model ``base`` or the fine-tune of task ``name``, in eval mode."""
        return load_causal_lm(self.base if name == "base" else self.finetuned[name])

    def merged_model(self, coefficients: Sequence[float]) -> Any:
        """A float32 model holding :func:`reference_merge` of the base and the full
        fine-tunes (task order) with ``coefficients``."""
        return load_causal_lm(self.base, reference_merge(
            self.base, [self.finetuned[t] for t in self.tasks], coefficients))

    def loss(self, model: Any, task: str) -> float:
        """:func:`mapframe_llm.toy.lm_loss` of ``model`` on ``task``'s held-out documents
        (the measure of :attr:`losses`)."""
        from mapframe_llm.toy import lm_loss
        from transformers import AutoTokenizer

        return lm_loss(model, AutoTokenizer.from_pretrained(self.tokenizer), self.texts(task))


@dataclass(frozen=True)
class ClsFiles:
    """Paths and measurements of the MiniLM text-classification fixture."""

    root: Path
    tasks: tuple[str, ...]
    #: The all-MiniLM-L6-v2 directory inside the installed package (a ``BertModel``: one
    #: ``model.safetensors``, tensors *without* the ``bert.`` prefix; tokenizer included).
    #: Read only: never write there.
    pretrained: str
    #: Task -> the fine-tune's directory (``BertForSequenceClassification``: ``bert.*``
    #: tensors + ``classifier.weight``/``classifier.bias``, sharded, id2label/label2id set).
    finetuned: dict[str, str]
    #: Task -> test ``.jsonl`` of ``{"text": ..., "label": "<label name>"}``.
    data: dict[str, str]
    #: Task -> train ``.jsonl`` (same format).
    train_data: dict[str, str]
    #: Task -> label names in id order (sentiment: negative, positive; topic: sports,
    #: cooking, tech).
    labels: dict[str, list[str]]
    #: ``{"base" | fine-tuned task: {task: test accuracy}}``: the encoder of the pretrained
    #: model (``base``) or of a fine-tune, each combined with that task's own fine-tuned
    #: head, i.e. the corners of the merge square (max_length 32).
    accuracy: dict[str, dict[str, float]]
    seconds: float = 0.0

    @classmethod
    def from_result(cls, result: Mapping[str, Any], tasks: Sequence[str]) -> ClsFiles:
        """From what :func:`~mapframe_llm.toy.make_classification_checkpoints` returned."""
        return cls(root=Path(result["root"]), tasks=tuple(tasks),
                   pretrained=result["pretrained"], finetuned=dict(result["finetuned"]),
                   data=dict(result["data"]), train_data=dict(result["train_data"]),
                   labels={k: list(v) for k, v in result["labels"].items()},
                   accuracy={k: dict(v) for k, v in result["accuracy"].items()},
                   seconds=float(result["seconds"]))

    def task_configs(self, names: Sequence[str] | None = None, labels: bool = True,
                     **extra: Any) -> list[dict[str, Any]]:
        """``tasks`` entries of a ``text_classification`` evaluator (with ``labels`` unless
        ``labels=False``)."""
        out = []
        for t in names or self.tasks:
            item: dict[str, Any] = {"name": t, "data": self.data[t]}
            if labels:
                item["labels"] = list(self.labels[t])
            out.append({**item, **extra})
        return out

    def evaluator_kwargs(self, tasks: Sequence[Mapping[str, Any]] | None = None,
                         **overrides: Any) -> dict[str, Any]:
        """``text_classification`` evaluator arguments (CPU, float32, max length 32)."""
        kw: dict[str, Any] = {
            "tasks": list(tasks) if tasks is not None else self.task_configs(),
            "batch_size": 32, "max_length": 32, "dtype": "float32", "device": "cpu",
            "storage": "disk",
        }
        kw.update(overrides)
        return kw

    def checkpoints(self) -> dict[str, Any]:
        """``checkpoints`` section: MiniLM and the fine-tunes."""
        return {"pretrained": self.pretrained, "finetuned": dict(self.finetuned)}

    def merged_classifier(self, coefficients: Sequence[float], task: str) -> Any:
        """``task``'s fine-tuned classifier (its head) on the encoder
        :func:`reference_merge` gives for ``coefficients`` (task order)."""
        state = reference_merge(self.pretrained, [self.finetuned[t] for t in self.tasks],
                                coefficients, base_prefix="bert.")
        return load_classifier(self.finetuned[task], state)

    def accuracy_of(self, model: Any, task: str, max_length: int = 32) -> float:
        """Test accuracy of a classifier on ``task`` (the measure of :attr:`accuracy`)."""
        from mapframe_llm.toy import classification_accuracy
        from transformers import AutoTokenizer

        rows = [json.loads(line) for line in Path(self.data[task]).read_text().splitlines()
                if line.strip()]
        return classification_accuracy(model, AutoTokenizer.from_pretrained(self.pretrained),
                                       [r["text"] for r in rows], [r["label"] for r in rows],
                                       max_length=max_length)


# --- helpers ------------------------------------------------------------------------------


def read_texts(path: str | os.PathLike[str], text_field: str = "text") -> list[str]:
    """Documents of a ``.txt`` file (separated by blank lines) or a ``.jsonl`` file (the
    ``text_field`` of each object), read independently of the plugin's own readers."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return [str(json.loads(line)[text_field]) for line in p.read_text("utf-8").splitlines()
                if line.strip()]
    blocks = p.read_text("utf-8").replace("\r\n", "\n").split("\n\n")
    return [b.strip() for b in blocks if b.strip()]


def load_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Every tensor of a Hugging Face model directory (all shards named by
    ``model.safetensors.index.json``, or ``model.safetensors``), as stored (dtype kept)."""
    from safetensors.torch import load_file

    d = Path(folder)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(d / f)))
    return state


def reference_merge(pretrained: str | os.PathLike[str],
                    finetuned: Mapping[str, str | os.PathLike[str]] | Sequence[Any],
                    coefficients: Sequence[float], base_prefix: str = "") -> dict[str, Any]:
    """``θ0 + Σ c_i (θ_i − θ0)`` in float64 -> float32, computed tensor by tensor from the
    files, for the keys of the pretrained checkpoint (prefixed with ``base_prefix``: use
    ``"bert."`` to align MiniLM with its classification fine-tunes). Tensors only the
    fine-tunes hold (classification heads) are left out; integer tensors are copied."""
    import torch

    dirs = list(finetuned.values()) if isinstance(finetuned, Mapping) else list(finetuned)
    if len(dirs) != len(coefficients):
        raise ValueError(f"{len(dirs)} fine-tunes but {len(coefficients)} coefficients")
    base = {base_prefix + k: v for k, v in load_state(pretrained).items()}
    fts = [load_state(d) for d in dirs]
    out: dict[str, Any] = {}
    for k, v in base.items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        acc = v.double().clone()
        for c, ft in zip(coefficients, fts):
            if k in ft:
                acc += float(c) * (ft[k].double() - v.double())
        out[k] = acc.to(torch.float32)
    return out


def load_causal_lm(folder: str | os.PathLike[str], state: Mapping[str, Any] | None = None,
                   peft_adapter: str | os.PathLike[str] | None = None) -> Any:
    """A float32 causal LM from ``folder`` in eval mode; ``state`` (e.g. from
    :func:`reference_merge`) loaded into it strictly when given; ``peft_adapter`` applied
    and merged (``merge_and_unload``) when given."""
    import torch
    from transformers import AutoModelForCausalLM

    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if peft_adapter is not None:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(peft_adapter)).merge_and_unload()
    if state is not None:
        _load_into(model, state)
    return model.eval()


def load_classifier(folder: str | os.PathLike[str],
                    encoder_state: Mapping[str, Any] | None = None) -> Any:
    """A float32 sequence classifier from ``folder`` (a fine-tune: its head), in eval mode;
    ``encoder_state`` (``bert.*`` tensors, e.g. :func:`reference_merge` with
    ``base_prefix="bert."``) replaces its encoder when given."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with _quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(str(folder),
                                                                   dtype=torch.float32)
    if encoder_state is not None:
        own = model.state_dict()
        missing = [k for k in own if k not in encoder_state and not k.startswith("classifier")]
        if missing:
            raise KeyError(f"encoder_state lacks {missing[:5]}")
        model.load_state_dict({k: v for k, v in encoder_state.items() if k in own},
                              strict=False)
    return model.eval()


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" progress bars from transformers inside the block."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_into(model: Any, state: Mapping[str, Any]) -> None:
    import torch

    own = model.state_dict()
    tied = {k for k in own if k not in state}
    # GPT-2 ties lm_head.weight to the embeddings: the file (and so ``state``) holds it once.
    unexpected = [k for k in state if k not in own]
    if unexpected or any(not k.endswith("lm_head.weight") for k in tied):
        raise KeyError(f"state does not fit the model: missing {sorted(tied)[:5]}, "
                       f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        model.load_state_dict(dict(state), strict=False)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llm_helpers() -> SimpleNamespace:
    """The helpers of this file as attributes (``read_texts``, ``load_state``,
    ``reference_merge``, ``load_causal_lm``, ``load_classifier``), for test files that
    would rather not import ``conftest`` (ambiguous when several test folders run at once)."""
    return SimpleNamespace(read_texts=read_texts, load_state=load_state,
                           reference_merge=reference_merge, load_causal_lm=load_causal_lm,
                           load_classifier=load_classifier)


@pytest.fixture(scope="session")
def lm_files(tmp_path_factory: pytest.TempPathFactory) -> LMFiles:
    """Tiny Llama: tokenizer, base, full fine-tunes and LoRA adapters per task (float32)."""
    from mapframe_llm.toy import make_lm_checkpoints

    root = tmp_path_factory.mktemp("toy-llama")
    return LMFiles.from_result(make_lm_checkpoints(root, arch="llama", tasks=LM_TASKS,
                                                   lora=True), LM_TASKS)


@pytest.fixture(scope="session")
def gpt2_files(tmp_path_factory: pytest.TempPathFactory) -> LMFiles:
    """Tiny GPT-2 (tied embeddings, Conv1D): the same files as ``lm_files``."""
    from mapframe_llm.toy import make_lm_checkpoints

    root = tmp_path_factory.mktemp("toy-gpt2")
    return LMFiles.from_result(make_lm_checkpoints(root, arch="gpt2", tasks=LM_TASKS,
                                                   lora=True), LM_TASKS)


@pytest.fixture(scope="session")
def lm_bf16_files(lm_files: LMFiles, tmp_path_factory: pytest.TempPathFactory) -> LMFiles:
    """``lm_files``' base and fine-tunes re-saved as bfloat16 sharded directories (the
    tokenizer, data, LoRA adapters and float32-measured losses are ``lm_files``')."""
    from mapframe_llm.toy import save_sharded
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("toy-llama-bf16")
    tok = AutoTokenizer.from_pretrained(lm_files.tokenizer)

    def convert(src: str, name: str) -> str:
        return str(save_sharded(load_causal_lm(src), tok, root / name, dtype="bfloat16"))

    return LMFiles(root=root, arch=lm_files.arch, dtype="bfloat16", tasks=lm_files.tasks,
                   tokenizer=lm_files.tokenizer, base=convert(lm_files.base, "base"),
                   finetuned={t: convert(p, f"ft_{t}") for t, p in lm_files.finetuned.items()},
                   lora=dict(lm_files.lora), data=dict(lm_files.data),
                   data_txt=dict(lm_files.data_txt), data_jsonl=dict(lm_files.data_jsonl),
                   train_data=dict(lm_files.train_data), losses=dict(lm_files.losses),
                   lora_losses=dict(lm_files.lora_losses),
                   task_vector_ratio=dict(lm_files.task_vector_ratio))


@pytest.fixture(scope="session")
def cls_files(tmp_path_factory: pytest.TempPathFactory) -> ClsFiles:
    """all-MiniLM-L6-v2 fine-tuned per task of :data:`CLS_TASKS`, with test JSONL files."""
    from mapframe_llm.toy import make_classification_checkpoints

    root = tmp_path_factory.mktemp("toy-minilm")
    return ClsFiles.from_result(make_classification_checkpoints(root, tasks=CLS_TASKS),
                                CLS_TASKS)
