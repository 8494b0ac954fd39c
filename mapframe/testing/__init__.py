"""Contract tests that every component implementation must pass.

Subclass the contract for your component kind in your own test suite and provide the
factory method; pytest then runs the same checks mapframe runs on its built-ins::

    from mapframe.testing import SamplerContract

    class TestMySampler(SamplerContract):
        def make_sampler(self):
            return MySampler(alpha=0.5)

The contracts need ``pytest`` (and ``torch`` for merge strategies and model evaluators).
"""

from mapframe.testing.contracts import (
    AdaptiveSamplerContract,
    EvaluatorContract,
    ExecutorContract,
    FrontSolverContract,
    MergeStrategyContract,
    SamplerContract,
    StoreContract,
    SurrogateContract,
    assert_batch_matches_rows,
    tiny_task_vectors,
)

__all__ = [
    "AdaptiveSamplerContract",
    "EvaluatorContract",
    "ExecutorContract",
    "FrontSolverContract",
    "MergeStrategyContract",
    "SamplerContract",
    "StoreContract",
    "SurrogateContract",
    "assert_batch_matches_rows",
    "tiny_task_vectors",
]
