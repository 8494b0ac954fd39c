"""Training and measuring the toy models, for real, on a CPU in seconds: pre-training and
fine-tuning tiny causal LMs, PEFT LoRA adapters, classification fine-tunes of MiniLM, and
the reference metrics (:func:`lm_loss`, :func:`classification_accuracy`) the checkpoint
builders record and the tests compare merges against.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe_llm.toy_data import classification_data
from mapframe_llm.toy_models import minilm_path, quiet_transformers, save_sharded, tiny_config

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "classification_accuracy",
    "finetune_classifier",
    "finetune_lm",
    "lm_loss",
    "make_lora_adapter",
    "pretrain_base",
    "train_lora_adapter",
]

# --- causal LMs ---------------------------------------------------------------------------


def _lm_batch(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
              append_eos: bool = False) -> dict[str, torch.Tensor]:
    """Tokenized, right-padded batch with ``labels`` (pad positions -100)."""
    if append_eos:
        texts = [t + tokenizer.eos_token for t in texts]
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": labels}


def _train_lm(model: Any, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
              steps: int, lr: float, seed: int, batch_size: int, max_length: int,
              warmup: int = 0) -> list[float]:
    import torch

    if not texts:
        raise ValueError("no training texts")
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = None
    if warmup > 0:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 1.0 - s / max(1, steps)))
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (batch_size,), generator=g).tolist()
        batch = _lm_batch(tokenizer, [texts[i] for i in idx], max_length, append_eos=True)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def pretrain_base(arch: str, tokenizer: PreTrainedTokenizerBase,
                  corpora: Mapping[str, Sequence[str]], steps: int = 150, seed: int = 0,
                  lr: float = 3e-3, batch_size: int = 16, max_length: int = 128,
                  ) -> PreTrainedModel:
    """A tiny causal LM (:func:`tiny_config`), randomly initialised with ``seed`` and
    pre-trained with AdamW (warm-up, linear decay) on the shuffled mixture of ``corpora``
    (``{name: documents}``); each document is ``<s> text </s>``. Returned in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, len(tokenizer), tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    mixture = [t for texts in corpora.values() for t in texts]
    random.Random(seed).shuffle(mixture)
    _train_lm(model, tokenizer, mixture, steps, lr, seed, batch_size, max_length,
              warmup=max(1, steps // 10))
    return model


def finetune_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                texts: Sequence[str], steps: int = 40, lr: float = 5e-4, seed: int = 0,
                batch_size: int = 16, max_length: int = 128) -> PreTrainedModel:
    """A fine-tuned copy of ``model`` (which is left as it is): ``steps`` AdamW steps of
    constant ``lr`` on ``texts``. Few, small steps: the task vector stays small next to the
    weights (MAP's second-order Taylor argument) while the in-domain loss clearly drops."""
    tuned = copy.deepcopy(model)
    _train_lm(tuned, tokenizer, texts, steps, lr, seed, batch_size, max_length)
    return tuned


def lm_loss(model: Any, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
            batch_size: int = 32, max_length: int = 128) -> float:
    """Mean next-token loss of ``model`` over ``texts`` (each tokenized as ``<s> text``,
    truncated to ``max_length``), weighted by predicted tokens: the model's own ``labels=``
    loss of each batch times its number of predicted tokens, summed, divided by the total."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = _lm_batch(tokenizer, texts[i:i + batch_size], max_length)
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(count, 1)


def make_lora_adapter(base_dir: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase,
                      texts: Sequence[str], root: str | os.PathLike[str], r: int = 4,
                      alpha: int | None = None, steps: int = 40, lr: float = 5e-3,
                      seed: int = 0, batch_size: int = 16, max_length: int = 128,
                      target_modules: Sequence[str] | None = None) -> Path:
    """Fine-tune a real PEFT LoRA adapter of the model in ``base_dir`` on ``texts`` and save it
    in ``root`` (``PeftModel.save_pretrained``: ``adapter_config.json`` and
    ``adapter_model.safetensors``; ``base_model_name_or_path`` is ``base_dir``).

    ``target_modules`` default: ``q_proj``, ``v_proj`` (Llama) or ``c_attn`` (GPT-2, whose
    ``Conv1D`` layers need ``fan_in_fan_out``); ``alpha`` default ``2 * r``; no dropout, no
    bias. The base model on disk is not changed.
    """
    return train_lora_adapter(base_dir, tokenizer, texts, root, r=r, alpha=alpha, steps=steps,
                              lr=lr, seed=seed, batch_size=batch_size, max_length=max_length,
                              target_modules=target_modules)[0]


def train_lora_adapter(base_dir: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase,
                       texts: Sequence[str], root: str | os.PathLike[str], r: int = 4,
                       alpha: int | None = None, steps: int = 40, lr: float = 5e-3,
                       seed: int = 0, batch_size: int = 16, max_length: int = 128,
                       target_modules: Sequence[str] | None = None) -> tuple[Path, Any]:
    """:func:`make_lora_adapter`, returning ``(directory, the trained PEFT model)`` so the
    caller can measure the adapted model without loading it again."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    gpt2 = base.config.model_type == "gpt2"
    if target_modules is None:
        target_modules = ["c_attn"] if gpt2 else ["q_proj", "v_proj"]
    cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                     target_modules=list(target_modules), lora_dropout=0.0, bias="none",
                     fan_in_fan_out=gpt2, task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # peft asks transformers a deprecated question; nothing to act on here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        peft_model = get_peft_model(base, cfg)
    _train_lm(peft_model, tokenizer, texts, steps, lr, seed, batch_size, max_length)
    out = Path(root).absolute()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    return out, peft_model


# --- text classification ---------------------------------------------------------------


def classification_accuracy(model: PreTrainedModel, tokenizer: Any, texts: Sequence[str],
                            labels: Sequence[str], batch_size: int = 64,
                            max_length: int = 32) -> float:
    """Accuracy of a sequence classifier on ``texts``; ``labels`` are names, mapped to ids
    through ``model.config.label2id``."""
    import torch

    label2id: Any = model.config.label2id
    ids = torch.tensor([int(label2id[lab]) for lab in labels])
    preds = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1))
    return float((torch.cat(preds) == ids).float().mean()) if preds else float("nan")


