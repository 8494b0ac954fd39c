"""Evaluators: turn coefficient vectors into task metrics."""

from mapframe.evaluators.base import Evaluator, ModelEvaluator
from mapframe.evaluators.callable import CallableEvaluator

__all__ = ["CallableEvaluator", "Evaluator", "ModelEvaluator"]
