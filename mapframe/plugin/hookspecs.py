"""Every hook mapframe calls, in one typed, documented module.

A plugin is a module (or object) with functions named like these hooks and decorated with
:data:`hookimpl`, exposed through an entry point in the group ``mapframe``::

    # setup.cfg of a plugin package
    [options.entry_points]
    mapframe =
        myplugin = my_package.mapframe_plugin

    # my_package/mapframe_plugin.py
    from mapframe.plugin import hookimpl

    @hookimpl
    def mapframe_register_components(registry):
        registry.register(MyEvaluator)

Hooks only register components and announce study events; they never do a study's work.
mapframe's own built-ins register through the very same entry point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mapframe.history import Evaluation
    from mapframe.plugin.registry import ComponentRegistry
    from mapframe.results import StudyResult
    from mapframe.study import MergeStudy

__all__ = [
    "hookimpl",
    "hookspec",
    "mapframe_evaluation_stored",
    "mapframe_register_components",
    "mapframe_study_finished",
    "mapframe_study_started",
]

hookspec = pluggy.HookspecMarker("mapframe")
hookimpl = pluggy.HookimplMarker("mapframe")


@hookspec
def mapframe_register_components(registry: ComponentRegistry) -> None:
    """Register component classes with ``registry.register(cls)``.

    Called once per plugin when the registry is first built. Each class must subclass one of
    the component bases, which :data:`~mapframe.plugin.kinds.COMPONENT_KINDS` lists (kinds
    ``evaluator``, ``sampler``, ``surrogate``, ``front_solver``, ``merge_strategy``,
    ``storage``, ``executor``, ``stopping`` and ``pairing``), and carry a ``name`` not
    already taken within its kind.
    """


@hookspec
def mapframe_study_started(study: MergeStudy) -> None:
    """Called when :meth:`MergeStudy.run` starts, after the store is opened."""


@hookspec
def mapframe_evaluation_stored(study: MergeStudy, evaluation: Evaluation) -> None:
    """Called after each evaluation is written to the store (in the driver process)."""


@hookspec
def mapframe_study_finished(study: MergeStudy, result: StudyResult) -> None:
    """Called when :meth:`MergeStudy.run` has produced its result."""
