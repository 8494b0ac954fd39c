"""Held-out text: task configs, file formats, tokenised LM examples (masking, chat templates,
windows, token caps), batching, the NLL loop against unbatched references, classification
labels and accuracy, and the device / dtype choices."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mapframe_llm.data import (
    IGNORE_INDEX,
    LabelledSet,
    LMExample,
    TextTask,
    build_labelled,
    build_lm_examples,
    causal_lm_nll,
    classification_accuracy,
    lm_batches,
    parse_tasks,
    read_records,
)
from mapframe_llm.runtime import DTYPES, dtype_name, resolve_device, resolve_dtype

from mapframe.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CPU = torch.device("cpu")
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>",
            "<|end|>"]
CORPUS = [
    "the cat sat on the mat",
    "a dog ran far away from the house",
    "what is two plus two ? four",
    "hello world is a greeting",
    "one two three four five six seven eight nine ten",
]
#: A small chat template in the usual style: one marker per role, an end-of-turn marker.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer(*, bos: bool = True, template: str | None = None) -> Any:
    """A word-level tokenizer trained on :data:`CORPUS`: ``<s>`` prepended with special
    tokens when ``bos`` (Llama style), ``</s>`` as EOS, ``<pad>`` as padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainer=trainers.WordLevelTrainer(special_tokens=SPECIALS))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=SPECIALS[4:])
    out.chat_template = template
    return out


@pytest.fixture(scope="module")
def tok() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="module")
def chat_tok() -> Any:
    return make_tokenizer(template=CHAT_TEMPLATE)


def ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s token ids without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def task_for(path: Path, **kw: Any) -> TextTask:
    return TextTask(name="t", data=path, **kw)


def examples_from(records: list[dict[str, object]], tokenizer: Any, **kw: Any
                  ) -> list[LMExample]:
    kw.setdefault("max_length", 512)
    return build_lm_examples(records, tokenizer, task=task_for(Path("mem.jsonl")), **kw)


# -- parse_tasks --------------------------------------------------------------------------------
def test_parse_tasks_resolves_paths_and_fields(tmp_path: Path) -> None:
    write(tmp_path, "a.jsonl", '{"text": "x"}\n')
    write(tmp_path, "b.csv", "sentence,y\nx,pos\n")
    lm = parse_tasks([{"name": "a", "data": "a.jsonl", "text_field": "body",
                       "prompt_field": "q", "max_samples": 3}], kind="lm", base_dir=tmp_path)
    assert lm == [TextTask("a", tmp_path / "a.jsonl", text_field="body", prompt_field="q",
                           max_samples=3)]
    cls = parse_tasks([{"name": "b", "data": str(tmp_path / "b.csv"), "text_field": "sentence",
                        "label_field": "y", "labels": ["neg", "pos"]}], kind="classification")
    assert cls[0].labels == ("neg", "pos") and cls[0].label_field == "y"
    spec = TextTask("c", tmp_path / "a.jsonl")
    assert parse_tasks([spec], kind="lm")[0] is spec


