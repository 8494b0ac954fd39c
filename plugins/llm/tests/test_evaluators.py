"""The ``causal_lm`` and ``text_classification`` evaluators on real (tiny) fine-tunes.

The checkpoints are conftest's session fixtures, built by :mod:`mapframe_llm.toy`: a BPE
tokenizer and tiny Llama trained on generated corpora, fine-tuned per corpus and saved
sharded (plus LoRA adapters); and the real all-MiniLM-L6-v2 encoder fine-tuned per
generated classification task.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mapframe_llm.causal import CausalLMEvaluator
from mapframe_llm.classify import TextClassificationEvaluator
from mapframe_llm.data import build_lm_examples, causal_lm_nll, lm_batches, read_records

from mapframe import MergeStudy
from mapframe.errors import CheckpointError, ConfigError
from mapframe.executors.base import MergeSpec
from mapframe.merging.task_arithmetic import TaskArithmetic

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def setup(ev: Any, pretrained: str, finetuned: dict[str, str]) -> Any:
    """Set ``ev`` up the way a study does (MergeSpec -> merger -> setup)."""
    spec = MergeSpec(TaskArithmetic(), pretrained, finetuned, loader=ev.load_task_vectors)
    ev.setup(spec.build())
    return ev


def reference_loss(model_dir: str, data: str, tokenizer_dir: str, peft_dir: str | None = None,
                   max_length: int = 128) -> float:
    """The loss of one model computed independently of the evaluator: loaded with
    transformers (and PEFT), scored with the same data functions."""
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if peft_dir is not None:
        model = peft.PeftModel.from_pretrained(model, peft_dir).merge_and_unload()
    model.eval()
    from mapframe_llm.data import TextTask

    task = TextTask("t", Path(data))
    ex = build_lm_examples(read_records(task), tok, task=task, max_length=max_length)
    total, n = causal_lm_nll(model, lm_batches(ex, 8, tok.pad_token_id), torch.device("cpu"))
    return total / n


@pytest.fixture(scope="module")
def lm(lm_files: Any) -> dict[str, Any]:
    """conftest's session-wide tiny Llama (base, full fine-tunes, LoRA adapters, data)."""
    return dataclasses.asdict(lm_files)


