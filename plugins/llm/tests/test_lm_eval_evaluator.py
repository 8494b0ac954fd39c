"""The ``lm_eval`` evaluator (lm-evaluation-harness) on conftest's tiny Llama, offline.

Two local lm-eval tasks over JSONL files written here: ``toy_mc``, a 3-way multiple choice
(which sentence continues a ``lang_a`` document; ``acc``/``acc_norm``, higher is better),
and ``toy_ppl``, the rolling log-likelihood of ``lang_b`` documents (``word_perplexity``...,
lower is better). Scores are checked against lm-eval itself run the usual way
(``simple_evaluate(model="hf")``) on the merged model exported to disk.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mapframe.errors import ConfigError
from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import MergeSpec
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.testing import EvaluatorContract

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from mapframe_llm.harness import LMEvalHarnessEvaluator  # noqa: E402

#: Documents scored per task: enough for distinct scores per merge, few enough to be fast.
LIMIT = 8


def _documents(path: str) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines()
            if line.strip()]


def _sentences(doc: str) -> list[str]:
    return [s.strip() + " ." for s in doc.split(" .") if s.strip()]


def _mc_rows(a_docs: list[str], b_docs: list[str], start: int, n: int) -> list[dict[str, Any]]:
    """Context: a ``lang_a`` document's first sentence; choices: its second sentence, a
    ``lang_b`` sentence and another ``lang_a`` document's second sentence (rotated)."""
    rows = []
    for i in range(start, start + n):
        own, other = _sentences(a_docs[i]), _sentences(a_docs[(i + 1) % len(a_docs)])
        choices = [own[1], _sentences(b_docs[i])[0], other[1]]
        k = i % 3
        choices = choices[k:] + choices[:k]
        rows.append({"context": own[0], "choices": choices, "label": choices.index(own[1])})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def harness(lm_files: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of lm-eval task YAMLs (``toy_mc``, ``toy_ppl`` and a group of both) over
    local JSONL files; the datasets cache lives beside them (nothing in ``~/.cache``)."""
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    a = [d for d in _documents(lm_files.data_jsonl["lang_a"]) if len(_sentences(d)) >= 2]
    b = _documents(lm_files.data_jsonl["lang_b"])
    test = _write_jsonl(root / "mc_test.jsonl", _mc_rows(a, b, 0, 24))
    train = _write_jsonl(root / "mc_train.jsonl", _mc_rows(a, b, 24, 8))
    cache = str(root / "hf-datasets")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy_mc.yaml").write_text(yaml.safe_dump({
        "task": "toy_mc", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": train, "test": test}, "cache_dir": cache},
        "training_split": "train", "test_split": "test", "fewshot_split": "train",
        "output_type": "multiple_choice", "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean",
                         "higher_is_better": True}]}, sort_keys=False))
    (tasks / "toy_ppl.yaml").write_text(yaml.safe_dump({
        "task": "toy_ppl", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": lm_files.data_jsonl["lang_b"]},
                           "cache_dir": cache},
        "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": m, "aggregation": agg, "higher_is_better": False}
                        for m, agg in (("word_perplexity", "weighted_perplexity"),
                                       ("byte_perplexity", "weighted_perplexity"),
                                       ("bits_per_byte", "bits_per_byte"))]},
        sort_keys=False))
    (tasks / "toy_group.yaml").write_text(yaml.safe_dump(
        {"group": "toy_group", "task": ["toy_mc", "toy_ppl"]}))
    return {"tasks": str(tasks), "files": lm_files, "root": root}


def _evaluator(h: dict[str, Any], tasks: list[Any] | None = None,
               **kw: Any) -> LMEvalHarnessEvaluator:
    default: list[Any] = [{"task": "toy_mc", "metric": "acc_norm"}, "toy_ppl"]
    args: dict[str, Any] = {"include_path": h["tasks"], "limit": LIMIT, "batch_size": 8,
                            "device": "cpu", "dtype": "float32", **kw}
    return LMEvalHarnessEvaluator(tasks if tasks is not None else default, **args)


def _setup(ev: LMEvalHarnessEvaluator, files: Any) -> LMEvalHarnessEvaluator:
    spec = MergeSpec(TaskArithmetic(), files.base, dict(files.finetuned),
                     loader=ev.load_task_vectors)
    ev.setup(spec.build())
    return ev


def test_scores_equal_lm_eval_run_directly_on_the_exported_merge(
        harness: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.models import huggingface
    from lm_eval.tasks import TaskManager

    built: list[Any] = []

    class CountingHFLM(huggingface.HFLM):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(kwargs.get("pretrained"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(huggingface, "HFLM", CountingHFLM)
    # A few-shot example per prompt: the same one for every merge only if the few-shot
    # sampler is re-seeded before each evaluation, as simple_evaluate does.
    ev = _evaluator(harness, [{"task": "toy_mc", "metric": "acc_norm"},
                              {"task": "toy_mc", "metric": "acc", "name": "toy_mc_acc"},
                              "toy_ppl"], num_fewshot=1)
    assert [(t.name, t.direction, t.lower, t.upper) for t in ev.tasks] == [
        ("toy_mc", "max", 0.0, 1.0), ("toy_mc_acc", "max", 0.0, 1.0),
        ("toy_ppl", "min", 1.0, math.inf)]
    assert ev.metric_keys == {"toy_mc": "toy_mc: acc_norm,none", "toy_mc_acc": "toy_mc: acc,none",
                              "toy_ppl": "toy_ppl: word_perplexity,none"}
    _setup(ev, harness["files"])
    try:
        C = np.array([[1.0, 0.0], [0.3, 0.8]])
        t0 = time.perf_counter()
        ours = ev.evaluate(C)
        seconds = (time.perf_counter() - t0) / len(C)
        again = ev.evaluate(C[::-1])[::-1]  # the same prompts and scores in any order
        # the wrapped model is the resident one, wrapped once for all four merges
        assert len(built) == 1 and built[0] is ev.resident_model
        assert ev.timings["merges"] == 4
        np.testing.assert_array_equal(ours, again)
        manager = TaskManager(include_path=harness["tasks"], include_defaults=False)
        for c, row in zip(C, ours):
            folder = ev.merger.export(tmp_path / f"merged-{c[0]}-{c[1]}", c)
            direct = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": str(folder), "dtype": "float32"},
                device="cpu", batch_size=8, tasks=["toy_mc", "toy_ppl"], num_fewshot=1,
                limit=LIMIT, bootstrap_iters=0, log_samples=False,
                task_manager=manager)["results"]
            expected = [direct["toy_mc"]["acc_norm,none"], direct["toy_mc"]["acc,none"],
                        direct["toy_ppl"]["word_perplexity,none"]]
            assert row.tolist() == expected, (c, seconds)
        assert len(built) == 1  # simple_evaluate built its own HFLM from the folder...
    finally:
        ev.close()
    # ...and the merges really differ: lang_b's perplexity falls as its fine-tune's weight
    # grows.
    assert ours[0, 2] > ours[1, 2] + 0.1


def test_apply_chat_template_matches_lm_eval(harness: dict[str, Any]) -> None:
    from lm_eval.tasks import TaskManager

    ev = _setup(_evaluator(harness, [{"task": "toy_mc", "metric": "acc_norm"}],
                           apply_chat_template=True, system_instruction="Pick one."),
                harness["files"])
    try:
        c = np.array([0.5, 0.5])
        ours = ev.evaluate(c[None])[0, 0]
        ev.merge(c)
        direct = lm_eval.simple_evaluate(
            model=ev.lm, tasks=["toy_mc"], limit=LIMIT, bootstrap_iters=0, log_samples=False,
            apply_chat_template=True, system_instruction="Pick one.",
            task_manager=TaskManager(include_path=harness["tasks"], include_defaults=False))
        assert ours == direct["results"]["toy_mc"]["acc_norm,none"]
        # the prompts lm-eval built are the chat template's, with the system message
        assert ev._lm_tasks is not None
        prompt = ev._lm_tasks["toy_mc"].instances[0].args[0]
        assert "Pick one." in prompt and prompt != ev._lm_tasks["toy_mc"].doc_to_text(
            ev._lm_tasks["toy_mc"].instances[0].doc)
    finally:
        ev.close()


def test_a_pickled_evaluator_rebuilds_its_lm_eval_tasks(harness: dict[str, Any]) -> None:
    """What a distributed executor does: the evaluator travels without lm-eval's objects
    (datasets, the wrapped model) and builds them again in the worker's setup."""
    ev = _evaluator(harness, ["toy_ppl"], limit=4)
    assert ev.tasks[0].direction == "min" and ev._lm_tasks is not None
    clone = pickle.loads(pickle.dumps(ev))
    assert clone._lm_tasks is None and clone.tasks == ev.tasks
    for e in (ev, clone):
        _setup(e, harness["files"])
    try:
        c = np.array([[0.2, 0.6]])
        assert clone.evaluate(c).tolist() == ev.evaluate(c).tolist()
        assert clone._lm_tasks is not None and clone.lm is not ev.lm
    finally:
        ev.close()
        clone.close()


class TestLMEvalContract(EvaluatorContract):
    """mapframe's evaluator contract (batches equal rows, task subsets equal columns...)."""

    @pytest.fixture(autouse=True)
    def _harness(self, harness: dict[str, Any]) -> None:
        self.h, self._spec = harness, None

    h: dict[str, Any]
    _spec: MergeSpec | None = None

    def make_evaluator(self) -> Evaluator:
        return _evaluator(self.h, limit=4)

    def make_merge_spec(self) -> MergeSpec:
        if self._spec is None:
            f = self.h["files"]
            self._spec = MergeSpec(TaskArithmetic(), f.base, dict(f.finetuned),
                                   loader=self.make_evaluator().load_task_vectors)
        return self._spec


def test_study_through_the_cli_finds_a_front(harness: dict[str, Any], tmp_path: Path) -> None:
    """``mapframe run`` on a YAML config naming the evaluator ``lm_eval``."""
    from mapframe.cli import main as mapframe_main

    files = harness["files"]
    out = tmp_path / "study"
    config = {
        "study": {"name": "lm-eval-toy", "budget": 8, "seed": 0, "output": str(out),
                  "verify": 1, "search_bounds": [0.0, 1.0]},
        "evaluator": {"name": "lm_eval", "include_path": harness["tasks"],
                      "tasks": [{"task": "toy_mc", "metric": "acc_norm"}, "toy_ppl"],
                      "limit": 4, "batch_size": 8, "device": "cpu", "dtype": "float32"},
        "checkpoints": {"pretrained": files.base, "finetuned": dict(files.finetuned)},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert mapframe_main(["run", str(path), "-q", "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 8 and summary["n_failed_or_invalid"] == 0
    assert [t["direction"] for t in summary["tasks"]] == ["max", "min"]
    points = json.loads((out / "front.json").read_text())["points"]
    assert points and all(p["predicted_toy_ppl"] >= 1.0 for p in points)


# -- configuration errors: one line each, before any model is loaded ------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tasks": []}, "non-empty list of lm-eval task names"),
    ({"tasks": [{"task": "toy_mc", "metrc": "acc"}]}, r"unknown key\(s\) metrc"),
    ({"tasks": ["toy_mc", {"task": "toy_mc"}]}, "appear more than once"),
    ({"tasks": ["toy_mc"], "limit": 0}, "limit must be a positive whole number"),
    ({"tasks": ["toy_mc"], "limit": 2.5}, "limit must be a positive whole number"),
    ({"tasks": ["toy_mc"], "limit": math.inf}, "limit must be a positive whole number"),
    ({"tasks": ["toy_mc"], "num_fewshot": -1}, "num_fewshot must be a non-negative"),
    ({"tasks": ["toy_mc"], "include_path": "/no/such/folder"}, "is not a folder"),
    ({"tasks": ["toy_mc"], "apply_chat_template": "chatml"}, "apply_chat_template must be"),
    ({"tasks": [{"task": "toy_mc", "direction": "up"}]}, "direction must be max or min"),
    ({"tasks": ["toy_mc"], "max_length": 0}, "max_length must be a positive integer"),
])
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        LMEvalHarnessEvaluator(**kwargs)
    assert "\n" not in str(info.value)


def test_metric_the_task_does_not_produce_lists_those_it_does(harness: dict[str, Any]
                                                                ) -> None:
    ev = _evaluator(harness, [{"task": "toy_ppl", "metric": "acc"}])
    with pytest.raises(ConfigError, match="does not produce metric 'acc'; it produces "
                                          "word_perplexity, byte_perplexity, bits_per_byte"):
        _ = ev.tasks
    ev = _evaluator(harness, [{"task": "toy_mc", "metric": "acc,strict-match"}])
    with pytest.raises(ConfigError, match="has no filter 'strict-match'"):
        _ = ev.tasks
    # a direction that contradicts lm-eval's higher_is_better is refused, not obeyed
    ev = _evaluator(harness, [{"task": "toy_ppl", "direction": "max"}])
    with pytest.raises(ConfigError, match="contradicts lm-eval's higher_is_better: False"):
        _ = ev.tasks


def test_unknown_task_lists_where_lm_eval_looked(harness: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval.tasks

    # lm-eval's ~15k built-in YAMLs take ~10 s to index: record that the evaluator asks for
    # them, then index only include_path.
    asked: list[bool] = []
    real = lm_eval.tasks.TaskManager

    def manager(*, include_path: Any = None, include_defaults: bool = True) -> Any:
        asked.append(include_defaults)
        return real(include_path=include_path, include_defaults=False)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)
    ev = _evaluator(harness, ["toy_mq"])
    with pytest.raises(ConfigError) as info:
        _ = ev.tasks
    msg = str(info.value)
    assert asked == [False, True]  # include_path first, then with lm-eval's own tasks
    assert "lm-eval knows no task, group or tag 'toy_mq'" in msg
    assert str(Path(lm_eval.__file__).parent / "tasks") in msg and harness["tasks"] in msg
    assert "closest: toy_mc" in msg and "include_path" in msg and "\n" not in msg


def test_group_and_missing_yaml_are_config_errors(harness: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="'toy_group' is an lm-eval group or tag of 2 tasks "
                                          r"\(toy_mc, toy_ppl\).*separate entries"):
        _ = _evaluator(harness, ["toy_group"]).tasks
    with pytest.raises(ConfigError, match=r"task YAML /no/such\.yaml not found"):
        _ = _evaluator(harness, ["/no/such.yaml"]).tasks


def test_two_yamls_that_define_one_task_name_are_refused(harness: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """lm-eval keys results by the YAML's ``task:`` name: two sources of one name would
    silently give both objectives the first one's scores."""
    text = (Path(harness["tasks"]) / "toy_ppl.yaml").read_text()
    other = text.replace(harness["files"].data_jsonl["lang_b"],
                         harness["files"].data_jsonl["lang_a"])
    assert other != text
    for folder, body in (("a", text), ("b", other)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "qa.yaml").write_text(body)  # both say task: toy_ppl
    a, b = str(tmp_path / "a" / "qa.yaml"), str(tmp_path / "b" / "qa.yaml")
    for tasks in ([{"task": a, "name": "qa_a"}, {"task": b, "name": "qa_b"}],
                  ["toy_ppl", b]):  # include_path's toy_ppl and a YAML of that name
        with pytest.raises(ConfigError) as info:
            _ = _evaluator(harness, tasks).tasks
        msg = str(info.value)
        assert "both define lm-eval task 'toy_ppl'" in msg and b in msg
        assert "distinct 'task:' names" in msg and "\n" not in msg
    # the same file twice (by include_path name and by path) is one task, not a clash
    same = str(Path(harness["tasks"]) / "toy_ppl.yaml")
    ev = _evaluator(harness, ["toy_ppl", {"task": same, "name": "ppl_again",
                                          "metric": "bits_per_byte"}])
    assert ev.metric_keys == {"toy_ppl": "toy_ppl: word_perplexity,none",
                              "ppl_again": "toy_ppl: bits_per_byte,none"}


def test_an_edited_task_yaml_is_another_setup(harness: dict[str, Any], tmp_path: Path) -> None:
    """The fingerprint holds the task YAMLs' contents (and their includes), not only their
    paths: editing a task's data files must not reuse the scores stored for the old ones."""
    import shutil

    folder = tmp_path / "tasks"
    shutil.copytree(harness["tasks"], folder)
    (folder / "shared.yaml").write_text("doc_to_text: ''\n")
    path = folder / "alone" / "qa.yaml"
    path.parent.mkdir()
    path.write_text((folder / "toy_ppl.yaml").read_text().replace("task: toy_ppl", "task: qa")
                    + "include: ../shared.yaml\n")
    by_name = _evaluator(harness, ["toy_ppl"], include_path=str(folder))
    by_path = _evaluator(harness, [str(path)])
    before = (by_name.describe(), by_path.describe())
    assert before == (by_name.describe(), by_path.describe())  # deterministic
    toy_ppl = folder / "toy_ppl.yaml"
    lang_a = harness["files"].data_jsonl["lang_a"]
    toy_ppl.write_text(toy_ppl.read_text().replace(harness["files"].data_jsonl["lang_b"], lang_a))
    assert by_name.describe() != before[0] and by_path.describe() == before[1]
    (folder / "shared.yaml").write_text("doc_to_text: 'Q: '\n")  # a file qa.yaml includes
    assert by_path.describe() != before[1]


def test_a_tokenizer_of_another_model_is_refused_at_setup(harness: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """A tokenizer with more ids than the model's embedding rows: refused at setup (as
    causal_lm does), not an IndexError at the first evaluation."""
    from transformers import AutoConfig, AutoTokenizer

    files = harness["files"]
    tok = AutoTokenizer.from_pretrained(files.tokenizer)
    rows = AutoConfig.from_pretrained(files.base).vocab_size
    tok.add_tokens([f"extra_token_{i}" for i in range(rows - len(tok) + 3)])
    tok.save_pretrained(tmp_path / "tokenizer")
    ev = _evaluator(harness, ["toy_ppl"], tokenizer=str(tmp_path / "tokenizer"))
    try:
        with pytest.raises(ConfigError) as info:
            _setup(ev, files)
    finally:
        ev.close()
    msg = str(info.value)
    assert f"the tokenizer has token ids up to {rows + 2}, but the model's vocabulary has " \
           f"{rows} entries" in msg and "set tokenizer:" in msg and "\n" not in msg


def test_a_task_yaml_path_needs_no_include_path(harness: dict[str, Any]) -> None:
    ev = LMEvalHarnessEvaluator([str(Path(harness["tasks"]) / "toy_ppl.yaml")],
                                metric="bits_per_byte")
    assert [(t.name, t.direction, t.lower) for t in ev.tasks] == [("toy_ppl", "min", 0.0)]


def test_missing_lm_eval_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    ev = LMEvalHarnessEvaluator(["toy_mc"])  # settings are checked without lm-eval
    with pytest.raises(ConfigError, match=r'pip install "mapframe-llm\[lm-eval\]"'):
        _ = ev.tasks
