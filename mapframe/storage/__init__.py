"""Evaluation stores: every evaluation kept as it finishes."""

from mapframe.storage.base import EvaluationStore
from mapframe.storage.memory import MemoryStore
from mapframe.storage.sqlite import SQLiteStore

__all__ = ["EvaluationStore", "MemoryStore", "SQLiteStore"]
