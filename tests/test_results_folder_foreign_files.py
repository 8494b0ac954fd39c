"""A results folder's file names are common ones (config.yaml, summary.json, front.csv,
report.html, ...): saving into a folder of the user's own that holds one is refused with a
one-line error before anything is written or removed there, while every legitimate rewrite
of a mapframe results folder (rerun, resume, the config mapframe wrote, another study saved
into it, a save cut short, a folder an older version wrote) still works."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from objectives import two_quadratics

import mapframe
import mapframe.results as results_module
from mapframe import MergeStudy
from mapframe.cli import main
from mapframe.errors import ConfigError

#: The user's own files, with the names a results folder's files have.
MINE = {"config.yaml": "# my app's config\ndb: prod\n", "summary.json": '{"my": "notes"}',
        "report.html": "<h1>my quarterly report</h1>", "front.png": "not really a png",
        "front.csv": "my,data\n1,2\n", "evaluations.csv": "my,evals\n"}


def _config(tmp_path, name="quad", budget=8, **study):
    cfg = {"study": {"name": name, "budget": budget, "seed": 0, **study},
           "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "sampler": "sobol", "surrogate": "quadratic"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _user_folder(path, files=MINE):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_bytes(text.encode())
    return {name: (path / name).read_bytes() for name in files}


def _untouched(path, before):
    assert sorted(os.listdir(path)) == sorted(before)  # nothing written there either
    assert {name: (path / name).read_bytes() for name in before} == before


def _result(budget=8, name="study"):
    return MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=budget, seed=0,
                      sampler="sobol", surrogate="quadratic", study_name=name).run()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


# ---- refused: the user's own files -------------------------------------------------------

def test_run_into_a_folder_of_the_users_files_is_refused_and_nothing_changes(tmp_path, capsys):
    """The auditor's scenario: ``mapframe run s.yaml -o myproject``."""
    proj = tmp_path / "myproject"
    before = _user_folder(proj)
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "-o", str(proj), "-q", "--no-plot", "--no-report"]) == 2
    err = _one_line_error(capsys)
    assert "not mapframe's" in err and "--output" in err and "move them" in err
    for name in MINE:
        assert name in err
    _untouched(proj, before)  # no store, no config.yaml written, no file removed


@pytest.mark.parametrize("name", sorted(MINE))
def test_each_result_name_alone_is_refused(tmp_path, capsys, name):
    proj = tmp_path / "myproject"
    before = _user_folder(proj, {name: MINE[name], "notes.txt": "mine\n"})
    assert main(["run", str(_config(tmp_path)), "-o", str(proj), "-q"]) == 2
    err = _one_line_error(capsys)
    assert f"{proj / name} is not mapframe's" in err and "--output" in err
    _untouched(proj, before)


def test_save_into_a_folder_of_the_users_files_is_refused(tmp_path):
    proj = tmp_path / "myproject"
    before = _user_folder(proj)
    result = _result()
    with pytest.raises(ConfigError, match=r"not mapframe's.*another folder") as info:
        result.save(proj)
    assert "\n" not in str(info.value)
    _untouched(proj, before)


