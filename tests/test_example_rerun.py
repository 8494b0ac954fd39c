"""``mapframe example`` run again into a folder that holds another setup's example.

The store refuses the second run (another setup under the same study name), but the folder's
``config.yaml`` was written before that check: it then named the second run's checkpoints
beside the first run's ``front.json``, and ``mapframe export`` silently merged the new
checkpoints with the old front's coefficients (labelled with the old front's metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapframe.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("torch")

BASE = ["-q", "--budget", "8", "--no-plot", "--no-report"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


def _coefficient_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    return list(json.loads(meta["mapframe.coefficients"]))


@pytest.mark.parametrize("second", [["--tasks", "rot90,vflip"], ["--cache-dir", "OTHER"]],
                         ids=["other-tasks", "other-checkpoints"])
def test_a_refused_rerun_leaves_the_folders_config_and_export_alone(
        cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        second: list[str]) -> None:
    out = tmp_path / "ex"
    first = ["example", "-o", str(out), "--cache-dir", str(cache_dir), *BASE]
    assert main(first) == 0
    config = (out / "config.yaml").read_bytes()
    capsys.readouterr()
    # the other checkpoints: trained into another cache (same names and sizes, other files)
    argv = [*first, *second]
    if "OTHER" in second:
        argv[argv.index("OTHER")] = str(tmp_path / "other-cache")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "different setup" in err
    assert (out / "config.yaml").read_bytes() == config  # it named the refused run's
    target = tmp_path / "m.safetensors"
    assert main(["export", str(out), "--preference", "0.5,0.5", "-o", str(target)]) == 0
    assert "rot90=" in capsys.readouterr().out
    assert _coefficient_names(target) == ["rot90", "flip"]  # was ["rot90", "vflip"]


def test_the_config_is_written_once_the_example_ran(cache_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    """The folder's config.yaml is written with the results (as ``mapframe run`` writes
    it): relative to the folder, the --seed the run used included, and it resumes."""
    import yaml

    out = tmp_path / "ex"
    assert main(["example", "-o", str(out), "--cache-dir", str(cache_dir), "--seed", "3",
                 *BASE]) == 0
    assert f"config written to {out / 'config.yaml'}" in capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["study"]["output"], saved["study"]["storage"]) == (".", "evaluations.sqlite")
    assert saved["study"]["seed"] == 3 and saved["study"]["budget"] == 8
    assert list(saved["checkpoints"]["finetuned"]) == ["rot90", "flip"]
    assert main(["run", str(out / "config.yaml"), "-q", "--no-plot", "--no-report"]) == 0
    assert "0 new this run" in capsys.readouterr().out
