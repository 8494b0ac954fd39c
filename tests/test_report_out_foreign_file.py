"""``mapframe report RESULTS -o FILE`` replaces FILE only when it is a report mapframe wrote:
the user's own notes.html or script at that path is refused with a one-line error, as
saving a results folder refuses the user's files (mapframe._foreign_files)."""

from __future__ import annotations

import pytest
from objectives import two_quadratics

from mapframe import MergeStudy
from mapframe.cli import main


def test_report_out_refuses_a_file_that_is_not_a_mapframe_report(tmp_path, capsys):
    pytest.importorskip("plotly")
    MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=8, seed=0,
               sampler="sobol", surrogate="quadratic").run().save(tmp_path / "res", plot=False)
    mine = {"notes.html": "<html><title>my notes</title><h1>notes</h1></html>",
            "analysis.py": "print('my analysis')\n"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
        capsys.readouterr()
        assert main(["report", str(tmp_path / "res"), "-o", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is not a mapframe report" in err, err
        assert "give -o another file, or remove" in err
        assert (tmp_path / name).read_text() == text
    # a report mapframe wrote there is replaced, as before
    out = tmp_path / "shared-report.html"
    assert main(["report", str(tmp_path / "res"), "-o", str(out)]) == 0
    out.write_text(out.read_text().replace("</body>", "<!-- older --></body>"))
    assert main(["report", str(tmp_path / "res"), "-o", str(out)]) == 0
    assert "<!-- older -->" not in out.read_text()
