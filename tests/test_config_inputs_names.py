"""Task names that YAML reads as booleans, null or numbers are refused with the hint to
quote them (``finetuned: {no: ...}`` named a coefficient ``c_False``)."""

from __future__ import annotations

import pytest

from mapframe.config import load_spec
from mapframe.errors import ConfigError
from mapframe.problem import Task, as_tasks


def test_an_unquoted_yes_no_checkpoint_key_is_refused_with_the_hint_to_quote(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("evaluator: {name: digits}\n"
                    "checkpoints:\n  pretrained: p.safetensors\n"
                    "  finetuned: {en: a.safetensors, no: b.safetensors}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == (
        "checkpoints.finetuned keys must be task names (strings), got False (YAML reads no, "
        "yes, on, off, true and false unquoted as booleans: quote the name, e.g. 'no')")


@pytest.mark.parametrize("key, hint", [(None, "e.g. 'null'"), (1, "e.g. '1'")])
def test_a_null_or_number_checkpoint_key_is_refused(tmp_path, key, hint):
    path = tmp_path / "s.yaml"
    text = "~" if key is None else str(key)
    path.write_text("evaluator: {name: digits}\n"
                    f"checkpoints: {{pretrained: p.st, finetuned: {{en: a.st, {text}: b.st}}}}\n")
    with pytest.raises(ConfigError, match=f"got {key!r} .*quote the name, {hint}"):
        load_spec(path)


def test_an_unquoted_no_task_name_is_refused_with_the_hint_to_quote():
    with pytest.raises(ConfigError, match=r"^task #1 must be a name or a mapping, got bool "
                                          r"False \(YAML reads no, yes, .* e\.g\. 'no'\)$"):
        as_tasks(tasks=["en", False])
    with pytest.raises(ConfigError, match=r"got None \(YAML reads null"):
        Task(None)  # type: ignore[arg-type]
