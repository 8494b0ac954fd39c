"""Black-box objectives: a Python function from coefficients to metrics."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from mapframe.errors import ConfigError
from mapframe.evaluators.base import Evaluator
from mapframe.evaluators.identity import callable_digest, code_digest
from mapframe.problem import Task, as_tasks
from mapframe.settings import bool_setting, int_setting

__all__ = ["DIGESTED", "CallableEvaluator", "resolve_callable"]

#: Function descriptions identified by a digest of what they compute: ``<...>`` (not
#: importable by name) and ``__main__:...`` (defined in the running script).
DIGESTED = ("<", "__main__:")


def resolve_callable(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """Resolve ``"package.module:attribute"`` (or a callable) to a callable."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(
            f"function must be a callable or a 'module:attribute' string, got {spec!r}"
        )
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {mod_name!r} for function {spec!r} ({exc}); check the name "
            "and that the module is on PYTHONPATH"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{spec!r} is not callable")
    return obj


class CallableEvaluator(Evaluator):
    """Wraps a function ``f(C) -> M`` mapping ``(B, N)`` coefficients to ``(B, T)`` metrics.

    This is what ``MergeStudy(objective=f, task_names=[...])`` uses. With
    ``vectorized=False`` the function takes one coefficient vector ``(N,)`` and returns
    ``(T,)`` metrics. ``function`` may be a ``"module:attribute"`` string (for YAML configs).
    Metrics are maximised unless ``directions`` says ``"min"``; ``ranges`` gives each
    metric's known ``[low, high]`` (e.g. ``[0, 1]`` for accuracy).
    """

    name: ClassVar[str] = "callable"

    def __init__(
        self,
        function: str | Callable[[np.ndarray], Any],
        tasks: Sequence[str | Task | dict[str, Any]],
        directions: Sequence[str] | str | None = None,
        ranges: Sequence[tuple[float, float] | None] | None = None,
        vectorized: bool = True,
        batch_size: int | None = None,
    ) -> None:
        self.function = function if isinstance(function, str) else _qualname(function)
        self._fn = resolve_callable(function)
        # A callable that cannot be re-imported by name is identified by what it computes;
        # so is one defined in the running script, whose code (or the values it reads) may
        # change between runs under the same name. An importable module's function is known
        # by its name.
        self._digest = (callable_digest(self._fn) if self.function.startswith(DIGESTED)
                        else None)
        self._tasks = as_tasks(tasks=tasks, directions=directions, ranges=ranges)
        self.vectorized = bool_setting(vectorized, "vectorized")
        if batch_size is not None:  # True is no batch size
            batch_size = int_setting(batch_size, "batch_size", 1)
        # A function of one vector gains nothing from batches: one point at a time, so each
        # result is stored as it finishes and drivers sharing a study share its points.
        self.max_batch_size = batch_size if (batch_size or self.vectorized) else 1

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """The function's metrics, the columns ``tasks`` of them (it computes them all)."""
        cols = self.check_task_indices(tasks)
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        if self.vectorized:
            M = self._fn(C)
        else:
            M = np.vstack([self._one_point(self._fn(c)) for c in C]) if len(C) else (
                np.empty((0, len(self._tasks))))
        if len(cols) == len(self._tasks) and cols == list(range(len(cols))):
            return M  # as returned: the study checks its shape and values
        return np.asarray(M, dtype=float)[:, cols]

    def _one_point(self, out: Any) -> np.ndarray:
        """One point's return value as a ``(1, T)`` row, checked like a batch's: a dict, a
        string or the wrong number of values is a bug every point would hit
        (:class:`~mapframe.errors.EvaluatorBugError`), not a failing point."""
        from mapframe.executors.worker import check_batch_output

        n = len(self._tasks)
        if not isinstance(out, (dict, str, bytes)) and np.ndim(out) == 0:
            out = [out]  # one number: one task's metric
        return check_batch_output(
            out, 1, n, f"function {self.function} (vectorized=False)",
            expected=f"{n} number(s), one per task "
                     f"({', '.join(t.name for t in self._tasks)}), as a list or array")

    @property
    def identifiable(self) -> bool:
        """Whether stored evaluations can be matched to this function: an importable name,
        or a digest of its code and captured values (see :mod:`mapframe.evaluators.identity`)."""
        return not self.function.startswith("<") or self._digest is not None

    def code_digest(self) -> str | None:
        """A digest of an importable function's code (:func:`~mapframe.evaluators.identity.
        code_digest`), which its study keeps in the store with the evaluations it stores: a
        resume warns when the function changed since (its name alone is in the fingerprint,
        so that an edit does not orphan them). ``None`` for a function identified by a
        digest in the fingerprint already, or one whose code has no digest."""
        if self.function.startswith(DIGESTED):
            return None
        fn = self._fn if self._fn is not None else resolve_callable(self.function)
        return code_digest(fn)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "function": self.function,
            "tasks": [t.to_dict() for t in self._tasks],
            "vectorized": self.vectorized,
        }
        if self.function.startswith("<") or self._digest is not None:
            out["code"] = self._digest
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if ":" in self.function and not self.function.startswith(DIGESTED):
            state["_fn"] = None  # re-resolved by name in the worker
        # A function of ``__main__`` (a script's, a notebook's) travels itself: pickle sends
        # it by reference (a forked worker has it; a spawned one has it when __main__ is a
        # script file), cloudpickle (Dask, Ray) by value, which its name could not do: a
        # worker's __main__ is not the driver's.
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._fn is None:
            self._fn = resolve_callable(self.function)


def _qualname(fn: Callable[..., Any]) -> str:
    """``"module:name"`` when that name resolves back to ``fn`` itself (workers re-import it
    by name, but for a function of ``__main__``, which travels pickled); otherwise a
    ``<...>`` description, and ``fn`` travels to workers pickled.

    A ``functools.partial`` or a callable instance reports its class's module and name,
    which would resolve to the class, not to the object: so the name is checked.
    """
    import functools

    mod = getattr(fn, "__module__", None)
    qn = getattr(fn, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qn, str):
        if "<" not in qn:
            name = f"{mod}:{qn}"
            try:
                if resolve_callable(name) is fn:
                    return name
            except ConfigError:
                pass
        return f"<{mod}.{qn}>"
    if isinstance(fn, functools.partial):
        inner = _qualname(fn.func).strip("<>")
        args = [inner, *(repr(a) for a in fn.args),
                *(f"{k}={v!r}" for k, v in fn.keywords.items())]
        return f"<functools.partial({', '.join(args)})>"
    cls = type(fn)
    return f"<{cls.__module__}.{cls.__qualname__} instance>"
