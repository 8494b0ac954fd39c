"""The contract test classes (see :mod:`mapframe.testing`)."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import numpy as np
import pytest

from mapframe.errors import BudgetError, ConfigError, StoreError
from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import Executor, Job, MergeSpec
from mapframe.history import Evaluation, History
from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors
from mapframe.metrics import pareto_mask
from mapframe.pairing import PairingStrategy, TournamentModel
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import Sampler, SamplerContext
from mapframe.solvers.base import FrontSolver
from mapframe.stopping import RoundState, StoppingRule
from mapframe.storage.base import EvaluationStore
from mapframe.surrogates.base import Surrogate

__all__ = [
    "AdaptiveSamplerContract",
    "EvaluatorContract",
    "ExecutorContract",
    "FrontSolverContract",
    "MergeStrategyContract",
    "PairingContract",
    "SamplerContract",
    "StoppingRuleContract",
    "StoreContract",
    "SurrogateContract",
    "assert_batch_matches_rows",
    "tiny_checkpoints",
    "tiny_task_vectors",
]


def _registered(component: Any) -> None:
    cls = type(component)
    registry = get_registry()
    kind = registry.kind_of(cls)
    assert isinstance(cls.name, str) and cls.name, f"{cls.__qualname__} needs a name"
    assert cls.name in registry.names(kind), (
        f"{kind} {cls.name!r} is not registered through the 'mapframe' entry points"
    )
    assert registry.get(kind, cls.name) is cls


def _tiny_states(n_tasks: int, seed: int, dtype: Any) -> tuple[dict[str, Any], list[Any]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    dt = dtype or torch.float32
    base = {"layer.weight": torch.randn(4, 5, generator=g).to(dt),
            "layer.bias": torch.randn(4, generator=g).to(dt),
            "head.weight": torch.randn(3, 4, generator=g).to(dt),
            "bn.num_batches_tracked": torch.tensor(7)}
    fts = []
    for _ in range(n_tasks):
        ft = {k: (v + 0.1 * torch.randn(v.shape, generator=g).to(dt)
                  if torch.is_floating_point(v) else v.clone()) for k, v in base.items()}
        fts.append(ft)
    return base, fts


def tiny_task_vectors(n_tasks: int = 3, seed: int = 0, dtype: Any = None) -> TaskVectors:
    """A small random pretrained state dict and ``n_tasks`` fine-tunes of it."""
    base, fts = _tiny_states(n_tasks, seed, dtype)
    return TaskVectors(base, fts, [f"t{i}" for i in range(n_tasks)])


def tiny_checkpoints(folder: Any, n_tasks: int = 2, seed: int = 0) -> MergeSpec:
    """Write the tensors of :func:`tiny_task_vectors` as ``.safetensors`` checkpoints in
    ``folder``; return a task-arithmetic :class:`~mapframe.executors.MergeSpec` naming them
    (tasks ``t0``, ``t1``, ...), as a study gives executors."""
    from pathlib import Path

    from mapframe.merging.checkpoints import save_state_dict
    from mapframe.merging.task_arithmetic import TaskArithmetic

    folder = Path(folder)
    base, fts = _tiny_states(n_tasks, seed, None)
    pretrained = save_state_dict(base, folder / "pretrained.safetensors")
    finetuned = {f"t{i}": str(save_state_dict(ft, folder / f"t{i}.safetensors"))
                 for i, ft in enumerate(fts)}
    return MergeSpec(TaskArithmetic(), str(pretrained), finetuned)


class SamplerContract:
    """Checks for :class:`~mapframe.samplers.Sampler` implementations."""

    n_dims: int = 3

    def make_sampler(self) -> Sampler:
        raise NotImplementedError("override make_sampler() to return your sampler")

    def _space(self) -> SearchSpace:
        return SearchSpace(np.array([-0.5, 0.0, 0.2][: self.n_dims]),
                           np.array([1.5, 1.0, 0.3][: self.n_dims]))

    def _propose(self, seed: int, n: int = 12) -> np.ndarray:
        s = self.make_sampler()
        space = self._space()
        history = History(space.n_dims, 2)
        return np.asarray(s.propose(n, space, history, np.random.default_rng(seed)))

    def test_is_registered(self) -> None:
        _registered(self.make_sampler())

    def test_shape_and_box(self) -> None:
        X = self._propose(0)
        space = self._space()
        assert X.shape == (12, space.n_dims)
        assert np.all(np.isfinite(X))
        assert np.all(space.contains(X))

    def test_reproducible_under_seed(self) -> None:
        np.testing.assert_array_equal(self._propose(3), self._propose(3))

    def test_seed_changes_design(self) -> None:
        a, b = self._propose(1), self._propose(2)
        if getattr(self.make_sampler(), "deterministic", False):
            np.testing.assert_array_equal(a, b)
        else:
            assert not np.array_equal(a, b)

    def test_single_point(self) -> None:
        assert self._propose(0, n=1).shape == (1, self.n_dims)

    def test_batch_size_bounds(self) -> None:
        s = self.make_sampler()
        n = s.batch_size(10, History(self.n_dims, 2))
        assert 1 <= n <= 10
        assert 1 <= s.batch_size(10, History(self.n_dims, 2), capacity=4) <= 10


def _two_task_objective(C: np.ndarray) -> np.ndarray:
    """A smooth trade-off in ``[0, 1]``: task 0 likes large ``c_0``, task 1 large ``c_-1``."""
    C = np.atleast_2d(C)
    z0 = 2.0 * C[:, 0] - 1.2 * C[:, -1] ** 2 - 0.3 * C.sum(axis=1) ** 2 + 0.2
    z1 = 2.0 * C[:, -1] - 1.2 * C[:, 0] ** 2 - 0.3 * C.sum(axis=1) ** 2 + 0.2
    return np.column_stack([1 / (1 + np.exp(-z0)), 1 / (1 + np.exp(-z1))])


class AdaptiveSamplerContract(SamplerContract):
    """Extra checks for adaptive samplers (``adaptive = True``): proposals that use the
    history, order independence, rounds, and resuming a study without re-evaluation."""

    #: History size used by the checks (enough to fit a quadratic in 3 dimensions).
    n_history: int = 16

    def _tasks(self) -> tuple[Task, ...]:
        return (Task("a", "max", 0.0, 1.0), Task("b", "max", 0.0, 1.0))

    def _history(self, seed: int = 0, shuffle: int | None = None) -> History:
        space = self._space()
        rng = np.random.default_rng(seed)
        X = space.scale(rng.random((self.n_history, space.n_dims)))
        Y = _two_task_objective((X - space.lower) / (space.upper - space.lower))
        order = np.arange(len(X))
        if shuffle is not None:
            order = np.random.default_rng(shuffle).permutation(len(X))
        return History(space.n_dims, 2, [Evaluation(X[i], Y[i]) for i in order])

    def _ready(self) -> Sampler:
        s = self.make_sampler()
        from mapframe.surrogates.quadratic import AutoSurrogate

        s.setup(SamplerContext(space=self._space(), tasks=self._tasks(),
                               surrogate=AutoSurrogate(), budget=40, seed=0))
        return s

    def test_is_adaptive(self) -> None:
        assert self.make_sampler().adaptive is True

    def test_proposals_with_history(self) -> None:
        s, space, history = self._ready(), self._space(), self._history()
        X = np.asarray(s.propose(3, space, history, np.random.default_rng(5)))
        assert X.shape == (3, space.n_dims)
        assert np.all(space.contains(X))
        seen = {tuple(x) for x in history.X}
        assert not any(tuple(x) in seen for x in X), "proposed an already evaluated point"
        again = np.asarray(self._ready().propose(3, space, history, np.random.default_rng(5)))
        np.testing.assert_array_equal(X, again)

    def test_history_order_does_not_matter(self) -> None:
        space = self._space()
        a = self._ready().propose(3, space, self._history(shuffle=1), np.random.default_rng(2))
        b = self._ready().propose(3, space, self._history(shuffle=2), np.random.default_rng(2))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)

    def test_proposes_in_rounds(self) -> None:
        s, history = self._ready(), self._history()
        assert 1 <= s.batch_size(30, history) < 30
        assert s.batch_size(30, history, capacity=4) >= 4

    def test_study_resumes_without_reevaluating(self, tmp_path: Any) -> None:
        from mapframe.study import MergeStudy

        calls: list[int] = []

        def objective(C: np.ndarray) -> np.ndarray:
            calls.append(len(C))
            return _two_task_objective(C)

        def study() -> Any:
            return MergeStudy(objective, ["a", "b"], metric_ranges=[(0, 1), (0, 1)],
                              budget=12, seed=3, sampler=self.make_sampler(),
                              storage=str(tmp_path / "s.sqlite"), front_solver="grid")

        first = study().run()
        assert len(first.history) == 12 and sum(calls) == 12
        second = study().run()
        assert sum(calls) == 12, "the resumed study evaluated points again"
        assert second.n_evaluated == 0 and second.n_reused == 12
        np.testing.assert_array_equal(first.history.X, second.history.X)


class SurrogateContract:
    """Checks for :class:`~mapframe.surrogates.Surrogate` implementations."""

    def make_surrogate(self) -> Surrogate:
        raise NotImplementedError("override make_surrogate() to return your surrogate")

    def make_task(self) -> Task:
        return Task("t", "max", 0.0, 1.0)

    def _data(self, n_dims: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.uniform(0, 1, (k, n_dims))
        z = 1.5 * X.sum(axis=1) - 2.0 * (X**2).sum(axis=1) + 0.3 * X[:, 0] * X[:, -1] - 0.2
        task = self.make_task()
        if task.bounded:
            y = task.lower + (task.upper - task.lower) / (1 + np.exp(-z))
        elif np.isfinite(task.lower):
            y = task.lower + np.log1p(np.exp(z))
        else:
            y = z
        return X, y

    def test_is_registered(self) -> None:
        _registered(self.make_surrogate())

    def test_n_params(self) -> None:
        s = self.make_surrogate()
        for n in (1, 2, 4):
            p = s.n_params(n)
            assert isinstance(p, int) and p >= n + 1

    def test_interpolates_at_n_params_is_honest(self) -> None:
        # A surrogate that says it interpolates at its parameter count (the study then warns
        # on such a fit) must reproduce noisy points it was fitted to exactly that many of.
        s = self.make_surrogate()
        assert isinstance(s.interpolates_at_n_params, bool)
        if not s.interpolates_at_n_params:
            return
        for n in (2, 3):
            X, y = self._data(n, s.n_params(n), seed=4)
            task = self.make_task()
            noise = np.random.default_rng(5).normal(0.0, 0.02 * (np.ptp(y) + 1e-12), y.size)
            y = np.clip(y + noise, task.lower, task.upper)
            fitted = copy.deepcopy(s).fit(X, y, task)
            err = float(np.max(np.abs(fitted.predict(X) - y)))
            # 0.1 % of the range against noise of 2 %: a slight ridge still counts.
            assert err <= 1e-3 * (np.ptp(y) + 1e-12), (
                f"interpolates_at_n_params is True but a fit to {len(y)} points misses them "
                f"by {err:.3g}: set it to False")

    def test_fit_predict_shapes(self) -> None:
        s = self.make_surrogate()
        X, y = self._data(2, 3 * s.n_params(2))
        assert s.fit(X, y, self.make_task()) is s
        pred = s.predict(np.random.default_rng(1).uniform(0, 1, (7, 2)))
        assert pred.shape == (7,) and np.all(np.isfinite(pred))

    def test_fits_smooth_data(self) -> None:
        s = self.make_surrogate()
        X, y = self._data(3, 4 * s.n_params(3))
        s.fit(X, y, self.make_task())
        Xt, yt = self._data(3, 50, seed=9)
        err = np.abs(s.predict(Xt) - yt)
        assert err.mean() < 0.05 * (np.ptp(yt) + 1e-12)
        diag = s.diagnostics()
        assert diag.get("r2", 0.0) > 0.95

    def test_too_few_points(self) -> None:
        s = self.make_surrogate()
        X, y = self._data(3, s.n_params(3) - 1)
        with pytest.raises(BudgetError):
            s.fit(X, y, self.make_task())

    def test_copy_is_independent(self) -> None:
        s = self.make_surrogate()
        X, y = self._data(2, 3 * s.n_params(2))
        s.fit(X, y, self.make_task())
        twin = copy.deepcopy(s)
        twin.fit(X, y[::-1].copy(), self.make_task())
        Xt = X[:5]
        assert not np.allclose(s.predict(Xt), twin.predict(Xt))


class FrontSolverContract:
    """Checks for :class:`~mapframe.solvers.FrontSolver` implementations."""

    def make_solver(self) -> FrontSolver:
        raise NotImplementedError("override make_solver() to return your front solver")

    @staticmethod
    def _predict(C: np.ndarray) -> np.ndarray:
        # Two concave tasks with optima at (0.8, 0.2) and (0.2, 0.8): a real trade-off.
        a = -((C[:, 0] - 0.8) ** 2) - (C[:, 1] - 0.2) ** 2
        b = -((C[:, 0] - 0.2) ** 2) - (C[:, 1] - 0.8) ** 2
        return np.column_stack([a, b])

    def _solve(self, tasks: list[Task] | None = None, predict: Any = None) -> Any:
        space = SearchSpace.box(2, (0.0, 1.0))
        tasks = tasks or [Task("a"), Task("b")]
        return self.make_solver().solve(predict or self._predict, space, tasks, seed=0)

    def test_is_registered(self) -> None:
        _registered(self.make_solver())

    def test_front_is_nondominated_and_inside(self) -> None:
        res = self._solve()
        assert res.X.shape[1] == 2 and res.F.shape == (res.X.shape[0], 2)
        assert res.X.shape[0] >= 5
        assert np.all((res.X >= -1e-9) & (res.X <= 1 + 1e-9))
        assert pareto_mask(res.F).all()
        np.testing.assert_allclose(res.F, self._predict(res.X), atol=1e-8)

    def test_front_spans_tradeoff(self) -> None:
        res = self._solve()
        # best achievable per task is 0 (at each optimum); the front should reach near both
        assert res.F[:, 0].max() > -0.01 and res.F[:, 1].max() > -0.01

    def test_minimisation_direction(self) -> None:
        res = self._solve([Task("a", "min"), Task("b")],
                          lambda C: self._predict(C) * np.array([-1.0, 1.0]))
        assert res.F[:, 0].min() < 0.01
        assert pareto_mask(res.F, ["min", "max"]).all()

    def test_reproducible(self) -> None:
        a, b = self._solve(), self._solve()
        np.testing.assert_allclose(a.X, b.X)

    def test_respects_an_offset_box(self) -> None:
        # A box that is not the unit square, with other bounds per dimension: a solver that
        # draws from [0, 1]^N instead of calling space.scale fails here.
        space = SearchSpace(np.array([-0.5, 0.1]), np.array([0.25, 0.6]))

        def predict(X: np.ndarray) -> np.ndarray:
            return self._predict((X - space.lower) / (space.upper - space.lower))

        res = self.make_solver().solve(predict, space, [Task("a"), Task("b")], seed=0)
        X, F = np.asarray(res.X, dtype=float), np.asarray(res.F, dtype=float)
        assert X.ndim == 2 and X.shape[1] == 2 and F.shape == (X.shape[0], 2)
        assert X.shape[0] >= 5
        outside = ~space.contains(X, atol=1e-9)
        assert not outside.any(), (
            f"{int(outside.sum())} of {len(X)} points lie outside the box "
            f"lower={space.lower.tolist()} upper={space.upper.tolist()}: draw candidates "
            f"with space.scale(...) or inside [space.lower, space.upper]")
        np.testing.assert_allclose(F, predict(X), atol=1e-8,
                                   err_msg="F is not the objective at X")
        assert pareto_mask(F).all()
        assert F[:, 0].max() > -0.01 and F[:, 1].max() > -0.01


def assert_batch_matches_rows(strategy: MergeStrategy, task_vectors: TaskVectors,
                              C: np.ndarray, atol: float = 1e-6) -> None:
    """Check that ``strategy.merge_batch(C)`` equals ``merge_into`` of each row of ``C``
    alone (``strategy`` prepared on ``task_vectors``), in the task vectors' dtype."""
    import torch

    tv = task_vectors
    out = {k: torch.empty((len(C), *tv.base(k).shape), dtype=tv.base(k).dtype)
           for k in tv.keys()}
    strategy.merge_batch(C, out)
    for b in range(len(C)):
        row = {k: tv.base(k).clone() for k in tv.keys()}
        strategy.merge_into(row, C[b])
        for k in row:
            np.testing.assert_allclose(out[k][b].float().numpy(), row[k].float().numpy(),
                                       atol=atol, err_msg=f"tensor {k!r}, row {b}")


