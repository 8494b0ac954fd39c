"""The problem a study solves: the tasks (objectives) and the coefficient search box."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from mapframe.errors import ConfigError, float_array
from mapframe.settings import refuse_number_string

__all__ = ["Direction", "SearchSpace", "Task", "as_tasks", "refuse_a_string_of_names",
           "unquoted_name_hint"]

Direction = Literal["max", "min"]


def unquoted_name_hint(value: object) -> str:
    """Why a name read from YAML may not be a string, and the fix: ``""`` for a string, else
    a parenthesis such as ``" (YAML reads no, yes, on, off, true and false unquoted as
    booleans: quote the name, e.g. 'no')"``."""
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        kind, example = "no, yes, on, off, true and false unquoted as booleans", "'no'"
    elif value is None:
        kind, example = "null, ~ and an empty value as null", "'null'"
    elif isinstance(value, (int, float)):
        kind, example = "an unquoted number as a number", f"'{value}'"
    else:
        return ""
    return f" (YAML reads {kind}: quote the name, e.g. {example})"


def _bound(task: str, which: str, value: object, unbounded: float) -> float:
    """A task's ``lower`` / ``upper`` metric bound as a float (``None``: no bound)."""
    if value is None:
        return unbounded
    refuse_number_string(value, which, who=f"task {task!r}",
                         what="a number (or None for no bound)")
    try:
        if isinstance(value, (bool, str, bytes)):  # "inf" and True are no bounds
            raise TypeError
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"task {task!r}: {which} must be a number (or None for no bound), "
                          f"got {value!r}") from None


@dataclass(frozen=True)
class Task:
    """One task of a merge: its name, its metric's direction and the metric's known range.

    ``lower``/``upper`` are the metric's natural range (accuracy: 0 and 1; a loss: 0 and
    ``inf``); ``-inf``/``inf`` (or ``None``) mean unbounded. Surrogates use the range to pick a
    warping, and evaluations outside it are rejected as errors.
    """

    name: str
    direction: Direction = "max"
    lower: float = -math.inf
    upper: float = math.inf

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"task name must be a non-empty string, got {self.name!r}"
                              f"{unquoted_name_hint(self.name)}")
        if self.direction not in ("max", "min"):
            raise ConfigError(
                f"task {self.name!r}: direction must be 'max' or 'min', got {self.direction!r}"
            )
        lo = _bound(self.name, "lower", self.lower, -math.inf)
        hi = _bound(self.name, "upper", self.upper, math.inf)
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ConfigError(
                f"task {self.name!r}: metric range must satisfy lower < upper, got "
                f"[{self.lower}, {self.upper}]"
            )
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    @property
    def sign(self) -> float:
        """+1 for metrics to maximise, -1 for metrics to minimise."""
        return 1.0 if self.direction == "max" else -1.0

    @property
    def bounded(self) -> bool:
        """Whether the metric has a finite lower and upper bound."""
        return math.isfinite(self.lower) and math.isfinite(self.upper)

    def to_dict(self) -> dict[str, object]:
        """``{"name", "direction", "lower", "upper"}``: the fields, in order."""
        return asdict(self)


def refuse_a_string_of_names(**given: object) -> None:
    """A one-line :class:`ConfigError` when one of ``given`` (``task_names=...``,
    ``tasks=...``) is a string: a ``str`` is a ``Sequence[str]`` of its characters, so
    ``task_names="accuracy"`` became the tasks a, c, c, u, ..."""
    for what, value in given.items():
        if isinstance(value, (str, bytes)):
            raise ConfigError(f"{what} must be a list of task names, got the string "
                              f"{value!r}; write [{value!r}]")


