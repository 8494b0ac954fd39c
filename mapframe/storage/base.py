"""The :class:`EvaluationStore` component: where every evaluation is kept as it finishes."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any, ClassVar

from mapframe.component import Component
from mapframe.errors import StoreError
from mapframe.history import Evaluation

__all__ = ["EvaluationStore", "fingerprint_diff"]


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Top-level fields whose values differ between two study fingerprints."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


class EvaluationStore(Component):
    """Persists evaluations so that nothing is lost and nothing is evaluated twice.

    Call order::

        store.open(study_name, fingerprint)   # create, or reopen and check the setup matches
        store.load()                          # evaluations stored by earlier runs
        store.add(evaluation)                 # after each evaluation; durable on return
        store.set_meta(key, value)            # study-level JSON values (results, settings)
        store.close()

    ``fingerprint`` describes what gives the metrics their meaning (tasks, evaluator, merge
    strategy, checkpoints). Reopening a study whose fingerprint differs raises
    :class:`~mapframe.errors.StoreError` naming the differing fields, so results of one setup
    are never reused for another. Evaluations are keyed by (phase, coefficient key): adding
    the same key again replaces the old row (used to retry failed evaluations).

    A store keeps every field of an :class:`~mapframe.history.Evaluation`, its
    :attr:`~mapframe.history.Evaluation.reason` included, so :meth:`load` returns evaluations
    equal field by field to those given to :meth:`add`. :attr:`location` says where the
    evaluations live (a file path, a URL) or is ``None`` when they live only in this process.
    """

    kind: ClassVar[str] = "storage"

    @property
    def location(self) -> str | None:
        """Where the evaluations are kept, for people to find them again (a file path, a
        database URL), or ``None`` when they are kept in this process only. Default: ``None``.
        """
        return None

    @abstractmethod
    def open(self, study_name: str, fingerprint: dict[str, Any]) -> None:
        """Create or reopen the study ``study_name``."""

    @abstractmethod
    def load(self) -> list[Evaluation]:
        """All evaluations stored for the open study, in insertion order."""

    @abstractmethod
    def add(self, evaluation: Evaluation) -> None:
        """Store one evaluation; it must be durable when this returns."""

    @abstractmethod
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-compatible study-level value."""

    @abstractmethod
    def get_meta(self, key: str, default: Any = None) -> Any:
        """Read a value stored with :meth:`set_meta`."""

    def close(self) -> None:
        """Release the store. Default: no-op."""

    def _check_fingerprint(
        self, study_name: str, old: dict[str, Any], new: dict[str, Any], where: str
    ) -> None:
        diff = fingerprint_diff(old, new)
        if diff:
            raise StoreError(
                f"{where} already holds a study named {study_name!r} with a different setup "
                f"({', '.join(diff)} differ); use another study name or another store, or "
                "delete the old study"
            )