class MergeStrategyContract:
    """Checks for :class:`~mapframe.merging.MergeStrategy` implementations."""

    def make_strategy(self) -> MergeStrategy:
        raise NotImplementedError("override make_strategy() to return your merge strategy")

    n_tasks: int = 3

    def _prepared(self, dtype: Any = None) -> tuple[MergeStrategy, TaskVectors]:
        tv = tiny_task_vectors(self.n_tasks, dtype=dtype)
        s = self.make_strategy()
        s.prepare(tv)
        return s, tv

    def test_is_registered(self) -> None:
        _registered(self.make_strategy())

    def test_merges_in_place(self) -> None:
        s, tv = self._prepared()
        params = {k: tv.base(k).clone() for k in tv.keys()}
        ptrs = {k: v.data_ptr() for k, v in params.items()}
        s.merge_into(params, np.full(self.n_tasks, 0.5))
        assert {k: v.data_ptr() for k, v in params.items()} == ptrs
        assert any(not np.allclose(params[k].numpy(), tv.base(k).numpy()) for k in params)

    def test_deterministic(self) -> None:
        s, tv = self._prepared()
        c = np.linspace(0.2, 0.9, self.n_tasks)
        a = {k: tv.base(k).clone() for k in tv.keys()}
        b = {k: tv.base(k).clone() * 0 for k in tv.keys()}
        s.merge_into(a, c)
        s.merge_into(b, c)
        for k in a:
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())

    @pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
    def test_batch_matches_rows(self, dtype: str) -> None:
        import torch

        s, tv = self._prepared(dtype=getattr(torch, dtype))
        assert_batch_matches_rows(s, tv, np.random.default_rng(0).uniform(0, 1, (4, self.n_tasks)))

    def test_dtype_preserved(self) -> None:
        import torch

        s, tv = self._prepared(dtype=torch.bfloat16)
        params = {k: tv.base(k).clone() for k in tv.keys()}
        s.merge_into(params, np.full(self.n_tasks, 0.3))
        assert all(v.dtype == torch.bfloat16 for v in params.values())

    def test_wrong_number_of_coefficients(self) -> None:
        from mapframe.merging.merger import Merger

        merger = Merger(self.make_strategy(), tiny_task_vectors(self.n_tasks))
        params = {k: merger.task_vectors.base(k).clone() for k in merger.task_vectors.keys()}
        with pytest.raises(ConfigError):
            merger.merge_into(params, np.ones(self.n_tasks + 1))


