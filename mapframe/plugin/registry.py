"""The component registry: kind -> name -> class, filled by plugins."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mapframe.component import Component
from mapframe.errors import (
    ComponentError,
    ConfigError,
    MapframeError,
    UnknownComponentError,
    one_line,
)
from mapframe.plugin.kinds import COMPONENT_KINDS

__all__ = ["ComponentRegistry", "PluginInfo", "component_bases"]


def component_bases() -> dict[str, type[Component]]:
    """The component kinds and their abstract base classes, in the order of
    :data:`~mapframe.plugin.kinds.COMPONENT_KINDS`."""
    return {row.kind: row.load_base() for row in COMPONENT_KINDS}


@dataclass
class PluginInfo:
    """A loaded (or broken) plugin: its entry-point name, distribution, and what it added."""

    name: str
    package: str
    version: str
    module: str
    components: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class ComponentRegistry:
    """Holds component classes by kind and name.

    :meth:`register` rejects classes that subclass no component base, lack a ``name``, are
    abstract, or reuse a name within their kind. :meth:`get` fails for unknown names with the
    list of available ones.
    """

    def __init__(self) -> None:
        self._bases = component_bases()
        self._classes: dict[str, dict[str, type[Component]]] = {k: {} for k in self._bases}
        self._origin: dict[tuple[str, str], str] = {}
        self._current_plugin: str = "<direct>"
        self.plugins: list[PluginInfo] = []
        self._current_info: PluginInfo | None = None

    @property
    def kinds(self) -> list[str]:
        return list(self._bases)

    def kind_of(self, cls: type) -> str:
        for kind, base in self._bases.items():
            if isinstance(cls, type) and issubclass(cls, base):
                return kind
        raise ComponentError(
            f"{getattr(cls, '__qualname__', cls)!r} is not a mapframe component: subclass one "
            f"of {', '.join(b.__name__ for b in self._bases.values())}"
        )

    def register(self, cls: type[Component], *extra: object) -> type[Component]:
        """Register ``cls`` under ``cls.name`` in its kind; returns ``cls`` (a decorator too)."""
        if extra:  # register("sampler", MySampler): a raw TypeError about positional counts
            given = ", ".join(getattr(a, "__qualname__", repr(a)) for a in (cls, *extra))
            named = [a for a in (cls, *extra) if isinstance(a, type)]
            fix = f"registry.register({named[0].__qualname__})" if named else \
                "registry.register(TheClass)"
            raise ComponentError(
                f"register() takes the component class only (its kind comes from its base "
                f"class, its name from its `name`), got register({given}); write {fix}")
        if not isinstance(cls, type):
            raise ComponentError(
                f"register() takes a component class, got an instance of {type(cls).__name__}"
            )
        kind = self.kind_of(cls)
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise ComponentError(
                f"{cls.__qualname__} has no `name`: set a class attribute name = '...'"
            )
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise ComponentError(
                f"{cls.__qualname__} ({kind} {name!r}) is abstract: implement {missing}"
            )
        existing = self._classes[kind].get(name)
        if existing is not None and existing is not cls:
            raise ComponentError(
                f"{kind} {name!r} is registered twice: by {self._origin[(kind, name)]} "
                f"({existing.__module__}.{existing.__qualname__}) and by "
                f"{self._current_plugin} ({cls.__module__}.{cls.__qualname__}); rename one"
            )
        self._classes[kind][name] = cls
        self._origin[(kind, name)] = self._current_plugin
        if self._current_info is not None:
            self._current_info.components.append((kind, name))
        return cls

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._classes[kind])

    def origin(self, kind: str, name: str) -> str:
        return self._origin[(kind, name)]

    def get(self, kind: str, name: str) -> type[Component]:
        """The class registered as ``name`` in ``kind``."""
        self._check_kind(kind)
        try:
            return self._classes[kind][name]
        except KeyError:
            pass
        available = ", ".join(self.names(kind)) or "none"
        hint = ""
        if not self._classes[kind]:
            hint = " (no component of this kind is registered: is mapframe installed with pip?)"
        raise UnknownComponentError(
            f"{kind.replace('_', ' ')} {name!r} is not available (plugin may not be installed); "
            f"available: {available}{hint}"
        )

    def create(self, kind: str, spec: Any, **defaults: Any) -> Component:
        """Build a component from a name, a ``{"name": ..., **params}`` mapping or an instance.

        ``defaults`` are passed to the constructor unless the spec sets them.
        """
        base = self._bases[self._check_kind(kind)]
        if isinstance(spec, base):
            return spec
        if isinstance(spec, type) and issubclass(spec, base):
            return spec(**defaults)
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, Mapping):
            params = dict(spec)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise ConfigError(
                    f"{kind}: a component given as a mapping needs a 'name' key, got "
                    f"{dict(spec)!r}"
                )
        else:
            raise ConfigError(
                f"{kind}: expected a component name, a mapping with 'name', or a "
                f"{base.__name__} instance; got {type(spec).__name__}"
            )
        cls = self.get(kind, name)
        kwargs = {**defaults, **params}
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            sig = None
        if sig is not None:
            accepts_any = any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
            )
            allowed = [n for n in sig.parameters if n not in ("self", "args", "kwargs")]
            unknown = [k for k in params if k not in sig.parameters]
            if unknown and not accepts_any:
                raise ConfigError(
                    f"{kind} {name!r} does not take parameter(s) {', '.join(unknown)}; it takes: "
                    f"{', '.join(allowed) or 'no parameters'}"
                )
            if not accepts_any:
                kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
        try:
            return cls(**kwargs)
        except MapframeError as exc:  # already one line; say which component it is about
            raise _naming_component(exc, kind, name) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind} {name!r}: invalid parameters ({exc})") from None
        except ImportError as exc:
            raise ConfigError(
                f"{kind} {name!r} (from {self.origin(kind, name)}) needs a package that is not "
                f"installed ({exc}); install it as that component's documentation says"
            ) from None
        except Exception as exc:  # a plugin's own bug: name the plugin, in one line
            raise ComponentError(
                f"{kind} {name!r} (from {self.origin(kind, name)}) failed when it was made: "
                f"{one_line(exc)}") from None

    def _check_kind(self, kind: str) -> str:
        if kind not in self._classes:
            raise ConfigError(f"unknown component kind {kind!r}; kinds: {', '.join(self._classes)}")
        return kind


def _naming_component(exc: MapframeError, kind: str, name: str) -> MapframeError:
    """``exc`` with ``"<kind> '<name>': "`` in front, unless its message already starts with
    the component's name (``"front sampler: ..."``, ``"plateau: ..."``) or its kind: a
    config names several components, and ``n_gen must be ...`` alone does not say whose."""
    text = str(exc)
    lowered = text.lower()
    if lowered.startswith((name.lower(), kind.lower(), kind.replace("_", " ").lower())):
        return exc
    try:
        named = type(exc)(f"{kind} {name!r}: {text}")
    except Exception:  # a subclass with another constructor: keep it as it is
        return exc
    return named if str(named) == f"{kind} {name!r}: {text}" else exc
