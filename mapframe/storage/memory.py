"""An in-memory evaluation store (the default for studies embedded in code)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from mapframe.history import Evaluation
from mapframe.storage.base import EvaluationStore

__all__ = ["MemoryStore"]


class MemoryStore(EvaluationStore):
    """Keeps evaluations in this process only; reusing the same instance resumes a study.

    One instance holds many studies, told apart by their names, but is open for one study in
    one thread at a time: concurrent studies (in threads) each need their own instance.
    """

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self._studies: dict[str, tuple[dict[str, Any], dict[tuple[str, str], Evaluation],
                                       dict[str, Any]]] = {}
        self._open: str | None = None

    def open(self, study_name: str, fingerprint: dict[str, Any]) -> None:
        with self._opening(study_name):
            if study_name in self._studies:
                self._check_fingerprint(
                    study_name, self._studies[study_name][0], fingerprint, "this memory store"
                )
            else:
                self._studies[study_name] = (copy.deepcopy(fingerprint), {}, {})
            self._open = study_name

    def close(self) -> None:
        self._release()

    def __getstate__(self) -> dict[str, Any]:
        # A copy (another process, a deep copy) is held by no thread.
        return {k: v for k, v in self.__dict__.items() if k != "_holder"}

    def _current(self):
        from mapframe.errors import StoreError

        self._check_thread()
        if self._open is None:
            raise StoreError("the store is not open: call open(study_name, fingerprint) first")
        return self._studies[self._open]

    def load(self) -> list[Evaluation]:
        return list(self._current()[1].values())

    def add(self, evaluation: Evaluation) -> None:
        rows = self._current()[1]
        rows.pop((evaluation.phase, evaluation.key), None)
        rows[(evaluation.phase, evaluation.key)] = evaluation

    def set_meta(self, key: str, value: Any) -> None:
        self._current()[2][key] = copy.deepcopy(value)

    def get_meta(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self._current()[2].get(key, default))

    @property
    def location(self) -> str | None:
        """``None``: the evaluations live in this process only."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
