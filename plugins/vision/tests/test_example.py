"""The ``mapframe-vision example`` command's arguments and config (running the example
itself trains a tiny CLIP for about a minute, so it is left to the README's command)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mapframe_vision.cli import example_config, main

PREPARED = {"finetuned": {"digits": "d.pt", "fashion": "f.pt"}, "model_config": {},
            "pretrained": "p.pt", "data": {"digits": "x", "fashion": "y"},
            "classnames": {"digits": ["0"], "fashion": ["a"]}}


def test_a_preference_exports_the_selected_model(tmp_path: Path) -> None:
    cfg = example_config(PREPARED, tmp_path, preference=[0.5, 0.5])
    assert cfg["study"]["preference"] == [0.5, 0.5] and cfg["study"]["export"] is True
    assert "export" not in example_config(PREPARED, tmp_path)["study"]


@pytest.mark.parametrize(("value", "message"), [("1,2,3", "one weight per task"),
                                                ("a,b", "comma-separated numbers")])
def test_a_bad_preference_fails_before_anything_is_trained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    argv = ["example", "--output", str(tmp_path / "o"), "--work", str(tmp_path / "w"),
            "--tasks", "digits,digits_rot90", "--preference", value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()
