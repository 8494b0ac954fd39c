"""The ranges the lm-eval bridge declares for lm-eval's built-in metrics."""

from __future__ import annotations

import math

import numpy as np
from mapframe_llm.harness import metric_range


def _lm_eval_brier(gold: list[int], predictions: np.ndarray) -> float:
    """lm-eval's ``brier_score`` aggregation (lm_eval/api/metrics.py): the squared error
    summed over a question's choices, averaged over questions."""
    one_hot = np.eye(predictions.shape[1])[gold]
    return float(np.mean(np.sum((predictions - one_hot) ** 2, axis=1)))


def test_brier_score_may_reach_two():
    """A confidently wrong model scores 2 (the range was [0, 1]: real scores were refused
    as out of range and stopped the study)."""
    worst = _lm_eval_brier([0, 1], np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    lo, hi = metric_range("brier_score")
    assert worst == 2.0 and lo <= worst <= hi and (lo, hi) == (0.0, 2.0)


def test_f1_has_no_declared_range():
    """squadv2 reports f1 as a percentage (SQuAD's script), other tasks as a fraction."""
    assert metric_range("f1") == (-math.inf, math.inf)
    assert metric_range("acc") == (0.0, 1.0) and metric_range("exact_match") == (0.0, 1.0)
