"""The study core's structure: one spec, run() as the phases, one evaluation session, one
kinds table, layers that flow downwards, evaluators on one template."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import ConfigError, EvaluationError
from mapframe.evaluators.base import Evaluator, ModelEvaluator
from mapframe.plugin import get_registry
from mapframe.plugin.kinds import COMPONENT_KINDS
from mapframe.problem import Task
from mapframe.spec import StudySpec

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mapframe"


def quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - 0.2) ** 2).sum(1), 1 - ((C - 0.8) ** 2).sum(1)])


# -- run() reads as the algorithm -----------------------------------------------------------
def _function(path: Path, cls: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{cls}.{name} not found in {path}")


def test_run_is_short_and_calls_the_phases_in_order():
    run = _function(PKG / "study.py", "MergeStudy", "run")
    assert run.end_lineno is not None and run.end_lineno - run.lineno + 1 <= 40
    calls = [n.func.attr for n in sorted(
        (n for n in ast.walk(run) if isinstance(n, ast.Call)
         and isinstance(n.func, ast.Attribute) and n.func.attr.startswith("_")),
        key=lambda n: (n.lineno, n.col_offset))]
    phases = ["_search", "_fit", "_solve", "_verify", "_result", "_select"]
    assert [c for c in calls if c in phases] == phases


def test_the_study_keeps_no_per_run_state():
    study = MergeStudy(objective=quad, task_names=["a", "b"], budget=10, seed=0)
    before = set(vars(study))
    first = study.run()
    assert set(vars(study)) == before
    second = study.run()  # a fresh run, which reuses the (in-memory) store
    np.testing.assert_array_equal(first.front.coefficients, second.front.coefficients)
    assert (first.n_evaluated, second.n_evaluated, second.n_reused) == (10, 0, 10)
    assert len(second.history) == 10


# -- layers flow downwards ------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports at run time (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", None) == "TYPE_CHECKING"
                 for n in ast.walk(block)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


ORCHESTRATORS = {"mapframe.study", "mapframe.nested", "mapframe.config", "mapframe.cli",
                 "mapframe.assembly", "mapframe.session"}


@pytest.mark.parametrize("layer", ["plugin", "storage", "history.py", "problem.py",
                                   "errors.py", "evaluators", "stopping", "pairing"])
def test_lower_layers_import_no_orchestrator(layer):
    target = PKG / layer
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files
    for f in files:
        bad = _imports(f) & ORCHESTRATORS
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


# -- one kinds table ------------------------------------------------------------------------
def test_registry_config_and_docs_follow_the_kinds_table():
    from mapframe.config import TOP_LEVEL_KEYS
    from mapframe.plugin import hookspecs

    kinds = [k.kind for k in COMPONENT_KINDS]
    assert get_registry().kinds == kinds
    for k in COMPONENT_KINDS:
        assert issubclass(k.load_base(), __import__("mapframe").component.Component)
        assert k.load_base().kind == k.kind
        if "." not in k.config_key:
            assert k.config_key in TOP_LEVEL_KEYS
        if k.default is not None:
            assert k.default in get_registry().names(k.kind), (k.kind, k.default)
        assert f"``{k.kind}``" in (hookspecs.mapframe_register_components.__doc__ or "")
    page = (ROOT / "docs" / "concepts.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| `([a-z_.]+)` \|", page, re.M)
    assert rows == [(k.kind, k.config_key) for k in COMPONENT_KINDS]


def test_plugins_command_lists_every_kind(capsys):
    from mapframe.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for k in COMPONENT_KINDS:
        assert re.search(rf"^\s+{k.kind}\s+{re.escape(k.config_key)}\s", out, re.M), k.kind


# -- one validated spec ---------------------------------------------------------------------
def test_kwargs_and_yaml_give_the_same_spec(tmp_path):
    cfg = {"evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "sampler": "lhs",
           "study": {"name": "s", "budget": 12, "seed": 3, "verify": 2,
                     "preference": [1, 2], "search_bounds": [0, 1], "on_error": "record"}}
    from_yaml = StudySpec.from_config(cfg, base_dir=tmp_path)
    from_kwargs = StudySpec.from_kwargs(
        evaluator=cfg["evaluator"], sampler="lhs", study_name="s", budget=12, seed=3,
        verify=2, preference=[1, 2], search_bounds=[0, 1], on_error="record")
    for field in StudySpec.model_fields:
        assert getattr(from_yaml, field) == getattr(from_kwargs, field), field
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        from_yaml.budget = 3  # type: ignore[misc]


@pytest.mark.parametrize("study, message", [
    ({"budget": 0}, "study.budget must be a positive integer, got 0"),
    ({"budget": True}, "study.budget must be int, got True"),
    ({"verify": -1}, "study.verify must be a non-negative integer, got -1"),
    ({"seed": "x"}, "study.seed must be int or null, got 'x'"),
    ({"on_error": "ignore"}, "study.on_error must be 'raise' or 'record', got 'ignore'"),
    ({"name": ""}, "study.name must be a non-empty string"),
    ({"preference": "1,2"}, "study.preference must be list"),
])
def test_yaml_settings_errors_name_the_field(study, message):
    cfg = {"evaluator": "callable", "study": study}
    with pytest.raises(ConfigError) as err:
        StudySpec.from_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": 0}, "budget must be a positive integer, got 0"),
    ({"verify": 1.5}, "verify must be int, got 1.5"),
    ({"study_name": 3}, "study_name must be a non-empty string, got 3"),
    ({"sampler": 3}, "sampler: expected a component name"),
    ({"stopping": {"patience": 2}}, "stopping: a component mapping needs 'name"),
])
def test_keyword_errors_name_the_argument(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MergeStudy(objective=quad, task_names=["a", "b"], **kwargs)


def test_a_key_given_twice_in_yaml_is_an_error(tmp_path):
    from mapframe.config import load_spec

    path = tmp_path / "s.yaml"
    path.write_text("evaluator: callable\nstudy:\n  budget: 40\n  budget: 20\n")
    with pytest.raises(ConfigError, match="duplicate key 'budget' at line 4"):
        load_spec(path)


def test_nested_rules_live_in_the_spec():
    base = {"evaluator": "callable", "nested": {"pair_budget": 12}}
    with pytest.raises(ConfigError, match=r"needs study\.preference"):
        StudySpec.from_config(base)
    with pytest.raises(ConfigError, match=r"study\.budget does not apply"):
        StudySpec.from_config({**base, "study": {"budget": 3, "preference": [1, 1]}})
    with pytest.raises(ConfigError, match="stopping does not apply"):
        StudySpec.from_config({**base, "stopping": "plateau",
                               "study": {"preference": [1, 1]}})
    spec = StudySpec.from_config({**base, "study": {"preference": [1, 1]}})
    assert spec.is_nested and spec.verify == 1 and spec.study_name == "nested"
    assert spec.nested is not None and spec.nested.pairing == "cosine"


def test_spec_round_trips_through_its_config(tmp_path):
    cfg = {"evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "stopping": {"name": "plateau", "patience": 2}, "sampler": "bins",
           "study": {"budget": 30, "storage": "s.sqlite", "output": "out"}}
    spec = StudySpec.from_config(cfg, base_dir=tmp_path)
    assert spec.storage == str(tmp_path / "s.sqlite")
    again = StudySpec.from_config(spec.to_config())
    assert again == spec


# -- evaluators on one template -------------------------------------------------------------
class _OldStyle(Evaluator):
    """An evaluator written against the older API: it implements evaluate() only."""

    name = "old-style-test"

    @property
    def tasks(self) -> list[Task]:
        return [Task("a"), Task("b")]

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        return quad(coefficients)


def test_an_evaluator_implementing_evaluate_keeps_working():
    ev = _OldStyle()
    C = np.array([[0.1, 0.3], [0.5, 0.9]])
    np.testing.assert_array_equal(ev.evaluate_tasks(C, [1]), quad(C)[:, [1]])
    res = MergeStudy(evaluator=ev, budget=8, seed=0).run()
    assert len(res.history) == 8


class _TinyModelEvaluator(ModelEvaluator):
    name = "tiny-model-test"
    n_scores = 2

    @property
    def tasks(self) -> list[Task]:
        return [Task("w"), Task("b")]

    def build_model(self):
        import torch

        return torch.nn.Linear(3, 2)

    def score(self, model):  # the older all-tasks API, returning n_scores values
        return [float(model.weight.sum()), float(model.bias.sum())][: self.n_scores]


def _tiny_task_vectors():
    import torch

    from mapframe.testing import tiny_task_vectors

    tv = tiny_task_vectors(2)
    g = torch.Generator().manual_seed(0)
    base = {"weight": torch.randn(2, 3, generator=g), "bias": torch.randn(2, generator=g)}
    fts = [{k: v + 0.1 * (i + 1) for k, v in base.items()} for i in range(2)]
    return type(tv)(base, fts, ["w", "b"])


def test_model_evaluator_template_scores_tasks_through_score():
    res = MergeStudy(evaluator=_TinyModelEvaluator(), task_vectors=_tiny_task_vectors(),
                     budget=8, seed=0).run()
    Y = res.history.Y
    assert Y.shape == (8, 2) and np.all(np.isfinite(Y))


def test_model_evaluator_returning_too_few_metrics_is_an_error():
    ev = _TinyModelEvaluator()
    ev.n_scores = 1  # one value for two tasks: must not be broadcast into both columns
    with pytest.raises(EvaluationError, match=r"score\(\) returned 1 metric\(s\) for 2 tasks"):
        MergeStudy(evaluator=ev, task_vectors=_tiny_task_vectors(), budget=8, seed=0).run()


# -- the evaluation session -----------------------------------------------------------------
def test_on_error_raise_stores_every_finished_result_first(tmp_path):
    calls: list[tuple[float, ...]] = []

    def fails_once(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        calls.extend(tuple(c) for c in C)
        if np.any(np.abs(C[:, 0] - C[:, 1]) < 0.05):
            raise RuntimeError("bad point")
        return quad(C)

    db = tmp_path / "s.sqlite"
    grid = {"name": "grid"}
    with pytest.raises(EvaluationError, match="bad point"):
        MergeStudy(objective=fails_once, task_names=["a", "b"], budget=16, seed=0,
                   sampler=grid, storage=db, study_name="s").run()
    calls.clear()
    res = MergeStudy(objective=fails_once, task_names=["a", "b"], budget=16, seed=0,
                     sampler=grid, storage=db, study_name="s", on_error="record").run()
    # Only the failing points are evaluated again; every success was stored before raising.
    failed = {tuple(e.coefficients) for e in res.history.failures}
    assert failed and res.n_reused == 16 - len(failed)
    assert set(calls) == failed


def test_import_mapframe_and_its_cli_leave_scipy_until_needed() -> None:
    """``import mapframe`` took 1.3 s, 1 s of it scipy.stats (imported by the samplers for
    their QMC engines) and more for scipy.optimize/linalg: every ``mapframe --help``, every
    Ray/Dask worker and every library import paid it. scipy is imported where a design is
    drawn or a surrogate fitted."""
    code = ("import sys, mapframe, mapframe.cli, mapframe.samplers, mapframe.surrogates\n"
            "from mapframe.plugin import get_registry\n"
            "for kind in ('sampler', 'surrogate', 'front_solver'):\n"
            "    [get_registry().get(kind, n) for n in get_registry().names(kind)]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'scipy', 'torch', 'pymoo', 'matplotlib', 'plotly', 'sklearn', 'pandas'})\n"
            "assert not heavy, heavy[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
