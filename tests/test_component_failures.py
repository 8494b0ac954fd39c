"""A component or plugin that misbehaves inside a study: a one-line error naming it, and
nothing finished is lost.

Each case here once ended in a raw traceback naming neither the component nor its plugin,
or was handed over silently (a front solver's predictions for other points, coefficients
outside the search box), or lost the results of a batch (a plugin hook raising while the
batch's results were being stored).
"""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import ComponentError, EvaluationError
from mapframe.plugin import hookimpl, register_plugin, unregister_plugin
from mapframe.samplers.space_filling import SobolSampler
from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.stopping.base import StoppingRule
from mapframe.surrogates.quadratic import QuadraticSurrogate


def quad(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - [0.2, 0.8]) ** 2).sum(1),
                            1 - ((C - [0.8, 0.2]) ** 2).sum(1)])


def _study(tmp_path, **kw):
    kw.setdefault("sampler", "sobol")
    kw.setdefault("surrogate", "quadratic")
    kw.setdefault("front_solver", {"name": "grid", "points_per_dim": 11})
    return MergeStudy(objective=quad, task_names=["a", "b"], budget=12, seed=0,
                      storage=str(tmp_path / "store.sqlite"), **kw)


class _Sloppy(FrontSolver):
    """Solves on a grid, then breaks one part of the contract (``how``)."""

    name = "sloppy_test"

    def __init__(self, how: str) -> None:
        self.how = how

    def solve(self, predict, space, tasks, seed=None):
        g = np.linspace(0, 1, 11)
        X = space.scale(np.array([[a, b] for a in g for b in g]))
        F = predict(X)
        if self.how == "rows":  # predictions shifted by one row
            F = np.vstack([F[1:], F[:1]])
        elif self.how == "short":
            F = F[1:]
        elif self.how == "unit-box":  # ignores the search box
            X = np.array([[a, b] for a in g for b in g])
            F = predict(X)
        elif self.how == "nan":
            F = F.copy()
            F[0, 0] = np.nan
        return SolverResult(X, F)


@pytest.mark.parametrize("how, message", [
    ("rows", "not the surrogates' predictions at its points"),
    ("short", r"X of shape \(121, 2\) and F of shape \(120, 2\)"),
    ("unit-box", "outside the search box"),
    ("nan", "non-finite values"),
])
def test_a_front_solver_that_breaks_its_contract_is_named(tmp_path, how, message):
    bounds = (0.0, 0.5) if how == "unit-box" else (0.0, 1.0)
    study = _study(tmp_path, front_solver=_Sloppy(how), search_bounds=bounds)
    with pytest.raises(EvaluationError, match=f"front solver 'sloppy_test' returned .*{message}"
                       ) as info:
        study.run()
    assert "\n" not in str(info.value)
    # the evaluations are stored: a correct solver then reuses every one
    res = _study(tmp_path, search_bounds=bounds).run()
    assert res.n_evaluated == 0 and res.n_reused == 12


class _BoomSampler(SobolSampler):
    name = "boom_sampler_test"

    def propose(self, n, space, history, rng):
        raise RuntimeError("index out of range\nsecond line")


class _NoneBatch(SobolSampler):
    name = "none_batch_test"

    def batch_size(self, remaining, history, capacity):
        return None


class _EmptySampler(SobolSampler):
    name = "empty_sampler_test"

    def propose(self, n, space, history, rng):
        return np.empty((0, space.n_dims))


class _BoomSurrogate(QuadraticSurrogate):
    name = "boom_surrogate_test"

    def fit(self, X, y, task=None):
        raise ZeroDivisionError("division by zero")


class _BoomStop(StoppingRule):
    name = "boom_stop_test"

    def reset(self) -> None:
        pass

    def update(self, state):
        raise KeyError("rounds")


