"""Nested MAP (the paper's Algorithm 2): merge many models in pairs, tournament style.

With N fine-tuned models, Plain MAP searches an N-dimensional coefficient box and needs
``(N+1)(N+2)/2`` evaluations just to fit its quadratics. Nested MAP instead merges two models
at a time: each round pairs the current models, runs a two-coefficient MAP on every pair whose
two objectives are the preference-weighted metrics of the tasks on each side, picks the front
point with the best preference-weighted score, and turns that merged model into a new
"fine-tuned" model (its task vector recomputed against the pretrained weights) for the next
round. After ``⌈log2 N⌉`` rounds one model remains: the merged model for the user's preference.

It costs about ``k · N · log2 N`` task evaluations (``k`` evaluations per pair, each scoring
the tasks of that pair, and only those are computed when the evaluator implements
:meth:`~mapframe.evaluators.Evaluator.evaluate_tasks`) instead of growing with the square of N,
and it returns one model for one preference rather than a whole front.

:class:`NestedMergeStudy` reuses the study machinery: every pair is a :class:`MergeStudy`
(same sampler, surrogate, front solver, merge strategy, executor) writing to the same store
under its own name, so an interrupted tournament resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.assembly import assemble
from mapframe.component import Component
from mapframe.errors import BudgetError, ConfigError, EvaluationError, SetupMismatchError
from mapframe.evaluators.base import Evaluator
from mapframe.history import History
from mapframe.pairing import (
    CosinePairing,
    InOrderPairing,
    MetricProfilePairing,
    NestedNode,
    PairingStrategy,
)
from mapframe.plugin import get_registry
from mapframe.problem import Task
from mapframe.progress import check_progress
from mapframe.spec import StudySpec

if TYPE_CHECKING:
    import torch

    from mapframe.executors.base import Executor
    from mapframe.merging.base import MergeStrategy
    from mapframe.merging.checkpoints import TaskVectors
    from mapframe.merging.merger import Merger
    from mapframe.results import StudyResult
    from mapframe.storage.base import EvaluationStore

__all__ = [
    "CosinePairing",
    "InOrderPairing",
    "MetricProfilePairing",
    "NestedMergeStudy",
    "NestedNode",
    "NestedResult",
    "PairEvaluator",
    "PairRecord",
    "PairingStrategy",
    "search_task_evaluations",
]



# ------------------------------------------------------------------------------ evaluator
class PairEvaluator(Evaluator):
    """The two objectives of one pair: preference-weighted metrics of each side's tasks.

    Wraps the study's evaluator: ``evaluate`` scores the merged model on the pair's tasks
    only (through :meth:`Evaluator.evaluate_tasks`) and returns, per side, ``Σ w_i s_i
    m_i`` over the side's tasks with ``w`` the preference normalised within the side (equal
    weights if the side's preference is all zero) and ``s_i`` = +1 for tasks to maximise,
    −1 for tasks to minimise. Both objectives are maximised; their ranges follow from the
    tasks' ranges.
    """

    name: ClassVar[str] = "nested_pair"
    needs_merger: ClassVar[bool] = True

    def __init__(self, inner: Evaluator, sides: tuple[Sequence[int], Sequence[int]],
                 preference: Sequence[float], labels: tuple[str, str]) -> None:
        self.inner = inner
        tasks = list(inner.tasks)
        p = np.asarray(preference, dtype=float)
        self.sides = [list(map(int, s)) for s in sides]
        self.labels = list(labels)
        self._weights: list[np.ndarray] = []
        self._signs = np.array([t.sign for t in tasks], dtype=float)
        out: list[Task] = []
        for idx, label in zip(self.sides, self.labels):
            w = p[idx]
            w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
            self._weights.append(w)
            lo = hi = 0.0
            for wi, i in zip(w, idx):
                t = tasks[i]
                a, b = (t.lower, t.upper) if t.sign > 0 else (-t.upper, -t.lower)
                lo, hi = lo + wi * a, hi + wi * b
            lo = lo if math.isfinite(lo) else -math.inf
            hi = hi if math.isfinite(hi) else math.inf
            if not lo < hi:
                lo, hi = -math.inf, math.inf
            out.append(Task(label, "max", lo, hi))
        self._tasks = out
        self.max_batch_size = inner.max_batch_size

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def setup(self, merger: Merger | None) -> None:
        super().setup(merger)
        self.inner.setup(merger)

    @property
    def columns(self) -> list[int]:
        """The task indices this pair needs (both sides)."""
        return self.sides[0] + self.sides[1]

    def aggregate(self, M: np.ndarray) -> np.ndarray:
        """Metrics of :attr:`columns` ``(B, |columns|)`` to the pair's two objectives ``(B, 2)``."""
        G = np.atleast_2d(M) * self._signs[self.columns]
        k = len(self.sides[0])
        return np.column_stack([G[:, :k] @ self._weights[0], G[:, k:] @ self._weights[1]])

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        M = np.asarray(self.inner.evaluate_tasks(coefficients, self.columns), dtype=float)
        return self.aggregate(M)[:, self.check_task_indices(tasks)]

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "inner": self.inner.describe(), "sides": self.sides,
                "weights": [w.tolist() for w in self._weights]}


