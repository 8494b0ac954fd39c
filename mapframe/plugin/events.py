"""Announcing study events to plugins: one call per event hook, failures named by plugin."""

from __future__ import annotations

from typing import Any

from mapframe.errors import ComponentError, MapframeError, one_line
from mapframe.plugin.manager import IN_CODE

__all__ = ["announce"]


def announce(hooks: Any, event: str, **kwargs: Any) -> None:
    """Call the event hook ``event`` (``"mapframe_study_started"``, ...) of every plugin.

    An exception from a plugin's implementation ends in a one-line
    :class:`~mapframe.errors.ComponentError` naming the hook and the plugin (found from the
    traceback), with the original exception chained; it was a raw traceback naming
    neither. mapframe's own errors pass unchanged.
    """
    caller = getattr(hooks, event)
    try:
        caller(**kwargs)
    except MapframeError:
        raise
    except Exception as exc:
        raise ComponentError(
            f"the {event} hook of {_failing_plugin(caller, exc)} failed: {one_line(exc)}; "
            "fix or remove that plugin (`mapframe plugins` lists the installed ones)"
        ) from exc


def _failing_plugin(caller: Any, exc: BaseException) -> str:
    """The plugin whose hook implementation raised ``exc``: the innermost frame of the
    traceback that runs one of the hook's implementations."""
    codes = {getattr(impl.function, "__code__", None): impl.plugin_name
             for impl in caller.get_hookimpls()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    if not found:
        return "a plugin"
    package, _, name = found.rpartition(":")  # registered as "<package>:<entry point>"
    if not package:
        return f"plugin {found!r}"
    where = "registered in code" if package == IN_CODE else f"package {package}"
    return f"plugin {name!r} ({where})"
