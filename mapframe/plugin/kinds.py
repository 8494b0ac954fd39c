"""The component kinds, listed once.

Each row names a kind, its abstract base class (as an import path, read lazily so this
module imports nothing above it), the key a YAML config gives it, its default, and the
sub-package holding its built-ins. The registry, the config loader, ``mapframe plugins``
and the docs read this table; adding a kind means adding a row here (and its base class).

Every kind registers the same way: a plugin's ``mapframe_register_components(registry)``
hook calls ``registry.register(cls)``; the class's base decides its kind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapframe.component import Component

__all__ = ["COMPONENT_KINDS", "ComponentKind", "kind_named"]


@dataclass(frozen=True)
class ComponentKind:
    """One kind of component: what it is, where its base class and built-ins live."""

    #: The kind's id (``registry.names(kind)``, ``Component.kind``).
    kind: str
    #: ``"module:ClassName"`` of the abstract base class.
    base_path: str
    #: Where a YAML config sets it (``study.storage`` for stores, ``nested.pairing``).
    config_key: str
    #: The default component's name, or ``None`` when the setting is optional/required.
    default: str | None
    #: The sub-package of mapframe holding the base class and the built-ins.
    package: str
    #: What the kind decides, in a few words.
    role: str

    @property
    def title(self) -> str:
        return self.kind.replace("_", " ")

    @property
    def default_text(self) -> str:
        if self.default is not None:
            return f"default {self.default}"
        return "required" if self.kind == "evaluator" else "default none"

    def load_base(self) -> type[Component]:
        """Import and return the base class."""
        module, _, name = self.base_path.partition(":")
        cls: type[Component] = getattr(importlib.import_module(module), name)
        return cls


COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    ComponentKind("evaluator", "mapframe.evaluators.base:Evaluator", "evaluator", None,
                  "mapframe.evaluators", "merges (if needed) and scores a batch of "
                  "coefficient vectors on the tasks"),
    ComponentKind("sampler", "mapframe.samplers.base:Sampler", "sampler", "auto",
                  "mapframe.samplers", "proposes the coefficient vectors to evaluate"),
    ComponentKind("surrogate", "mapframe.surrogates.base:Surrogate", "surrogate", "auto",
                  "mapframe.surrogates", "predicts one task's metric from the coefficients"),
    ComponentKind("front_solver", "mapframe.solvers.base:FrontSolver", "front_solver", "auto",
                  "mapframe.solvers", "finds the Pareto front of the surrogates"),
    ComponentKind("merge_strategy", "mapframe.merging.base:MergeStrategy", "merge_strategy",
                  "task_arithmetic", "mapframe.merging",
                  "turns coefficients and task vectors into merged weights"),
    ComponentKind("storage", "mapframe.storage.base:EvaluationStore", "study.storage",
                  "memory",
                  "mapframe.storage", "keeps every evaluation (resume, reuse)"),
    ComponentKind("executor", "mapframe.executors.base:Executor", "executor", "inprocess",
                  "mapframe.executors", "runs evaluations (in process, pool, Ray, Dask)"),
    ComponentKind("stopping", "mapframe.stopping:StoppingRule", "stopping", None,
                  "mapframe.stopping", "ends an adaptive search before its budget"),
    ComponentKind("pairing", "mapframe.pairing:PairingStrategy", "nested.pairing", "cosine",
                  "mapframe.pairing", "decides which models Nested MAP merges together"),
)


def kind_named(kind: str) -> ComponentKind:
    """The row of ``kind`` (``KeyError`` for an unknown kind)."""
    for row in COMPONENT_KINDS:
        if row.kind == kind:
            return row
    raise KeyError(kind)