def lm_tasks(lm: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": t, "data": p} for t, p in lm["data"].items()]


def test_unit_coefficients_give_each_models_own_loss(lm: dict[str, Any]) -> None:
    ev = setup(CausalLMEvaluator(lm_tasks(lm), max_length=128, device="cpu"),
               lm["base"], lm["finetuned"])
    names = list(lm["finetuned"])
    Y = ev.evaluate(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    for j, task in enumerate(names):
        data = lm["data"][task]
        np.testing.assert_allclose(Y[0, j], reference_loss(lm["base"], data, lm["base"]),
                                   rtol=1e-5)
        for i, ft in enumerate(names):
            np.testing.assert_allclose(
                Y[1 + i, j], reference_loss(lm["finetuned"][ft], data, lm["base"]), rtol=1e-5)
        # Fine-tuning on a task lowers its loss below the base's and the other fine-tune's.
        assert Y[1 + j, j] < Y[0, j]
        assert Y[1 + j, j] < Y[2 - j, j]
    assert ev.timings["merges"] == 3 and ev.scored_tokens[names[0]] > 100
    # evaluate_tasks scores only the asked columns, on the same merge.
    np.testing.assert_allclose(ev.evaluate_tasks(np.array([[1.0, 0.0]]), [1]), Y[1:2, 1:2],
                               rtol=1e-6)
    ev.close()


def test_perplexity_and_ram_storage_agree_with_loss(lm: dict[str, Any]) -> None:
    c = np.array([[0.4, 0.7]])
    loss = setup(CausalLMEvaluator(lm_tasks(lm), device="cpu"), lm["base"],
                 lm["finetuned"]).evaluate(c)
    ppl = setup(CausalLMEvaluator(lm_tasks(lm), metric="perplexity", storage="ram",
                                  device="cpu"), lm["base"], lm["finetuned"]).evaluate(c)
    np.testing.assert_allclose(ppl, np.exp(loss), rtol=1e-6)


def test_lora_adapter_task_matches_pefts_merged_model(lm: dict[str, Any]) -> None:
    adapter = lm["lora"]["lang_b"]
    ev = setup(CausalLMEvaluator(lm_tasks(lm), device="cpu"), lm["base"],
               {"lang_a": lm["finetuned"]["lang_a"], "lang_b": adapter})
    y = ev.evaluate(np.array([[0.0, 1.0]]))[0]
    for j, task in enumerate(lm["data"]):
        expect = reference_loss(lm["base"], lm["data"][task], lm["base"], peft_dir=adapter)
        np.testing.assert_allclose(y[j], expect, rtol=1e-5)


def test_user_scorer_sees_the_merged_model(lm: dict[str, Any]) -> None:
    seen: list[float] = []

    def scorer(model: Any, tokenizer: Any, records: list[dict[str, object]],
               device: torch.device) -> float:
        # Greedy generation from the merged model: the fraction of prompts it extends.
        prompt = tokenizer(str(records[0]["text"])[:20], return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        seen.append(float(model.get_input_embeddings().weight.double().sum()))
        return float(out.shape[1] > prompt["input_ids"].shape[1])

    tasks = [{"name": "lang_a", "data": lm["data"]["lang_a"], "scorer": scorer,
              "direction": "max", "range": [0, 1]},
             {"name": "lang_b", "data": lm["data"]["lang_b"]}]
    ev = setup(CausalLMEvaluator(tasks, device="cpu"), lm["base"], lm["finetuned"])
    assert [t.direction for t in ev.tasks] == ["max", "min"]
    Y = ev.evaluate(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert Y[:, 0].tolist() == [1.0, 1.0]
    ft = [transformers.AutoModelForCausalLM.from_pretrained(lm["finetuned"][t])
          for t in ("lang_a", "lang_b")]
    for s, m in zip(seen, ft):
        assert math.isclose(s, float(m.get_input_embeddings().weight.double().sum()),
                            rel_tol=1e-9)


def test_study_resumes_from_its_store_without_redoing(lm: dict[str, Any], tmp_path: Path
                                                      ) -> None:
    db = tmp_path / "s.sqlite"

    def study() -> MergeStudy:
        return MergeStudy(evaluator=CausalLMEvaluator(lm_tasks(lm), device="cpu"),
                          checkpoints={"pretrained": lm["base"], "finetuned": lm["finetuned"]},
                          budget=6, seed=0, storage=db)

    first = study().run()
    # How the shards are read and on how many threads changes speed, not results: the study
    # resumes across them.
    ev = CausalLMEvaluator(lm_tasks(lm), device="cpu", reader="mmap", merge_threads=2)
    again = MergeStudy(evaluator=ev, budget=6, seed=0, storage=db,
                       checkpoints={"pretrained": lm["base"], "finetuned": lm["finetuned"]}).run()
    np.testing.assert_array_equal(first.history.Y, again.history.Y)
    assert ev.timings["merges"] == 0  # every evaluation came from the store


def test_bad_evaluation_data_is_caught_before_any_merge(lm: dict[str, Any],
                                                        tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(ConfigError, match="holds no text"):
        setup(CausalLMEvaluator([{"name": "lang_a", "data": str(empty)},
                                 {"name": "lang_b", "data": lm["data"]["lang_b"]}],
                                device="cpu"), lm["base"], lm["finetuned"])
    with pytest.raises(ConfigError, match="metric must be one of loss, perplexity"):
        CausalLMEvaluator(lm_tasks(lm), metric="accuracy")
    with pytest.raises(ConfigError, match="storage must be disk"):
        CausalLMEvaluator(lm_tasks(lm), storage="gpu")
    with pytest.raises(ConfigError, match=r"reader must be pread .* or mmap"):
        CausalLMEvaluator(lm_tasks(lm), reader="direct")
    with pytest.raises(ConfigError, match="merge_threads must be a positive integer or null"):
        CausalLMEvaluator(lm_tasks(lm), merge_threads=0)
    with pytest.raises(ConfigError, match="scorer must be 'module:function'"):
        CausalLMEvaluator([{"name": "a", "data": lm["data"]["lang_a"], "scorer": "nope"}])


# -- text classification -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cls(cls_files: Any) -> dict[str, Any]:
    """conftest's session-wide MiniLM fine-tunes (checkpoints, test files, accuracies)."""
    return dataclasses.asdict(cls_files)


def test_classification_heads_stay_per_task_on_one_merged_encoder(cls: dict[str, Any]) -> None:
    tasks = [{"name": t, "data": p} for t, p in cls["data"].items()]
    ev = setup(TextClassificationEvaluator(tasks, device="cpu"), cls["pretrained"],
               cls["finetuned"])
    names = list(cls["finetuned"])
    # The merge covers the encoder only; every head is attached to the one resident encoder.
    assert not any(k.startswith("classifier") for k in ev._params)
    encoders = {id(getattr(m, m.base_model_prefix)) for m in ev._heads.values()}
    assert encoders == {id(ev._model)}
    Y = ev.evaluate(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    for j, t in enumerate(names):
        # Corners: the accuracies measured while fine-tuning (same encoder, same head).
        assert abs(Y[0, j] - cls["accuracy"]["base"][t]) <= 0.01
        for i, s in enumerate(names):
            assert abs(Y[1 + i, j] - cls["accuracy"][s][t]) <= 0.01
        assert Y[1 + j, j] > 0.8  # a real fine-tune on its own task


def test_classification_task_must_name_a_checkpoint(cls: dict[str, Any]) -> None:
    t = next(iter(cls["data"]))
    with pytest.raises(ConfigError, match="no fine-tuned checkpoint is named 'other'"):
        setup(TextClassificationEvaluator([{"name": "other", "data": cls["data"][t]}],
                                          device="cpu"), cls["pretrained"], cls["finetuned"])
    with pytest.raises(CheckpointError, match="tensors the pretrained checkpoint lacks"):
        # causal_lm does not accept fine-tunes that carry heads.
        setup(CausalLMEvaluator([{"name": t, "data": cls["data"][t]}], device="cpu"),
              cls["pretrained"], cls["finetuned"])