@pytest.mark.parametrize("kind, tasks, match", [
    ("lm", [{"name": "a", "data": "a.jsonl", "txt_field": "x"}],
     r"unknown field\(s\) \['txt_field'\] \(allowed: name, data, text_field, max_samples, "
     r"prompt_field, completion_field, messages_field\)"),
    ("lm", [{"name": "a", "data": "a.jsonl", "labels": ["x"]}],
     r"\['labels'\] apply only to classification tasks"),
    ("classification", [{"name": "a", "data": "a.jsonl", "prompt_field": "p"}],
     r"\['prompt_field'\] apply only to lm tasks"),
    ("lm", [{"name": "a", "data": "a.jsonl"}, {"name": "a", "data": "a.jsonl"}],
     "'a' is used twice"),
    ("lm", [{"name": "a", "data": "a.jsonl", "max_samples": 0}], "max_samples must be a pos"),
    ("lm", [{"name": "a", "data": "a.jsonl", "max_samples": True}], "max_samples must be a pos"),
    ("lm", [{"name": "a"}], "task 'a': missing 'data'"),
    ("lm", [{"data": "a.jsonl"}], "needs a 'name'"),
    ("lm", [{"name": "a", "data": "a.jsonl", "text_field": ""}], "text_field must be a field"),
    ("classification", [{"name": "a", "data": "a.jsonl", "labels": ["x", "x"]}],
     r"label name\(s\) \['x'\] appear twice"),
    ("classification", [{"name": "a", "data": "a.jsonl", "labels": "x"}],
     "labels must be a non-empty list"),
    ("lm", [], "non-empty list"),
    ("lm", "a.jsonl", "non-empty list"),
    ("lm", ["a.jsonl"], "a task must be a mapping"),
    ("lm", [{"name": "a", "data": "a.parquet"}], r"unsupported file type '.parquet'; "
                                                  r"supported: .txt, .jsonl, .json, .csv, .tsv"),
])
def test_parse_tasks_errors(tmp_path: Path, kind: Any, tasks: Any, match: str) -> None:
    write(tmp_path, "a.jsonl", '{"text": "x"}\n')
    write(tmp_path, "a.parquet", "")
    with pytest.raises(ConfigError, match=match):
        parse_tasks(tasks, kind=kind, base_dir=tmp_path)


def test_parse_tasks_missing_file_names_task_and_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tasks([{"name": "wiki", "data": "held/out.jsonl"}], kind="lm", base_dir=tmp_path)
    msg = str(err.value)
    assert "task 'wiki'" in msg and "not found" in msg
    assert str(tmp_path / "held" / "out.jsonl") in msg


# -- read_records -------------------------------------------------------------------------------
def test_read_txt_splits_on_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", "\n\nfirst doc\nsecond line\n\n\n  \nsecond doc  \n \n"
                                    "third\r\n\r\nfourth\n\n")
    assert read_records(task_for(path)) == [
        {"text": "first doc\nsecond line"}, {"text": "second doc"}, {"text": "third"},
        {"text": "fourth"}]
    assert read_records(task_for(path, text_field="body", max_samples=2)) == [
        {"body": "first doc\nsecond line"}, {"body": "second doc"}]


def test_read_jsonl_objects_strings_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"text": "a b"}\n\n"bare string"\n'
                                      '{"prompt": "p", "completion": "c", "id": 3}\n'
                                      '{"text": "  "}\n')
    assert read_records(task_for(path, text_field="body")) == [
        {"text": "a b"}, {"body": "bare string"}, {"prompt": "p", "completion": "c", "id": 3}]
    assert read_records(task_for(path, max_samples=1)) == [{"text": "a b"}]


