"""Task: metric bounds, including ``None`` for no bound, and one-line errors for bad ones."""

from __future__ import annotations

import math

import pytest

from mapframe.errors import ConfigError
from mapframe.problem import Task


def test_none_means_no_bound() -> None:
    t = Task("loss", "min", 0.0, None)  # type: ignore[arg-type]
    assert (t.lower, t.upper) == (0.0, math.inf) and not t.bounded
    assert Task("x", "max", None, None).lower == -math.inf  # type: ignore[arg-type]


@pytest.mark.parametrize("lower, upper, fragment", [
    ("low", 1.0, "task 'acc': lower must be a number (or None for no bound), got 'low'"),
    (0.0, [1], "task 'acc': upper must be a number (or None for no bound), got [1]"),
    (True, 1.0, "task 'acc': lower must be a number"),
    (1.0, 0.0, "task 'acc': metric range must satisfy lower < upper"),
])
def test_bad_bounds_are_one_line_errors(lower: object, upper: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Task("acc", "max", lower, upper)  # type: ignore[arg-type]
    assert str(info.value).startswith(fragment) and "\n" not in str(info.value)
