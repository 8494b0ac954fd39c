"""An objective defined in a notebook, an interactive session or ``python -c`` (a function of
``__main__`` that no worker can import: its ``__main__`` is not the driver's) runs on the
Dask and Ray executors, which send it by value (cloudpickle), and on the ``process``
executor with ``start_method="fork"``; with ``spawn`` the workers' setup error says what to
do. An importable ``module:function`` still travels by its name."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from mapframe.evaluators.callable import CallableEvaluator
from mapframe.evaluators.identity import callable_digest

SOURCE = """\
import numpy as np

CENTRE = (0.8, 0.2)

def nb_objective(C):
    return np.column_stack([1 - ((C - CENTRE) ** 2).sum(axis=1),
                            1 - ((C - 0.5) ** 2).sum(axis=1)])
"""


@pytest.fixture
def main_function(monkeypatch) -> types.FunctionType:
    """A function of ``__main__``, as a notebook cell defines one."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(SOURCE, namespace)
    fn = namespace["nb_objective"]
    assert isinstance(fn, types.FunctionType) and fn.__module__ == "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "nb_objective", fn, raising=False)
    return fn


def test_a_main_function_travels_by_value_with_cloudpickle(main_function, monkeypatch):
    cloudpickle = pytest.importorskip("cloudpickle")
    ev = CallableEvaluator(main_function, ["a", "b"])
    assert ev.function == "__main__:nb_objective"
    assert ev.describe()["code"] == callable_digest(main_function)
    payload = cloudpickle.dumps(ev)
    # a worker's __main__ has no such function: by name it could not be found
    monkeypatch.delattr(sys.modules["__main__"], "nb_objective")
    sent = cloudpickle.loads(payload)
    C = np.array([[0.8, 0.2], [0.5, 0.5]])
    np.testing.assert_allclose(sent.evaluate_tasks(C, [0, 1]), main_function(C))
    assert sent.describe() == ev.describe()  # the same fingerprint in the worker


def test_pickle_sends_a_main_function_by_reference(main_function):
    """Standard pickle (the process executor) names it: a forked worker has it."""
    ev = CallableEvaluator(main_function, ["a", "b"])
    assert ev.__getstate__()["_fn"] is main_function
    assert pickle.loads(pickle.dumps(ev))._fn is main_function


def test_an_importable_function_still_travels_by_name():
    ev = CallableEvaluator("mapframe.evaluators.callable:resolve_callable", ["a"])
    assert ev.__getstate__()["_fn"] is None
    assert "code" not in ev.describe()
    assert pickle.loads(pickle.dumps(ev))._fn is ev._fn


def _run_c(script: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``script`` as ``python -c`` runs it: a ``__main__`` without a file, like a notebook's
    (a spawned worker cannot re-import it)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_DEDUP_LOGS": "0"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout, env=env)


STUDY = SOURCE + """
from mapframe import MergeStudy

def run(executor):
    return MergeStudy(objective=nb_objective, task_names=["a", "b"], budget=4, seed=0,
                      sampler="sobol", executor=executor).run()

if __name__ == "__main__":
"""


def test_process_executor_fork_runs_it_and_spawn_says_what_to_do():
    script = STUDY + textwrap.indent(textwrap.dedent("""\
        from mapframe.executors import WorkerSetupError
        try:
            run({"name": "process", "workers": 1, "start_method": "spawn"})
        except WorkerSetupError as exc:
            print("SPAWN:", exc)
        r = run({"name": "process", "workers": 1, "start_method": "fork"})
        print("FORK:", r.n_evaluated)
        """), "    ")
    out = _run_c(script)
    assert "FORK: 4" in out.stdout, out.stdout + out.stderr
    spawn = next(line for line in out.stdout.splitlines() if line.startswith("SPAWN:"))
    assert "notebook" in spawn and "start_method='fork'" in spawn, spawn
    assert "'dask'" in spawn and "'inprocess'" in spawn


@pytest.mark.slow  # a local Dask cluster: ~10-20 s on a loaded machine
def test_a_study_from_python_c_runs_on_dask():
    pytest.importorskip("distributed")
    out = _run_c(STUDY + "    print('DONE', run({'name': 'dask', 'workers': 1}).n_evaluated)\n")
    assert "DONE 4" in out.stdout, out.stdout + out.stderr[-3000:]


@pytest.mark.slow  # a local Ray instance: ~15 s
def test_a_study_from_python_c_runs_on_ray():
    pytest.importorskip("ray")
    out = _run_c(STUDY + "    print('DONE', run({'name': 'ray', 'workers': 1}).n_evaluated)\n")
    assert "DONE 4" in out.stdout, out.stdout + out.stderr[-3000:]
