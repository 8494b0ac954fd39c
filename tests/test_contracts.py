"""Every built-in component passes the contract tests that ship in mapframe.testing."""

from __future__ import annotations

import pytest

from mapframe.evaluators.callable import CallableEvaluator
from mapframe.executors.inprocess import InProcessExecutor
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.problem import Task
from mapframe.samplers.space_filling import (
    GridSampler,
    LatinHypercubeSampler,
    RandomSampler,
    SobolSampler,
)
from mapframe.solvers.pymoo_solvers import (
    AutoFrontSolver,
    GridSolver,
    NSGA2Solver,
    NSGA3Solver,
)
from mapframe.storage.memory import MemoryStore
from mapframe.storage.sqlite import SQLiteStore
from mapframe.surrogates.quadratic import (
    AutoSurrogate,
    QuadraticSurrogate,
    SigmoidQuadraticSurrogate,
    SoftplusQuadraticSurrogate,
)
from mapframe.testing import (
    EvaluatorContract,
    ExecutorContract,
    FrontSolverContract,
    MergeStrategyContract,
    SamplerContract,
    StoreContract,
    SurrogateContract,
)


class TestRandomSampler(SamplerContract):
    def make_sampler(self):
        return RandomSampler()


class TestSobolSampler(SamplerContract):
    def make_sampler(self):
        return SobolSampler()


class TestLatinHypercubeSampler(SamplerContract):
    def make_sampler(self):
        return LatinHypercubeSampler()


class TestGridSampler(SamplerContract):
    def make_sampler(self):
        return GridSampler()


class TestQuadraticSurrogate(SurrogateContract):
    def make_surrogate(self):
        return QuadraticSurrogate()

    def make_task(self):
        return Task("t")


class TestSigmoidQuadraticSurrogate(SurrogateContract):
    def make_surrogate(self):
        return SigmoidQuadraticSurrogate()


class TestSoftplusQuadraticSurrogate(SurrogateContract):
    def make_surrogate(self):
        return SoftplusQuadraticSurrogate()

    def make_task(self):
        return Task("loss", "min", 0.0)


@pytest.mark.parametrize("task", [Task("t"), Task("acc", "max", 0, 1), Task("l", "min", 0)])
class TestAutoSurrogate(SurrogateContract):
    @pytest.fixture(autouse=True)
    def _task(self, task):
        self._t = task

    def make_surrogate(self):
        return AutoSurrogate()

    def make_task(self):
        return self._t


class TestNSGA3Solver(FrontSolverContract):
    def make_solver(self):
        return NSGA3Solver()


class TestNSGA2Solver(FrontSolverContract):
    def make_solver(self):
        return NSGA2Solver()


class TestAutoFrontSolver(FrontSolverContract):
    def make_solver(self):
        return AutoFrontSolver()


class TestGridSolver(FrontSolverContract):
    def make_solver(self):
        return GridSolver()


class TestTaskArithmetic(MergeStrategyContract):
    def make_strategy(self):
        return TaskArithmetic()


class TestSQLiteStore(StoreContract):
    def make_store(self, tmp_path):
        return SQLiteStore(tmp_path / "store.sqlite")


class TestMemoryStore(StoreContract):
    reopens_across_instances = False

    def make_store(self, tmp_path):
        return MemoryStore()


class TestInProcessExecutor(ExecutorContract):
    def make_executor(self):
        return InProcessExecutor()


class TestInProcessExecutorBatched(ExecutorContract):
    def make_executor(self):
        return InProcessExecutor(batch_size=2)


class TestCallableEvaluator(EvaluatorContract):
    def make_evaluator(self):
        return CallableEvaluator("objectives:two_quadratics", ["a", "b"])
