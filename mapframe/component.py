"""What every pluggable component shares: a registry name and a description of its settings."""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from mapframe.errors import ComponentError, MapframeError, one_line

__all__ = ["Component", "component_failures"]


def _jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data that is the same in every process: the store's
    fingerprint of a study is built from it, so a value that printed differently in the
    next process (a set in hash order, an object's memory address) made an unchanged study
    a different setup and its stored evaluations unusable."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=lambda v: (type(v).__name__, repr(v)))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    text = repr(value)
    if " at 0x" in text:  # the default object repr: the address differs in every process
        from mapframe.evaluators.identity import value_digest

        digest = value_digest(value)
        if digest is not None:  # by content; unpicklable, it stays a new setup each time
            return f"<{type(value).__qualname__} sha256:{digest[:16]}>"
    return text


class Component(ABC):
    """Base of all component kinds.

    Subclasses set ``name`` (the string configs use) and inherit ``kind`` from their family
    base class (``"sampler"``, ``"surrogate"``, ...). :meth:`describe` reports the public
    settings (attributes not starting with ``_``) so that results and the store record how a
    study was run.
    """

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""

    def describe(self) -> dict[str, Any]:
        """The component's name and public settings, as JSON-compatible values."""
        settings = {
            k: _jsonable(v)
            for k, v in vars(self).items()
            if not k.startswith("_") and not callable(v)
        }
        return {"name": self.name, **settings}

    def __repr__(self) -> str:
        desc = self.describe()
        desc.pop("name", None)
        args = ", ".join(f"{k}={v!r}" for k, v in desc.items())
        return f"{type(self).__name__}({args})"


@contextmanager
def component_failures(component: Component, method: str) -> Iterator[None]:
    """Run a call of ``component.method`` so that an unexpected exception from it (a bug in
    the component's code: a plugin's, a subclass's or mapframe's own) ends in a one-line
    :class:`~mapframe.errors.ComponentError` naming the component and its class, with the
    original exception chained for the traceback. mapframe's own errors pass unchanged."""
    try:
        yield
    except MapframeError:
        raise
    except Exception as exc:
        cls = type(component)
        raise ComponentError(
            f"{component.kind.replace('_', ' ')} {component.name!r} "
            f"({cls.__module__}.{cls.__qualname__}) failed in {method}(): "
            f"{one_line(exc)}") from exc