def test_report_does_not_replace_the_users_report_html(tmp_path, capsys):
    """A folder holding a study's store (study.storage there) and the user's report.html."""
    pytest.importorskip("plotly")
    proj = tmp_path / "myproject"
    before = _user_folder(proj, {"report.html": MINE["report.html"]})
    cfg = _config(tmp_path, output=str(tmp_path / "out"),
                  storage=str(proj / "evaluations.sqlite"))
    assert main(["run", str(cfg), "-q", "--no-plot", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["report", str(proj)]) == 2
    err = _one_line_error(capsys)
    assert "report.html is not mapframe's" in err and "-o FILE" in err
    assert (proj / "report.html").read_bytes() == before["report.html"]
    # an explicit -o writes where asked
    assert main(["report", str(proj), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()


# ---- still works: mapframe's own results folders -----------------------------------------

def test_rerun_and_the_saved_config_rewrite_their_own_folder(tmp_path, capsys):
    out = tmp_path / "out"
    cfg = _config(tmp_path, output=str(out))
    assert main(["run", str(cfg), "-q"]) == 0
    assert (out / "report.html").is_file()
    assert main(["run", str(cfg), "-q"]) == 0  # rerun: everything from the store
    assert "0 new this run" in capsys.readouterr().out
    saved = (out / "config.yaml").read_bytes()
    assert main(["run", str(out / "config.yaml"), "-q", "--budget", "10"]) == 0
    assert (out / "config.yaml").read_bytes() == saved  # the source config is left alone
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 10


def test_resume_into_a_folder_holding_only_the_store_and_config(tmp_path):
    """What a run killed during the study leaves (the store; an earlier run's config.yaml)."""
    out = tmp_path / "out"
    cfg = _config(tmp_path, output=str(out))
    assert main(["run", str(cfg), "-q", "--no-report"]) == 0
    for name in os.listdir(out):
        if name not in ("evaluations.sqlite", "config.yaml"):
            (out / name).unlink()
    assert main(["run", str(cfg), "-q", "--budget", "10", "--no-report"]) == 0
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 10


def test_a_second_study_saved_into_a_folder_mapframe_wrote(tmp_path, capsys):
    out = tmp_path / "out"
    _result(8, "first").save(out)
    _result(9, "second").save(out)  # a folder keeps only the last study saved into it
    assert mapframe.load_results(out).summary["study"] == "second"
    # and through the CLI, over the Python save's folder (it has no config.yaml yet)
    assert main(["run", str(_config(tmp_path, name="third")), "-o", str(out), "-q"]) == 0
    assert mapframe.load_results(out).summary["study"] == "third"


def test_a_save_marks_its_folder_before_writing_results(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = results_module.write_atomically
    written = []
    monkeypatch.setattr(results_module, "write_atomically",
                        lambda path, text: written.append(path.name) or real(path, text))
    _result().save(out, plot=False)
    assert written[0] == ".mapframe"
    assert written[-1] == "summary.json"


@pytest.mark.parametrize("killed_at", ["front.csv", "front.json", "summary.json"])
def test_a_folder_from_a_save_cut_short(tmp_path, monkeypatch, killed_at):
    from test_results_inputs_unfinished_save import save_cut_short

    out = tmp_path / "out"
    save_cut_short(_result(), out, killed_at, monkeypatch)  # the first save into a new folder
    assert not (out / "summary.json").exists()
    _result(10).save(out, plot=False)
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 10


def _older_folder(tmp_path, cut_short_after=None):
    """A folder as older versions wrote it: no ``.mapframe``; ``cut_short_after``: the last
    file their save wrote before a kill (summary.json then missing)."""
    out = tmp_path / "old"
    _result().save(out)
    (out / ".mapframe").unlink(missing_ok=True)
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps(
        {k: summary[k] for k in ("study", "seed", "tasks", "front_size", "settings")}))
    (out / "report.html").write_text("<!DOCTYPE html>\n<html><head><title>mapframe report: "
                                     "study</title></head></html>\n")
    if cut_short_after is not None:
        order = ["front.csv", "front.json", "evaluations.csv", "surrogates.json"]
        for name in ["summary.json", "front.png", "report.html",
                     *order[order.index(cut_short_after) + 1:]]:
            (out / name).unlink()
    return out


@pytest.mark.parametrize("cut_short_after", [None, "front.csv", "surrogates.json"])
def test_a_folder_an_older_version_wrote(tmp_path, capsys, cut_short_after):
    out = _older_folder(tmp_path, cut_short_after)
    _result(9).save(out)
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 9
    assert main(["run", str(_config(tmp_path)), "-o", str(out), "-q"]) == 0


def test_report_rewrites_its_own_report_html(tmp_path, capsys):
    """``mapframe report`` twice on a folder that holds only a study's store (a study still
    running): the second replaces the report the first wrote."""
    pytest.importorskip("plotly")
    proj = tmp_path / "live"
    proj.mkdir()
    cfg = _config(tmp_path, output=str(tmp_path / "out"),
                  storage=str(proj / "evaluations.sqlite"))
    assert main(["run", str(cfg), "-q", "--no-plot", "--no-report"]) == 0
    assert main(["report", str(proj)]) == 0
    assert main(["report", str(proj)]) == 0
    assert (proj / "report.html").is_file()
