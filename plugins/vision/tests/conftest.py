"""Shared fixtures of the mapframe-vision tests: a tiny CLIP trained for real, offline.

``clip_setup`` (session-scoped, built once per test process) trains the toy CLIP of
:mod:`mapframe_vision.toy` (a random-init "pretrained" CLIP and one fine-tuned image tower
per task of :data:`CLIP_TASKS`) and writes each task's test images as an ``ImageFolder``.
Every path lives under pytest's temporary folders: nothing is downloaded, nothing is written
to ``~/.cache``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mapframe.testing.environment import limit_torch_threads, offline_test_environment

# Before anything imports huggingface_hub or torch (they read these once): never try the
# network; one OpenMP thread per xdist worker.
offline_test_environment()


def pytest_configure(config: pytest.Config) -> None:
    limit_torch_threads()


#: The tasks of the shared CLIP fixture (scikit-learn's digits: always available).
CLIP_TASKS: tuple[str, ...] = ("digits", "digits_rot90")
#: Test images written per task.
N_TEST_IMAGES = 300


@dataclass(frozen=True)
class ClipFiles:
    """Paths of the toy CLIP fixture."""

    root: Path
    model: str
    model_config: str
    #: The full pretrained CLIP (text tower included), safetensors.
    pretrained: str
    #: Task -> the fine-tuned image tower's safetensors file.
    finetuned: dict[str, str]
    #: Task -> ImageFolder root of its test images.
    data: dict[str, str]
    classnames: dict[str, list[str]]
    #: Task -> test accuracy of its fine-tune, as measured while training.
    accuracy: dict[str, float] = field(default_factory=dict)

    def task_configs(self, names: Sequence[str] | None = None,
                     **extra: Any) -> list[dict[str, Any]]:
        """``tasks`` entries of a ClipEvaluator for ``names`` (default: all)."""
        return [{"name": t, "data": self.data[t], "classnames": list(self.classnames[t]),
                 **extra} for t in (names or CLIP_TASKS)]

    def evaluator_kwargs(self, head_cache: str | os.PathLike[str] | None,
                         tasks: Sequence[Mapping[str, Any]] | None = None,
                         **overrides: Any) -> dict[str, Any]:
        """ClipEvaluator arguments for this fixture (CPU, fp32, heads cached in ``head_cache``)."""
        kw: dict[str, Any] = {
            "tasks": list(tasks) if tasks is not None else self.task_configs(),
            "model": self.model, "model_config": self.model_config,
            "pretrained": self.pretrained, "device": "cpu", "precision": "fp32",
            "head_cache": None if head_cache is None else os.fspath(head_cache),
        }
        kw.update(overrides)
        return kw


@pytest.fixture(scope="session")
def clip_setup(tmp_path_factory: pytest.TempPathFactory) -> ClipFiles:
    """Train the toy CLIP checkpoints once per session and write the test ImageFolders."""
    from mapframe_vision.toy import (
        TINY_CLIP_NAME,
        make_clip_checkpoints,
        task_images,
        write_image_folder,
    )

    root = tmp_path_factory.mktemp("toyclip")
    ck = make_clip_checkpoints(root, CLIP_TASKS, steps=40)
    data, names = {}, {}
    for task in CLIP_TASKS:
        x, y, cls = task_images(task, "test", limit=N_TEST_IMAGES)
        data[task] = str(write_image_folder(root / "data" / task, x, y, cls))
        names[task] = list(cls)
    return ClipFiles(root=root, model=TINY_CLIP_NAME, model_config=ck["model_config"],
                     pretrained=ck["pretrained"], finetuned=dict(ck["finetuned"]), data=data,
                     classnames=names, accuracy=dict(ck["accuracy"]))


@pytest.fixture(scope="session")
def clip_merger() -> Callable[..., Any]:
    """``clip_merger(evaluator, pretrained, {task: path})``: a task-arithmetic Merger over
    those checkpoints, adapted by the evaluator's ``prepare_checkpoint``."""
    from mapframe.executors.base import MergeSpec
    from mapframe.merging.task_arithmetic import TaskArithmetic

    def build(evaluator: Any, pretrained: str, finetuned: Mapping[str, str]) -> Any:
        spec = MergeSpec(TaskArithmetic(), str(pretrained),
                         {k: str(v) for k, v in finetuned.items()},
                         prepare=evaluator.prepare_checkpoint)
        return spec.build()

    return build


@pytest.fixture
def make_clip_evaluator(
    clip_setup: ClipFiles, clip_merger: Callable[..., Any], tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """``make_clip_evaluator(tasks=None, setup=True, head_cache=<tmp>, **kwargs)``: a
    ClipEvaluator on the fixture's model (set up with a merger of the fixture's checkpoints
    unless ``setup=False``); closed after the test."""
    from mapframe_vision.clip import ClipEvaluator

    made: list[Any] = []

    def make(tasks: Sequence[Mapping[str, Any]] | None = None, setup: bool = True,
             head_cache: Any = tmp_path / "heads", **kwargs: Any) -> Any:
        ev = ClipEvaluator(**clip_setup.evaluator_kwargs(head_cache, tasks, **kwargs))
        made.append(ev)
        if setup:
            ev.setup(clip_merger(ev, clip_setup.pretrained, clip_setup.finetuned))
        return ev

    yield make
    for ev in made:
        ev.close()


@pytest.fixture(scope="session")
def clip_evaluator(
    clip_setup: ClipFiles, clip_merger: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """A ClipEvaluator set up once on both fixture tasks (shared: every evaluation writes
    the whole merged tower, so earlier tests leave nothing behind)."""
    from mapframe_vision.clip import ClipEvaluator

    heads = tmp_path_factory.mktemp("shared-heads")
    ev = ClipEvaluator(**clip_setup.evaluator_kwargs(heads))
    ev.setup(clip_merger(ev, clip_setup.pretrained, clip_setup.finetuned))
    yield ev
    ev.close()
