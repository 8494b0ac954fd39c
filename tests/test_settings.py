"""The shared checks of component settings (mapframe.settings)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mapframe.errors import ConfigError
from mapframe.samplers.bins import BinSampler
from mapframe.samplers.front import FrontSampler
from mapframe.settings import bool_setting, int_setting, number_setting
from mapframe.solvers.pymoo_solvers import NSGA3Solver
from mapframe.stopping.plateau import PlateauStopping


@pytest.mark.parametrize("value", [3, np.int64(3), 3.0, np.float32(3.0)])
def test_int_setting_takes_integers_from_python_numpy_and_yaml(value: Any) -> None:
    got = int_setting(value, "batch", 1)
    assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [True, np.bool_(False), 2.5, None, math.nan, math.inf, 0])
def test_int_setting_rejects_what_is_not_a_count(value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        int_setting(value, "batch", 1, who="front sampler")
    assert str(err.value) == f"front sampler: batch must be an integer >= 1, got {value!r}"


def test_int_setting_names_a_quoted_count_and_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        int_setting("3", "batch", 1, who="front sampler")
    assert str(err.value) == ("front sampler: batch must be an integer >= 1, got the string "
                              "'3' (write the number without quotes)")


def test_int_setting_auto() -> None:
    assert int_setting("auto", "initial", 2, auto=True) == "auto"
    assert int_setting(5, "initial", 2, auto=True) == 5
    with pytest.raises(ConfigError, match=r'^initial must be an integer >= 2 or "auto", got 1$'):
        int_setting(1, "initial", 2, auto=True)
    with pytest.raises(ConfigError, match="initial must be an integer >= 2, got 'auto'"):
        int_setting("auto", "initial", 2)


def test_number_setting_bounds_and_messages() -> None:
    assert number_setting(0.0, "lam", 0.0) == 0.0
    assert number_setting(np.float64(0.5), "tol", 0.0, 1.0, open_high=True) == 0.5
    cases = [
        (dict(low=0.0), -1, "lam must be a finite number >= 0, got -1"),
        (dict(low=0.0, open_low=True), 0, "lam must be a finite number > 0, got 0"),
        (dict(low=0.0, high=1.0, open_low=True, open_high=True), 1.0,
         "lam must be a number in (0, 1), got 1.0"),
        (dict(low=0.0, high=1.0, open_high=True), 1, "lam must be a number in [0, 1), got 1"),
        (dict(low=0.0, high=10.0, meaning="standard deviations"), 11,
         "lam must be a number from 0 to 10 (standard deviations), got 11"),
        (dict(low=0.0), True, "lam must be a finite number >= 0, got True"),
        (dict(low=0.0), math.inf, "lam must be a finite number >= 0, got inf"),
        (dict(low=0.0), "big", "lam must be a finite number >= 0, got 'big'"),
    ]
    for kwargs, value, message in cases:
        with pytest.raises(ConfigError) as err:
            number_setting(value, "lam", **kwargs)  # type: ignore[arg-type]
        assert str(err.value) == message


def test_bool_setting() -> None:
    assert bool_setting(np.bool_(True), "polish") is True
    with pytest.raises(ConfigError, match=r"^solver: polish must be true or false, got 'yes'$"):
        bool_setting("yes", "polish", who="solver")
    with pytest.raises(ConfigError):
        bool_setting(1, "polish")


@pytest.mark.parametrize("make, message", [
    (lambda: FrontSampler(batch=True), "front sampler: batch must be an integer >= 1"),
    (lambda: FrontSampler(optimism=11), "front sampler: optimism must be a number from 0 to 10"),
    (lambda: BinSampler(temperature=0), "bins sampler: temperature must be a finite number > 0"),
    (lambda: BinSampler(angle_bins=0),
     'bins sampler: angle_bins must be an integer >= 1 or "auto"'),
    (lambda: NSGA3Solver(tolerance=1), "tolerance must be a number in (0, 1)"),
    (lambda: NSGA3Solver(n_gen=2.5), "n_gen must be an integer >= 1"),
    (lambda: PlateauStopping(hv_tol=1), "plateau: hv_tol must be a number in [0, 1)"),
    (lambda: PlateauStopping(min_evaluations=0), "plateau: min_evaluations must be an integer"),
])
def test_components_report_bad_settings_through_the_shared_checks(make: Any, message: str
                                                                  ) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_integral_floats_from_a_config_become_ints() -> None:
    sampler = FrontSampler(batch=2.0, initial=6.0)  # type: ignore[arg-type]
    assert (sampler.batch, sampler.initial) == (2, 6)
    assert isinstance(sampler.batch, int) and isinstance(sampler.initial, int)
    assert PlateauStopping(patience=np.int64(4)).patience == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": {"name": "sobol", "scramble": "false"}}, "scramble must be true or false"),
    ({"front_solver": {"name": "nsga2", "eliminate_duplicates": "false"}},
     "eliminate_duplicates must be true or false"),
])
def test_a_string_for_a_switch_is_an_error_not_true(kwargs, message):
    """bool("false") is True: these switches were read that way and the run went on with
    the opposite of what the config said."""
    from mapframe import MergeStudy

    with pytest.raises(ConfigError, match=message):
        MergeStudy(objective=lambda C: C, task_names=["a", "b"], budget=6, **kwargs)


def test_the_callable_evaluators_vectorized_switch_is_checked():
    from mapframe.evaluators.callable import CallableEvaluator

    with pytest.raises(ConfigError, match="vectorized must be true or false"):
        CallableEvaluator(lambda C: C, ["a", "b"], vectorized="false")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, message", [
    ({"preference": [[0.5], [0.5]]}, "preference must be a flat list of numbers"),
    ({"preference": [True, 1.0]}, "preference must be a list of numbers"),
    ({"search_bounds": [False, True]}, "search_bounds must hold numbers, not true/false"),
    ({"output": ""}, "output must be a non-empty string"),
])
def test_values_that_were_silently_reshaped_or_misworded(kwargs, message):
    """A nested preference was flattened, true/false read as 1/0, and an empty output said
    "must be str" of a string."""
    from mapframe.spec import StudySpec

    with pytest.raises(ConfigError, match=message):
        StudySpec.build(evaluator={"name": "callable", "function": "objectives:two_quadratics",
                                   "tasks": ["a", "b"]}, **kwargs)
