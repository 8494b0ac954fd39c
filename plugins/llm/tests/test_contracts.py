"""mapframe's evaluator contract (:class:`mapframe.testing.EvaluatorContract`) for every
evaluator the plugin ships, on conftest's tiny checkpoints.

The contract evaluates through ``evaluate_tasks``: batches equal their rows, any subset of
tasks in any order equals those columns of a full evaluation, and bad task indices or
coefficient counts are one-line ``ConfigError``\\ s. A few records per task keep it fast.
"""

from __future__ import annotations

from typing import Any

import pytest
from mapframe_llm.causal import CausalLMEvaluator
from mapframe_llm.classify import TextClassificationEvaluator

from mapframe.evaluators.base import Evaluator
from mapframe.executors.base import MergeSpec
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.testing import EvaluatorContract

pytest.importorskip("transformers")

#: Records scored per task: enough for distinct metrics per merge, few enough to stay fast.
SAMPLES = 8


class _HFContract(EvaluatorContract):
    """The contract on one of conftest's checkpoint fixtures (``files``, set per test by the
    subclass's autouse fixture, which also starts a fresh :class:`MergeSpec`: its task
    vectors are loaded once per test and closed by the evaluator's ``close()``)."""

    files: Any
    _spec: MergeSpec | None = None

    def pretrained(self) -> str:
        raise NotImplementedError

    def make_merge_spec(self) -> MergeSpec:
        if self._spec is None:
            self._spec = MergeSpec(TaskArithmetic(), self.pretrained(),
                                   dict(self.files.finetuned),
                                   loader=self.make_evaluator().load_task_vectors)
        return self._spec


class TestCausalLMContract(_HFContract):
    @pytest.fixture(autouse=True)
    def _checkpoints(self, lm_files: Any) -> None:
        self.files, self._spec = lm_files, None

    def pretrained(self) -> str:
        return str(self.files.base)

    def make_evaluator(self) -> Evaluator:
        f = self.files
        return CausalLMEvaluator(**f.evaluator_kwargs(f.task_configs(max_samples=SAMPLES)))


class TestTextClassificationContract(_HFContract):
    @pytest.fixture(autouse=True)
    def _checkpoints(self, cls_files: Any) -> None:
        self.files, self._spec = cls_files, None

    def pretrained(self) -> str:
        return str(self.files.pretrained)

    def make_evaluator(self) -> Evaluator:
        f = self.files
        return TextClassificationEvaluator(
            **f.evaluator_kwargs(f.task_configs(max_samples=2 * SAMPLES), storage="ram"))
