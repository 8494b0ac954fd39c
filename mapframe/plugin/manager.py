"""Loading plugins from the ``mapframe`` entry-point group with pluggy."""

from __future__ import annotations

import inspect
import sys
import threading
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from mapframe.errors import PluginLoadError, one_line
from mapframe.plugin import hookspecs
from mapframe.plugin.registry import ComponentRegistry, PluginInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "get_plugin_manager",
    "get_registry",
    "register_plugin",
    "reset_plugins",
]

ENTRY_POINT_GROUP = "mapframe"
#: The package named for plugins registered with :func:`register_plugin`.
IN_CODE = "<registered in code>"

_lock = threading.RLock()
_state: dict[str, Any] = {"pm": None, "registry": None, "extra": []}


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown package>", ""
    return dist.metadata["Name"] or "<unknown package>", dist.version or ""


def _entry_points() -> list[metadata.EntryPoint]:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
        if (ep.name, ep.value) in seen:  # the same dist on sys.path twice
            continue
        seen.add((ep.name, ep.value))
        out.append(ep)
    return out


def _build() -> tuple[pluggy.PluginManager, ComponentRegistry]:
    pm = pluggy.PluginManager("mapframe")
    pm.add_hookspecs(hookspecs)
    registry = ComponentRegistry()
    plugins: list[tuple[PluginInfo, Any]] = []
    for ep in _entry_points():
        package, version = _dist_of(ep)
        info = PluginInfo(ep.name, package, version, ep.value)
        try:
            obj = ep.load()
        except SystemExit as exc:  # a plugin must not end the process that loads it
            info.error = f"its module called sys.exit({exc.code!r}) while being imported"
            registry.plugins.append(info)
            continue
        except Exception as exc:
            info.error = one_line(exc)
            registry.plugins.append(info)
            continue
        plugins.append((info, obj))
    loaded = [obj for _, obj in plugins]
    for obj, name in _state["extra"]:
        if any(obj is other for other in loaded):
            continue  # already installed through an entry point: registering it is a no-op
        mod = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__qualname__
        plugins.append((PluginInfo(name, IN_CODE, "", mod), obj))
    for info, obj in plugins:
        problem = _hook_argument_problem(pm, obj)
        if problem:
            info.error = problem
            registry.plugins.append(info)
            continue
        try:
            pm.register(obj, name=f"{info.package}:{info.name}")
        except Exception as exc:  # pluggy's PluginValidationError, among others
            info.error = one_line(exc)
            registry.plugins.append(info)
            continue
        registry.plugins.append(info)
        unknown = _unknown_hooks(obj) or _undecorated_hooks(pm, obj)
        if unknown:
            info.error = unknown
            continue
        others = [p for p in pm.get_plugins() if p is not obj]
        caller = pm.subset_hook_caller("mapframe_register_components", remove_plugins=others)
        registry._current_plugin = f"plugin {info.name!r} (package {info.package})"
        registry._current_info = info
        try:
            caller(registry=registry)
        except SystemExit as exc:
            info.error = f"its mapframe_register_components called sys.exit({exc.code!r})"
        except Exception as exc:
            info.error = one_line(exc)
        finally:
            registry._current_plugin = "<direct>"
            registry._current_info = None
    return pm, registry


def _required_args(fn: Any) -> list[str] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _hook_argument_problem(pm: pluggy.PluginManager, obj: Any) -> str | None:
    """A one-line error for a hook implementation whose arguments the hook does not pass
    (pluggy's own error is three lines), else ``None``."""
    for hook in _known_hooks():
        impl = getattr(obj, hook, None)
        if not callable(impl) or pm.parse_hookimpl_opts(obj, hook) is None:
            continue
        args = _required_args(impl)
        spec = _required_args(getattr(hookspecs, hook)) or []
        bad = [a for a in args or [] if a not in spec]
        if bad:
            return (f"its hook {hook}({', '.join(args or [])}) takes "
                    f"{', '.join(repr(a) for a in bad)}, which mapframe does not pass; name the "
                    f"arguments as the hook does: {hook}({', '.join(spec)})")
    return None


def _undecorated_hooks(pm: pluggy.PluginManager, obj: Any) -> str | None:
    """A one-line error for a function named like a hook but not decorated with
    ``@hookimpl`` (pluggy silently never calls it), else ``None``."""
    for hook in _known_hooks():
        if callable(getattr(obj, hook, None)) and pm.parse_hookimpl_opts(obj, hook) is None:
            return (f"defines {hook} without @hookimpl, so it is never called; decorate it "
                    "with @hookimpl (from mapframe.plugin import hookimpl)")
    return None


def _known_hooks() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("mapframe_")]