def test_read_jsonl_bad_line_names_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"text": "a"}\n\n{"text": "b",}\n')
    with pytest.raises(ConfigError, match=r"task 't': .*d\.jsonl, line 3: not valid JSON"):
        read_records(task_for(path))
    path = write(tmp_path, "e.jsonl", '{"text": "a"}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"e\.jsonl, line 2 is a JSON list"):
        read_records(task_for(path))


def test_read_json_list(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", json.dumps([{"text": "a"}, "b", {"label": 1}]))
    assert read_records(task_for(path)) == [{"text": "a"}, {"text": "b"}, {"label": 1}]
    bad = write(tmp_path, "o.json", json.dumps({"text": "a"}))
    with pytest.raises(ConfigError, match="holds a JSON dict; it must hold a list"):
        read_records(task_for(bad))
    broken = write(tmp_path, "b.json", '[\n{"text": "a"},\n{"text" "b"}\n]')
    with pytest.raises(ConfigError, match=r"b\.json, line 3: not valid JSON"):
        read_records(task_for(broken))


def test_read_csv_and_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,label\n"hello, world",pos\n"two\nlines",neg\n\n'
                                    ',\n')
    assert read_records(task_for(path)) == [{"text": "hello, world", "label": "pos"},
                                            {"text": "two\nlines", "label": "neg"}]
    tsv = write(tmp_path, "d.tsv", "prompt\tcompletion\na, b\tc\n")
    assert read_records(task_for(tsv)) == [{"prompt": "a, b", "completion": "c"}]
    bad = write(tmp_path, "bad.csv", "text,label\na,b\nc,d,e\n")
    with pytest.raises(ConfigError, match=r"bad\.csv, line 3: more values than the header"):
        read_records(task_for(bad))


def test_read_unsupported_format(tmp_path: Path) -> None:
    path = write(tmp_path, "d.xml", "<a/>")
    with pytest.raises(ConfigError, match=r"unsupported file type '\.xml'.*\.txt, \.jsonl"):
        read_records(task_for(path))


@pytest.mark.parametrize("name, content", [
    ("e.txt", ""), ("e.txt", "\n  \n\n"), ("e.jsonl", ""), ("e.jsonl", '\n"  "\n{}\n'),
    ("e.json", "[]"), ("e.json", ""), ("e.csv", "text,label\n"), ("e.csv", ""),
    ("e.tsv", "text\n\n"),
])
def test_read_empty_file_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(ConfigError) as err:
        read_records(TextTask("wiki", path))
    assert f"task 'wiki': evaluation file {path} holds no text;" in str(err.value)


# -- build_lm_examples --------------------------------------------------------------------------
def test_text_record_scores_every_token(tok: Any) -> None:
    (ex,) = examples_from([{"text": "the cat sat"}], tok)
    expected = [tok.bos_token_id, *ids(tok, "the cat sat")]
    assert list(ex.input_ids) == expected and list(ex.labels) == expected
    assert ex.scored == 3  # the BOS is never predicted


def test_prompt_completion_masks_the_prompt(tok: Any) -> None:
    (ex,) = examples_from([{"prompt": "what is two plus two ?", "completion": "four"}], tok)
    prompt = [tok.bos_token_id, *ids(tok, "what is two plus two ?")]
    completion = [*ids(tok, "four"), tok.eos_token_id]
    assert list(ex.input_ids) == prompt + completion
    assert list(ex.labels) == [IGNORE_INDEX] * 7 + completion
    assert ex.scored == 2


def test_custom_fields_and_eos_not_doubled(tok: Any) -> None:
    task = TextTask("t", Path("x.jsonl"), prompt_field="q", completion_field="a")
    (ex,) = build_lm_examples([{"q": "the cat", "a": "sat </s>"}], tok, task=task,
                              max_length=64)
    assert list(ex.labels) == [IGNORE_INDEX] * 3 + ids(tok, "sat") + [tok.eos_token_id]


def test_prompt_with_chat_template(chat_tok: Any) -> None:
    (ex,) = examples_from([{"prompt": "the cat", "completion": "sat"}], chat_tok,
                          chat_template=True)
    prompt = ids(chat_tok, "<|user|> the cat <|end|> <|assistant|>")
    assert list(ex.input_ids) == prompt + ids(chat_tok, "sat") + [chat_tok.eos_token_id]
    assert list(ex.labels) == [IGNORE_INDEX] * len(prompt) + list(ex.input_ids[len(prompt):])
    assert ex.input_ids[0] != chat_tok.bos_token_id  # the template, not the tokenizer, decides


def test_messages_score_the_last_reply_only(chat_tok: Any) -> None:
    chat = [{"role": "system", "content": "hello world"},
            {"role": "user", "content": "what is two plus two ?"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": "four five"}]
    (ex,) = examples_from([{"messages": chat}], chat_tok)
    prompt = ids(chat_tok, "<|system|> hello world <|end|> <|user|> what is two plus two ? "
                           "<|end|> <|assistant|> four <|end|> <|user|> one two three <|end|> "
                           "<|assistant|>")
    reply = ids(chat_tok, "four five <|end|>")
    assert list(ex.input_ids) == prompt + reply
    assert list(ex.labels) == [IGNORE_INDEX] * len(prompt) + reply
    assert ex.scored == 3


def test_messages_need_a_chat_template(tok: Any) -> None:
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(ConfigError, match=r"record 2 .*needs a chat template but the "
                                          r"tokenizer has none.*prompt \+ completion"):
        examples_from([{"text": "the cat"}, {"messages": chat}], tok)
    with pytest.raises(ConfigError, match="chat_template is on but the tokenizer has no chat"):
        examples_from([{"prompt": "a", "completion": "b"}], tok, chat_template=True)


def test_messages_must_end_with_the_assistant(chat_tok: Any) -> None:
    chat = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ConfigError, match="last message must be the assistant's"):
        examples_from([{"messages": chat}], chat_tok)
    with pytest.raises(ConfigError, match="at least two"):
        examples_from([{"messages": []}], chat_tok)


def test_messages_template_that_does_not_extend_the_prompt(chat_tok: Any) -> None:
    odd = make_tokenizer(template="{% if add_generation_prompt %}X {% endif %}"
                                  "{% for m in messages %}{{ m['content'] }} {% endfor %}")
    chat = [{"role": "user", "content": "the"}, {"role": "assistant", "content": "cat"}]
    with pytest.raises(ConfigError, match="does not start the full chat"):
        examples_from([{"messages": chat}], odd)


def test_record_without_fields_names_record_and_fields(tok: Any) -> None:
    with pytest.raises(ConfigError) as err:
        examples_from([{"text": "the cat"}, {"body": "x"}], tok)
    msg = str(err.value)
    assert "task 't', record 2 of mem.jsonl" in msg
    for field in ("'text'", "'prompt'", "'completion'", "'messages'", "['body']"):
        assert field in msg
    with pytest.raises(ConfigError, match="it has 'prompt' but no 'completion'"):
        examples_from([{"prompt": "the cat"}], tok)


def test_windows_overlap_by_one_and_score_every_token_once(tok: Any) -> None:
    text = CORPUS[4] + " " + CORPUS[0]  # 16 words: 17 tokens with BOS
    full = [tok.bos_token_id, *ids(tok, text)]
    assert len(full) == 17
    exs = examples_from([{"text": text}], tok, max_length=5)
    # Windows start at 0, 4, 8, 12: [0:5] [4:9] [8:13] [12:17].
    assert [list(e.input_ids) for e in exs] == [full[0:5], full[4:9], full[8:13], full[12:17]]
    assert [e.scored for e in exs] == [4, 4, 4, 4]  # 16 = every token after the first
    exs = examples_from([{"text": text}], tok, max_length=16)
    assert [list(e.input_ids) for e in exs] == [full[0:16], full[15:17]]
    assert sum(e.scored for e in exs) == 16
    assert len(examples_from([{"text": text}], tok, max_length=17)) == 1


def test_windows_without_scored_tokens_are_dropped(tok: Any) -> None:
    prompt = CORPUS[4]  # 11 tokens with BOS
    exs = examples_from([{"prompt": prompt, "completion": "the cat"}], tok, max_length=4)
    full = [tok.bos_token_id, *ids(tok, prompt), *ids(tok, "the cat"), tok.eos_token_id]
    assert len(full) == 14
    # Windows [0:4] [3:7] [6:10] hold only prompt; [9:13] predicts 'the' 'cat'; [12:14] EOS.
    assert [list(e.input_ids) for e in exs] == [full[9:13], full[12:14]]
    assert [e.scored for e in exs] == [2, 1]


def test_max_tokens_cuts_exactly(tok: Any) -> None:
    records: list[dict[str, object]] = [{"text": c} for c in CORPUS]
    uncapped = examples_from(records, tok, max_length=4)
    assert sum(e.scored for e in uncapped) == sum(len(c.split()) for c in CORPUS)
    assert sum(e.scored for e in uncapped) == 36
    for cap in (1, 3, 4, 5, 10, 17, 35, 36):
        exs = examples_from(records, tok, max_length=4, max_tokens=cap)
        assert sum(e.scored for e in exs) == cap
        assert exs[:-1] == uncapped[:len(exs) - 1]
        last = uncapped[len(exs) - 1]
        assert last.input_ids[:len(exs[-1].input_ids)] == exs[-1].input_ids
    assert examples_from(records, tok, max_length=4, max_tokens=10_000) == uncapped
    # The 2nd window of the 1st text has 3 scored tokens: a cap of 5 keeps 2 of them.
    assert examples_from(records, tok, max_length=4, max_tokens=5)[-1].input_ids == \
        uncapped[1].input_ids[:3]


def test_no_scored_token_is_an_error(tok: Any) -> None:
    bare = make_tokenizer(bos=False)
    with pytest.raises(ConfigError, match="gives no token to score"):
        examples_from([{"text": "the"}, {"text": "cat"}], bare)
    with pytest.raises(ConfigError, match="max_length must be an integer >= 2"):
        examples_from([{"text": "the cat"}], tok, max_length=1)
    with pytest.raises(ConfigError, match="max_tokens must be a positive integer"):
        examples_from([{"text": "the cat"}], tok, max_tokens=0)


def test_examples_from_each_file_format(tmp_path: Path, tok: Any) -> None:
    files = {
        "a.txt": "the cat sat\n\non the mat\n",
        "a.jsonl": '"the cat sat"\n{"text": "on the mat"}\n',
        "a.json": json.dumps(["the cat sat", {"text": "on the mat"}]),
        "a.csv": "text\nthe cat sat\non the mat\n",
        "a.tsv": "text\textra\nthe cat sat\t1\non the mat\t2\n",
    }
    seen = []
    for name, content in files.items():
        task = TextTask(name, write(tmp_path, name, content))
        exs = build_lm_examples(read_records(task), tok, task=task, max_length=64)
        seen.append([e.input_ids for e in exs])
    assert all(s == seen[0] for s in seen) and len(seen[0]) == 2


# -- batching and the NLL loop ------------------------------------------------------------------
def test_lm_batches_pad_right_and_keep_order(tok: Any) -> None:
    exs = [LMExample((5, 6), (5, 6)), LMExample((7, 8, 9, 10), (-100, 8, 9, 10)),
           LMExample((11, 12, 13), (11, 12, 13))]
    (b1, b2) = lm_batches(exs, 2, pad_id=0, sort_by_length=False)
    assert b1["input_ids"].tolist() == [[5, 6, 0, 0], [7, 8, 9, 10]]
    assert b1["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert b1["labels"].tolist() == [[5, 6, -100, -100], [-100, 8, 9, 10]]
    assert b2["input_ids"].tolist() == [[11, 12, 13]]
    assert all(t.dtype == torch.long for t in b1.values())
    s1, s2 = lm_batches(exs, 2, pad_id=1)  # longest first, stable
    assert s1["input_ids"].tolist() == [[7, 8, 9, 10], [11, 12, 13, 1]]
    assert s2["input_ids"].tolist() == [[5, 6]]
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        lm_batches(exs, 0, pad_id=0)


@pytest.fixture
def one_thread() -> Any:
    """Tiny models run fastest on one thread (no thread-pool start-up per new shape)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _llama(vocab: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def _gpt2(vocab: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


def _reference_nll(model: Any, examples: list[LMExample]) -> tuple[float, int]:
    """Each example alone, unpadded, no attention mask, float64 log-softmax."""
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            x = torch.tensor([e.input_ids])
            logits = model(input_ids=x).logits[0].double()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            for t in range(1, len(e.labels)):
                if e.labels[t] != IGNORE_INDEX:
                    total -= float(logp[t - 1, e.labels[t]])
                    count += 1
    return total, count


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_causal_lm_nll_equals_unbatched_reference(tok: Any, chat_tok: Any, one_thread: None,
                                                  build: Callable[[int], Any]) -> None:
    model = build(len(tok))
    records: list[dict[str, object]] = [{"text": c} for c in CORPUS]
    records += [{"prompt": "what is two plus two ?", "completion": "four"},
                {"prompt": "the", "completion": "cat sat on the mat"}]
    exs = examples_from(records, tok, max_length=9)
    exs += examples_from([{"messages": [{"role": "user", "content": "hello"},
                                        {"role": "assistant", "content": "world"}]}],
                         chat_tok, max_length=64)
    assert len({len(e.input_ids) for e in exs}) > 3  # padding really happens
    ref_total, ref_count = _reference_nll(model, exs)
    assert ref_count == sum(e.scored for e in exs)
    for batch_size, sort in ((1, False), (3, False), (4, True), (len(exs), True)):
        batches = lm_batches(exs, batch_size, pad_id=tok.pad_token_id, sort_by_length=sort)
        total, count = causal_lm_nll(model, batches, CPU)
        assert count == ref_count
        assert total == pytest.approx(ref_total, rel=1e-5)
    # Padding with a real token id changes nothing either.
    total, _ = causal_lm_nll(model, lm_batches(exs, 5, pad_id=7), CPU, autocast=torch.float16)
    assert total == pytest.approx(ref_total, rel=1e-5)


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_causal_lm_nll_matches_the_models_own_loss(tok: Any, one_thread: None,
                                                   build: Callable[[int], Any]) -> None:
    model = build(len(tok))
    (ex,) = examples_from([{"prompt": "a dog ran", "completion": "far away from the house"}],
                          tok)
    total, count = causal_lm_nll(model, lm_batches([ex], 1, pad_id=0), CPU)
    assert count == 6  # five words and EOS
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ex.input_ids]),
                     labels=torch.tensor([ex.labels])).loss
    assert total / count == pytest.approx(float(loss), rel=1e-5)


def test_causal_lm_nll_skips_batches_without_scored_tokens() -> None:
    calls = []

    class Fake(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            calls.append(input_ids.shape)
            out = torch.zeros(*input_ids.shape, 4)
            out[..., 2] = math.log(3.0)  # p(2) = 1/2, the others 1/6
            return type("Out", (), {"logits": out})()

    batches = lm_batches([LMExample((1, 2), (-100, -100)), LMExample((1, 2, 3), (1, 2, 3))],
                         1, pad_id=0, sort_by_length=False)
    total, count = causal_lm_nll(Fake(), batches, CPU)
    assert len(calls) == 1 and count == 2
    assert total == pytest.approx(math.log(2.0) + math.log(6.0))


# -- classification -----------------------------------------------------------------------------
def test_build_labelled_with_names_strings_and_ids() -> None:
    recs: list[dict[str, object]] = [{"text": "a", "label": "pos"},
                                     {"text": "b", "label": "neg"},
                                     {"text": "c", "label": 1}, {"text": "d", "label": "0"}]
    named = build_labelled(recs, TextTask("t", Path("x.csv"), labels=("neg", "pos")))
    assert named == LabelledSet(("a", "b", "c", "d"), (1, 0, 1, 0), ("neg", "pos"))
    found = build_labelled([{"s": "a", "y": "pos"}, {"s": "b", "y": "neg"},
                            {"s": "c", "y": "mid"}],
                           TextTask("t", Path("x.csv"), text_field="s", label_field="y"))
    assert found.labels == (2, 1, 0) and found.label_names == ("mid", "neg", "pos")
    ints = build_labelled([{"text": "a", "label": "2"}, {"text": "b", "label": 0}],
                          TextTask("t", Path("x.csv")))
    assert ints.labels == (2, 0) and ints.label_names == ("0", "1", "2")
    head = build_labelled([{"text": "a", "label": 1.0}], TextTask("t", Path("x.csv")),
                          num_labels=4)
    assert head.labels == (1,) and len(head.label_names) == 4


@pytest.mark.parametrize("records, task_kw, num_labels, match", [
    ([{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}], {"labels": ("neg", "pos")},
     None, r"record 2 of x\.csv: unknown label 'meh'; allowed: \['neg', 'pos'\]"),
    ([{"text": "a", "label": 2}], {"labels": ("neg", "pos")}, None, "unknown label 2"),
    ([{"text": "a", "label": 0}, {"text": "b", "label": 3}], {}, 2,
     r"record 2 of x\.csv: label 3 is out of range; allowed: class ids 0\.\.1"),
    ([{"text": "a", "label": -1}], {}, None, "label -1 is out of range"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": "z"}],
     {}, 2, "3 labels .* head has 2 classes"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": 1}], {}, None,
     "record 2 .* is a class id but other records use label names"),
    ([{"text": "a", "label": 0}, {"label": 1}], {}, None,
     r"record 2 of x\.csv: no text: field 'text' is missing"),
    ([{"text": "a"}], {}, None, "record 1 of x.csv: no label: field 'label' is missing"),
    ([{"text": "a", "label": True}], {}, None, "no label"),
])
def test_build_labelled_errors(records: Any, task_kw: Any, num_labels: int | None,
                               match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_labelled(records, TextTask("t", Path("x.csv"), **task_kw), num_labels)


def test_classification_accuracy_with_known_answers(tok: Any) -> None:
    data = LabelledSet(("the cat sat", "a dog ran", "the mat", "hello world", "the dog"),
                       (1, 0, 1, 0, 0), ("other", "the"))
    the = tok.convert_tokens_to_ids("the")
    seen: list[dict[str, torch.Tensor]] = []

    def logits_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(batch)
        has_the = (batch["input_ids"] == the).any(dim=1).float()
        return torch.stack([1 - has_the, has_the], dim=1)  # predicts "the" iff it occurs

    acc = classification_accuracy(logits_fn, tok, data, batch_size=2, max_length=3,
                                  device=CPU)
    assert acc == pytest.approx(4 / 5)  # "the dog" is labelled 0
    assert len(seen) == 3 and {"input_ids", "attention_mask"} <= set(seen[0])
    assert seen[0]["input_ids"].shape[1] <= 3 and seen[-1]["input_ids"].shape[0] == 1
    # Truncation to 2 tokens keeps only BOS and the first word.
    assert classification_accuracy(logits_fn, tok, data, batch_size=8, max_length=2,
                                   device=CPU) == pytest.approx(4 / 5)
    assert math.isnan(classification_accuracy(lambda b: torch.full((len(b["input_ids"]), 2),
                                                                   math.nan),
                                               tok, data, batch_size=2, max_length=8,
                                               device=CPU))


def test_labelled_file_to_accuracy(tmp_path: Path, tok: Any) -> None:
    path = write(tmp_path, "s.csv", "sentence,y\nthe cat,pos\na dog,neg\nthe mat,neg\n")
    (task,) = parse_tasks([{"name": "s", "data": str(path), "text_field": "sentence",
                            "label_field": "y", "labels": ["neg", "pos"]}],
                          kind="classification")
    data = build_labelled(read_records(task), task, num_labels=2)
    the = tok.convert_tokens_to_ids("the")
    acc = classification_accuracy(
        lambda b: torch.nn.functional.one_hot((b["input_ids"] == the).any(1).long(), 2).float(),
        tok, data, batch_size=2, max_length=16, device=CPU)
    assert acc == pytest.approx(2 / 3)


# -- runtime ------------------------------------------------------------------------------------
def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "gpu0", ""):
        with pytest.raises(ConfigError, match=r"unknown device .*; use auto, cpu, cuda, "
                                              r"cuda:<index> or mps"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match="CUDA is not available here; use device: "
                                                  "cpu, or device: auto"):
                resolve_device(name)
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_resolve_dtype_and_names() -> None:
    assert DTYPES == ("auto", "float32", "bfloat16", "float16")
    assert resolve_dtype("auto", torch.bfloat16) is torch.bfloat16
    assert resolve_dtype("auto", torch.float32) is torch.float32
    assert resolve_dtype("float16", torch.bfloat16) is torch.float16
    assert resolve_dtype("bfloat16", torch.float32) is torch.bfloat16
    assert resolve_dtype("float32", torch.float16) is torch.float32
    with pytest.raises(ConfigError, match="unknown dtype 'int8'; available: auto, float32, "
                                          "bfloat16, float16"):
        resolve_dtype("int8", torch.float32)
    assert [dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == \
        ["float32", "bfloat16", "float16"]


def test_modules_import_without_torch() -> None:
    code = ("import sys, mapframe_llm.data, mapframe_llm.runtime; "
            "sys.exit(int('torch' in sys.modules or 'transformers' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