def test_a_component_method_that_raises_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(ComponentError, match=r"^sampler 'boom_sampler_test' \(.*_BoomSampler\) "
                                             r"failed in propose\(\): RuntimeError: index out "
                                             r"of range$") as info:
        _study(tmp_path, sampler=_BoomSampler()).run()
    assert isinstance(info.value.__cause__, RuntimeError)  # the traceback is kept
    with pytest.raises(EvaluationError, match=r"batch_size\(\) returned None"):
        _study(tmp_path, sampler=_NoneBatch()).run()
    with pytest.raises(EvaluationError, match=r"sampler 'empty_sampler_test' proposed no "
                                              r"points when asked for 12"):  # not "budget"
        _study(tmp_path, sampler=_EmptySampler()).run()
    with pytest.raises(ComponentError, match=r"^surrogate 'boom_surrogate_test' .* failed in "
                                             r"fit\(\): ZeroDivisionError"):
        _study(tmp_path, surrogate=_BoomSurrogate()).run()
    with pytest.raises(ComponentError, match=r"^stopping 'boom_stop_test' .* failed in "
                                             r"update\(\): KeyError: 'rounds'"):
        _study(tmp_path / "adaptive", sampler={"name": "bins", "initial": 8, "batch": 2},
               stopping=_BoomStop()).run()


class _FailingHooks:
    """A plugin whose stored-evaluation hook raises at the third evaluation."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.calls = 0

    @hookimpl
    def mapframe_study_started(self, study):
        if self.event == "started":
            raise ValueError("cannot reach the dashboard")

    @hookimpl
    def mapframe_evaluation_stored(self, study, evaluation):
        self.calls += 1
        if self.event == "stored" and self.calls == 3:
            raise ConnectionError("monitoring server down")


@pytest.mark.parametrize("event, message", [
    ("started", "the mapframe_study_started hook of plugin 'failing_hooks_test' \\(registered in "
                "code\\) failed: ValueError: cannot reach the dashboard"),
    ("stored", "the mapframe_evaluation_stored hook of plugin 'failing_hooks_test' \\(registered "
               "in code\\) failed: ConnectionError: monitoring server down"),
])
def test_a_plugin_hook_that_raises_names_its_plugin_and_loses_nothing(tmp_path, event,
                                                                     message):
    plugin = _FailingHooks(event)
    register_plugin(plugin, name="failing_hooks_test")
    try:
        with pytest.raises(ComponentError, match=message):
            _study(tmp_path).run()
    finally:
        unregister_plugin(plugin)
    res = _study(tmp_path).run()
    if event == "stored":  # the whole batch (12 points) finished and is stored
        assert res.n_reused == 12 and res.n_evaluated == 0
    else:  # nothing was evaluated before the hook stopped the study
        assert res.n_reused == 0 and res.n_evaluated == 12


@pytest.mark.parametrize("kwargs, message", [
    ({"task_names": "accuracy"}, r"task_names must be a list of task names, got the string "
                                 r"'accuracy'; write \['accuracy'\]"),
    ({"tasks": "f1"}, "tasks must be a list of task names, got the string 'f1'"),
    # progress=True is the default display now (tests/test_progress_notebook.py)
    ({"task_names": ["a", "b"], "progress": 1}, "progress must be True .*, a callable "
                                                "taking a ProgressEvent .* got 1"),
])
def test_a_string_of_task_names_or_a_progress_that_is_no_callable_is_refused(kwargs, message):
    """'accuracy' became the tasks a, c, c, u, ... ('task names must be unique'), 'f1' two
    tasks f and 1 (blaming the objective's output shape); progress=1 was accepted and
    failed at the first event with a raw TypeError."""
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        MergeStudy(objective=quad, budget=12, **kwargs)


@pytest.mark.parametrize("sampler, stopping, message", [
    ({"name": "auto", "optimism": 1}, None,
     r"sampler auto chose 'gp' for 2 coefficients and budget 20 .* refuses a setting given "
     r"to auto: .*optimism; .*name the sampler those settings are for"),
    ({"name": "auto", "batch": 0}, None, r"sampler auto chose 'gp' .*batch must be"),
    ("auto", "plateau", r"'sobol' proposes its whole design at once \(sampler auto chose "
                        r"'sobol' for 2 coefficients and budget 8 .*raise the budget to at "
                        r"least 9, or name an adaptive sampler\)"),
])
def test_settings_auto_s_choice_refuses_name_that_choice_and_the_fix(sampler, stopping,
                                                                    message):
    """The error named a sampler the user never chose ('gp sampler: batch must be ...',
    'sobol proposes its whole design at once') without saying that auto chose it, or how
    to get what was asked for."""
    pytest.importorskip("gpytorch")
    from mapframe.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        MergeStudy(objective=quad, task_names=["a", "b"], budget=8 if stopping else 20,
                   sampler=sampler, stopping=stopping)