class EvaluatorContract:
    r"""Checks for :class:`~mapframe.evaluators.Evaluator` implementations.

    Override :meth:`make_evaluator`, and :meth:`make_merge_spec` when the evaluator merges
    checkpoints (``needs_merger = True``). The checks run through
    :meth:`~mapframe.evaluators.Evaluator.evaluate_tasks`, the one method an evaluator
    implements: every subset of tasks, in any order, must equal those columns of a full
    evaluation; bad task indices and coefficient counts are one-line ``ConfigError``\ s.
    """

    def make_evaluator(self) -> Evaluator:
        raise NotImplementedError("override make_evaluator() to return your evaluator")

    def make_merge_spec(self) -> MergeSpec | None:
        return None

    @pytest.fixture
    def ready(self):
        ev = self.make_evaluator()
        spec = self.make_merge_spec()
        ev.setup(spec.build() if spec is not None else None)
        yield ev
        ev.close()

    def _C(self, ev: Evaluator, n: int) -> np.ndarray:
        spec = self.make_merge_spec()
        n_dims = (spec.build().n_tasks if spec is not None else len(ev.tasks))
        return np.random.default_rng(0).uniform(0, 1, (n, n_dims))

    def test_is_registered(self) -> None:
        _registered(self.make_evaluator())

    def test_tasks(self) -> None:
        tasks = self.make_evaluator().tasks
        assert tasks and all(isinstance(t, Task) for t in tasks)
        assert len({t.name for t in tasks}) == len(tasks)

    def test_batch_shape_and_range(self, ready: Evaluator) -> None:
        C = self._C(ready, 3)
        M = np.asarray(ready.evaluate(C), dtype=float)
        assert M.shape == (3, len(ready.tasks))
        for j, t in enumerate(ready.tasks):
            assert np.all((M[:, j] >= t.lower) & (M[:, j] <= t.upper))

    def test_batch_equals_rows(self, ready: Evaluator) -> None:
        C = self._C(ready, 3)
        M = np.asarray(ready.evaluate(C), dtype=float)
        rows = np.vstack([np.asarray(ready.evaluate(C[i : i + 1]), dtype=float)
                          for i in range(3)])
        np.testing.assert_allclose(M, rows, rtol=1e-5, atol=1e-6)

    def test_task_subset_equals_columns(self, ready: Evaluator) -> None:
        # evaluate_tasks is the one method: any subset, in any order, gives the same numbers
        # as those columns of a full evaluation.
        C = self._C(ready, 2)
        full = np.asarray(ready.evaluate(C), dtype=float)
        n = len(ready.tasks)
        for cols in ([n - 1], list(range(n))[::-1], [0]):
            part = np.asarray(ready.evaluate_tasks(C, cols), dtype=float)
            assert part.shape == (2, len(cols))
            np.testing.assert_allclose(part, full[:, cols], rtol=1e-5, atol=1e-6)

    def test_bad_task_index_is_a_config_error(self, ready: Evaluator) -> None:
        with pytest.raises(ConfigError, match="out of range"):
            ready.evaluate_tasks(self._C(ready, 1), [len(ready.tasks)])

    def test_wrong_coefficient_count_is_a_config_error(self, ready: Evaluator) -> None:
        if not ready.needs_merger:
            pytest.skip("a black-box objective defines its own coefficient count")
        C = self._C(ready, 1)
        with pytest.raises(ConfigError):
            ready.evaluate(np.hstack([C, C]))

    def test_picklable(self) -> None:
        # Distributed executors send evaluators to workers.
        ev = self.make_evaluator()
        clone = pickle.loads(pickle.dumps(ev))
        assert [t.name for t in clone.tasks] == [t.name for t in ev.tasks]


