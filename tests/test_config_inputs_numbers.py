"""Number settings refuse strings everywhere, naming the cause (a quoted number, or YAML's
reading of ``1e-6`` as text) and the fix; metric ranges of the wrong form are one-line
errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.config import load_spec
from mapframe.errors import ConfigError
from mapframe.plugin import get_registry
from mapframe.problem import Task, as_tasks
from mapframe.settings import number_setting

YAML_HINT = "(YAML reads 1e-6 without a dot as text: write 1.0e-6)"
QUOTES_HINT = "(write the number without quotes)"


def quad(C):
    C = np.atleast_2d(C)
    return np.stack([-(C[:, 0] - 0.5) ** 2, -(C[:, 1] - 0.5) ** 2], axis=1)


def refused(match, fn, *args, **kwargs):
    with pytest.raises(ConfigError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert match in message and "\n" not in message, message
    return message


def test_number_setting_names_the_yaml_cause_and_the_fix():
    refused(f"tolerance must be a number, got the string '1e-6' {YAML_HINT}",
            number_setting, "1e-6", "tolerance", 0.0, 1.0)
    refused("write 1.0e+6", number_setting, "1.0e6", "x", 0.0)
    refused(f"got the string '0.5' {QUOTES_HINT}", number_setting, "0.5", "x", 0.0)


@pytest.mark.parametrize("kind, spec, setting", [
    ("surrogate", {"name": "quadratic", "ridge": "1e-6"}, "ridge"),
    ("surrogate", {"name": "sigmoid_quadratic", "eps": "1e-3"}, "eps"),
    ("surrogate", {"name": "gp", "nu": "2.5"}, "nu"),
    ("surrogate", {"name": "gp", "noise_floor": "0.5"}, "noise_floor"),
    ("surrogate", {"name": "gp", "restarts": "2"}, "restarts"),
    ("front_solver", {"name": "auto", "tolerance": "1e-6"}, "tolerance"),
    ("stopping", {"name": "plateau", "hv_tol": "5e-3"}, "hv_tol"),
    ("merge_strategy", {"name": "karcher", "tol": "1e-6"}, "tol"),
    ("merge_strategy", {"name": "multislerp", "eps": "1e-8"}, "eps"),
])
def test_component_number_settings_refuse_strings(kind, spec, setting):
    value = spec[setting]
    refused(f"{setting} must be", get_registry().create, kind, spec)
    refused(f"got the string {value!r} (", get_registry().create, kind, spec)


@pytest.mark.parametrize("extra, setting", [
    ({"budget": "12"}, "budget"),
    ({"seed": "3"}, "seed"),
    ({"search_bounds": ["0", "1"]}, "search_bounds"),
    ({"preference": ["0.5", "0.5"]}, "preference"),
    ({"preference_bounds": (["0", 0], [1, 1])}, "preference_bounds"),
    ({"metric_ranges": [("0", "1"), None]}, "lower"),
])
def test_study_number_settings_refuse_strings(extra, setting):
    message = refused(QUOTES_HINT, MergeStudy, objective=quad, task_names=["a", "b"],
                      **{"budget": 12, **extra})
    assert re.search(rf"\b{setting} must be", message), message


def test_yaml_1e_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text('evaluator: {name: callable, function: "x:y", tasks: [a, b]}\n'
                    "study: {search_bounds: [0, 1e0]}\n")
    refused("study.search_bounds must be", load_spec, path)
    refused("(YAML reads 1e0 without a dot and a sign in the exponent as text: write "
            "1.0e+0)", load_spec, path)


def test_a_string_task_bound_is_refused():
    refused(f"task 'a': lower must be a number (or None for no bound), got the string '0' "
            f"{QUOTES_HINT}", Task, "a", lower="0")
    refused("task 'a': upper must be a number", Task, "a", upper="inf")


@pytest.mark.parametrize("ranges, match", [
    ((0, 1), "metric_ranges: task 'a' needs a (low, high) pair or None, got 0; give one "
             "(low, high) pair or None per task, e.g. [(0, 1), None]"),
    ([(0, 1, 2), None], "metric_ranges: task 'a' needs a (low, high) pair or None, got "
                        "(0, 1, 2)"),
    ([None, "01"], "metric_ranges: task 'b' needs a (low, high) pair or None, got '01'"),
    (5, "metric_ranges must list one (low, high) pair or None per task"),
    ([(0, 1)], "metric_ranges has 1 entries for 2 tasks; give one (low, high) pair"),
])
def test_metric_ranges_of_the_wrong_form_are_one_line_errors(ranges, match):
    refused(match, MergeStudy, objective=quad, task_names=["a", "b"], budget=12,
            metric_ranges=ranges)


def test_an_evaluators_ranges_of_the_wrong_form_name_ranges():
    refused("ranges: task 'a' needs a (low, high) pair or None, got 0",
            as_tasks, ["a", "b"], ranges=[0, 1])
