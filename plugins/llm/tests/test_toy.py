"""The toy models and data of :mod:`mapframe_llm.toy`: deterministic corpora, a working BPE
tokenizer, sharded Hugging Face directories, and fine-tunes that really specialise.

References are computed independently of the toy's own bookkeeping where it matters: the
saved directories are reloaded with transformers/PEFT and scored again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mapframe_llm import toy

from mapframe.errors import ConfigError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


# --- corpora --------------------------------------------------------------------------------


def _vocab(texts: list[str]) -> set[str]:
    return {w for t in texts for w in t.split()}


def test_corpora_are_deterministic_and_seeded() -> None:
    assert set(toy.CORPORA) >= {"lang_a", "lang_b", "arith"}
    for name in toy.CORPORA:
        a = toy.corpus(name, 20, seed=3)
        assert a == toy.corpus(name, 20, seed=3)
        assert toy.corpus(name, 5, seed=3) == a[:5]  # a prefix does not depend on n
        assert a != toy.corpus(name, 20, seed=4)
        assert all(t and "\n" not in t and t.endswith(" .") for t in a)
    with pytest.raises(ConfigError, match="unknown toy corpus 'klingon'"):
        toy.corpus("klingon", 3)


def test_corpora_are_distinct_languages() -> None:
    a, b, c = (_vocab(toy.corpus(n, 200, seed=0)) for n in ("lang_a", "lang_b", "arith"))
    # The two languages share nouns only; their grammar words and verbs are their own.
    shared = a & b
    assert shared <= set(toy._NOUNS) | {"."}
    assert len(a - b) >= 20 and len(b - a) >= 20
    assert {"wa", "o"} <= b and not {"wa", "o"} & a
    assert {"la", "lo"} <= a and not {"la", "lo"} & b
    assert not (c - {"."}) & (a | b)
    # Word order: lang_b puts its verb last, lang_a between subject and object.
    for sent in toy.corpus("lang_b", 30, seed=1)[0].split(" . "):
        assert sent.rstrip(" .").split()[-1].endswith("masu")
    verbs_a = set(toy._A_VERB)
    for sent in toy.corpus("lang_a", 30, seed=1)[0].split(" . "):
        words = sent.rstrip(" .").split()
        assert words[-1] not in verbs_a and any(w in verbs_a for w in words[2:4])


def test_arithmetic_statements_are_true() -> None:
    ops = {"plus": lambda x, y: x + y, "minus": lambda x, y: x - y,
           "times": lambda x, y: x * y}
    n = 0
    for doc in toy.corpus("arith", 30, seed=0):
        for m in re.finditer(r"(\d+) (plus|minus|times) (\d+) equals (\d+) \.", doc):
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert ops[op](a, b) == c and c >= 0
            n += 1
    assert n >= 90


def test_train_and_test_splits_are_disjoint() -> None:
    for name in toy.CORPORA:
        train, test = toy.split_corpus(name, 300, 50, seed=0)
        assert len(train) == 300 and 45 <= len(test) <= 50
        assert not set(train) & set(test)
        assert (train, test) == toy.split_corpus(name, 300, 50, seed=0)


def test_text_and_jsonl_files_hold_the_same_documents(tmp_path: Path,
                                                      llm_helpers: Any) -> None:
    docs = toy.corpus("lang_a", 7, seed=0)
    txt = toy.write_text_documents(tmp_path / "a.txt", docs)
    jl = toy.write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in docs])
    assert llm_helpers.read_texts(txt) == docs == llm_helpers.read_texts(jl)
    assert txt.read_text().count("\n\n") == len(docs) - 1
    assert [r["text"] for r in toy.read_jsonl(jl)] == docs
    with pytest.raises(ValueError, match="blank line"):
        toy.write_text_documents(tmp_path / "b.txt", ["one\n\ntwo"])


# --- tokenizer and configs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [t for n in toy.CORPORA for t in toy.corpus(n, 150, seed=0)]
    path = tmp_path_factory.mktemp("tok")
    toy.train_tokenizer(texts, vocab_size=400, path=path)
    return path


def test_tokenizer_round_trip_and_special_tokens(tokenizer_dir: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == toy.SPECIAL_TOKENS
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 400
    for name in toy.CORPORA:
        text = toy.corpus(name, 1, seed=9)[0]
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert tok.eos_token_id not in ids  # like Llama: <s> prepended, nothing appended
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert len(ids) < len(text) / 2  # BPE merged the languages' words
        assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
    # special tokens written in text stay single tokens
    ids = tok("la neko</s>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.eos_token_id
    batch = tok(["la neko", "la neko bela vidat lo taru"], padding=True)
    assert batch["input_ids"][0][-1] == tok.pad_token_id and batch["attention_mask"][0][-1] == 0


def test_tokenizer_chat_template(tokenizer_dir: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    msgs = [{"role": "user", "content": "7 plus 5"}, {"role": "assistant", "content": "12"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<s>user: 7 plus 5</s>\n<s>assistant: 12</s>\n"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>user: 7 plus 5</s>\n<s>assistant: "
    assert text.startswith(prompt[: -len("<s>assistant: ")])


def test_tiny_configs() -> None:
    llama = toy.tiny_config("llama", 500)
    assert (llama.model_type, llama.hidden_size, llama.num_hidden_layers) == ("llama", 64, 2)
    assert (llama.num_attention_heads, llama.num_key_value_heads) == (4, 2)
    assert (llama.pad_token_id, llama.bos_token_id, llama.eos_token_id) == (0, 1, 2)
    gpt2 = toy.tiny_config("gpt2", 500)
    assert (gpt2.model_type, gpt2.n_embd, gpt2.n_layer, gpt2.n_head) == ("gpt2", 64, 2, 4)
    assert gpt2.n_positions == 128 and gpt2.tie_word_embeddings
    with pytest.raises(ConfigError, match="unknown toy architecture 'bert'"):
        toy.tiny_config("bert", 500)


def test_finetune_copies_the_base(tokenizer_dir: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(toy.tiny_config("llama", len(tok)))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = toy.finetune_lm(base, tok, toy.corpus("lang_a", 20, seed=0), steps=2, lr=1e-3)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in tuned.state_dict().items())


# --- sharded directories ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["lm_files", "gpt2_files"])
def test_model_directories_are_sharded(fixture: str, request: pytest.FixtureRequest,
                                       llm_helpers: Any) -> None:
    files = request.getfixturevalue(fixture)
    for folder in [files.base, *files.finetuned.values()]:
        d = Path(folder)
        shards = sorted(d.glob("model-*-of-*.safetensors"))
        assert len(shards) >= 3 and not (d / "model.safetensors").exists()
        index = json.loads((d / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"].values()) == {s.name for s in shards}
        assert (d / "tokenizer.json").is_file() and (d / "config.json").is_file()
        config = json.loads((d / "config.json").read_text())
        assert config["model_type"] == files.arch and config["pad_token_id"] == 0
        state = llm_helpers.load_state(d)
        assert set(state) == set(index["weight_map"])
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
        model = transformers.AutoModelForCausalLM.from_pretrained(str(d))
        expected = set(model.state_dict())
        if files.arch == "gpt2":  # tied output layer: stored once
            expected.discard("lm_head.weight")
        assert set(state) == expected


def test_save_sharded_bfloat16_and_too_few_shards(tmp_path: Path, tokenizer_dir: Path,
                                                   llm_helpers: Any) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = transformers.AutoModelForCausalLM.from_config(toy.tiny_config("llama", len(tok)))
    out = toy.save_sharded(model, tok, tmp_path / "bf16", dtype="bfloat16")
    state = llm_helpers.load_state(out)
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert next(model.parameters()).dtype == torch.float32  # the caller's model unchanged
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert transformers.AutoTokenizer.from_pretrained(str(out)).bos_token == "<s>"
    with pytest.raises(RuntimeError, match="expected >= 2 safetensors shards"):
        toy.save_sharded(model, None, tmp_path / "one", max_shard_size="1GB")


def test_bfloat16_fixture_is_the_float32_one_rounded(lm_files: Any, lm_bf16_files: Any,
                                                     llm_helpers: Any) -> None:
    for a, b in [(lm_files.base, lm_bf16_files.base),
                 *((lm_files.finetuned[t], lm_bf16_files.finetuned[t]) for t in lm_files.tasks)]:
        s32, s16 = llm_helpers.load_state(a), llm_helpers.load_state(b)
        assert set(s32) == set(s16) and len(list(Path(b).glob("model-*.safetensors"))) >= 2
        for k, v in s32.items():
            assert s16[k].dtype == torch.bfloat16
            assert torch.equal(v.to(torch.bfloat16), s16[k])


# --- fine-tunes really specialise -----------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["lm_files", "gpt2_files"])
def test_finetune_lowers_in_domain_loss_more_than_out_of_domain(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    files = request.getfixturevalue(fixture)
    base = files.losses["base"]
    for task in files.tasks:
        own = files.losses[task][task] - base[task]
        assert own < -0.04, (task, files.losses)
        for other in files.tasks:
            if other != task:
                assert files.losses[task][other] - base[other] > own
                # and on `task`, its own fine-tune beats the other fine-tune
                assert files.losses[task][task] < files.losses[other][task]
    # task vectors stay small next to the weights
    assert all(0.01 < r < 0.3 for r in files.task_vector_ratio.values())


def test_reported_losses_are_those_of_the_saved_models(lm_files: Any) -> None:
    for name in ("base", *lm_files.tasks):
        model = lm_files.model(name)
        for task in lm_files.tasks:
            assert lm_files.loss(model, task) == pytest.approx(lm_files.losses[name][task],
                                                               rel=1e-5)
    # the reference merge reproduces the corners
    merged = lm_files.merged_model([1.0, 0.0])
    assert lm_files.loss(merged, "lang_a") == pytest.approx(lm_files.losses["lang_a"]["lang_a"],
                                                            rel=1e-5)


@pytest.mark.parametrize("fixture", ["lm_files", "gpt2_files"])
def test_lora_adapters_are_real_peft_fine_tunes(fixture: str, request: pytest.FixtureRequest,
                                                llm_helpers: Any) -> None:
    from safetensors.torch import load_file

    files = request.getfixturevalue(fixture)
    assert set(files.lora) == set(files.tasks)
    for task, folder in files.lora.items():
        d = Path(folder)
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
        assert Path(cfg["base_model_name_or_path"]) == Path(files.base)
        expected = {"c_attn"} if files.arch == "gpt2" else {"q_proj", "v_proj"}
        assert set(cfg["target_modules"]) == expected
        weights = load_file(str(d / "adapter_model.safetensors"))
        assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
        assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
        # the adapter specialises (less than the full fine-tune: it adapts attention only)
        lora, base = files.lora_losses[task], files.losses["base"]
        assert lora[task] < base[task] - 0.005
        assert all(lora[task] - base[task] < lora[o] - base[o] for o in files.tasks if o != task)
        model = llm_helpers.load_causal_lm(files.base, peft_adapter=folder)
        assert files.loss(model, task) == pytest.approx(lora[task], rel=1e-4)


def test_data_files_of_the_fixture(lm_files: Any, llm_helpers: Any) -> None:
    assert Path(lm_files.data["lang_a"]).suffix == ".txt"
    assert Path(lm_files.data["lang_b"]).suffix == ".jsonl"
    for task in lm_files.tasks:
        txt = llm_helpers.read_texts(lm_files.data_txt[task])
        assert txt == llm_helpers.read_texts(lm_files.data_jsonl[task]) and len(txt) >= 50
        train = llm_helpers.read_texts(lm_files.train_data[task])
        assert not set(train) & set(txt)


# --- text classification -------------------------------------------------------------------------


def test_classification_data_is_balanced_disjoint_and_deterministic() -> None:
    for task, names in toy.CLS_TASKS.items():
        x, y, labels = toy.classification_data(task, "train")
        assert labels == list(names) and len(x) == 480
        counts = {n: y.count(n) for n in names}
        assert max(counts.values()) - min(counts.values()) <= 1
        xt, yt, _ = toy.classification_data(task, "test")
        assert len(xt) == 200 and not set(x) & set(xt)
        assert len(set(xt)) > 100
        assert (xt, yt) == toy.classification_data(task, "test")[:2]
    with pytest.raises(ConfigError, match="unknown toy classification task"):
        toy.classification_data("spam", "train")


def _news_labels(clause: str) -> tuple[str, str]:
    """(topic, polarity) of the one action in a clause of a news sentence."""
    found = [key for key, acts in toy._NEWS_ACTIONS.items() for a in acts
             if re.search(rf"\b{re.escape(a)}\b", clause)]
    assert len(found) == 1, (clause, found)
    return found[0]


def test_sentiment_and_topic_read_conflicting_cues_of_the_same_sentences() -> None:
    """Both tasks label the same kind of sentence; in the contrast ones ("A , but B") the
    topic is A's and the sentiment B's, which disagree with B's topic and A's polarity."""
    contrast_share = {}
    for task in ("sentiment", "topic"):
        x, y, _ = toy.classification_data(task, "train")
        seen = set()
        n_contrast = 0
        for text, label in zip(x, y):
            parts = text.split(" , but ")
            first, last = _news_labels(parts[0]), _news_labels(parts[-1])
            seen.add(first)
            if len(parts) == 2:
                n_contrast += 1
                assert first[0] != last[0] and first[1] != last[1], text
            assert label == (last[1] if task == "sentiment" else first[0]), (text, label)
        # every (topic, polarity) occurs in each task: the other label varies freely
        assert seen == set(toy._NEWS_ACTIONS)
        contrast_share[task] = n_contrast / len(x)
    assert all(0.08 < v < 0.22 for v in contrast_share.values()), contrast_share


def test_classifier_fine_tunes_specialise_and_beat_the_base(cls_files: Any) -> None:
    acc = cls_files.accuracy
    for task in cls_files.tasks:
        chance = 1.0 / len(cls_files.labels[task])
        assert acc[task][task] >= 0.9 > chance + 0.3
        # the pretrained encoder with the task's own head is far behind the fine-tune ...
        assert acc[task][task] > acc["base"][task] + 0.25, acc
        # ... and so is the other task's fine-tuned encoder: the tasks compete
        for other in cls_files.tasks:
            if other != task:
                assert acc[other][task] < acc[task][task] - 0.3, acc
        d = Path(cls_files.finetuned[task])
        assert len(list(d.glob("model-*-of-*.safetensors"))) >= 2
        assert (d / "model.safetensors.index.json").is_file()
        config = json.loads((d / "config.json").read_text())
        assert config["id2label"] == {str(i): n for i, n in enumerate(cls_files.labels[task])}
        assert config["label2id"] == {n: i for i, n in enumerate(cls_files.labels[task])}
        rows = [json.loads(line) for line in Path(cls_files.data[task]).read_text().splitlines()]
        assert {r["label"] for r in rows} == set(cls_files.labels[task])
    # the pretrained encoder is the real MiniLM: its keys carry no "bert." prefix
    assert Path(cls_files.pretrained, "model.safetensors").is_file()
    # the corner accuracies are those of reloaded models
    t0, t1 = cls_files.tasks
    model = cls_files.merged_classifier([1.0, 0.0], t1)
    assert cls_files.accuracy_of(model, t1) == pytest.approx(cls_files.accuracy[t0][t1],
                                                             abs=0.01)


def test_classifier_merges_trade_one_task_for_the_other(cls_files: Any,
                                                        llm_helpers: Any) -> None:
    """Task arithmetic of the two fine-tunes (reference merge, each task's own head): leaning
    to one task costs the other, and adding both whole task vectors interferes."""
    tasks = cls_files.tasks
    fts = [cls_files.finetuned[t] for t in tasks]

    def accuracies(coefficients: list[float]) -> list[float]:
        state = llm_helpers.reference_merge(cls_files.pretrained, fts, coefficients,
                                            base_prefix="bert.")
        return [cls_files.accuracy_of(llm_helpers.load_classifier(cls_files.finetuned[t], state),
                                      t) for t in tasks]

    first, second, both = accuracies([1.0, 0.5]), accuracies([0.5, 1.0]), accuracies([1.0, 1.0])
    assert first[0] > second[0] + 0.1 and second[1] > first[1] + 0.1, (first, second)
    own = [cls_files.accuracy[t][t] for t in tasks]
    assert all(b < o for b, o in zip(both, own)) and sum(own) - sum(both) > 0.1, (both, own)