class StoreContract:
    """Checks for :class:`~mapframe.storage.EvaluationStore` implementations."""

    def make_store(self, tmp_path: Any) -> EvaluationStore:
        raise NotImplementedError("override make_store(tmp_path) to return your store")

    reopens_across_instances: bool = True

    def test_is_registered(self, tmp_path: Any) -> None:
        _registered(self.make_store(tmp_path))

    def test_round_trip_exact(self, tmp_path: Any) -> None:
        store = self.make_store(tmp_path)
        store.open("s", {"tasks": ["a", "b"]})
        c = np.array([0.1, 1 / 3])
        store.add(Evaluation(c, np.array([0.5, float("nan")]), "invalid", "NaN metric"))
        store.add(Evaluation(np.array([0.2, 0.7]), np.array([0.25, 0.75])))
        rows = store.load()
        assert len(rows) == 2
        np.testing.assert_array_equal(rows[0].coefficients, c)
        assert rows[0].metrics is not None and rows[0].status == "invalid"
        assert np.isnan(rows[0].metrics[1])
        assert rows[1].ok and rows[1].key == Evaluation(np.array([0.2, 0.7]), None).key
        store.close()

    def test_replace_same_key(self, tmp_path: Any) -> None:
        store = self.make_store(tmp_path)
        store.open("s", {})
        c = np.array([0.3, 0.4])
        store.add(Evaluation(c, None, "failed", "boom"))
        store.add(Evaluation(c, np.array([1.0, 2.0])))
        rows = store.load()
        assert len(rows) == 1 and rows[0].ok

    def test_fingerprint_mismatch(self, tmp_path: Any) -> None:
        store = self.make_store(tmp_path)
        store.open("s", {"tasks": ["a"]})
        store.add(Evaluation(np.array([0.5]), np.array([1.0])))
        if self.reopens_across_instances:
            store.close()
            store = self.make_store(tmp_path)
        with pytest.raises(StoreError, match="tasks"):
            store.open("s", {"tasks": ["b"]})
        store.open("s", {"tasks": ["a"]})
        assert len(store.load()) == 1

    def test_meta(self, tmp_path: Any) -> None:
        store = self.make_store(tmp_path)
        store.open("s", {})
        store.set_meta("summary", {"x": [1, 2]})
        assert store.get_meta("summary") == {"x": [1, 2]}
        assert store.get_meta("absent", 3) == 3

    def test_failure_reasons_round_trip(self, tmp_path: Any) -> None:
        # Components read why an evaluation is not ok from its typed reason, never its text.
        from mapframe.history import FailureReason

        store = self.make_store(tmp_path)
        store.open("s", {})
        rows_in = [
            Evaluation(np.array([0.1]), np.array([1.0])),
            Evaluation(np.array([0.2]), None, "failed", "boom", reason=FailureReason.RAISED),
            Evaluation(np.array([0.3]), np.array([float("nan")]), "invalid", "NaN",
                       reason=FailureReason.NON_FINITE),
            Evaluation(np.array([0.4]), np.array([7.0]), "invalid", "too big",
                       reason=FailureReason.OUT_OF_RANGE),
        ]
        for ev in rows_in:
            store.add(ev)
        if self.reopens_across_instances:
            store.close()
            store = self.make_store(tmp_path)
            store.open("s", {})
        rows = store.load()
        assert [r.reason for r in rows] == [r.reason for r in rows_in]
        assert [r.out_of_range for r in rows] == [False, False, False, True]

    def test_location(self, tmp_path: Any) -> None:
        store = self.make_store(tmp_path)
        loc = store.location
        assert loc is None or (isinstance(loc, str) and loc)

    def _reopened(self, store: EvaluationStore, tmp_path: Any) -> EvaluationStore:
        """The same store for the next study: a new instance when the store reopens across
        instances (as each study makes its own), else ``store`` itself."""
        if not self.reopens_across_instances:
            return store
        store.close()
        return self.make_store(tmp_path)

    def test_studies_stay_apart(self, tmp_path: Any) -> None:
        # Two study names in one store: nothing of one (rows, meta) is visible in the other,
        # even for the same coefficients and a different setup.
        c = np.array([0.25, 0.5])
        store = self.make_store(tmp_path)
        store.open("first", {"tasks": ["a", "b"]})
        store.add(Evaluation(c, np.array([1.0, 2.0])))
        store.add(Evaluation(np.array([0.1, 0.9]), np.array([3.0, 4.0])))
        store.set_meta("summary", {"study": "first"})
        store = self._reopened(store, tmp_path)
        store.open("second", {"tasks": ["c", "d"]})
        assert store.load() == [], "a new study sees rows of another study in the store"
        assert store.get_meta("summary") is None, "a new study sees another study's meta"
        assert store.stored("search", [Evaluation(c, None).key]) == {}
        store.add(Evaluation(c, np.array([-1.0, -2.0])))
        store.set_meta("summary", {"study": "second"})
        rows = store.load()
        assert len(rows) == 1 and rows[0].metrics is not None
        np.testing.assert_array_equal(rows[0].metrics, [-1.0, -2.0])
        store = self._reopened(store, tmp_path)
        store.open("first", {"tasks": ["a", "b"]})
        rows = store.load()
        assert len(rows) == 2, "another study's rows replaced or joined this study's"
        first = {r.key: r for r in rows}[Evaluation(c, None).key]
        assert first.metrics is not None
        np.testing.assert_array_equal(first.metrics, [1.0, 2.0])
        assert store.get_meta("summary") == {"study": "first"}
        store.close()

    def test_open_in_another_thread_is_refused(self, tmp_path: Any) -> None:
        # Two concurrent studies on one instance would read and write each other's rows:
        # an instance open in one thread refuses to open (for any study) in another.
        import threading

        store = self.make_store(tmp_path)
        store.open("first", {})
        store.add(Evaluation(np.array([0.5]), np.array([1.0])))
        box: dict[str, BaseException | None] = {}

        def other() -> None:
            try:
                store.open("second", {})
                box["error"] = None
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=other)
        t.start()
        t.join(60)
        assert isinstance(box.get("error"), StoreError), (
            "an instance open for a study in one thread opened for another study in a second "
            "thread: refuse it with a StoreError (see EvaluationStore._opening)")
        assert len(store.load()) == 1, "the refused open changed the open study"
        store.close()

    def test_phase_and_key_are_the_identity(self, tmp_path: Any) -> None:
        # A search row and a verify row of the same coefficients are two rows; adding again
        # in one phase replaces only that phase's row.
        c = np.array([0.25, 0.5])
        key = Evaluation(c, None).key
        store = self.make_store(tmp_path)
        store.open("s", {})
        store.add(Evaluation(c, np.array([1.0, 2.0]), phase="search"))
        store.add(Evaluation(c, np.array([1.1, 2.1]), phase="verify"))
        rows = store.load()
        assert sorted(r.phase for r in rows) == ["search", "verify"], (
            "a verify row of the same point replaced its search row: key rows by "
            "(phase, key)")
        store.add(Evaluation(c, np.array([1.5, 2.5]), phase="search"))
        if self.reopens_across_instances:
            store.close()
            store = self.make_store(tmp_path)
            store.open("s", {})
        by_phase: dict[str, Evaluation] = {r.phase: r for r in store.load()}
        assert len(store.load()) == 2 and set(by_phase) == {"search", "verify"}
        for phase, want in (("search", [1.5, 2.5]), ("verify", [1.1, 2.1])):
            got = by_phase[phase].metrics
            assert got is not None
            np.testing.assert_array_equal(got, want)
            stored = store.stored(phase, [key])
            assert set(stored) == {key} and stored[key].phase == phase
            np.testing.assert_array_equal(stored[key].metrics, want)
        store.close()


