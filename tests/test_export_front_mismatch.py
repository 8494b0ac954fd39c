"""``mapframe export`` refuses a results folder whose ``config.yaml`` would merge another
model than the one its ``front.json`` describes (other checkpoints, another order, another
merge strategy, checkpoint files changed since the run), and still exports a folder moved
with its checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapframe.cli import main
from mapframe.errors import ConfigError
from mapframe.results_folder import load_results

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished example study (rot90, flip) whose checkpoints also hold vflip's."""
    from mapframe.examples import digits

    root = tmp_path_factory.mktemp("mismatch")
    digits.prepare_checkpoints(root / "cache", ["rot90", "flip", "vflip"])
    out = root / "ex"
    assert main(["example", "-o", str(out), "--cache-dir", str(root / "cache"), "-q",
                 "--budget", "8", "--no-plot", "--no-report"]) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ex"
    shutil.copytree(finished, folder)  # copy2: times kept
    return folder


def _edit(folder: Path, change: Any) -> None:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    change(cfg)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _refused(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    target = tmp_path / "m.safetensors"
    capsys.readouterr()
    assert main(["export", str(folder), "--point", "0", "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not target.exists()
    with pytest.raises(ConfigError):
        load_results(folder).export(target, index=0)
    assert "restore the study's config.yaml" in err and "rerun the study" in err
    return err


def _swap_flip_for_vflip(cfg: dict[str, Any]) -> None:
    ft = cfg["checkpoints"]["finetuned"]
    ft["vflip"] = ft.pop("flip").replace("finetuned-flip", "finetuned-vflip")


def test_other_checkpoints_in_config_are_refused(finished: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(finished, tmp_path)
    _edit(folder, _swap_flip_for_vflip)
    err = _refused(folder, tmp_path, capsys)
    assert "rot90, vflip" in err and "rot90, flip" in err


def test_the_checkpoints_in_another_order_are_refused(finished: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """The coefficients are applied by position: flip's coefficient would scale rot90."""
    folder = _copy(finished, tmp_path)

    def reorder(cfg: dict[str, Any]) -> None:
        ft = cfg["checkpoints"]["finetuned"]
        cfg["checkpoints"]["finetuned"] = {"flip": ft["flip"], "rot90": ft["rot90"]}

    _edit(folder, reorder)
    assert "flip, rot90" in _refused(folder, tmp_path, capsys)


def test_another_merge_strategy_is_refused(finished: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(finished, tmp_path)
    _edit(folder, lambda cfg: cfg.update(merge_strategy={"name": "ties", "trim": 0.2}))
    err = _refused(folder, tmp_path, capsys)
    assert "ties" in err and "task_arithmetic" in err


@pytest.mark.parametrize("which", ["pretrained", "flip"])
def test_changed_checkpoint_files_are_refused(finished: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              which: str) -> None:
    """Other files of the same names and sizes (another cache's checkpoints, or ones
    retrained in place): their modification times differ from those the run recorded."""
    folder = _copy(finished, tmp_path)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    source = Path(cfg["checkpoints"]["pretrained"] if which == "pretrained"
                  else cfg["checkpoints"]["finetuned"][which])
    other = tmp_path / "other" / source.name
    other.parent.mkdir()
    shutil.copyfile(source, other)  # same bytes, new modification time
    st = source.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    def point(cfg: dict[str, Any]) -> None:
        if which == "pretrained":
            cfg["checkpoints"]["pretrained"] = str(other)
        else:
            cfg["checkpoints"]["finetuned"][which] = str(other)

    _edit(folder, point)
    err = _refused(folder, tmp_path, capsys)
    assert str(other) in err and "modification time" in err


def test_a_moved_folder_with_its_checkpoints_still_exports(finished: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """Checkpoints copied beside the results with their times (relative paths in the
    config), the folder then moved: the same model as from the original folder."""
    from mapframe.merging.checkpoints import load_state_dict

    folder = _copy(finished, tmp_path)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "ck").mkdir()
    for path in [cfg["checkpoints"]["pretrained"], *cfg["checkpoints"]["finetuned"].values()]:
        shutil.copy2(path, folder / "ck" / Path(path).name)

    def relative(cfg: dict[str, Any]) -> None:
        ck = cfg["checkpoints"]
        ck["pretrained"] = f"ck/{Path(ck['pretrained']).name}"
        ck["finetuned"] = {k: f"ck/{Path(v).name}" for k, v in ck["finetuned"].items()}

    _edit(folder, relative)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["export", str(finished), "--point", "0", "-o", str(a)]) == 0
    assert main(["export", str(moved), "--point", "0", "-o", str(b)]) == 0
    x, y = load_state_dict(a), load_state_dict(b)
    assert set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


def test_results_without_recorded_settings_check_the_names(finished: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """A summary.json without ``settings`` (an older mapframe's): the checkpoint names are
    still compared with the front's coefficients; matching ones export."""
    folder = _copy(finished, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    del summary["settings"]
    (folder / "summary.json").write_text(json.dumps(summary))
    assert main(["export", str(folder), "--point", "0", "-o",
                 str(tmp_path / "ok.safetensors")]) == 0
    _edit(folder, _swap_flip_for_vflip)
    assert "rot90, vflip" in _refused(folder, tmp_path, capsys)
