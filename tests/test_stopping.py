"""Stopping rules, per-round records and predictive uncertainty on the front."""

from __future__ import annotations

import csv
import json
from typing import ClassVar

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import ConfigError
from mapframe.history import Evaluation, History
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import Sampler
from mapframe.stopping import PlateauStopping, RoundState
from mapframe.surrogates.quadratic import QuadraticSurrogate
from mapframe.testing import StoppingRuleContract


class RoundRandom(Sampler):
    """A minimal adaptive sampler for these tests: uniform points, ``batch`` per round."""

    name: ClassVar[str] = "round_random_test"
    adaptive: ClassVar[bool] = True

    def __init__(self, batch: int = 2, initial: int = 8) -> None:
        self.batch = batch
        self.initial = initial

    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        if len(history) < self.initial:
            return min(remaining, self.initial - len(history))
        return min(remaining, max(self.batch, capacity))

    def propose(self, n, space, history, rng):
        return space.scale(rng.random((n, space.n_dims)))


def smooth(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    a = 0.9 - 0.6 * (C[:, 0] - 0.8) ** 2 - 0.3 * C[:, 1] ** 2 + 0.05 * np.sin(3 * C[:, 0])
    b = 0.9 - 0.6 * (C[:, 1] - 0.8) ** 2 - 0.3 * C[:, 0] ** 2 + 0.03 * np.cos(4 * C[:, 1])
    return np.column_stack([a, b])


def study(**kw) -> MergeStudy:
    args = dict(budget=60, seed=1, sampler=RoundRandom(), surrogate="quadratic",
                front_solver="grid")
    args.update(kw)
    return MergeStudy(smooth, ["a", "b"], **args)


def test_plateau_params_are_checked() -> None:
    for bad in ({"patience": 0}, {"hv_tol": 1.5}, {"loo_tol": -0.1},
                {"min_evaluations": "soon"}, {"n_candidates": 3}, {"patience": True}):
        with pytest.raises(ConfigError, match="plateau"):
            PlateauStopping(**bad)


def test_registered_and_configurable() -> None:
    rule = get_registry().create("stopping", {"name": "plateau", "patience": 3})
    assert isinstance(rule, PlateauStopping) and rule.patience == 3
    assert rule.describe()["patience"] == 3


def test_needs_an_adaptive_sampler() -> None:
    with pytest.raises(ConfigError, match="adaptive sampler"):
        study(sampler="sobol", stopping="plateau")


def test_stops_before_the_budget_when_the_front_settles() -> None:
    res = study(stopping={"name": "plateau", "patience": 2}).run()
    assert res.stopped_early is not None and "settled" in res.stopped_early
    n = len(res.history)
    assert 12 <= n < 60, n  # at least min_evaluations (2 x 6 parameters)
    trace = res.stopping_trace
    assert trace and trace[-1]["n_evaluated"] == n
    assert all(r["settled"] for r in trace[-2:])
    assert not trace[0]["settled"]  # the first round has nothing to compare with
    summary = res.summary()
    assert summary["stopped_early"] == res.stopped_early
    json.dumps(summary)


def test_without_a_rule_the_budget_is_spent() -> None:
    res = study(budget=20).run()
    assert len(res.history) == 20 and res.stopped_early is None and res.stopping_trace == []


def test_a_strict_rule_spends_the_budget() -> None:
    res = study(budget=24, stopping={"name": "plateau", "patience": 50}).run()
    assert len(res.history) == 24 and res.stopped_early is None
    assert len(res.stopping_trace) >= 1


def test_min_evaluations_is_respected() -> None:
    res = study(stopping={"name": "plateau", "patience": 1, "hv_tol": 0.5, "loo_tol": 0.0,
                          "min_evaluations": 30}).run()
    assert len(res.history) >= 30


def test_resume_stops_at_the_same_round_without_new_evaluations(tmp_path) -> None:
    calls = []

    def counted(C):
        calls.append(len(C))
        return smooth(C)

    def make():
        return MergeStudy(counted, ["a", "b"], budget=60, seed=4, sampler=RoundRandom(),
                          surrogate="quadratic", front_solver="grid", stopping="plateau",
                          storage=str(tmp_path / "s.sqlite"))

    first = make().run()
    n = sum(calls)
    assert first.stopped_early is not None and n == len(first.history) < 60
    second = make().run()
    assert sum(calls) == n and second.n_evaluated == 0
    assert second.stopped_early == first.stopped_early
    np.testing.assert_array_equal(first.history.X, second.history.X)


def test_rounds_are_recorded() -> None:
    res = study(budget=14).run()
    rounds = res.rounds
    assert rounds[0]["proposed"] == 8 and sum(r["new"] for r in rounds) == 14
    assert [r["round"] for r in rounds] == list(range(len(rounds)))
    assert all(r["propose_s"] >= 0 and r["evaluate_s"] >= 0 for r in rounds)
    assert res.timings["propose_s"] == pytest.approx(sum(r["propose_s"] for r in rounds))


def _state(surrogates, history, rnd):
    tasks = (Task("a"), Task("b"))
    return RoundState(round=rnd, n_evaluated=len(history), budget=100, history=history,
                      surrogates=surrogates,
                      diagnostics={t.name: dict(s.diagnostics())
                                   for t, s in zip(tasks, surrogates)},
                      tasks=tasks, space=SearchSpace.box(2), n_params=6)


def _fitted(X, Y):
    return [QuadraticSurrogate().fit(X, Y[:, j], Task(n)) for j, n in enumerate("ab")]


def test_rule_settles_on_unchanging_data_and_not_on_changing_data() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((20, 2))
    Y = smooth(X) + 0.01 * rng.standard_normal((20, 2))
    h = History(2, 2, [Evaluation(x, y) for x, y in zip(X, Y)])
    rule = PlateauStopping(patience=2, min_evaluations=1)
    reasons = [rule.update(_state(_fitted(X, Y), h, r)) for r in range(3)]
    assert reasons[:2] == [None, None] and reasons[2] is not None

    # The front keeps moving: every round the second task gets better everywhere.
    rule = PlateauStopping(patience=2, min_evaluations=1)
    for r in range(4):
        Yr = Y + np.array([0.0, 0.2 * r])
        assert rule.update(_state(_fitted(X, Yr), h, r)) is None
    assert all(t["hv_change"] is None or t["hv_change"] > 0.005 for t in rule.trace())


def test_reset_forgets_rounds() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((15, 2))
    Y = smooth(X)
    h = History(2, 2, [Evaluation(x, y) for x, y in zip(X, Y)])
    rule = PlateauStopping(patience=1, min_evaluations=1)
    rule.update(_state(_fitted(X, Y), h, 0))
    rule.reset()
    assert rule.trace() == []
    assert rule.update(_state(_fitted(X, Y), h, 0)) is None


class StdQuadratic(QuadraticSurrogate):
    """A quadratic that reports a made-up, position-dependent uncertainty."""

    name: ClassVar[str] = "std_quadratic_test"

    def predict_std(self, X):
        return 0.01 + 0.1 * np.atleast_2d(X)[:, 0]


def test_front_reports_predictive_std(tmp_path) -> None:
    res = MergeStudy(smooth, ["a", "b"], budget=15, seed=0, surrogate=StdQuadratic(),
                     front_solver="grid").run()
    std = res.front.predicted_std
    assert std is not None and std.shape == res.front.predicted.shape
    np.testing.assert_allclose(std[:, 0], 0.01 + 0.1 * res.front.coefficients[:, 0])
    paths = res.save(tmp_path, plot=False)
    with open(paths["front_csv"]) as fh:
        row = next(csv.DictReader(fh))
    assert {"std_a", "std_b"} <= set(row)


def test_no_std_without_uncertainty() -> None:
    res = study(budget=12, sampler="sobol").run()
    assert res.front.predicted_std is None
    assert "std_a" not in res.front.rows()[0]


# -- the stopping-rule contract on every built-in rule --------------------------------------
class TestPlateauStoppingContract(StoppingRuleContract):
    def make_stopping(self) -> PlateauStopping:
        return PlateauStopping(patience=2, min_evaluations=1, n_candidates=256)


class TestPlateauStoppingDefaultsContract(StoppingRuleContract):
    def make_stopping(self) -> PlateauStopping:
        return PlateauStopping()


class _Answers(PlateauStopping):
    """A rule that answers ``value`` every round (a plugin's rule returning False to go on)."""

    name: ClassVar[str] = "answers_test"

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value

    def update(self, state: RoundState) -> str | None:
        return self.value  # type: ignore[return-value]


@pytest.mark.parametrize("value", [False, 0, "", True, ["stop"]])
def test_a_rule_answering_neither_none_nor_a_reason_is_refused(value) -> None:
    # False/0/"" stopped the study after the first round while stopped_early read as false
    with pytest.raises(ConfigError, match="must return None to go on or a non-empty string"):
        study(stopping=_Answers(value), budget=20).run()


def test_a_rule_answering_none_goes_on() -> None:
    res = study(stopping=_Answers(None), budget=20).run()
    assert res.stopped_early is None and res.n_evaluated == 20