class ExecutorContract:
    """Checks for :class:`~mapframe.executors.Executor` implementations."""

    def make_executor(self) -> Executor:
        raise NotImplementedError("override make_executor() to return your executor")

    def _evaluator(self) -> Evaluator:
        from mapframe.evaluators.callable import CallableEvaluator

        return CallableEvaluator(_contract_objective, ["a", "b"])

    def test_is_registered(self) -> None:
        _registered(self.make_executor())

    def test_all_results_come_back(self) -> None:
        ex = self.make_executor()
        ex.start(self._evaluator(), None)
        C = np.random.default_rng(0).uniform(0, 1, (7, 2))
        ex.submit([Job(str(i), C[i]) for i in range(7)])
        results = {r.job.key: r for r in ex.as_completed()}
        ex.shutdown()
        assert set(results) == {str(i) for i in range(7)}
        for i in range(7):
            got = results[str(i)].metrics
            assert got is not None
            np.testing.assert_allclose(got, _contract_objective(C[i : i + 1])[0])

    def test_failures_are_results(self) -> None:
        ex = self.make_executor()
        ex.start(self._evaluator(), None)
        C = np.array([[0.1, 0.2], [-1.0, 0.5], [0.3, 0.3]])  # -1 makes the objective raise
        ex.submit([Job(str(i), C[i]) for i in range(3)])
        results = {r.job.key: r for r in ex.as_completed()}
        ex.shutdown()
        assert results["1"].error and "negative" in results["1"].error
        assert results["0"].error is None and results["2"].error is None

    def test_merging_evaluator(self, tmp_path: Any) -> None:
        # An evaluator that merges checkpoints: wherever it runs, the executor must set it
        # up with the merge spec (evaluator.setup(merge_spec.build()), as WorkerRuntime
        # does); the metrics then equal those of the same evaluator set up in this process.
        spec = tiny_checkpoints(tmp_path, n_tasks=2)
        C = np.random.default_rng(1).uniform(0, 1, (5, 2))
        local = _TinyMergeEvaluator()
        local.setup(tiny_checkpoints(tmp_path / "local", n_tasks=2).build())
        expected = np.asarray(local.evaluate(C), dtype=float)
        ex = self.make_executor()
        ex.start(_TinyMergeEvaluator(), spec)
        ex.submit([Job(str(i), C[i]) for i in range(len(C))])
        results = {r.job.key: r for r in ex.as_completed()}
        ex.shutdown()
        assert set(results) == {str(i) for i in range(len(C))}
        errors = {k: r.error for k, r in results.items() if r.error}
        assert not errors, (
            f"a merging evaluator failed under this executor ({next(iter(errors.values()))}): "
            "set the evaluator up with evaluator.setup(merge_spec.build()) wherever it runs")
        for i in range(len(C)):
            got = results[str(i)].metrics
            assert got is not None
            np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-6)