# ------------------------------------------------------------------------------ results
@dataclass
class PairRecord:
    """One merge of the tournament: which two models, the pair's MAP study and the choice."""

    round: int
    left: str
    right: str
    merged: str
    tasks_left: list[str]
    tasks_right: list[str]
    weights: tuple[float, float]
    index: int
    coefficients: tuple[float, float]
    predicted: tuple[float, float]
    real: tuple[float, float] | None
    result: StudyResult = field(repr=False)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks_left) + len(self.tasks_right)

    def score(self, which: str = "real") -> float | None:
        """The preference-weighted score ``P_left·f_left + P_right·f_right`` of the choice."""
        v = self.real if which == "real" else self.predicted
        if v is None:
            return None
        return float(self.weights[0] * v[0] + self.weights[1] * v[1])

    def to_dict(self) -> dict[str, Any]:
        res = self.result
        return {
            "round": self.round, "left": self.left, "right": self.right,
            "merged": self.merged, "tasks_left": self.tasks_left,
            "tasks_right": self.tasks_right, "weights": list(self.weights),
            "selected_index": self.index, "coefficients": list(self.coefficients),
            "predicted": list(self.predicted),
            "real": None if self.real is None else list(self.real),
            "predicted_score": self.score("predicted"), "real_score": self.score("real"),
            "search_evaluations": len(res.history),
            "verify_evaluations": len(res.history.select("verify", ok=False)),
            "front_size": len(res.front), "surrogates": res.diagnostics,
        }


