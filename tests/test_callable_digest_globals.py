"""A function's digest counts the module-level names it loads, not its attribute names: the
objective ``C.shape`` did not change when the notebook's variable ``shape`` did. A digest the
earlier algorithm stored (it counted every name of the code) still matches the unchanged
function, so its study resumes and its code-changed warning stays quiet."""

from __future__ import annotations

import importlib
import json
import shutil
import sqlite3
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from mapframe import MergeStudy
from mapframe.errors import MapframeWarning, SetupMismatchError
from mapframe.evaluators import identity
from mapframe.evaluators.identity import callable_digest, code_digest, legacy_digest_matches
from mapframe.storage.base import fingerprint_diff

NOTEBOOK = """\
import numpy as np

shape = 3
scale = 2.0

def h(C):
    return np.column_stack([(C[:, :1] - C[:, 1:]).sum(axis=1) * scale,
                            C[:, 1] - C[:, 0] + C.shape[1]])
"""


def _namespace(module: str = "nbmod", **values: Any) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": module}
    exec(NOTEBOOK, ns)
    ns.update(values)
    return ns


def _legacy(digest: Any, fn: Any) -> str | None:
    """What the earlier algorithm computed for ``fn`` (every name of its code counted)."""
    token = identity._LEGACY.set(True)
    try:
        return digest(fn)
    finally:
        identity._LEGACY.reset(token)


def test_an_unrelated_global_named_like_an_attribute_does_not_count():
    ns = _namespace()
    before = callable_digest(ns["h"])
    ns["shape"] = 4  # the notebook's `shape`: h only reads C.shape
    assert callable_digest(ns["h"]) == before
    ns["sum"] = 1
    assert callable_digest(ns["h"]) == before


def test_a_global_the_function_reads_counts():
    ns = _namespace()
    before = callable_digest(ns["h"])
    ns["scale"] = 3.0
    assert callable_digest(ns["h"]) != before


def test_names_read_in_nested_code_count():
    ns: dict[str, Any] = {"__name__": "nbmod", "k": 1, "shape": 1}
    exec("def g(C):\n    return [lambda: k * c.shape for c in C]\n", ns)
    before = callable_digest(ns["g"])
    ns["shape"] = 2
    assert callable_digest(ns["g"]) == before
    ns["k"] = 2
    assert callable_digest(ns["g"]) != before


def test_the_digest_is_the_earlier_one_without_such_a_name():
    """Stored fingerprints stay valid: only a function with an attribute name that is also a
    module-level name has a new digest."""
    ns = _namespace()
    del ns["shape"]
    assert callable_digest(ns["h"]) == _legacy(identity._callable_digest, ns["h"])
    ns = _namespace()
    assert callable_digest(ns["h"]) != _legacy(identity._callable_digest, ns["h"])
    assert code_digest(json.dumps) == _legacy(identity._code_digest, json.dumps)


def test_legacy_digest_matches():
    ns = _namespace()
    new = callable_digest(ns["h"])
    old = _legacy(identity._callable_digest, ns["h"])
    assert new is not None and old is not None and old != new
    assert legacy_digest_matches(old, new)
    assert legacy_digest_matches(new, new)
    assert not legacy_digest_matches("0" * 20, new)
    assert not legacy_digest_matches(None, new) and not legacy_digest_matches(old, None)
    ns["scale"] = 5.0  # another function now: the old digest no longer matches
    assert not legacy_digest_matches(old, callable_digest(ns["h"]))


def test_fingerprint_diff_accepts_the_earlier_digest_of_the_same_function():
    ns = _namespace()
    new_code = callable_digest(ns["h"])
    old_code = _legacy(identity._callable_digest, ns["h"])
    new = {"tasks": [], "evaluator": {"name": "callable", "function": "<nbmod.h>",
                                      "code": new_code}}
    old = {**new, "evaluator": {**new["evaluator"], "code": old_code}}
    assert fingerprint_diff(old, new) == []
    other = {**new, "evaluator": {**new["evaluator"], "code": "f" * 20}}
    assert fingerprint_diff(other, new) == ["evaluator"]


def _study(fn: Any, store: Path) -> MergeStudy:
    return MergeStudy(objective=fn, task_names=["a", "b"], budget=6, seed=0,
                      sampler="sobol", storage=str(store), study_name="nb")


def _set_stored_code(store: Path, code: str) -> None:
    with sqlite3.connect(store) as db:
        (fp,) = db.execute("SELECT fingerprint FROM studies WHERE name = 'nb'").fetchone()
        fp = json.loads(fp)
        fp["evaluator"]["code"] = code
        db.execute("UPDATE studies SET fingerprint = ? WHERE name = 'nb'",
                   (json.dumps(fp, sort_keys=True),))
    db.close()


def test_a_study_stored_with_the_earlier_digest_resumes(tmp_path):
    ns = _namespace()
    store = tmp_path / "s.sqlite"
    assert _study(ns["h"], store).run().summary()["n_evaluated_this_run"] == 6
    _set_stored_code(store, _legacy(identity._callable_digest, ns["h"]))  # an older mapframe
    s = _study(ns["h"], store).run().summary()
    assert s["n_reused_from_store"] == 6 and s["n_evaluated_this_run"] == 0
    ns["scale"] = 3.0  # a real change is still refused
    with pytest.raises(SetupMismatchError, match=r"evaluator\.code"):
        _study(ns["h"], store).run()


MODULE = """\
import numpy as np

shape = 3


def load(C):
    return np.column_stack([C.sum(1), (C * C).sum(1)])


def f(C):
    return np.load.__name__ and load(C)[:, :C.shape[1]]
"""


def test_a_code_digest_kept_by_the_earlier_algorithm_does_not_warn(tmp_path, monkeypatch):
    """An importable function whose attribute names (``shape``, ``np.load``) are also
    module-level names: the code digest kept in the store by the earlier algorithm is
    the same code, no code-changed warning."""
    name = f"digmod_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    try:
        fn = importlib.import_module(name).f
        assert code_digest(fn) != _legacy(identity._code_digest, fn)
        store = tmp_path / "s.sqlite"

        def run() -> list[str]:
            study = MergeStudy(evaluator={"name": "callable", "function": f"{name}:f",
                                          "tasks": ["a", "b"]}, budget=6, seed=0,
                               sampler="sobol", storage=str(store), study_name="nb")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                study.run()
            return [str(w.message) for w in caught if issubclass(w.category, MapframeWarning)
                    and "changed since" in str(w.message)]

        assert run() == []
        with sqlite3.connect(store) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'evaluator_code'",
                       (json.dumps(_legacy(identity._code_digest, fn)),))
            assert db.total_changes == 1
        db.close()
        assert run() == []
        with sqlite3.connect(store) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'evaluator_code'",
                       (json.dumps("0" * 20),))
        db.close()
        assert len(run()) == 1  # a real change still warns
    finally:
        sys.modules.pop(name, None)
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