def _contract_objective(C: np.ndarray) -> np.ndarray:
    if np.any(C < 0):
        raise ValueError("negative coefficient")
    return np.column_stack([C.sum(axis=1), (C**2).sum(axis=1)])


class _TinyMergeEvaluator(Evaluator):
    """Merges the :func:`tiny_checkpoints` and scores two sums of the merged tensors (a
    module-level class, so executors can send it to other processes)."""

    name = "contract_tiny_merge"
    needs_merger = True

    @property
    def tasks(self) -> list[Task]:
        return [Task("weight_sum"), Task("head_energy")]

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Any) -> np.ndarray:
        cols = self.check_task_indices(tasks)
        C = self.check_coefficients(coefficients)
        tv = self.merger.task_vectors
        rows = []
        for c in C:
            params = {k: tv.base(k).clone() for k in tv.keys()}
            self.merger.merge_into(params, c)
            rows.append([float(params["layer.weight"].sum()),
                         float((params["head.weight"] ** 2).sum())])
        return np.asarray(rows, dtype=float)[:, cols]


class PairingContract:
    """Checks for :class:`~mapframe.pairing.PairingStrategy` implementations.

    The models are tiny random task vectors (and, when the pairing sets ``needs_profiles``,
    random metric profiles on :attr:`n_tasks` tasks), as Nested MAP hands them over.
    """

    #: Length of the metric profiles given to pairings that need them.
    n_tasks: int = 3

    def make_pairing(self) -> PairingStrategy:
        raise NotImplementedError("override make_pairing() to return your pairing strategy")

    def _models(self, n: int, seed: int = 0) -> list[TournamentModel]:
        import torch

        needs = self.make_pairing().needs_profiles
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        models = []
        for i in range(n):
            vector = {"layer.weight": torch.randn(4, 5, generator=g),
                      "layer.bias": torch.randn(4, generator=g)}
            profile = rng.uniform(0.0, 1.0, self.n_tasks) if needs else None
            models.append(TournamentModel(f"m{i}", [i], vector, profile=profile))
        return models

    def test_is_registered(self) -> None:
        _registered(self.make_pairing())

    @pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
    def test_every_model_exactly_once(self, n: int) -> None:
        # Odd and even counts: each model is in one pair or has a bye, and someone merges.
        pairs, byes = self.make_pairing().pair(self._models(n))
        flat = [i for p in pairs for i in p] + list(byes)
        assert sorted(flat) == list(range(n)), (pairs, byes)
        assert all(len(p) == 2 and p[0] != p[1] for p in pairs)
        assert all(isinstance(i, (int, np.integer)) for i in flat)
        assert len(pairs) >= 1

    @pytest.mark.parametrize("n", [2, 5])
    def test_similarity_is_symmetric_and_finite(self, n: int) -> None:
        S = np.asarray(self.make_pairing().similarity(self._models(n)), dtype=float)
        assert S.shape == (n, n)
        assert np.all(np.isfinite(S))
        np.testing.assert_allclose(S, S.T, rtol=1e-10, atol=1e-12)

    def test_deterministic(self) -> None:
        a, b = self.make_pairing(), self.make_pairing()
        assert a.pair(self._models(5, seed=3)) == b.pair(self._models(5, seed=3))
        np.testing.assert_array_equal(np.asarray(a.similarity(self._models(5, seed=3))),
                                      np.asarray(b.similarity(self._models(5, seed=3))))
        models = self._models(4, seed=1)
        assert a.pair(models) == a.pair(models), "pairing the same models twice differs"

    def test_profiles_given_when_needed(self) -> None:
        p = self.make_pairing()
        assert isinstance(p.needs_profiles, bool)
        models = self._models(4)
        if p.needs_profiles:
            assert all(m.profile is not None and m.profile.shape == (self.n_tasks,)
                       for m in models)
        else:
            # a pairing that does not ask for profiles must not depend on them
            assert all(m.profile is None for m in models)
        pairs, byes = p.pair(models)
        assert sorted([i for q in pairs for i in q] + list(byes)) == [0, 1, 2, 3]