@dataclass
class NestedResult:
    """What :meth:`NestedMergeStudy.run` returns: the merge tree, every pair's front and the
    final merged model with its metrics on all tasks."""

    study_name: str
    tasks: list[Task]
    preference: list[float]
    rounds: list[list[PairRecord]]
    byes: list[list[str]]
    nodes: dict[str, NestedNode]
    root: str
    final_metrics: np.ndarray
    effective_coefficients: dict[str, float] | None
    evaluations: dict[str, int]
    timings: dict[str, float]
    settings: dict[str, Any]
    pairing: str
    #: The seed every pair used: with ``seed=None``, the one drawn for the tournament (or,
    #: resumed, the one its store kept).
    seed: int | None = None
    _pretrained: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def pairs(self) -> list[PairRecord]:
        return [p for r in self.rounds for p in r]

    @property
    def final_score(self) -> float:
        """``Σ p_i s_i m_i`` of the final model (preference normalised to sum 1)."""
        signs = np.array([t.sign for t in self.tasks])
        return float(np.dot(self.preference, signs * self.final_metrics))

    def __repr__(self) -> str:
        from mapframe.results import describe_tasks

        metrics = ", ".join(f"{m:.4g}" for m in np.asarray(self.final_metrics)[:6])
        more = ", …" if len(self.final_metrics) > 6 else ""
        return (f"<NestedResult {self.study_name!r}: tasks "
                f"{describe_tasks(self.task_names, [t.direction for t in self.tasks])}; "
                f"{len(self.rounds)} rounds, {len(self.pairs)} merges; final score "
                f"{self.final_score:.4g} (metrics {metrics}{more})>")

    def tree(self, name: str | None = None) -> dict[str, Any]:
        """The merge tree as nested dicts (leaves have no ``children``)."""
        node = self.nodes[name or self.root]
        out: dict[str, Any] = {"name": node.name, "round": node.round,
                               "tasks": [self.tasks[i].name for i in node.tasks]}
        if node.children:
            out["coefficients"] = list(node.coefficients or ())
            out["children"] = [self.tree(c) for c in node.children]
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "study": self.study_name, "mode": "nested",
            "tasks": [t.to_dict() for t in self.tasks], "preference": self.preference,
            "pairing": self.pairing,
            "final_metrics": dict(zip(self.task_names, self.final_metrics.tolist())),
            "final_score": self.final_score,
            "effective_coefficients": self.effective_coefficients,
            "evaluations": self.evaluations, "rounds": [[p.to_dict() for p in r]
                                                        for r in self.rounds],
            "byes": self.byes, "tree": self.tree(), "timings_s": self.timings,
            "settings": self.settings,
        }

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The final merged model's full state dict."""
        out = {k: v.clone() for k, v in self._pretrained.items()}
        for k, tau in self.nodes[self.root].vector.items():
            b = out[k]
            out[k] = (b.float() + tau.float()).to(b.dtype)
        return out

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Save the final merged model as safetensors (the tree and scores in the metadata)."""
        import json

        from mapframe.merging.checkpoints import save_state_dict

        meta = {"mapframe.study": self.study_name, "mapframe.mode": "nested",
                "mapframe.tree": json.dumps(self.tree()),
                "mapframe.final_metrics": json.dumps(dict(zip(self.task_names,
                                                              self.final_metrics.tolist())))}
        if self.effective_coefficients is not None:
            meta["mapframe.coefficients"] = json.dumps(self.effective_coefficients)
        return save_state_dict(self.merged_state_dict(), Path(path).expanduser(), meta)

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> dict[str, Path]:
        """Write ``nested.json`` (summary and tree), ``tree.png``, ``fronts.png`` and one
        folder per pair (``pairs/round<k>-<merged>/``: that pair's MAP results).

        A folder that holds an earlier save (another preference's tournament) keeps nothing
        of it that this tree lacks: the pair folders an earlier save wrote for other merges
        are removed (only the files a pair's save writes; a folder keeping other files stays
        with those), and so are ``tree.png`` and ``fronts.png`` unless written again.

        A folder that is not a mapframe results folder holding a file of one of those names
        (the user's own) is refused with a one-line error before anything is written, as by
        :meth:`StudyResult.save <mapframe.results.StudyResult.save>`."""
        from mapframe._foreign_files import mark_results_folder, refuse_foreign_files
        from mapframe.results import write_json

        d = Path(directory).expanduser()
        refuse_foreign_files(d, NESTED_FILES, "give save() another folder")
        d.mkdir(parents=True, exist_ok=True)
        mark_results_folder(d)
        for stale in ("nested.json", "tree.png", "fronts.png"):
            with contextlib.suppress(FileNotFoundError):
                (d / stale).unlink()
        paths: dict[str, Path] = {}
        folders = _pair_folders(self.pairs)
        for p, folder in zip(self.pairs, folders):
            p.result.save(d / "pairs" / folder, plot=plot)
        _remove_stale_pair_folders(d / "pairs", set(folders))
        paths["pairs"] = d / "pairs"
        if plot:
            from mapframe.plotting import plot_merge_tree, plot_nested_fronts

            for key, fn, fname in (("tree_png", plot_merge_tree, "tree.png"),
                                   ("fronts_png", plot_nested_fronts, "fronts.png")):
                out = fn(self, d / fname)
                if out is not None:
                    paths[key] = out
        # last: a folder holding nested.json holds the whole of one save
        paths["nested_json"] = write_json(d / "nested.json", self.summary())
        return paths


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:80]


#: The files :meth:`StudyResult.save` writes into a pair's folder.
_PAIR_FILES = ("front.csv", "front.json", "evaluations.csv", "surrogates.json",
               "summary.json", "front.png", "report.html", ".mapframe")

#: Every name :meth:`NestedResult.save` writes or removes in its folder (the marker first).
NESTED_FILES = (".mapframe", "nested.json", "tree.png", "fronts.png")


def _pair_folders(pairs: Sequence[PairRecord]) -> list[str]:
    """Each pair's folder name, ``round<k>-<slug of the merge label>``; labels whose slugs
    coincide (``(a+b_c)`` and ``(a_b+c)``, or long labels cut at 80 characters) get the
    first 8 hex digits of their label's SHA-256 appended, so no pair overwrites another.
    Slugs are compared ignoring case: on a case-insensitive file system (macOS's and
    Windows' defaults) ``round1-_A_B_`` and ``round1-_a_b_`` are one folder."""
    names = [f"round{p.round}-{_slug(p.merged)}" for p in pairs]
    folded = [n.casefold() for n in names]
    return [n if folded.count(n.casefold()) == 1
            else f"{n}-{hashlib.sha256(p.merged.encode()).hexdigest()[:8]}"
            for n, p in zip(names, pairs)]


def _remove_stale_pair_folders(pairs_dir: Path, keep: set[str]) -> None:
    """Remove the pair folders an earlier :meth:`NestedResult.save` wrote under
    ``pairs_dir`` that are not in ``keep``: folders named ``round<k>-...`` whose
    ``summary.json`` is a pair study's (its study name ``<study>/(<left>+<right>)``). Only
    the files a pair's save writes go; a folder holding others keeps them."""
    if not pairs_dir.is_dir():
        return
    for sub in pairs_dir.iterdir():
        if sub.name in keep or not sub.is_dir() or not re.match(r"round\d+-", sub.name):
            continue
        try:
            study = json.loads((sub / "summary.json").read_text()).get("study")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(study, str) or "/(" not in study:
            continue
        for name in _PAIR_FILES:
            with contextlib.suppress(FileNotFoundError):
                (sub / name).unlink()
        with contextlib.suppress(OSError):
            sub.rmdir()


def search_task_evaluations(result: NestedResult) -> int:
    """``Σ_pairs k · |tasks of the pair|``: the paper's count of the tournament's search cost
    (``k · N · log2 N`` when N is a power of two)."""
    return sum(len(p.result.history) * p.n_tasks for p in result.pairs)


# ------------------------------------------------------------------------------ study
@dataclass
class TournamentRun:
    """The state of one :meth:`NestedMergeStudy.run`: the pretrained weights and the
    evaluation counts (the study object keeps none)."""

    base: dict[str, torch.Tensor] = field(repr=False)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("search_models", "search_tasks", "verify_models", "extra_models", "new_this_run",
         "reused"), 0))


class NestedMergeStudy:
    """Nested MAP: one merged model for ``preference`` over many tasks, merging in pairs.

    ``evaluator`` defines the tasks; ``checkpoints`` (or ``task_vectors``) give one fine-tuned
    model per task, matched by name (or by position when the names differ). Each pair runs a
    :class:`~mapframe.study.MergeStudy` with ``pair_budget`` evaluations and ``verify`` real
    checks (the preference-selected point is always among them), with the given sampler,
    surrogate, front solver, merge strategy and executor, stored in ``storage`` under
    ``<study_name>/<left>+<right>``: re-running resumes the tournament where it stopped.

    The keyword arguments are the facade of a :class:`~mapframe.spec.StudySpec` with its
    ``nested`` section set; :meth:`from_spec` builds the study from such a spec.
    """

    def __init__(
        self,
        evaluator: Evaluator | str | Mapping[str, Any],
        *,
        preference: Sequence[float],
        checkpoints: Mapping[str, Any] | None = None,
        task_vectors: TaskVectors | None = None,
        allow_pickle: bool = False,
        merge_strategy: MergeStrategy | str | Mapping[str, Any] = "task_arithmetic",
        pair_budget: int = 20,
        pairing: PairingStrategy | str | Mapping[str, Any] = "cosine",
        sampler: Any = "auto",
        surrogate: Any = "auto",
        front_solver: Any = "auto",
        storage: EvaluationStore | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        study_name: str = "nested",
        executor: Executor | str | Mapping[str, Any] = "inprocess",
        verify: int = 1,
        seed: int | None = 0,
        search_bounds: Sequence[float] | Sequence[Sequence[float]] = (0.0, 1.0),
        on_error: str = "raise",
        progress: Callable[[Any], None] | bool | None = None,
    ) -> None:
        if checkpoints is not None and not isinstance(checkpoints, Mapping):
            raise ConfigError("checkpoints must be a mapping with keys 'pretrained' (a path) "
                              "and 'finetuned' ({task: path})")
        spec = StudySpec.build(
            where=lambda f: "" if f == "nested" else f,
            evaluator=evaluator, preference=preference,
            checkpoints=None if checkpoints is None else {**checkpoints,
                                                          "allow_pickle": allow_pickle},
            task_vectors=task_vectors, merge_strategy=merge_strategy,
            nested={"pair_budget": pair_budget, "pairing": pairing}, sampler=sampler,
            surrogate=surrogate, front_solver=front_solver, storage=storage,
            study_name=study_name, executor=executor, verify=verify, seed=seed,
            search_bounds=search_bounds, on_error=on_error)
        self._use(spec, progress)

    @classmethod
    def from_spec(cls, spec: StudySpec,
                  progress: Callable[[Any], None] | bool | None = None) -> NestedMergeStudy:
        """The Nested MAP study a spec with a ``nested`` section describes."""
        if spec.nested is None:
            raise ConfigError("the spec has no nested section: build a MergeStudy instead")
        study = cls.__new__(cls)
        study._use(spec, progress)
        return study

    def _use(self, spec: StudySpec, progress: Callable[[Any], None] | bool | None) -> None:
        assert spec.nested is not None
        if (spec.checkpoints is None) == (spec.task_vectors is None):
            raise ConfigError("give checkpoints= (pretrained + one fine-tuned model per task) "
                              "or task_vectors=")
        _refuse_per_coefficient_bounds(
            spec.search_bounds, len(spec.checkpoints.finetuned) if spec.checkpoints is not None
            else spec.task_vectors.n_tasks)
        parts = assemble(spec)
        self.spec = spec
        self.evaluator: Evaluator = parts.evaluator
        self.tasks: list[Task] = parts.tasks
        if len(self.tasks) < 2:
            raise ConfigError("nested merging needs at least two tasks")
        assert parts.preference is not None and parts.merge_spec is not None
        self.preference = parts.preference
        self._spec = parts.merge_spec
        self.strategy: MergeStrategy = parts.merge_spec.strategy
        names = (list(self._spec.finetuned) if self._spec.finetuned
                 else list(spec.task_vectors.task_names))
        _check_model_names(names)
        self.model_names = names
        self.model_tasks = _match_models(names, [t.name for t in self.tasks])
        self.pairing: PairingStrategy = get_registry().create(  # type: ignore[assignment]
            "pairing", spec.nested.pairing)
        need = parts.surrogate.n_params(2)
        if spec.nested.pair_budget < need:
            raise BudgetError(
                f"pair_budget {spec.nested.pair_budget} cannot fit the {need}-parameter "
                f"surrogate of a two-model merge: set pair_budget >= {need} (the paper uses "
                "20)")
        self.pair_budget = spec.nested.pair_budget
        self.verify = spec.verify
        self.seed = parts.seed
        self.sampler, self.surrogate, self.front_solver = (spec.sampler, spec.surrogate,
                                                           spec.front_solver)
        self.executor_spec = spec.executor
        self.search_bounds = spec.search_bounds
        self.on_error = spec.on_error
        self.study_name = spec.study_name
        self.progress = check_progress(progress)  # True: the default ProgressDisplay()
        self.storage: EvaluationStore = parts.storage

    # --------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        def desc(spec: Any) -> Any:
            return spec.describe() if isinstance(spec, Component) else spec

        return {"pair_budget": self.pair_budget, "verify": self.verify, "seed": self.seed,
                "pairing": self.pairing.describe(), "merge_strategy": self.strategy.describe(),
                "sampler": desc(self.sampler), "surrogate": desc(self.surrogate),
                "front_solver": desc(self.front_solver), "executor": desc(self.executor_spec),
                "storage": self.storage.describe(),
                # as a study's summary.json: the evaluator's most merges per call beside it
                "evaluator": {**self.evaluator.describe(),
                              "max_batch_size": self.evaluator.max_batch_size},
                "models": dict(zip(self.model_names,
                                   [self.tasks[i].name for i in self.model_tasks]))}

    def run(self) -> NestedResult:
        """Run the tournament (resuming from the store) and return a :class:`NestedResult`.

        The pairs' studies run one after the other on one executor setting, whose slow
        start (a local Ray instance or Dask cluster, worker processes) is paid once:
        :meth:`Executor.keep_alive <mapframe.executors.base.Executor.keep_alive>`."""
        executor: Executor = get_registry().create(  # type: ignore[assignment]
            "executor", self._component(self.executor_spec))
        with executor.keep_alive():
            return self._run()

    def _run(self) -> NestedResult:
        t0 = time.perf_counter()
        tv = self._task_vectors()
        base = tv.pretrained_state()
        self._check_strategy(tv)
        run = TournamentRun(base)
        nodes: list[NestedNode] = []
        n_models = tv.n_tasks
        for i, name in enumerate(self.model_names):
            eff = np.zeros(n_models)
            eff[i] = 1.0
            nodes.append(NestedNode(name, [self.model_tasks[i]], tv.vector(i), effective=eff))
        all_nodes = {n.name: n for n in nodes}
        rounds: list[list[PairRecord]] = []
        byes_log: list[list[str]] = []
        r = 0
        while len(nodes) > 1:
            r += 1
            pairs: list[tuple[int, int]]
            byes: list[int]
            if len(nodes) == 2:  # the last merge: nothing to choose
                pairs, byes = [(0, 1)], []
            else:
                if self.pairing.needs_profiles:
                    for node in nodes:
                        if node.profile is None:
                            node.profile = self._evaluate_model(run, node, "profile")
                pairs, byes = self.pairing.pair(nodes)
            _check_pairs(pairs, byes, len(nodes), self.pairing.name)
            records: list[PairRecord] = []
            merged: list[NestedNode] = []
            for i, j in pairs:
                first = r == 1 and not records
                # seed=None: the first pair draws the tournament's seed (or, resumed, reads
                # the one its stored study kept) and every later pair uses it
                rec, node = self._merge_pair(
                    run, r, nodes[i], nodes[j],
                    None if first and self.spec.seed is None else self.seed)
                if first:
                    self.seed = rec.result.seed
                records.append(rec)
                merged.append(node)
                all_nodes[node.name] = node
            rounds.append(records)
            byes_log.append([nodes[i].name for i in byes])
            nodes = sorted(merged + [nodes[i] for i in byes], key=lambda n: min(n.tasks))
        root = nodes[0]
        final = self._evaluate_model(run, root, "final")
        eff_coef: dict[str, float] | None = None
        if self.strategy.linear and root.effective is not None:
            eff_coef = dict(zip(self.model_names, root.effective.tolist()))
        c = run.counts
        evaluations = {
            "search_model_evaluations": c["search_models"],
            "search_task_evaluations": c["search_tasks"],
            "verify_model_evaluations": c["verify_models"],
            "extra_model_evaluations": c["extra_models"],
            "total_model_evaluations": c["search_models"] + c["verify_models"]
            + c["extra_models"],
            "new_this_run": c["new_this_run"], "reused_from_store": c["reused"],
        }
        return NestedResult(
            study_name=self.study_name, tasks=list(self.tasks),
            preference=self.preference.tolist(), rounds=rounds, byes=byes_log,
            nodes=all_nodes, root=root.name, final_metrics=final,
            effective_coefficients=eff_coef, evaluations=evaluations,
            timings={"total_s": time.perf_counter() - t0}, settings=self.settings(),
            pairing=self.pairing.name, seed=self.seed, _pretrained=base)

    # --------------------------------------------------------------------------------
    def _task_vectors(self) -> TaskVectors:
        """The fine-tuned models' task vectors, loaded once, without preparing the merge
        strategy on all N of them: every merge of the tournament is a two-model merge, so
        a strategy for exactly two models (``slerp``) works, and :meth:`_check_strategy`
        runs the strategy's checks on a pair."""
        if self._spec.task_vectors is None:
            loader = dataclasses.replace(self._spec, strategy=get_registry().create(
                "merge_strategy", "task_arithmetic"))  # type: ignore[arg-type]  # only counts
            self._spec.task_vectors = loader.build().task_vectors
        return self._spec.task_vectors

    def _check_strategy(self, tv: TaskVectors) -> None:
        """Prepare (a copy of) the merge strategy on the first two models, as every pair
        will: a strategy that cannot merge a pair (e.g. ``tsv_m`` with a ``rank_fraction``
        above 1/2) stops here, before anything is evaluated."""
        from mapframe.merging.checkpoints import TaskVectors

        pair = TaskVectors.from_vectors(tv.pretrained_state(), [tv.vector(0), tv.vector(1)],
                                        self.model_names[:2])
        copy.deepcopy(self.strategy).prepare(pair)

    def _stored_name(self, name: str, fingerprint: dict[str, Any]) -> str:
        """The name a pair's study (or an extra evaluation) is stored under: ``name`` (the
        merge tree's label) unless the store already holds another setup there, as it does
        after a tournament with another preference (other side weights, other merged
        vectors); then ``name@<digest of the setup>``. So every setup keeps its evaluations
        and each tournament reuses those of its own (and studies stored before keep their
        plain names)."""
        try:
            self.storage.open(name, fingerprint)
        except SetupMismatchError:
            text = json.dumps(fingerprint, sort_keys=True, default=str)
            return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        finally:
            self.storage.close()
        return name

    def _component(self, spec: Any) -> Any:
        return copy.deepcopy(spec) if isinstance(spec, Component) else spec

    def _merge_pair(self, run: TournamentRun, r: int, a: NestedNode, b: NestedNode,
                    seed: int | None) -> tuple[PairRecord, NestedNode]:
        """One pair's MAP study, its preference choice, and the merged model as a node.
        ``seed=None`` (the first pair of a ``seed=None`` tournament): the pair's study takes
        the seed its stored study kept, else draws one and stores it, as any study does."""
        from mapframe.merging.checkpoints import TaskVectors
        from mapframe.merging.merger import Merger
        from mapframe.study import MergeStudy

        pair_tv = TaskVectors.from_vectors(run.base, [a.vector, b.vector], [a.name, b.name])
        p = self.preference
        weights = (float(p[a.tasks].sum()), float(p[b.tasks].sum()))
        select = weights if sum(weights) > 0 else (1.0, 1.0)
        merged_name = f"({a.name}+{b.name})"
        evaluator = PairEvaluator(self.evaluator, (a.tasks, b.tasks), p.tolist(),
                                  (a.name, b.name))
        lo = [t.lower if math.isfinite(t.lower) else 0.0 for t in evaluator.tasks]
        hi = [t.upper if math.isfinite(t.upper) and t.upper > lo_ else lo_ + 1.0
              for t, lo_ in zip(evaluator.tasks, lo)]
        # The pair's choice maximises the raw weighted sum P_a·f_a + P_b·f_b: fixed, equal-
        # width bounds make the normalised preference score an affine map of that sum.
        width = max(h - l_ for h, l_ in zip(hi, lo))
        bounds = (lo, [l_ + width for l_ in lo])
        study = MergeStudy(
            evaluator=evaluator, task_vectors=pair_tv,
            merge_strategy=copy.deepcopy(self.strategy), budget=self.pair_budget,
            seed=seed, search_bounds=self.search_bounds,
            sampler=self._component(self.sampler), surrogate=self._component(self.surrogate),
            front_solver=self._component(self.front_solver), storage=self.storage,
            study_name=f"{self.study_name}/{merged_name}",
            executor=self._component(self.executor_spec), verify=self.verify,
            preference=list(select), preference_bounds=bounds, on_error=self.on_error,
            progress=self.progress,
        )
        study.study_name = self._stored_name(study.study_name, study.fingerprint())
        res = study.run()
        sel = int(res.selected)  # type: ignore[arg-type]
        c = res.front.coefficients[sel]
        real = res.front.real[sel]
        n_search = len(res.history)
        n_verify = len(res.history.select("verify", ok=False))
        run.counts["search_models"] += n_search
        run.counts["search_tasks"] += n_search * (len(a.tasks) + len(b.tasks))
        run.counts["verify_models"] += n_verify
        run.counts["new_this_run"] += res.n_evaluated
        run.counts["reused"] += res.n_reused
        # The merged model becomes a new "fine-tuned" model: its task vector against θ0.
        merger = Merger(copy.deepcopy(self.strategy), pair_tv)
        theta = merger.merged_state_dict(c)
        vector = {k: (theta[k].float() - run.base[k].float()).to(run.base[k].dtype)
                  for k in pair_tv.keys()}
        eff = None
        if a.effective is not None and b.effective is not None:
            eff = c[0] * a.effective + c[1] * b.effective
        node = NestedNode(merged_name, sorted(a.tasks + b.tasks), vector, round=r,
                          children=(a.name, b.name), coefficients=(float(c[0]), float(c[1])),
                          effective=eff)
        rec = PairRecord(
            round=r, left=a.name, right=b.name, merged=merged_name,
            tasks_left=[self.tasks[i].name for i in a.tasks],
            tasks_right=[self.tasks[i].name for i in b.tasks], weights=weights, index=sel,
            coefficients=(float(c[0]), float(c[1])),
            predicted=(float(res.front.predicted[sel, 0]), float(res.front.predicted[sel, 1])),
            real=(float(real[0]), float(real[1])) if np.all(np.isfinite(real)) else None,
            result=res)
        return rec, node

    def _evaluate_model(self, run: TournamentRun, node: NestedNode, purpose: str
                        ) -> np.ndarray:
        """One real evaluation of ``node``'s model on all tasks, through an evaluation
        session (stored, resumable, checked like every other evaluation).

        The model is ``θ0 + τ_node``: a one-vector task-arithmetic merge at coefficient 1,
        whatever strategy built ``τ_node`` (applying e.g. TIES again would trim it twice).
        """
        from mapframe.executors.base import MergeSpec
        from mapframe.merging.checkpoints import TaskVectors
        from mapframe.session import EvaluationSession

        tv = TaskVectors.from_vectors(run.base, [node.vector], [node.name])
        spec = MergeSpec(get_registry().create("merge_strategy", "task_arithmetic"),  # type: ignore[arg-type]
                         task_vectors=tv)
        fp = {"tasks": [t.to_dict() for t in self.tasks], "n_coefficients": 1,
              "evaluator": self.evaluator.describe(), "merge": spec.describe()}
        executor: Executor = get_registry().create(  # type: ignore[assignment]
            "executor", self._component(self.executor_spec))
        history = History(1, len(self.tasks))
        run.counts["extra_models"] += 1
        name = self._stored_name(f"{self.study_name}/{purpose}/{node.name}", fp)
        with EvaluationSession(self.storage, name, fp, self.evaluator, spec, executor,
                               self.tasks, on_error="raise") as session:
            try:
                session.evaluate(np.ones((1, 1)), "search", 0, history)
            except EvaluationError as exc:
                raise EvaluationError(
                    f"evaluating the {purpose} model {node.name} failed: {exc}") from None
            run.counts["reused"] += session.counts.reused
            run.counts["new_this_run"] += session.counts.new
        ev = next(iter(history))
        if not ev.ok or ev.metrics is None:
            raise EvaluationError(
                f"evaluating the {purpose} model {node.name} gave "
                f"{None if ev.metrics is None else ev.metrics.tolist()}: expected "
                f"{len(self.tasks)} finite metrics ({ev.error})")
        return np.asarray(ev.metrics, dtype=float)


def _refuse_per_coefficient_bounds(bounds: Any, n_models: int) -> None:
    """Refuse one ``[low, high]`` per coefficient for a tournament of more than two models:
    a pair after the first round merges merged models, whose coefficients scale no single
    task's vector (a leaf's share is the product of the coefficients on its path, and not
    even that for a nonlinear strategy), so per-task bounds have no box to map to; and
    giving every pair the first two rows would be a silent wrong answer. With two models
    the one pair merges the two fine-tuned models, and the rows bound their coefficients
    exactly as for a MergeStudy."""
    try:
        arr = np.asarray(bounds, dtype=float)
    except (TypeError, ValueError):
        return  # not a box of numbers: the study's own check says so
    if arr.ndim != 2 or n_models == 2 or arr.size == 0:
        return
    hull = [float(arr[:, 0].min()), float(arr[:, 1].max())] if arr.shape[1:] == (2,) else [
        0.0, 1.0]
    raise ConfigError(
        f"search_bounds for nested merging is one [low, high] for both coefficients of "
        f"every pair, not one per coefficient (after the first round a pair merges merged "
        f"models, whose coefficients are no single task's); got {arr.tolist()}: write one "
        f"[low, high], e.g. search_bounds: {hull}")


def _check_model_names(names: Sequence[str]) -> None:
    """Refuse model names that would not give every node of the merge tree its own label:
    a name given twice, or one holding the label syntax ``(``, ``+``, ``)`` (models ``a``,
    ``b+c``, ``a+b``, ``c`` would make two merges both labelled ``(a+b+c)``)."""
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(
            f"nested merging needs one model per task, each named once; repeated: "
            f"{', '.join(repeated)}: give every fine-tuned model (task vector) its own name, "
            "e.g. its task's name")
    odd = [n for n in names if any(ch in n for ch in "+()")]
    if odd:
        raise ConfigError(
            f"model names must not contain '+', '(' or ')', which label Nested MAP's merges "
            f"('(a+b)'); got {', '.join(map(repr, odd))}: rename those models (and their "
            "tasks)")


def _match_models(model_names: Sequence[str], task_names: Sequence[str]) -> list[int]:
    """Task index of each fine-tuned model: by name, else by position."""
    if sorted(model_names) == sorted(task_names):
        return [list(task_names).index(n) for n in model_names]
    if len(model_names) != len(task_names):
        raise ConfigError(
            f"nested merging needs one fine-tuned model per task: {len(model_names)} models "
            f"({', '.join(model_names)}) for {len(task_names)} tasks "
            f"({', '.join(task_names)}); name each fine-tuned checkpoint after its task")
    return list(range(len(model_names)))


def _check_pairs(pairs: Sequence[tuple[int, int]], byes: Sequence[int], n: int,
                 name: str) -> None:
    flat = [i for p in pairs for i in p] + list(byes)
    if sorted(flat) != list(range(n)) or not pairs:
        raise EvaluationError(
            f"pairing {name!r} must use each of the {n} models exactly once (in a pair or a "
            f"bye) and form at least one pair; got pairs {list(pairs)} and byes {list(byes)}")
