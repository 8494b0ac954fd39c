"""CLI inputs: an empty ``--output`` is refused like ``study.output: ""``."""

from __future__ import annotations

import pytest

from mapframe.cli import main


@pytest.mark.parametrize("command", [["run", "study.yaml"], ["example"]])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_output_flag_is_refused(tmp_path, monkeypatch, capsys, command, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(
        'evaluator: {name: callable, function: "x:y", tasks: [a, b]}\n')
    with pytest.raises(SystemExit) as info:
        main([*command, "-o", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (f"argument --output/-o: must be a folder path, got {value!r}: leave --output out "
            "for the default (study.output, else results/<study name>)") in err
    assert "Traceback" not in err and not (tmp_path / "results").exists()
