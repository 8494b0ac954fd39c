"""Store names and paths: a typo of a store's name is no SQLite file, and an
``os.PathLike`` always means an SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.config import load_spec
from mapframe.errors import ConfigError
from mapframe.storage import MemoryStore, SQLiteStore

TYPO = ("'memroy' names no store: did you mean 'memory'? (a file path needs a suffix such "
        "as .sqlite or a directory part)")


def quad(C):
    C = np.atleast_2d(C)
    return np.stack([-(C[:, 0] - 0.5) ** 2, -(C[:, 1] - 0.5) ** 2], axis=1)


def study(storage):
    return MergeStudy(objective=quad, task_names=["a", "b"], budget=12, storage=storage)


def test_a_typo_of_a_store_name_in_yaml_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text('evaluator: {name: callable, function: "x:y", tasks: [a, b]}\n'
                    "study: {storage: memroy}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value) == f"study.storage: {TYPO}"
    assert not (tmp_path / "memroy").exists()


def test_a_typo_of_a_store_name_in_python_is_refused():
    with pytest.raises(ConfigError) as err:
        study("memroy")
    assert str(err.value) == f"storage: {TYPO}"


@pytest.mark.parametrize("name", ["evals", "memroy.sqlite", "./memroy"])
def test_documented_paths_and_far_names_are_sqlite_files(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert isinstance(study(name).storage, SQLiteStore)


def test_a_pathlike_is_always_an_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = study(Path("memory")).storage
    assert isinstance(store, SQLiteStore)
    assert store.location is not None and Path(store.location).name == "memory"
    assert isinstance(study("memory").storage, MemoryStore)


@pytest.mark.parametrize("given", ["~/s.sqlite", Path("~/s.sqlite"),
                                   {"name": "sqlite", "path": "~/s.sqlite"}])
def test_a_leading_tilde_is_the_home_folder_from_python_too(tmp_path, monkeypatch, given):
    """YAML expanded ``~``; from Python ``storage="~/s.sqlite"`` made a folder named ``~``
    in the working directory (which a later ``rm -rf ~`` would take for the home folder)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    store = study(given).storage
    assert isinstance(store, SQLiteStore)
    assert Path(store.location) == home / "s.sqlite"
    assert not (work / "~").exists()


def test_checkpoint_paths_with_a_tilde_and_names_with_control_characters(tmp_path,
                                                                        monkeypatch):
    from mapframe.spec import StudySpec

    monkeypatch.setenv("HOME", str(tmp_path))
    ev = {"name": "callable", "function": "x:y", "tasks": ["a", "b"]}
    spec = StudySpec.build(evaluator=ev, checkpoints={"pretrained": "~/pre.safetensors",
                                        "finetuned": {"a": "~/a.safetensors",
                                                      "b": Path("~/b.safetensors")}})
    assert spec.checkpoints is not None
    assert spec.checkpoints.pretrained == str(tmp_path / "pre.safetensors")
    assert spec.checkpoints.finetuned == {"a": str(tmp_path / "a.safetensors"),
                                          "b": str(tmp_path / "b.safetensors")}
    # a coefficient name goes into the mergekit YAML's header and the model card: a newline
    # there wrote a YAML key of its own
    with pytest.raises(ConfigError) as err:
        StudySpec.build(evaluator=ev, checkpoints={"pretrained": "p.safetensors",
                                     "finetuned": {"a=1\ntokenizer_source: /x\n#": "a.st"}})
    assert "\n" not in str(err.value) and "control character" in str(err.value)


def test_results_saved_and_loaded_under_a_tilde_are_in_the_home_folder(tmp_path, monkeypatch):
    from mapframe import load_results

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    def conflicting(C):
        C = np.atleast_2d(C)
        return np.stack([-((C - [0.2, 0.8]) ** 2).sum(1), -((C - [0.8, 0.2]) ** 2).sum(1)], 1)

    result = MergeStudy(objective=conflicting, task_names=["a", "b"], budget=8, seed=0,
                        sampler="sobol").run()
    paths = result.save("~/res", plot=False)
    assert paths["summary_json"].parent == home / "res"
    assert not (work / "~").exists()
    assert load_results("~/res").directory == home / "res"
