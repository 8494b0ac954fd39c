"""A results folder moved or copied (its store inside it, the default) still resumes its study
from its own ``config.yaml``, and a run whose store no longer holds the evaluations a results
folder records is refused before anything is evaluated.

The saved ``config.yaml`` held the results folder and the store as absolute paths: after
``mv res_a res_b``, ``mapframe run res_b/config.yaml`` recreated ``res_a`` with a new, empty
store and evaluated the whole study again; a store named in the config and moved away gave a
new study too, which replaced the folder's results, without a word.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mapframe.cli import main

BUDGET = 8


def _config(folder: Path, **study: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"study": {"name": "moving", "budget": BUDGET, "seed": 0, **study},
           "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "sampler": "sobol", "surrogate": "quadratic"}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path, *args: str) -> int:
    return main(["run", str(config), "-q", "--no-plot", "--no-report", *args])


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _refused(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mapframe: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_moved_results_folder_resumes_its_study(tmp_path, monkeypatch):
    config = _config(tmp_path / "cfg", output="res_a")
    assert _run(config) == 0
    res_a = tmp_path / "cfg" / "res_a"
    saved = yaml.safe_load((res_a / "config.yaml").read_text())
    # the folder and its own store relative to the saved config's folder
    assert saved["study"]["output"] == "." and saved["study"]["storage"] == "evaluations.sqlite"
    res_b = tmp_path / "res_b"
    shutil.move(res_a, res_b)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "from any folder"
    assert _run(res_b / "config.yaml") == 0
    s = _summary(res_b)
    assert s["n_evaluated_this_run"] == 0 and s["n_reused_from_store"] == BUDGET
    assert s["settings"]["storage"]["path"] == str(res_b / "evaluations.sqlite")
    assert not res_a.exists() and list(elsewhere.iterdir()) == []
    # a changed budget resumes too, evaluating only the new points
    assert _run(res_b / "config.yaml", "--budget", str(BUDGET + 2)) == 0
    s = _summary(res_b)
    assert s["n_evaluated_this_run"] == 2 and s["n_reused_from_store"] == BUDGET
    # a copy resumes from its own copy of the store, leaving the original alone
    res_c = tmp_path / "res_c"
    shutil.copytree(res_b, res_c)
    assert _run(res_c / "config.yaml") == 0
    s = _summary(res_c)
    assert s["n_evaluated_this_run"] == 0 and s["n_reused_from_store"] == BUDGET
    assert s["settings"]["storage"]["path"] == str(res_c / "evaluations.sqlite")


def test_a_store_outside_the_folder_is_saved_as_an_absolute_path(tmp_path):
    config = _config(tmp_path / "cfg", output="res", storage="../stores/s.sqlite")
    assert _run(config) == 0
    saved = yaml.safe_load((tmp_path / "cfg" / "res" / "config.yaml").read_text())
    assert Path(saved["study"]["storage"]).is_absolute()
    assert Path(saved["study"]["storage"]).resolve() == (tmp_path / "stores" / "s.sqlite").resolve()
    assert saved["study"]["output"] == "."
    # and the folder moved still resumes from that store
    shutil.move(tmp_path / "cfg" / "res", tmp_path / "moved")
    assert _run(tmp_path / "moved" / "config.yaml") == 0
    assert _summary(tmp_path / "moved")["n_reused_from_store"] == BUDGET


def test_a_moved_store_is_refused_before_anything_is_evaluated(tmp_path, capsys):
    stores = tmp_path / "stores"
    config = _config(tmp_path / "cfg", output="res", storage=str(stores / "s.sqlite"))
    assert _run(config) == 0
    res = tmp_path / "cfg" / "res"
    before = (res / "summary.json").read_text()
    (tmp_path / "archive").mkdir()
    shutil.move(stores / "s.sqlite", tmp_path / "archive" / "s.sqlite")
    for leftover in stores.glob("s.sqlite-*"):
        leftover.unlink()
    capsys.readouterr()
    for run in (config, res / "config.yaml"):
        assert _run(run) == 2
        err = _refused(capsys)
        assert str(res) in err and str(stores / "s.sqlite") in err
        assert f"{BUDGET} stored evaluations" in err and "study.storage" in err
        assert "--output" in err
        assert not (stores / "s.sqlite").exists()  # no new, empty store was made
        assert (res / "summary.json").read_text() == before  # the results are kept
    # pointed at the store's new place, the study resumes
    moved = yaml.safe_load(config.read_text())
    moved["study"]["storage"] = str(tmp_path / "archive" / "s.sqlite")
    config.write_text(yaml.safe_dump(moved))
    assert _run(config) == 0
    assert _summary(res)["n_reused_from_store"] == BUDGET


def test_a_deleted_store_is_refused_until_the_folder_is_deleted_too(tmp_path, capsys):
    config = _config(tmp_path / "cfg", output="res")
    assert _run(config) == 0
    res = tmp_path / "cfg" / "res"
    for store in res.glob("evaluations.sqlite*"):
        store.unlink()
    capsys.readouterr()
    assert _run(res / "config.yaml") == 2
    err = _refused(capsys)
    assert "that store now holds none of them" in err
    assert str(res / "evaluations.sqlite") in err and "delete the folder" in err
    assert not (res / "evaluations.sqlite").exists()
    # another results folder starts the study again
    assert _run(config, "--output", str(tmp_path / "again")) == 0
    assert _summary(tmp_path / "again")["n_evaluated_this_run"] == BUDGET
    shutil.rmtree(res)
    assert _run(config) == 0
    assert _summary(res)["n_evaluated_this_run"] == BUDGET


def test_a_moved_folder_with_an_older_absolute_config_is_refused(tmp_path, capsys):
    """A folder saved by an earlier version (absolute ``output`` and ``storage``) and moved:
    its config would recreate the old folder with a new store."""
    config = _config(tmp_path / "cfg", output="res_a")
    assert _run(config) == 0
    res_a, res_b = tmp_path / "cfg" / "res_a", tmp_path / "res_b"
    saved = yaml.safe_load((res_a / "config.yaml").read_text())
    saved["study"].update(output=str(res_a), storage=str(res_a / "evaluations.sqlite"))
    (res_a / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    shutil.move(res_a, res_b)
    capsys.readouterr()
    assert _run(res_b / "config.yaml") == 2
    err = _refused(capsys)
    assert str(res_b) in err and str(res_a / "evaluations.sqlite") in err
    assert "study.output" in err and not res_a.exists()


def test_a_fresh_run_and_a_plain_resume_are_not_refused(tmp_path):
    config = _config(tmp_path / "cfg", output="res")
    assert _run(config) == 0
    assert _summary(tmp_path / "cfg" / "res")["n_evaluated_this_run"] == BUDGET
    assert _run(config) == 0
    assert _summary(tmp_path / "cfg" / "res")["n_reused_from_store"] == BUDGET
    assert _run(tmp_path / "cfg" / "res" / "config.yaml") == 0
    assert _summary(tmp_path / "cfg" / "res")["n_reused_from_store"] == BUDGET


def test_checkpoint_paths_survive_a_move_of_the_folder_and_the_config(tmp_path, monkeypatch):
    """The checkpoints, given relative to the config, are saved as absolute paths: the moved
    folder still exports its merged model and resumes its study."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from mapframe.examples import digits

    ck = digits.prepare_checkpoints(tmp_path / "cache", ["rot90", "flip"])
    shutil.copytree(Path(ck["pretrained"]).parent, tmp_path / "cfg" / "ck")
    rel = {"pretrained": f"ck/{Path(ck['pretrained']).name}",
           "finetuned": {t: f"ck/{Path(p).name}" for t, p in ck["finetuned"].items()}}
    cfg = digits.digits_study_config("res", ["rot90", "flip"], checkpoints=rel, budget=6,
                                      verify=0)
    cfg["study"].pop("storage", None)
    (tmp_path / "cfg" / "study.yaml").write_text(yaml.safe_dump(cfg))
    assert _run(tmp_path / "cfg" / "study.yaml") == 0
    saved = yaml.safe_load((tmp_path / "cfg" / "res" / "config.yaml").read_text())
    assert saved["checkpoints"]["pretrained"] == str(tmp_path / "cfg" / "ck" /
                                                     Path(ck["pretrained"]).name)
    shutil.move(tmp_path / "cfg" / "res", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "moved", "--preference", "0.5,0.5", "-o", "m.safetensors"]) == 0
    assert (tmp_path / "m.safetensors").is_file()
    assert _run(tmp_path / "moved" / "config.yaml") == 0
    assert _summary(tmp_path / "moved")["n_reused_from_store"] == 6


def test_a_moved_example_folder_resumes_its_study(tmp_path, monkeypatch):
    """``mapframe example`` writes its own config.yaml into the folder: it too names the
    folder and its store relative to itself (it held absolute paths, so a moved example
    folder could not resume: the run was refused, the store being elsewhere)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    assert main(["example", "--output", "ex", "--budget", "6", "--cache-dir",
                 str(tmp_path / "cache"), "--quiet", "--no-plot", "--no-report"]) == 0
    saved = yaml.safe_load((tmp_path / "ex" / "config.yaml").read_text())
    assert (saved["study"]["output"], saved["study"]["storage"]) == (".", "evaluations.sqlite")
    shutil.move(tmp_path / "ex", tmp_path / "moved")
    assert _run(tmp_path / "moved" / "config.yaml") == 0
    assert not (tmp_path / "ex").exists()
    assert _summary(tmp_path / "moved")["n_evaluated_this_run"] == 0
