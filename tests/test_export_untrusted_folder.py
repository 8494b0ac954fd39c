"""Exporting from a results folder someone sent: only the merge is rebuilt from its
config.yaml. The folder cannot allow unpickling (that takes --allow-pickle /
``allow_pickle=True``), its evaluator's modules are not imported, and its relative checkpoint
paths are the folder's."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")

from mapframe import load_results  # noqa: E402
from mapframe.cli import main  # noqa: E402
from mapframe.errors import CheckpointError  # noqa: E402
from mapframe.merging import load_state_dict  # noqa: E402
from mapframe.testing.contracts import tiny_checkpoints  # noqa: E402

COEFS = [[0.3, 0.7], [0.8, 0.1]]
MODULE = "mapframe_untrusted_marker_mod"


class _Touch:
    """Pickles as a call of ``Path(marker).touch()``: a harmless payload that shows whether
    unpickling ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _folder(root: Path, evaluator: Any = None, relative: bool = False) -> Path:
    """A results folder (front.json, summary.json, config.yaml) over tiny checkpoints in
    ``root/ck``; checkpoint paths relative to the folder when ``relative``."""
    folder = root / "received"
    spec = tiny_checkpoints(folder / "ck")
    names = list(spec.finetuned)
    tasks = [{"name": n, "direction": "max", "lower": 0.0, "upper": 1.0} for n in names]
    points = [{"index": i, "source": "predicted",
               **{f"c_{n}": c for n, c in zip(names, cs)},
               **{f"predicted_{n}": 0.5 for n in names},
               **{f"real_{n}": None for n in names}} for i, cs in enumerate(COEFS)]
    (folder / "front.json").write_text(json.dumps(
        {"tasks": tasks, "coefficient_names": names, "points": points}))
    (folder / "summary.json").write_text(json.dumps({"study": "sent", "selected": None}))

    def path(p: Any) -> str:
        return str(Path(p).relative_to(folder)) if relative else str(p)

    config = {"study": {"name": "sent", "budget": 8, "output": str(folder)},
              "evaluator": evaluator or {"name": "callable", "function": "math:fsum",
                                         "tasks": names},
              "checkpoints": {"pretrained": path(spec.pretrained),
                              "finetuned": {k: path(v) for k, v in spec.finetuned.items()}},
              "merge_strategy": "task_arithmetic"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def _expected(folder: Path, i: int) -> dict[str, torch.Tensor]:
    ck = folder / "ck"
    base = load_state_dict(ck / "pretrained.safetensors")
    fts = [load_state_dict(ck / f"t{j}.safetensors") for j in range(2)]
    return {k: v + sum(c * (ft[k] - v) for c, ft in zip(COEFS[i], fts))
            for k, v in base.items()}


def _assert_exported(path: Path, folder: Path, i: int) -> None:
    got, want = load_state_dict(path), _expected(folder, i)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k].to(got[k].dtype))


def _pickled_pretrained(folder: Path, marker: Path, bare: bool = False) -> None:
    """Replace the folder's pretrained checkpoint by a torch file with a payload beside the
    state dict (``bare``: a plain pickle, as an attacker would write), and set the folder's
    config to allow pickles."""
    state = load_state_dict(folder / "ck" / "pretrained.safetensors")
    obj = {"state_dict": state, "extra": _Touch(marker)}
    if bare:
        with open(folder / "evil.pt", "wb") as fh:
            pickle.dump(obj, fh, protocol=4)
    else:
        torch.save(obj, folder / "evil.pt")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["checkpoints"]["allow_pickle"] = True
    cfg["checkpoints"]["pretrained"] = str(folder / "evil.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.parametrize("bare", [False, True], ids=["torch-save", "bare-pickle"])
def test_the_folder_cannot_allow_pickles(tmp_path: Path, capsys: Any, recwarn: Any,
                                         bare: bool) -> None:
    folder = _folder(tmp_path)
    marker = tmp_path / "PICKLE_RAN"
    _pickled_pretrained(folder, marker, bare)
    out = tmp_path / "m.safetensors"
    assert main(["export", str(folder), "--point", "0", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "evil.pt" in err and "--allow-pickle" in err and "folder you trust" in err
    assert not marker.exists() and not out.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pt.*allow_pickle=True"):
        load_results(folder).export(out, index=0)
    assert not marker.exists()
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_a_bare_pickle_runs_no_code_when_refused(tmp_path: Path) -> None:
    """The restricted reader of pickled modules read a bare pickle's header with plain
    pickle.load: its code ran before any refusal."""
    marker = tmp_path / "PICKLE_RAN"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"state_dict": _Touch(marker)}, fh, protocol=4)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_allow_pickle_on_the_command_line_or_in_python_loads_it(tmp_path: Path,
                                                                capsys: Any) -> None:
    folder = _folder(tmp_path)
    marker = tmp_path / "PICKLE_RAN"
    _pickled_pretrained(folder, marker)
    out = tmp_path / "m.safetensors"
    assert main(["export", str(folder), "--point", "0", "-o", str(out),
                 "--allow-pickle"]) == 0, capsys.readouterr().err
    assert marker.exists()  # the user allowed it: the payload ran
    _assert_exported(out, folder, 0)
    marker.unlink()
    path = load_results(folder).export(tmp_path / "p.safetensors", index=1,
                                       allow_pickle=True)
    _assert_exported(path, folder, 1)


def test_export_does_not_import_the_evaluators_module(tmp_path: Path, monkeypatch: Any,
                                                      capsys: Any) -> None:
    marker = tmp_path / "IMPORTED"
    (tmp_path / f"{MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "def objective(c):\n    return [0.0, 0.0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    folder = _folder(tmp_path, {"name": "callable", "function": f"{MODULE}:objective",
                                "tasks": ["t0", "t1"]})
    out = tmp_path / "m.safetensors"
    assert main(["export", str(folder), "--point", "1", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert not marker.exists() and MODULE not in sys.modules
    _assert_exported(out, folder, 1)
    path = load_results(folder).export(tmp_path / "hf", index=0, format="hf")
    assert not marker.exists() and MODULE not in sys.modules
    assert path.is_dir()


def test_relative_checkpoint_paths_are_the_folders(tmp_path: Path, monkeypatch: Any,
                                                   capsys: Any) -> None:
    folder = _folder(tmp_path, relative=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["export", str(folder), "--point", "0", "-o", "m.safetensors"]) == 0, \
        capsys.readouterr().err
    _assert_exported(elsewhere / "m.safetensors", folder, 0)
    monkeypatch.chdir(folder)  # the folder given relatively, from inside it
    path = load_results(".").export(tmp_path / "p.safetensors", index=1)
    _assert_exported(path, folder, 1)
