"""``mapframe report STORE`` on a finished Nested MAP tournament's store.

The store's latest study is the tournament's final model, evaluated once on all tasks (no
MAP, no front, no stored summary): the report said that study "has not finished" and told
the user to run it to its end. It now says what the study is and lists the tournament's pair
studies to give ``--study`` (each is an ordinary MAP study with a front)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mapframe.cli import main
from mapframe.errors import ConfigError
from mapframe.report.sources import locate

pytest.importorskip("sklearn")
pytest.importorskip("torch")
pytest.importorskip("plotly")

PAIRS = ["ns/(rot90+flip)", "ns/((rot90+flip)+vflip)"]
FINAL = "ns/final/((rot90+flip)+vflip)"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mapframe.examples import digits

    root = tmp_path_factory.mktemp("nested-store")
    tasks = ["rot90", "flip", "vflip"]
    ck = digits.prepare_checkpoints(root / "cache", tasks=tasks)
    cfg = {"study": {"name": "ns", "preference": [0.5, 0.3, 0.2], "seed": 0, "verify": 1,
                     "output": "out"},
           "evaluator": {"name": "digits", "tasks": tasks},
           "checkpoints": {"pretrained": str(ck["pretrained"]),
                           "finetuned": {k: str(v) for k, v in ck["finetuned"].items()}},
           "nested": {"pair_budget": 6, "pairing": "in_order"}}
    path = root / "ns.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["run", str(path), "-q", "--no-plot"]) == 0
    return root / "out" / "evaluations.sqlite"


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("study, given", [(None, "store"), (FINAL, "store"),
                                          (FINAL, "folder")],
                         ids=["latest", "final-named", "final-named-in-folder"])
def test_the_report_of_a_nested_store_lists_its_pair_studies(
        store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        study: str | None, given: str) -> None:
    out = tmp_path / "r.html"
    path = store if given == "store" else store.parent
    argv = ["report", str(path), "-o", str(out)] + (["--study", study] if study else [])
    capsys.readouterr()
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "has not finished" not in err and "run the study to its end" not in err
    assert "Nested MAP tournament 'ns'" in err and "final merged model" in err
    assert "--study" in err and all(f"'{name}'" in err for name in PAIRS)
    assert not out.exists()
    with pytest.raises(ConfigError, match="pair studies"):
        locate(path, study)  # the dashboard's source too


def test_a_pair_study_of_the_nested_store_is_reported(store: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    for name in PAIRS:
        out = tmp_path / "pair.html"
        assert main(["report", str(store), "--study", name, "-o", str(out)]) == 0
        assert out.stat().st_size > 10_000
        out.unlink()


def test_nested_model_study_recognises_finals_and_profiles() -> None:
    from mapframe.report.sources import nested_model_study

    pair: dict[str, Any] = {"evaluator": {"name": "nested_pair"}}
    plain: dict[str, Any] = {"evaluator": {"name": "digits"}}
    studies = [("a/b", plain), ("t/x/(p+q)", pair), ("t/x/profile/p", plain),
               ("t/x/((p+q)+r)@0123456789ab", pair), ("t/x/final/((p+q)+r)@0123456789ab",
                                                     plain), ("solo/final/z", plain)]
    found = nested_model_study(studies, "t/x/final/((p+q)+r)@0123456789ab")
    assert found is not None and found[0] == "t/x" and "final" in found[1]
    assert found[2] == ["t/x/(p+q)", "t/x/((p+q)+r)@0123456789ab"]
    found = nested_model_study(studies, "t/x/profile/p")
    assert found is not None and "profile" in found[1]
    # a MAP study, a pair, and a name like a final's without a tournament are not refused
    for name in ("a/b", "t/x/(p+q)", "solo/final/z"):
        assert nested_model_study(studies, name) is None
