"""The :class:`Evaluator` component and :class:`ModelEvaluator`, the template every model
evaluator derives from.

An evaluator implements one method, :meth:`Evaluator.evaluate_tasks`: metrics of a batch
of coefficient vectors on some of its tasks. :meth:`Evaluator.evaluate` (all tasks) is
that method called with every task. :class:`ModelEvaluator` implements it for a torch model
whose weights mapframe merges in place: subclasses say how to build the model and how to
score one task.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError, EvaluatorBugError
from mapframe.problem import Task

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors
    from mapframe.merging.merger import Merger

__all__ = ["Evaluator", "ModelEvaluator"]


class Evaluator(Component):
    """Turns a batch of coefficient vectors into a batch of task metrics.

    Call order (in whichever process evaluates: this one by default, a worker under a
    distributed executor)::

        evaluator.load_task_vectors(pretrained, finetuned)  # once, only when the class sets
                                                   # reads_checkpoints = True (evaluators that
                                                   # merge); otherwise mapframe reads the
                                                   # files itself and calls, per file,
        evaluator.prepare_checkpoint(state, path)  # (evaluators that merge only)
        evaluator.setup(merger)        # once; merger is None for black-box objectives
        evaluator.evaluate_tasks(C, tasks)  # many times; C: (B, N) -> metrics (B, len(tasks))
        evaluator.close()              # once, at the end

    :meth:`evaluate_tasks` is the one method to implement. ``tasks`` are indices into
    :attr:`tasks`; the study asks for all of them (:meth:`evaluate`), Nested MAP's pairs for
    the few a pair needs, so an evaluator whose tasks cost separately (one dataset per task)
    pays only for those. ``tasks`` names the T objectives with their directions and known
    metric ranges; it must be available before :meth:`setup`. ``max_batch_size`` caps B
    (``None``: no cap). An evaluator that can merge and score several models at once
    (vectorised over the batch) should do so: per-merge Python overhead dominates for small
    models. The results of one call are stored when it returns, so a process killed
    mid-call loses that batch: keep ``max_batch_size`` at 1 for evaluations that take long
    each. Metrics are returned in natural units (accuracy in [0, 1], loss, ...); NaN marks a
    metric that could not be computed, and the study records it as invalid instead of
    fitting it. An evaluator that scores a batch merge by merge calls
    :meth:`row_finished` after each (:class:`ModelEvaluator` does): each evaluation is then
    timed on its own (``duration_s``) and the progress display advances inside a batch.

    Evaluators written for mapframe ≤ 0.x implemented :meth:`evaluate` instead; such a
    class still works (its :meth:`evaluate_tasks` evaluates all tasks and keeps the
    requested columns).
    """

    kind: ClassVar[str] = "evaluator"
    #: The evaluator merges checkpoints itself and needs a :class:`Merger` in :meth:`setup`.
    needs_merger: ClassVar[bool] = False
    #: Capability: the evaluator loads its checkpoints itself (:meth:`load_task_vectors`),
    #: so checkpoint paths may name folders (model directories, adapters).
    reads_checkpoints: ClassVar[bool] = False
    max_batch_size: int | None = None
    #: Set by the worker around each batch (see :meth:`row_finished`).
    _row_listener: Callable[[], None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "evaluate" in own and "evaluate_tasks" not in own and getattr(
                cls.evaluate_tasks, "__isabstractmethod__", False):
            # An evaluator written against the old API (evaluate() the abstract method).
            cls.evaluate_tasks = _columns_of_evaluate  # type: ignore[method-assign]
        if "load_task_vectors" in own and "reads_checkpoints" not in own:
            # The older API: overriding the method was the signal.
            cls.reads_checkpoints = own["load_task_vectors"] is not Evaluator.load_task_vectors

    @property
    @abstractmethod
    def tasks(self) -> list[Task]:
        """The objectives, in the column order :meth:`evaluate` returns."""

    def prepare_checkpoint(
        self, state: dict[str, torch.Tensor], source: str
    ) -> dict[str, torch.Tensor]:
        """Adapt one loaded checkpoint (``source`` is its path) to the tensors this evaluator
        merges, before task vectors are built. Default: unchanged.

        Override it when published checkpoints hold more than the merged model or name its
        tensors differently: a CLIP evaluator keeps the image tower of a full CLIP state dict
        and strips a wrapper's prefix, so that every layout yields the same keys. Raise
        :class:`~mapframe.errors.CheckpointError` naming the file when it cannot be adapted.
        The method may run in a worker process: keep it free of per-process state.
        """
        return state

    def load_task_vectors(
        self, pretrained: str, finetuned: Mapping[str, str]
    ) -> TaskVectors | None:
        """Load the checkpoints at ``pretrained`` and ``finetuned`` (``{task: path}``)
        yourself; called only when the class sets ``reads_checkpoints = True``.

        Do so for checkpoints mapframe cannot read as one file each: model directories with
        sharded weights, adapters whose task vector is a low-rank product, task vectors kept
        on disk and streamed during merges (a :class:`~mapframe.merging.TaskVectors`
        subclass overriding ``combine_into``). Paths may then name directories. The method
        may run in a worker process: keep it free of per-process state; raise
        :class:`~mapframe.errors.CheckpointError` naming the file or folder when a
        checkpoint cannot be used. Returning ``None`` lets mapframe read the files.
        """
        return None

    @classmethod
    def for_checkpoints(cls, settings: Mapping[str, Any]) -> Evaluator | None:
        """This evaluator's checkpoint handling alone (:meth:`prepare_checkpoint`,
        :meth:`load_task_vectors`), built from a saved study's ``settings`` (its config's
        evaluator entry without ``name``), or ``None`` to have the whole evaluator built
        from them. Default: ``None``.

        Exporting from a results folder (``mapframe export``, ``load_results(...).export``)
        needs only this part of an evaluator that adapts or reads checkpoints, and the
        folder may come from someone else. Override it when building the whole evaluator
        imports or reads what its settings name (a user's module, datasets): return an
        instance on which only the two checkpoint methods are called, built from just the
        settings they depend on.
        """
        return None

    def setup(self, merger: Merger | None) -> None:
        """Prepare for evaluation (load data, build the resident model...). Default: keeps
        ``merger`` (checked to be there when :attr:`needs_merger`)."""
        if self.needs_merger and merger is None:
            raise ConfigError(
                f"evaluator {self.name!r} merges checkpoints: give the study checkpoints "
                "(pretrained + finetuned) and a merge strategy"
            )
        self._merger = merger

    @abstractmethod
    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Metrics ``(B, len(tasks))`` of the coefficient rows ``(B, N)`` on the task columns
        ``tasks`` (indices into :attr:`tasks`, in the order given)."""

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """Metrics ``(B, T)`` on every task: :meth:`evaluate_tasks` with all of them."""
        return self.evaluate_tasks(coefficients, range(len(self.tasks)))

    def close(self) -> None:
        """Release resources. Default: no-op."""

    def row_finished(self) -> None:
        """Say that the next row of the batch being evaluated is scored (rows in order).

        Optional: an evaluator that scores a batch merge by merge calls it after each, so
        that each evaluation is timed on its own instead of the batch time being shared,
        and progress moves inside a large batch. Calls that do not add up to the batch's
        rows are ignored (the batch time is then shared)."""
        listener = self._row_listener
        if listener is not None:
            listener()

    @property
    def identifiable(self) -> bool:
        """Whether :meth:`describe` identifies what this evaluator computes, so that stored
        evaluations may be reused for it. Default: ``True``; a black-box function that can
        be neither imported by name nor digested says ``False``."""
        return True

    @property
    def merger(self) -> Merger:
        merger = getattr(self, "_merger", None)
        if merger is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return merger

    # -- checks shared by implementations ----------------------------------------------
    def check_coefficients(self, coefficients: Any) -> np.ndarray:
        """``coefficients`` as a float ``(B, N)`` array (a single vector becomes ``(1, N)``);
        a one-line :class:`~mapframe.errors.ConfigError` for another shape or non-finite
        values. ``N`` is checked against the merger's task vectors when there is one."""
        try:
            C = np.asarray(coefficients, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"evaluator {self.name!r}: coefficients must be numbers, got "
                              f"{type(coefficients).__name__}") from None
        if C.ndim == 1:
            C = C[None, :]
        merger = getattr(self, "_merger", None)
        n = merger.n_tasks if merger is not None else None
        if C.ndim != 2 or (n is not None and C.shape[1] != n):
            want = f"(B, {n}) (one per fine-tuned checkpoint)" if n is not None else "(B, N)"
            raise ConfigError(f"evaluator {self.name!r}: coefficients must have shape {want}, "
                              f"got {np.shape(coefficients)}")
        if not np.all(np.isfinite(C)):
            raise ConfigError(f"evaluator {self.name!r}: coefficients must be finite, got "
                              f"{C.tolist()}")
        return C

    def check_task_indices(self, tasks: Sequence[int]) -> list[int]:
        """``tasks`` as a list of valid indices into :attr:`tasks` (a one-line
        :class:`~mapframe.errors.ConfigError` otherwise)."""
        n = len(self.tasks)
        try:
            cols = [int(t) for t in tasks]
        except (TypeError, ValueError):
            raise ConfigError(f"evaluator {self.name!r}: task indices must be integers, got "
                              f"{tasks!r}") from None
        bad = [t for t in cols if not 0 <= t < n]
        if bad:
            raise ConfigError(f"evaluator {self.name!r}: task indices {bad} out of range for "
                              f"{n} tasks")
        return cols


def _columns_of_evaluate(self: Evaluator, coefficients: np.ndarray,
                         tasks: Sequence[int]) -> np.ndarray:
    """``evaluate_tasks`` of an evaluator that implements only :meth:`Evaluator.evaluate`."""
    cols = self.check_task_indices(tasks)
    M = np.asarray(self.evaluate(coefficients), dtype=float)
    return M[:, cols] if M.ndim == 2 else M


class ModelEvaluator(Evaluator):
    """The template for evaluators of one torch model whose weights mapframe merges in place.

    Subclasses implement :meth:`build_model` (the architecture; its weights are overwritten
    by every merge) and :meth:`score_task` (the metric of one task for the weights as they
    are now), and may override :meth:`prepare` (load evaluation data once the model exists)
    and :meth:`model_device` (where the model lives). :meth:`evaluate_tasks` then does the rest,
    the same for every model evaluator:

    1. checks the coefficients (shape ``(B, N)``, finite) and the task indices;
    2. per row, writes the merged weights into the one resident model
       (:meth:`merge`: no model copies, no checkpoint reloads; on CUDA it waits for the
       copy to finish, so timings and scores see the merged weights);
    3. scores each requested task (:meth:`score_tasks`), checking that one finite-or-NaN
       number comes back per task.

    An evaluator that merges and scores several models at once (vectorised over the batch)
    overrides :meth:`merge_and_score`, the step between the checks.

    The template's own names (:attr:`resident_model`, :meth:`model_device`) leave ``model``
    and ``device``, the usual names of an evaluator's settings, to subclasses.
    """

    needs_merger: ClassVar[bool] = True
    #: One merge per call: this evaluator scores models one at a time anyway, and a batch of
    #: one lets the store keep each result the moment it exists (nothing is lost on a crash).
    max_batch_size: int | None = 1
    #: Set for subclasses that implement the older ``score(model)`` (all tasks at once).
    _scores_all_tasks: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "score" in own and "score_task" not in own:
            cls._scores_all_tasks = True
        elif "score_task" in own:
            cls._scores_all_tasks = False

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """Return the model architecture (weights will be overwritten by merges)."""

    def prepare(self) -> None:
        """Load what scoring needs (data, heads...) once the model is built. Default: no-op."""

    def model_device(self) -> torch.device:
        """Where the resident model lives. Default: the device of its first tensor (CPU for
        a model without tensors)."""
        import torch

        for t in self.resident_model.state_dict().values():
            return t.device
        return torch.device("cpu")

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """The metric of task ``task`` (an index into :attr:`tasks`) for ``model`` as it is
        now. Implement this, or :meth:`score` (all tasks at once) for evaluators written
        before it existed."""
        raise NotImplementedError(
            f"{type(self).__qualname__} implements neither score_task(model, task) nor "
            "score(model): implement score_task")

    def score(self, model: torch.nn.Module) -> Sequence[float]:
        """One metric per task, in the order of :attr:`tasks` (the older API; prefer
        :meth:`score_task`, which lets Nested MAP score only the tasks it needs)."""
        return [self.score_task(model, i) for i in range(len(self.tasks))]

    def score_tasks(self, model: torch.nn.Module, tasks: Sequence[int]) -> list[float]:
        """The metrics of ``tasks`` for ``model`` as it is now."""
        if self._scores_all_tasks:
            values = list(np.asarray(self.score(model), dtype=float).reshape(-1))
            if len(values) != len(self.tasks):
                raise EvaluatorBugError(
                    f"evaluator {self.name!r}: score() returned {len(values)} metric(s) for "
                    f"{len(self.tasks)} tasks, a bug in the evaluator (every point would fail "
                    "the same way); return one value per task, in the order of .tasks")
            return [values[i] for i in tasks]
        return [self.score_task(model, i) for i in tasks]

    @property
    def resident_model(self) -> torch.nn.Module:
        """The resident model (after :meth:`setup`)."""
        model = getattr(self, "_model", None)
        if model is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return model

    def setup(self, merger: Merger | None) -> None:
        """Build the resident model, bind its merged tensors to the task vectors, then
        :meth:`prepare`."""
        super().setup(merger)
        assert merger is not None
        model = self.build_model()
        model.eval()
        self._model = model
        self._params = self.bind_parameters(merger, model)
        self.prepare()

    def bind_parameters(self, merger: Merger, model: torch.nn.Module
                        ) -> dict[str, torch.Tensor]:
        """The model's tensors that merges overwrite (checked against the checkpoints).
        Default: :meth:`~mapframe.merging.Merger.resident_params`."""
        return merger.resident_params(model)

    def merge(self, coefficients: np.ndarray) -> None:
        """Write the merged weights for one coefficient vector into the resident model."""
        import torch

        self.merger.merge_into(self._params, coefficients)
        device = self.model_device()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        C = self.check_coefficients(coefficients)
        cols = self.check_task_indices(tasks)
        if getattr(self, "_params", None) is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        import torch

        with torch.no_grad():
            out = np.asarray(self.merge_and_score(C, cols), dtype=float)
        if out.shape != (C.shape[0], len(cols)):
            raise EvaluatorBugError(
                f"evaluator {self.name!r} produced metrics of shape {out.shape} for "
                f"{C.shape[0]} merge(s) and {len(cols)} task(s), a bug in the evaluator; "
                "return one row per merge and one column per task")
        return out

    def merge_and_score(self, C: np.ndarray, tasks: list[int]) -> np.ndarray:
        """Metrics ``(B, len(tasks))``: merge each row into the resident model and score it."""
        out = np.empty((C.shape[0], len(tasks)))
        for b, c in enumerate(C):
            self.merge(c)
            row = self.score_tasks(self.resident_model, tasks)
            try:
                values = np.asarray(row, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise EvaluatorBugError(f"evaluator {self.name!r}: a score is not a number: "
                                        f"{row!r} (a bug in the evaluator)") from None
            if values.size != len(tasks):
                raise EvaluatorBugError(
                    f"evaluator {self.name!r}: scoring gave {values.size} metric(s) for "
                    f"{len(tasks)} task(s), a bug in the evaluator (every point would fail "
                    "the same way); return one per task")
            out[b] = values
            self.row_finished()
        return out

    def close(self) -> None:
        """Drop the resident model."""
        for attr in ("_params", "_model"):
            self.__dict__.pop(attr, None)
