"""An objective given by its importable name (``module:function``) is identified by that name
(its code is no part of the fingerprint, so that editing it does not orphan what is stored),
but its code's digest is kept in the store with its evaluations: a resume after the function
changed warns once before reusing them, instead of reusing them silently."""

from __future__ import annotations

import importlib
import shutil
import sqlite3
import sys
import uuid
import warnings
from pathlib import Path

import pytest

from mapframe import MergeStudy
from mapframe.errors import MapframeWarning
from mapframe.evaluators.callable import CallableEvaluator
from mapframe.evaluators.identity import code_digest

ORIGINAL = """\
import numpy as np

CENTRE = (0.8, 0.2)


def f(C):
    return np.column_stack([1 - ((C - CENTRE) ** 2).sum(1), 1 - ((C - 0.5) ** 2).sum(1)])
"""


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A fresh importable module's name, and a function that rewrites its source (the next
    import reads the new one)."""
    name = f"objmod_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(source: str) -> None:
        sys.modules.pop(name, None)
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        (folder / f"{name}.py").write_text(source)
        importlib.invalidate_caches()

    write(ORIGINAL)
    yield name, write
    sys.modules.pop(name, None)


def _run(name: str, store: Path) -> tuple[object, list[str]]:
    study = MergeStudy(evaluator={"name": "callable", "function": f"{name}:f",
                                  "tasks": ["a", "b"]},
                       budget=8, seed=0, sampler="sobol", storage=str(store),
                       study_name="edit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = study.run()
    changed = [str(w.message) for w in caught
               if issubclass(w.category, MapframeWarning) and "changed since" in
               str(w.message)]
    return result, changed


def test_a_resume_after_the_function_changed_warns_once_and_reuses(tmp_path, module):
    name, write = module
    store = tmp_path / "s.sqlite"
    changed = _run(name, store)[1]
    assert changed == []  # a fresh study
    write(ORIGINAL.replace("1 - ((C - 0.5)", "2 - ((C - 0.5)"))
    again, changed = _run(name, store)
    assert len(changed) == 1
    assert f"{name}:f" in changed[0] and "its 8 stored evaluations" in changed[0]
    assert f"(mapframe store delete {store} " in changed[0]
    assert "study.name" in changed[0] and "\n" not in changed[0]
    s = again.summary()
    assert s["n_reused_from_store"] == 8 and s["n_evaluated_this_run"] == 0
    # still the old code's evaluations: the next resume warns again
    assert len(_run(name, store)[1]) == 1
    write(ORIGINAL)  # back to the code they were made with
    assert _run(name, store)[1] == []


def test_a_changed_module_constant_warns_too(tmp_path, module):
    name, write = module
    store = tmp_path / "s.sqlite"
    _run(name, store)
    write(ORIGINAL.replace("(0.8, 0.2)", "(0.7, 0.3)"))
    assert len(_run(name, store)[1]) == 1


def test_no_warning_when_unchanged_or_only_comments_changed(tmp_path, module):
    name, write = module
    store = tmp_path / "s.sqlite"
    _run(name, store)
    assert _run(name, store)[1] == []
    write(ORIGINAL.replace("def f(C):\n", '# a comment\n\ndef f(C):\n    """Docs."""\n'
                           "    # another comment\n"))
    assert _run(name, store)[1] == []


def test_a_store_without_a_kept_digest_keeps_the_current_one(tmp_path, module):
    """A store written before the digest was kept: no warning (nothing to compare), and the
    digest of the code now is kept for the next resume."""
    name, write = module
    store = tmp_path / "s.sqlite"
    _run(name, store)
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM meta WHERE key = 'evaluator_code'")
    db.close()
    write(ORIGINAL.replace("1 - ((C - 0.5)", "2 - ((C - 0.5)"))
    assert _run(name, store)[1] == []
    with sqlite3.connect(store) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM meta WHERE key = 'evaluator_code'").fetchone()
    db.close()
    assert n == 0  # nothing new was stored, so nothing was kept
    _run(name, tmp_path / "other.sqlite")
    write(ORIGINAL)
    assert len(_run(name, tmp_path / "other.sqlite")[1]) == 1


def test_the_fingerprint_stays_the_name_of_an_importable_function(module):
    name, _ = module
    ev = CallableEvaluator(f"{name}:f", ["a", "b"])
    assert "code" not in ev.describe()
    assert isinstance(ev.code_digest(), str)


def test_functions_identified_by_a_digest_have_no_code_digest():
    ev = CallableEvaluator(lambda C: C, ["a", "b"])
    assert ev.code_digest() is None
    assert code_digest(len) is None