def _unknown_hooks(obj: Any) -> str | None:
    """A one-line error for functions named like hooks (``mapframe_*``) that are no hook
    (a misspelled name would otherwise never be called), else ``None``."""
    import difflib

    known = _known_hooks()
    names = [n for n in dir(obj) if n.startswith("mapframe_") and callable(getattr(obj, n))]
    bad = [n for n in names if n not in known]
    if not bad:
        return None
    close = difflib.get_close_matches(bad[0], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (hooks: {', '.join(known)})"
    return f"defines {bad[0]}, which is not a mapframe hook{hint}"


def _ensure() -> tuple[pluggy.PluginManager, ComponentRegistry]:
    """The manager and the registry, built if needed, read under the lock: a
    ``reset_plugins``/``register_plugin`` in another thread sets them back to ``None``, which
    a read after the lock was released could see."""
    with _lock:
        if _state["pm"] is None:
            _state["pm"], _state["registry"] = _build()
        return _state["pm"], _state["registry"]


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager with every plugin of the ``mapframe`` group registered."""
    return _ensure()[0]


def get_registry(strict: bool = True) -> ComponentRegistry:
    """The component registry built from all plugins.

    With ``strict`` (the default) a plugin that failed to load raises
    :class:`~mapframe.errors.PluginLoadError` naming its package; ``mapframe plugins`` uses
    ``strict=False`` to list broken plugins instead.
    """
    registry = _ensure()[1]
    if strict:
        for info in registry.plugins:
            if info.error and info.package == IN_CODE:
                raise PluginLoadError(
                    f"plugin {info.name!r}, registered in code, failed to load ({info.error}); "
                    f"fix it, or remove it with mapframe.plugin.unregister_plugin({info.name!r})"
                )
            if info.error:
                raise PluginLoadError(
                    f"plugin {info.name!r} from package {info.package!r} failed to load "
                    f"({info.error}); fix or uninstall that package (pip uninstall "
                    f"{info.package})"
                )
    return registry


def register_plugin(plugin: Any, name: str | None = None, replace: bool = False) -> None:
    """Register a plugin object or module in code (tests, notebooks, embedding systems).

    The registry is rebuilt on next use, with this plugin added after the installed ones.
    Registering an object that is already registered (in code, or installed through an
    entry point) does nothing. A *redefinition* of the plugin registered in code under that
    name replaces it (in its place): an instance of a class defined in ``__main__`` (a
    notebook cell or script) with the same qualified name (the cell run again), an instance
    of a class its module redefined (``importlib.reload``), or the module of that name
    imported again; so a notebook cell that defines a plugin class and registers an
    instance can be run again. Another plugin under a name already taken in code raises
    :class:`~mapframe.errors.PluginLoadError`: give it another ``name``, unregister the
    first one, or pass ``replace=True`` to replace whatever is registered under that name.
    """
    with _lock:
        label = str(name or getattr(plugin, "__name__", type(plugin).__qualname__))
        extra: list[tuple[Any, str]] = _state["extra"]
        for i, (other, other_label) in enumerate(extra):
            if other is plugin:
                return
            if other_label == label:
                if not (replace or _redefines(other, plugin)):
                    raise PluginLoadError(
                        f"another plugin ({_describe(other)}) is already registered in code "
                        f"as {label!r}; register this one ({_describe(plugin)}) with another "
                        f"name (register_plugin(plugin, name=...)), replace the first "
                        f"(register_plugin(plugin, replace=True)), or remove it with "
                        f"mapframe.plugin.unregister_plugin({label!r})")
                extra[i] = (plugin, label)
                break
        else:
            extra.append((plugin, label))
        _state["pm"] = _state["registry"] = None


def _class_id(obj: Any) -> tuple[Any, str, str]:
    """The class a plugin object is an instance of (a class registered as such: itself),
    with its module and qualified name."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls, getattr(cls, "__module__", ""), getattr(cls, "__qualname__", "")


def _redefines(old: Any, new: Any) -> bool:
    """``new`` is ``old`` defined again: the module of the same name imported anew (``new``
    is the one ``sys.modules`` holds now, ``old`` no longer; ``importlib.reload`` keeps the
    module object itself), an instance of a class of the same module and qualified name
    that is either defined in ``__main__`` (a notebook cell, or a script, run again) or
    another class object (its module reloaded); two instances of one importable class, or
    two module objects that are not the imported module, are two plugins."""
    if isinstance(old, ModuleType) or isinstance(new, ModuleType):
        if not (isinstance(old, ModuleType) and isinstance(new, ModuleType)
                and old.__name__ == new.__name__):
            return False
        now = sys.modules.get(new.__name__)
        return now is new and now is not old
    if isinstance(old, type) != isinstance(new, type):
        return False
    old_cls, old_mod, old_name = _class_id(old)
    new_cls, new_mod, new_name = _class_id(new)
    if (old_mod, old_name) != (new_mod, new_name) or "<locals>" in new_name:
        return False
    return new_mod == "__main__" or old_cls is not new_cls


def _describe(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return f"module {obj.__name__}"
    _, mod, qualname = _class_id(obj)
    return f"class {mod}.{qualname}" if isinstance(obj, type) else f"a {mod}.{qualname}"


def unregister_plugin(plugin: Any) -> None:
    """Undo :func:`register_plugin`: ``plugin`` is the object registered, or the name it was
    registered under."""
    with _lock:
        _state["extra"] = [(p, n) for p, n in _state["extra"]
                           if p is not plugin and not (isinstance(plugin, str) and n == plugin)]
        _state["pm"] = _state["registry"] = None


def reset_plugins() -> None:
    """Forget loaded plugins; the next use re-reads the entry points."""
    with _lock:
        _state["pm"] = _state["registry"] = None