class StoppingRuleContract:
    """Checks for :class:`~mapframe.stopping.StoppingRule` implementations.

    The rounds are what :class:`~mapframe.study.MergeStudy` hands a rule: a growing history of
    a smooth two-task objective on a 2-D box, with quadratic surrogates fitted on it.
    Override :meth:`make_rounds` to feed the rule something else.
    """

    #: Rounds in the default sequence.
    n_rounds: int = 5

    def make_stopping(self) -> StoppingRule:
        raise NotImplementedError("override make_stopping() to return your stopping rule")

    def make_rounds(self, drift: float = 0.0) -> list[RoundState]:
        """Round states of one run; ``drift`` moves the second task's metric every round.

        Without drift the objective is exactly quadratic, so the surrogates (and the front
        they predict) settle: a rule that ever stops should stop on these rounds.
        """
        from mapframe.surrogates.quadratic import QuadraticSurrogate

        space = SearchSpace.box(2, (0.0, 1.0))
        tasks = (Task("a", "max", 0.0, 1.0), Task("b", "max", 0.0, 1.0))
        X = np.random.default_rng(0).random((10 + 3 * self.n_rounds, 2))
        rounds = []
        for r in range(self.n_rounds):
            n = 10 + 3 * r
            Y = _quadratic_tradeoff(X[:n]) * np.array([1.0, 1.0 - drift * r])
            history = History(2, 2, [Evaluation(x, y) for x, y in zip(X[:n], Y)])
            surrogates = [QuadraticSurrogate().fit(X[:n], Y[:, j], t)
                          for j, t in enumerate(tasks)]
            rounds.append(RoundState(
                round=r, n_evaluated=n, budget=100, history=history, surrogates=surrogates,
                diagnostics={t.name: dict(s.diagnostics()) for t, s in zip(tasks, surrogates)},
                tasks=tasks, space=space, n_params=surrogates[0].n_params(2)))
        return rounds

    @staticmethod
    def _run(rule: StoppingRule, rounds: list[RoundState]) -> tuple[list[str | None], str]:
        answers = [rule.update(state) for state in rounds]
        return answers, json.dumps(rule.trace(), sort_keys=True)

    def _fresh(self) -> StoppingRule:
        rule = self.make_stopping()
        rule.reset()
        return rule

    def test_is_registered(self) -> None:
        _registered(self.make_stopping())

    def test_answers_are_none_or_a_reason(self) -> None:
        for drift in (0.0, 0.2):
            answers, _ = self._run(self._fresh(), self.make_rounds(drift))
            for a in answers:
                assert a is None or (isinstance(a, str) and a.strip()), repr(a)

    def test_trace_is_json(self) -> None:
        rule = self._fresh()
        assert isinstance(rule.trace(), list)
        self._run(rule, self.make_rounds())
        trace = rule.trace()
        assert isinstance(trace, list) and all(isinstance(r, dict) for r in trace)
        assert json.loads(json.dumps(trace, allow_nan=False)) == trace

    def test_deterministic(self) -> None:
        rounds = self.make_rounds()
        assert self._run(self._fresh(), rounds) == self._run(self._fresh(), rounds)

    def test_reset_forgets_earlier_rounds(self) -> None:
        rounds = self.make_rounds()
        expected = self._run(self._fresh(), rounds)
        rule = self._fresh()
        self._run(rule, self.make_rounds(drift=0.2))  # a different run first
        rule.reset()
        assert self._run(rule, rounds) == expected
        rule.reset()
        assert self._run(rule, rounds) == expected


def _quadratic_tradeoff(C: np.ndarray) -> np.ndarray:
    """Two concave quadratics in ``[0.2, 0.9]`` with optima at opposite corners of the box."""
    C = np.atleast_2d(C)
    a = 0.9 - 0.6 * (C[:, 0] - 0.8) ** 2 - 0.3 * C[:, 1] ** 2
    b = 0.9 - 0.6 * (C[:, 1] - 0.8) ** 2 - 0.3 * C[:, 0] ** 2
    return np.column_stack([a, b])
