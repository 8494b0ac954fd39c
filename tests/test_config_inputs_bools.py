"""Booleans are no numbers: ``ridge: yes`` or ``batch_size: true`` is a one-line error."""

from __future__ import annotations

import pytest

from mapframe.errors import ConfigError
from mapframe.plugin import get_registry


@pytest.mark.parametrize("kind, spec, setting", [
    ("surrogate", {"name": "quadratic", "ridge": True}, "ridge"),
    ("executor", {"name": "inprocess", "batch_size": True}, "batch_size"),
    ("evaluator", {"name": "callable", "function": "mapframe.problem:as_tasks",
                   "tasks": ["a", "b"], "batch_size": True}, "batch_size"),
])
def test_a_boolean_is_no_number_setting(kind, spec, setting):
    with pytest.raises(ConfigError) as err:
        get_registry().create(kind, spec)
    assert f"{setting} must be" in str(err.value) and "got True" in str(err.value)


def test_an_integral_batch_size_is_still_taken():
    executor = get_registry().create("executor", {"name": "inprocess", "batch_size": 4.0})
    assert executor.describe()["batch_size"] == 4
