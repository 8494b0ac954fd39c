"""The :class:`Evaluator` component: merges and measures, one batch of coefficients at a time."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError
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

        evaluator.load_task_vectors(pretrained, finetuned)  # once, when checkpoints are
                                                   # given as paths (evaluators that merge only);
                                                   # None: mapframe's own loader, which calls
        evaluator.prepare_checkpoint(state, path)  # per checkpoint file, while the merger
                                                   # loads them (evaluators that merge only)
        evaluator.setup(merger)        # once; merger is None for black-box objectives
        evaluator.evaluate(C)          # many times; C: (B, N) -> metrics (B, T)
        evaluator.close()              # once, at the end

    ``tasks`` names the T objectives with their directions and known metric ranges; it must
    be available before :meth:`setup`. ``max_batch_size`` caps B (``None``: no cap). An
    evaluator that can merge and score several models at once (vectorised over the batch)
    should do so: per-merge Python overhead dominates for small models. The results of one
    call are stored when it returns, so a process killed mid-call loses that batch: keep
    ``max_batch_size`` at 1 for evaluations that take long each. Metrics are returned
    in natural units (accuracy in [0, 1], loss, ...); NaN marks a metric that could not be
    computed, and the study records it as invalid instead of fitting it.
    """

    kind: ClassVar[str] = "evaluator"
    #: The evaluator merges checkpoints itself and needs a :class:`Merger` in :meth:`setup`.
    needs_merger: ClassVar[bool] = False
    max_batch_size: int | None = None

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
        yourself, or return ``None`` (the default) to let mapframe read them as state-dict
        files.

        Override it for checkpoints mapframe cannot read as one file each: model
        directories with sharded weights, adapters whose task vector is a low-rank product,
        task vectors kept on disk and streamed during merges (a
        :class:`~mapframe.merging.TaskVectors` subclass overriding ``combine_into``). Paths
        may then name directories. The method may run in a worker process: keep it free
        of per-process state; raise :class:`~mapframe.errors.CheckpointError` naming the
        file or folder when a checkpoint cannot be used.
        """
        return None

    def setup(self, merger: Merger | None) -> None:
        """Prepare for evaluation (load data, build the resident model...). Default: no-op."""
        if self.needs_merger and merger is None:
            raise ConfigError(
                f"evaluator {self.name!r} merges checkpoints: give the study checkpoints "
                "(pretrained + finetuned) and a merge strategy"
            )
        self._merger = merger

    @abstractmethod
    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """Evaluate each row of ``coefficients`` (B, N); return metrics of shape (B, T)."""

    def evaluate_tasks(self, coefficients: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Metrics of only the task columns ``tasks`` (indices into :attr:`tasks`):
        ``(B, len(tasks))``.

        Callers that need a few tasks (Nested MAP's pairs) use this. The default evaluates
        all tasks and keeps the requested columns; an evaluator whose tasks cost separately
        (one dataset per task) should override it so that they pay only for those.
        """
        M = np.asarray(self.evaluate(coefficients), dtype=float)
        return M[:, list(tasks)]

    def close(self) -> None:
        """Release resources. Default: no-op."""

    @property
    def merger(self) -> Merger:
        merger = getattr(self, "_merger", None)
        if merger is None:
            raise ConfigError(f"evaluator {self.name!r} was used before setup(merger)")
        return merger


class ModelEvaluator(Evaluator):
    """An evaluator for one torch model whose weights mapframe merges in place.

    Subclasses implement :meth:`build_model` (the architecture; its weights are overwritten)
    and :meth:`score` (one metric per task for the current weights). The default
    :meth:`evaluate` keeps one resident model and, per coefficient vector, writes the merged
    weights into it and scores it: no model copies, no checkpoint reloads.
    """

    needs_merger: ClassVar[bool] = True
    #: One merge per call: this evaluator scores models one at a time anyway, and a batch of
    #: one lets the store keep each result the moment it exists (nothing is lost on a crash).
    max_batch_size: int | None = 1

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """Return the model architecture (weights will be overwritten by merges)."""

    @abstractmethod
    def score(self, model: torch.nn.Module) -> Sequence[float]:
        """Return one metric per task (order of :attr:`tasks`) for ``model`` as it is now."""

    def setup(self, merger: Merger | None) -> None:
        super().setup(merger)
        assert merger is not None
        self._model = self.build_model()
        self._model.eval()
        self._params = merger.resident_params(self._model)

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        import torch

        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        out = np.empty((C.shape[0], len(self.tasks)))
        with torch.no_grad():
            for b, c in enumerate(C):
                self.merger.merge_into(self._params, c)
                out[b] = np.asarray(self.score(self._model), dtype=float)
        return out
