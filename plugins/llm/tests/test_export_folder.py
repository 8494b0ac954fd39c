"""Export from a results folder someone sent: only the checkpoint reader is built.

``mapframe export`` reads a folder's ``config.yaml``; the LLM evaluators adapt and read
their checkpoints themselves, so export needs them, but only their checkpoint handling
(:meth:`HFEvaluator.for_checkpoints`): a task's ``scorer: "module:fn"``, its data files and
lm-eval tasks are not touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mapframe_llm.causal import CausalLMEvaluator  # noqa: E402

from mapframe.assembly import saved_merge_spec  # noqa: E402
from mapframe.cli import main as mapframe_main  # noqa: E402
from mapframe.spec import StudySpec  # noqa: E402


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_export_of_a_received_folder_imports_no_scorer_and_reads_no_data(
        lm_files: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"evaluator": {"name": "causal_lm", **lm_files.evaluator_kwargs()},
              "checkpoints": lm_files.checkpoints(),
              "study": {"budget": 6, "seed": 0, "preference": [0.5, 0.5],
                        "output": str(tmp_path / "out")}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert mapframe_main(["run", str(path), "-q", "--no-plot"]) == 0
    assert mapframe_main(["export", str(tmp_path / "out"), "--format", "hf",
                          "-o", str(tmp_path / "before")]) == 0

    # The folder as a stranger might send it: a task's scorer names a module that acts when
    # imported, and its data files are gone.
    mods = tmp_path / "mods"
    mods.mkdir()
    marker = tmp_path / "imported"
    (mods / "received_scorer.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def score(model, tokenizer, records, device):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(mods))
    saved_path = tmp_path / "out" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    for task in saved["evaluator"]["tasks"]:
        task["scorer"] = "received_scorer:score"
        task["data"] = str(tmp_path / "no-such-data.jsonl")
    saved["evaluator"]["storage"] = "ram"
    saved_path.write_text(yaml.safe_dump(saved, sort_keys=False))

    spec = StudySpec.from_config(saved, base_dir=tmp_path / "out")
    merge = saved_merge_spec(spec)
    assert merge is not None and merge.loader is not None
    reader = merge.loader.__self__
    assert isinstance(reader, CausalLMEvaluator) and reader.storage == "ram"  # saved setting
    assert mapframe_main(["export", str(tmp_path / "out"), "--format", "hf",
                          "-o", str(tmp_path / "after")]) == 0
    assert not marker.exists(), "export imported the scorer module a received config named"
    before, after = _weights(tmp_path / "before"), _weights(tmp_path / "after")
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)

    # Building the evaluator itself still imports the scorer (what a study run needs).
    CausalLMEvaluator(lm_files.task_configs(scorer="received_scorer:score"))
    assert marker.read_text() == "ran"


def test_for_checkpoints_refuses_a_bad_saved_setting_in_one_line(lm_files: Any) -> None:
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError, match="storage must be disk"):
        CausalLMEvaluator.for_checkpoints({"storage": "tape", "tasks": []})
