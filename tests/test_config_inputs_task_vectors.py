"""``task_vectors=`` that is no :class:`~mapframe.merging.TaskVectors` is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import ConfigError


@pytest.mark.parametrize("task_vectors", [5, {"a": 1}])
def test_task_vectors_of_another_type_are_a_one_line_error(task_vectors):
    def quad(C):
        return -np.atleast_2d(C) ** 2

    with pytest.raises(ConfigError) as err:
        MergeStudy(objective=quad, task_names=["a", "b"], budget=12, task_vectors=task_vectors)
    message = str(err.value)
    assert message.startswith("task_vectors must be a mapframe.merging.TaskVectors (task "
                              f"vectors in memory), got {type(task_vectors).__name__} ")
    assert "checkpoints={'pretrained': path" in message and "\n" not in message
