"""Evaluation stores: every evaluation kept as it finishes."""

from mapframe.storage.base import EvaluationStore
from mapframe.storage.manage import (
    StudySummary,
    copy_study,
    delete_study,
    export_study,
    list_studies,
    rename_study,
)
from mapframe.storage.memory import MemoryStore
from mapframe.storage.sqlite import SQLiteStore

__all__ = ["EvaluationStore", "MemoryStore", "SQLiteStore", "StudySummary", "copy_study",
           "delete_study", "export_study", "list_studies", "rename_study"]