def as_tasks(
    task_names: Sequence[str] | None = None,
    tasks: Sequence[Task | str | dict] | None = None,
    directions: Sequence[str] | str | None = None,
    ranges: Sequence[tuple[float, float] | None] | None = None,
    *,
    ranges_name: str = "ranges",
) -> list[Task]:
    """Build the task list from names plus per-task directions and metric ranges (low, high);
    ``ranges_name`` is how the caller spells ``ranges`` in its errors."""
    if tasks is not None and task_names is not None:
        raise ConfigError("give either tasks= or task_names=, not both")
    refuse_a_string_of_names(task_names=task_names, tasks=tasks)
    items: list[Task | str | dict] = list(tasks if tasks is not None else task_names or [])
    if not items:
        raise ConfigError("a study needs at least one task: pass task_names=[...]")
    n = len(items)
    if isinstance(directions, str):
        directions = [directions] * n
    if directions is not None and len(directions) != n:
        raise ConfigError(f"directions has {len(directions)} entries for {n} tasks")
    expected = f"one (low, high) pair or None per task, e.g. {[(0, 1)] + [None] * (n - 1)}"
    if ranges is not None and (isinstance(ranges, (str, bytes))
                               or not isinstance(ranges, (Sequence, np.ndarray))):
        raise ConfigError(f"{ranges_name} must list {expected}, got {ranges!r}")
    if ranges is not None and len(ranges) != n:
        raise ConfigError(f"{ranges_name} has {len(ranges)} entries for {n} tasks; give "
                          f"{expected}")
    out: list[Task] = []
    for i, item in enumerate(items):
        if isinstance(item, Task):
            task = item
        elif isinstance(item, str):
            task = Task(item)
        elif isinstance(item, dict):
            try:
                task = Task(**item)
            except TypeError as exc:
                raise ConfigError(f"task #{i}: {exc}; allowed keys: name, direction, lower, "
                                  "upper") from None
        else:
            raise ConfigError(f"task #{i} must be a name or a mapping, got "
                              f"{type(item).__name__} {item!r}{unquoted_name_hint(item)}")
        if directions is not None:
            task = Task(task.name, directions[i], task.lower, task.upper)  # type: ignore[arg-type]
        if ranges is not None and ranges[i] is not None:
            pair = ranges[i]
            if (isinstance(pair, (str, bytes)) or not isinstance(pair, (Sequence, np.ndarray))
                    or len(pair) != 2):
                raise ConfigError(f"{ranges_name}: task {task.name!r} needs a (low, high) pair "
                                  f"or None, got {pair!r}; give {expected}")
            task = Task(task.name, task.direction, pair[0], pair[1])
        out.append(task)
    names = [t.name for t in out]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ConfigError(f"task names must be unique; repeated: {', '.join(dupes)}")
    return out


@dataclass(frozen=True)
class SearchSpace:
    """The box of coefficient vectors a study searches: ``lower <= c <= upper`` per task.

    The paper searches ``[0, 1]^N``; widen the box (e.g. ``[0, 1.5]``) when task vectors are
    small enough that over-scaling helps.
    """

    lower: np.ndarray
    upper: np.ndarray
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        lo = np.asarray(self.lower, dtype=float).reshape(-1)
        hi = np.asarray(self.upper, dtype=float).reshape(-1)
        if lo.shape != hi.shape or lo.size == 0:
            raise ConfigError(
                f"search bounds must have one lower and one upper value per task, got "
                f"{lo.size} and {hi.size}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ConfigError(
                f"search bounds must be finite numbers, got lower={lo.tolist()} "
                f"upper={hi.tolist()}"
            )
        if not np.all(lo < hi):
            raise ConfigError(
                f"search bounds need lower < upper in every dimension, got lower={lo.tolist()} "
                f"upper={hi.tolist()}"
            )
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)
        if self.names and len(self.names) != lo.size:
            raise ConfigError(f"{len(self.names)} names for a {lo.size}-dimensional box")
        object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def box(
        cls, n_dims: int, bounds: tuple[float, float] | Sequence[Sequence[float]] = (0.0, 1.0),
        names: Sequence[str] = (),
    ) -> SearchSpace:
        """A box from one ``(low, high)`` pair for all dimensions, or one pair per dimension."""
        arr = float_array(
            bounds, f"bounds must be [low, high] or one [low, high] per task, got {bounds!r}"
        )
        if arr.shape == (2,):
            arr = np.tile(arr, (n_dims, 1))
        if arr.shape != (n_dims, 2):
            raise ConfigError(
                f"bounds must be [low, high] or {n_dims} pairs [low, high], got shape "
                f"{arr.shape}"
            )
        return cls(arr[:, 0], arr[:, 1], tuple(names))

    @property
    def n_dims(self) -> int:
        return int(self.lower.size)

    def scale(self, unit: np.ndarray) -> np.ndarray:
        """Map points of the unit cube ``[0, 1]^N`` into the box."""
        return self.lower + np.asarray(unit, dtype=float) * (self.upper - self.lower)

    def contains(self, x: np.ndarray, atol: float = 1e-12) -> np.ndarray:
        """Row-wise: is each point inside the box?"""
        x = np.atleast_2d(x)
        return np.all((x >= self.lower - atol) & (x <= self.upper + atol), axis=1)

    def to_dict(self) -> dict[str, list[float]]:
        return {"lower": self.lower.tolist(), "upper": self.upper.tolist()}
