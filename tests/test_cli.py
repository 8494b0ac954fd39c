"""The command line: run, config validation errors without tracebacks, help, kill + resume."""

from __future__ import annotations

import json

import pytest
import yaml
from objectives import SlowStudy, search_keys

from mapframe.cli import main


def _config(tmp_path, **study):
    cfg = {
        "study": {"name": "quad", "budget": 12, "seed": 0, "verify": 3,
                  "preference": [0.5, 0.5], **study},
        "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                      "tasks": ["a", "b"]},
        "sampler": "lhs",
        "front_solver": {"name": "nsga2", "n_gen": 60},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_results_folder(tmp_path, capsys):
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = tmp_path / "out"
    for name in ("front.csv", "front.json", "evaluations.csv", "surrogates.json",
                 "summary.json", "front.png", "evaluations.sqlite"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 12
    assert summary["verification"]["n_verified"] == 3
    assert summary["selected"] is not None
    text = capsys.readouterr().out
    assert "R2" in text and "front:" in text
    # second run: everything comes from the store
    assert main(["run", str(cfg), "--quiet"]) == 0
    assert "0 new this run, 15 reused" in capsys.readouterr().out


def test_cli_overrides(tmp_path):
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "-q", "--budget", "15", "--output",
                 str(tmp_path / "o2"), "--no-plot"]) == 0
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["n_search_evaluations"] == 15
    assert not (tmp_path / "o2" / "front.png").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("study: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("study: {budget: 10}\n", "missing required field 'evaluator'"),
        ("evaluator: callable\nsampelr: sobol\n", "did you mean 'sampler'"),
        ("evaluator: {name: callable}\nstudy: {budgte: 3}\n", "did you mean 'budget'"),
        ("evaluator: {name: callable}\nstudy: {budget: ten}\n", "study.budget must be int"),
        ("evaluator: {name: nope}\n", "evaluator 'nope' is not available"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {budget: 2}\n", "set budget >= 3 (surrogate: auto then fits the gp"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {search_bounds: [0, .inf]}\n", "search bounds must be finite"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b],"
         " colour: red}\n", "does not take parameter(s) colour"),
        ("evaluator: {name: callable, function: 'no_such_mod:f', tasks: [a]}\n",
         "cannot import module 'no_such_mod'"),
        ("evaluator: digits\ncheckpoints: {pretrained: x.safetensors}\n",
         "needs both 'pretrained"),
        # the name is the results folder's (results/<name>): '..' wrote into the current
        # folder, a NUL byte ended in a raw ValueError
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {name: '..'}\n", "study.name must not be a path"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {name: \"x\\0y\"}\n", "study.name must not contain control characters"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {seed: -1}\n", "study.seed must be a non-negative integer"),
        # a budget no study can lay out: a raw numpy MemoryError / ValueError before
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {budget: 1000000000}\n", "study.budget must be at most 10,000,000"),
        # a known field in the wrong section: "did you mean 'nested'?" for a top-level seed
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "seed: 8\n", "'seed' is not a field at the top level: it belongs under study"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {sampler: lhs}\n", "it belongs at the top level of the config"),
        ("evaluator: {name: callable, function: 'objectives:two_quadratics', tasks: [a, b]}\n"
         "study: {pair_budget: 4}\n", "'pair_budget' is not a field under study: it belongs "
                                        "under nested"),
    ],
)
def test_config_errors_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_missing_config_file(capsys):
    assert main(["run", "/nonexistent/study.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Pareto front" in out and "resume" in out and "plugins" in out


def test_kill_minus_nine_and_resume(tmp_path):
    """A study killed with SIGKILL mid-evaluation resumes without redoing stored points."""
    study = SlowStudy(tmp_path, budget=12, delay=0.25, evaluator_batch_size=1)
    study.start()
    try:
        study.wait_stored(4)
        study.kill()
    finally:
        study.stop()
    stored_at_kill = len(search_keys(study.db))
    assert 4 <= stored_at_kill < 12
    calls_before = len(study.calls())
    # at most the evaluation in flight is lost
    assert calls_before - stored_at_kill <= 1

    done = study.rerun()
    assert done.returncode == 0, done.stderr
    assert f"{12 - stored_at_kill} new this run, {stored_at_kill} reused" in done.stdout
    keys = search_keys(study.db)
    assert len(keys) == 12 and len(set(keys)) == 12
    # every point evaluated once, except possibly the one killed in flight
    assert len(study.calls()) - 12 <= 1


@pytest.mark.parametrize("sampler", [{"name": "bins", "batch": 2}, {"name": "gp", "batch": 2}])
def test_run_adaptive_sampler_with_stopping_from_yaml(tmp_path, capsys, sampler):
    path = _config(tmp_path, output="out", budget=40, verify=0)
    cfg = yaml.safe_load(path.read_text())
    cfg["sampler"] = sampler
    cfg["stopping"] = {"name": "plateau", "patience": 2}
    cfg["front_solver"] = "grid"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["sampler"]["name"] == sampler["name"]
    assert summary["settings"]["stopping"]["name"] == "plateau"
    rounds = summary["rounds"]
    assert len(rounds) > 2 and all(r["new"] <= max(2, r["proposed"]) for r in rounds)
    n = summary["n_search_evaluations"]
    # two exact quadratics: the front settles long before 40 evaluations
    assert summary["stopped_early"] and n < 40
    text = capsys.readouterr().out
    assert "stopped early:" in text and f"sampling: {len(rounds)} rounds" in text
    # a re-run resumes: nothing new, the same stop
    assert main(["run", str(path), "--quiet"]) == 0
    assert f"0 new this run, {n} reused" in capsys.readouterr().out


def test_run_saves_its_config_so_the_folder_can_be_read_back(tmp_path, capsys):
    import mapframe

    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--seed", "3"]) == 0
    saved = mapframe.load_results(tmp_path / "out")
    assert saved.config is not None and saved.config["study"]["seed"] == 3  # the override
    assert saved.selected is not None
    assert saved.select([0.5, 0.5]) == saved.selected  # the study's own rule
    capsys.readouterr()
    # a black-box objective has no model to export: one line, before anything is written
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoints to merge" in err and err.count("\n") == 0
    assert not (tmp_path / "m.safetensors").exists()
    # ... also where the objective's module cannot be imported (it was imported first,
    # and the advice to put it on PYTHONPATH led only to this message)
    saved_config = tmp_path / "out" / "config.yaml"
    cfg_data = yaml.safe_load(saved_config.read_text())
    cfg_data["evaluator"]["function"] = "no_such_module_for_mapframe:f"
    saved_config.write_text(yaml.safe_dump(cfg_data))
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoints to merge" in err and "no_such_module" not in err


def test_the_saved_config_resumes_its_study_from_any_folder(tmp_path, monkeypatch, capsys):
    """A study run with the default results folder and store (both relative to the folder
    it started in): its saved config.yaml named neither, so running it from another folder
    evaluated everything again into a new store."""
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    cfg = _config(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    assert main(["run", str(cfg), "--quiet", "--no-plot", "--no-report"]) == 0
    saved = tmp_path / "project" / "results" / "quad" / "config.yaml"
    study = yaml.safe_load(saved.read_text())["study"]
    # relative to the saved config's folder: the results folder and its own store
    assert study["output"] == "." and study["storage"] == "evaluations.sqlite"
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["run", str(saved), "--no-plot", "--no-report"]) == 0
    assert "(0 new this run, 15 reused" in capsys.readouterr().out  # 12 search + 3 verify
    assert not list((tmp_path / "elsewhere").rglob("*.sqlite"))


def test_an_older_or_damaged_front_json_reads_or_is_a_one_line_error(tmp_path, capsys):
    """Rows written before the front recorded each point's source had no "source": reading
    them raised a raw KeyError (also from `mapframe export`)."""
    import json

    import mapframe

    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--no-plot", "--no-report"]) == 0
    path = tmp_path / "out" / "front.json"
    data = json.loads(path.read_text())
    for row in data["points"]:
        del row["source"]
    path.write_text(json.dumps(data))
    saved = mapframe.load_results(tmp_path / "out")
    assert len(saved.front) == len(data["points"])
    assert set(saved.front.source) <= {"predicted", "verified"}
    del data["coefficient_names"]
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no field 'coefficient_names'" in err and "Traceback" not in err
    assert err.count("\n") == 0


def test_a_folder_never_keeps_another_study_s_plot_or_report(tmp_path):
    """Two studies saved into one folder, the second with --no-plot: the first's front.png
    stayed beside the second's results (and went into an exported model card)."""
    pytest.importorskip("matplotlib")
    first = _config(tmp_path, output="out", name="first")
    assert main(["run", str(first), "--quiet", "--no-report"]) == 0
    assert (tmp_path / "out" / "front.png").is_file()
    (tmp_path / "out" / "report.html").write_text("<html>the first study</html>")
    second = _config(tmp_path, output="out", name="second", budget=10)
    assert main(["run", str(second), "--quiet", "--no-plot", "--no-report"]) == 0
    assert not (tmp_path / "out" / "front.png").exists()
    assert not (tmp_path / "out" / "report.html").exists()
    assert main(["run", str(second), "--quiet", "--no-report"]) == 0
    assert (tmp_path / "out" / "front.png").is_file()


def test_friction_help_lists_each_command_once_and_examples_get_their_own_folder(capsys):
    from mapframe.cli import example_folder
    from mapframe.examples.digits import TASKS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "example", "export", "store", "plugins"):
        assert sum(line.split()[:1] == [command] for line in out.splitlines()) == 1, out
    assert example_folder(TASKS[:2], TASKS) == "results/digits"
    assert example_folder(TASKS[:4], TASKS) == "results/digits-4tasks"
    assert example_folder([TASKS[1], TASKS[0]], TASKS) == f"results/digits-{TASKS[1]}-{TASKS[0]}"


def test_exported_models_get_the_mode_other_results_get(tmp_path):
    import os

    import numpy as np
    import torch

    from mapframe import MergeStudy
    from mapframe.merging.checkpoints import save_state_dict

    p = save_state_dict({"w": torch.zeros(3)}, tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # 0644 under the usual umask
    # Every file of a results folder too (they are written through mkstemp's 0600 files).
    result = MergeStudy(objective=lambda C: np.column_stack([C[:, 0], 1 - C[:, 0]]),
                        task_names=["a", "b"], budget=6, seed=0).run()
    paths = result.save(tmp_path / "results", plot=False)
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_a_saved_folder_selects_like_its_study_with_preference_bounds(tmp_path):
    import numpy as np
    from objectives import two_quadratics

    import mapframe

    bounds = ([0.0, 0.5], [1.0, 1.0])  # task b scaled over [0.5, 1], not over the front
    result = mapframe.MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=12,
                                 preference=[0.5, 0.5], preference_bounds=bounds).run()
    result.save(tmp_path, plot=False)
    saved = mapframe.load_results(tmp_path)
    prefs = [np.array([w, 1 - w]) for w in np.linspace(0.05, 0.95, 19)]
    assert [saved.select(p) for p in prefs] == [result.select(p) for p in prefs]
    # the bounds matter here: without them some preference selects another point
    assert any(result.front.select(p) != result.select(p) for p in prefs)


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "argument --budget: must be a whole number of evaluations from 1 to"),
    (["--budget", "2.5"], "argument --budget: must be a whole number"),
    (["--seed", "-1"], "argument --seed: must be a non-negative integer, got '-1'"),
])
def test_a_bad_budget_or_seed_flag_names_the_flag(tmp_path, capsys, args, message):
    """The error names the flag the user typed (it named study.budget / study.seed, fields
    of a config the user may not have), and no study starts."""
    with pytest.raises(SystemExit) as info:
        main(["run", str(_config(tmp_path)), "-o", str(tmp_path / "out"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "study." not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_sigterm_while_writing_the_results_is_one_line_and_resumable(tmp_path, capsys,
                                                                    monkeypatch):
    # SIGTERM (a scheduler stopping the job) during StudyResult.save killed the process
    # silently (rc 143, empty stderr): the handler covered only study.run().
    import os
    import signal
    import time

    from mapframe.results import StudyResult

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread before this ends
        raise AssertionError("SIGTERM was not turned into an interruption")

    monkeypatch.setattr(StudyResult, "save", terminated)
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet"]) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM) while writing the results" in err
    assert "run the same command again" in err


@pytest.mark.parametrize("where, how", [
    ("mapframe.config.build_study", "SIGINT"),
    ("mapframe.config.build_study", "SIGTERM"),
    ("mapframe.cli._save_config", "SIGINT"),
    ("mapframe.cli._save_config", "SIGTERM"),
    ("mapframe.report.write_report", "SIGTERM"),
    ("mapframe.cli._print_summary", "SIGINT"),
])
def test_an_interrupt_outside_the_study_and_save_is_one_line(tmp_path, capsys, monkeypatch,
                                                             where, how):
    # Ctrl-C while the study was built (plugins importing torch) or after the results were
    # saved (config.yaml, the export, the summary) ended in a raw KeyboardInterrupt
    # traceback, and SIGTERM there (report.html takes seconds on a large study) killed the
    # process without a word: only study.run() and result.save() had handlers.
    import importlib
    import os
    import signal
    import time

    module, _, name = where.rpartition(".")
    original = getattr(importlib.import_module(module), name)
    calls = []

    def interrupted(*args, **kwargs):
        if calls:  # the rerun
            return original(*args, **kwargs)
        calls.append(1)
        if how == "SIGINT":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread before this ends
        raise AssertionError("SIGTERM was not turned into an interruption")

    class Escaped(BaseException):
        pass

    def unhandled(signum, frame):  # a SIGTERM the command does not handle
        raise Escaped

    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    cfg = _config(tmp_path, output="out")
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        rc = main(["run", str(cfg), "--quiet"])
    except (KeyboardInterrupt, Escaped) as exc:
        pytest.fail(f"{how} escaped mapframe run ({type(exc).__name__}): a traceback, or "
                    "a process killed without a word")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == (130 if how == "SIGINT" else 143)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("interrupted" if how == "SIGINT" else "terminated (SIGTERM)")
    assert "run the same command again" in lines[0] or "mapframe report" in lines[0]
    stored = search_keys(tmp_path / "out" / "evaluations.sqlite")
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    if stored:  # interrupted after the study: the rerun evaluates nothing
        assert "(0 new this run" in out
    assert (tmp_path / "out" / "summary.json").is_file()


def test_warnings_while_writing_the_results_are_one_line(tmp_path, capsys, monkeypatch):
    # a warning during save (matplotlib missing) came in Python's two-line format with the
    # source line, since the one-line format was installed only around study.run()
    import warnings

    from mapframe.errors import MapframeWarning
    from mapframe.results import StudyResult

    save = StudyResult.save

    def warns(self, *args, **kwargs):
        warnings.warn("front.png not drawn: matplotlib is missing", MapframeWarning,
                      stacklevel=2)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(StudyResult, "save", warns)
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "\nwarning: front.png not drawn: matplotlib is missing\n" in err
    assert "MapframeWarning" not in err


def test_the_summary_counts_verified_points_and_those_left_on_the_front(tmp_path, capsys):
    cfg = _config(tmp_path, output="out")
    assert main(["run", str(cfg), "--quiet", "--no-report", "--no-plot"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    on_front = summary["front_sources"].get("verified", 0)
    assert (f"verified 3 predicted points ({on_front} remain on the front); mean "
            "|predicted - real| over the 3:") in capsys.readouterr().out
