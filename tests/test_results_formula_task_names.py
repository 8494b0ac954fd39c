"""A task's name heads a column of ``evaluations.csv`` as written: a name starting like a
spreadsheet formula (``=HYPERLINK(...)``, ``+1``, ``@SUM(...)``, ``-x``) was run by the
spreadsheet that opened the file. Such names are refused when the study is built (one line,
before any evaluation); any other name (a comma, quotes, ``=`` further in) is written and
read back as it is."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from mapframe import MergeStudy, load_results
from mapframe.cli import main
from mapframe.errors import ConfigError

FORMULAS = ['=HYPERLINK("http://x","y")', "+1", "@SUM(A1:A2)", "-cmd", "\t=1", "\r=1"]


def _quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - t) ** 2).sum(1) for t in ([0.8, 0.2], [0.2, 0.8])])


def test_task_names_that_start_like_a_spreadsheet_formula_are_refused(tmp_path, capsys):
    calls = []

    def counted(C: np.ndarray) -> np.ndarray:
        calls.append(len(C))
        return _quad(C)

    for name in FORMULAS:
        with pytest.raises(ConfigError, match="start like a spreadsheet formula") as info:
            MergeStudy(objective=counted, task_names=["ok", name], budget=8, sampler="sobol",
                       surrogate="quadratic").run()
        assert "\n" not in str(info.value) and repr(name) in str(info.value)
    assert calls == []
    # the same from a config: a one-line error, nothing written
    cfg = {"study": {"name": "s", "budget": 8, "seed": 0, "output": str(tmp_path / "out")},
           "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "=1+1"]}, "sampler": "sobol"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "c.yaml"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'=1+1'" in err and "rename the task" in err
    assert not (tmp_path / "out").exists()


def test_other_task_names_are_written_and_read_back_as_they_are(tmp_path):
    names = ['acc=top1 "x", y', "a@b+c"]
    result = MergeStudy(objective=_quad, task_names=names, budget=8, seed=0, sampler="sobol",
                        surrogate="quadratic").run()
    result.save(tmp_path, plot=False)
    with (tmp_path / "evaluations.csv").open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert [h for h in header if h in names] == names
    assert load_results(tmp_path).task_names == names
