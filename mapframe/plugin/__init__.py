"""Plugin discovery (pluggy + the ``mapframe`` entry-point group) and the component registry."""

from mapframe.plugin.hookspecs import hookimpl, hookspec
from mapframe.plugin.kinds import COMPONENT_KINDS, ComponentKind
from mapframe.plugin.manager import (
    ENTRY_POINT_GROUP,
    get_plugin_manager,
    get_registry,
    register_plugin,
    reset_plugins,
    unregister_plugin,
)
from mapframe.plugin.registry import ComponentRegistry, PluginInfo

__all__ = [
    "COMPONENT_KINDS",
    "ENTRY_POINT_GROUP",
    "ComponentKind",
    "ComponentRegistry",
    "PluginInfo",
    "create_component",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "register_plugin",
    "reset_plugins",
    "unregister_plugin",
]


def create_component(kind: str, spec: object, **defaults: object) -> object:
    """Build a component of ``kind`` from a name, a mapping with ``name``, or an instance."""
    return get_registry().create(kind, spec, **defaults)