def _load_classifier(pretrained: str | os.PathLike[str], names: Sequence[str]
                     ) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():  # "some weights were newly initialised": the head, yes
        return AutoModelForSequenceClassification.from_pretrained(
            str(pretrained), num_labels=len(names), dtype=torch.float32,
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def finetune_classifier(task: str, root: str | os.PathLike[str], steps: int = 40,
                        seed: int = 0, lr: float = 1e-4, batch_size: int = 16,
                        max_length: int = 32, pretrained: str | os.PathLike[str] | None = None,
                        max_shard_size: int | str | None = None,
                        ) -> tuple[Path, PreTrainedModel]:
    """Fine-tune all-MiniLM-L6-v2 (or ``pretrained``) with a fresh classification head on
    ``task``'s train split and save it in ``root`` (sharded safetensors + tokenizer).

    The head has ``num_labels``, ``id2label`` and ``label2id`` of :data:`CLS_TASKS`; the
    whole encoder trains (AdamW, constant ``lr``, ``steps`` batches of ``batch_size``
    sampled with ``seed``). Returns ``(directory, model in eval mode)``.
    """
    import torch
    from transformers import AutoTokenizer

    src = Path(pretrained) if pretrained is not None else minilm_path()
    texts, labels, names = classification_data(task, "train", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(seed)
    model = _load_classifier(src, names)
    y = torch.tensor([names.index(lab) for lab in labels])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (batch_size,), generator=g).tolist()
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        loss = model(**enc, labels=y[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = save_sharded(model, tokenizer, root, max_shard_size=max_shard_size)
    return out, model
