"""The ``lm_eval`` evaluator: lm-evaluation-harness tasks scored on the resident merged model.

Each mapframe task is one metric of one lm-eval task: a task name lm-eval knows (its
built-in tasks, or the YAMLs of ``include_path``) or the path of a task YAML. The merged
model is wrapped **once** in lm-eval's ``HFLM`` when the evaluator is set up; every merge
then overwrites that model's weights in place and runs lm-eval's own ``evaluate`` on the
task objects built at setup, so a score is the number ``lm_eval --model hf`` reports for the
merged model saved to disk (tested).

lm-eval is imported only when this evaluator resolves its tasks (``pip install
"mapframe-llm[lm-eval]"``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import logging
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from mapframe.errors import ConfigError
from mapframe.problem import Task
from mapframe_llm.base import HFEvaluator, _positive_int, task_range

if TYPE_CHECKING:
    import torch

__all__ = ["FEWSHOT_SEED", "HarnessTask", "LMEvalHarnessEvaluator", "metric_range"]

_INSTALL = 'pip install "mapframe-llm[lm-eval]"'
_TASK_KEYS = ("task", "name", "metric", "direction", "range")
#: Seeds ``lm_eval.simple_evaluate`` sets by default (python ``random``; numpy and torch;
#: few-shot sampling), set before every evaluation so each merge sees the same prompts.
RANDOM_SEED = 0
OTHER_SEED = 1234
FEWSHOT_SEED = 1234

#: Known ranges of lm-eval's built-in metrics (others are unbounded unless a task sets
#: ``range``). Perplexities are exp(mean negative log-likelihood) >= 1. ``brier_score``
#: sums the squared errors over a question's choices (lm-eval's ``metrics.brier_score``):
#: [0, 2]. ``f1`` has no one range: a fraction in most tasks, a percentage where a task
#: takes it from the SQuAD scripts (squadv2), so it has none here.
_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("acc", "acc_norm", "acc_mutual_info", "exact_match", "acc_bytes"),
                    (0.0, 1.0)),
    "brier_score": (0.0, 2.0),
    "mcc": (-1.0, 1.0),
    **dict.fromkeys(("perplexity", "word_perplexity", "byte_perplexity"), (1.0, math.inf)),
    "bits_per_byte": (0.0, math.inf),
}


def metric_range(metric: str) -> tuple[float, float]:
    """The natural range of an lm-eval metric (``(-inf, inf)`` when mapframe does not know
    it): accuracies and exact match in [0, 1], perplexities in [1, inf), ``bits_per_byte``
    in [0, inf), ``mcc`` in [-1, 1], ``brier_score`` in [0, 2]."""
    return _RANGES.get(metric, (-math.inf, math.inf))


@dataclass(frozen=True)
class HarnessTask:
    """One objective: ``metric`` of lm-eval task ``task``, named ``name`` in the study.

    ``task`` is an lm-eval task name or a task YAML's path. ``metric`` is ``None`` (the
    task's first metric), a metric name (``acc_norm``: its first filter) or
    ``metric,filter`` as lm-eval reports it (``exact_match,strict-match``). ``direction``
    is needed only for a metric lm-eval has no ``higher_is_better`` for; ``range`` replaces
    :func:`metric_range`.
    """

    name: str
    task: str
    metric: str | None = None
    direction: Literal["max", "min"] | None = None
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class _Resolved:
    """A :class:`HarnessTask` as lm-eval resolved it."""

    spec: HarnessTask
    #: lm-eval's name of the task (the YAML's ``task:``), the key of its results.
    lm_task: str
    #: ``metric,filter``: the key of the metric in lm-eval's results.
    key: str
    objective: Task


def _lm_eval() -> Any:
    """The ``lm_eval`` package, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        return importlib.import_module("lm_eval")
    except ImportError as exc:
        raise ConfigError(f"evaluator 'lm_eval' needs lm-evaluation-harness, which is not "
                          f"importable ({exc}); install it with: {_INSTALL}") from None


def _parse_task(item: object, i: int, metric: str | None) -> HarnessTask:
    where = f"tasks[{i}]"
    if isinstance(item, HarnessTask):
        return item
    if isinstance(item, str):
        item = {"task": item}
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be an lm-eval task name, a task YAML path or a "
                          f"mapping such as {{task: arc_easy, metric: acc_norm}}, got {item!r}")
    unknown = [str(k) for k in item if k not in _TASK_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a task takes "
                          f"{', '.join(_TASK_KEYS)}")
    task = item.get("task")
    if not isinstance(task, str) or not task.strip():
        raise ConfigError(f"{where}: 'task' must name an lm-eval task or a task YAML file, "
                          f"got {task!r}")
    name = item.get("name", task)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    if task.endswith((".yaml", ".yml")) and "name" not in item:
        name = Path(task).stem
    m = item.get("metric", metric)
    if m is not None and (not isinstance(m, str) or not m or m.count(",") > 1):
        raise ConfigError(f"task {name!r}: metric must be a metric name such as acc_norm or "
                          f"'metric,filter' as lm-eval reports it, got {m!r}")
    direction = item.get("direction")
    if direction not in (None, "max", "min"):
        raise ConfigError(f"task {name!r}: direction must be max or min, got {direction!r}")
    rng = item.get("range")
    bounds = None if rng is None else task_range(name, rng)
    return HarnessTask(name, task.strip(), m, direction, bounds)


def _include_paths(value: object) -> list[str]:
    items = [] if value is None else [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, Sequence) or not all(isinstance(p, (str, Path)) for p in items):
        raise ConfigError(f"include_path must be a folder of task YAMLs or a list of them, "
                          f"got {value!r}")
    out = []
    for p in items:
        path = Path(p).expanduser()
        if not path.is_dir():
            raise ConfigError(f"include_path {str(p)!r} is not a folder (give the folder "
                              "that holds your task YAMLs)")
        out.append(str(path.resolve()))
    return out


_INCLUDE_LINE = re.compile(r"^include:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)


def _yaml_digest(files: Sequence[Path]) -> str | None:
    """SHA-256 of the task YAMLs ``files`` (names and contents) and of the YAMLs their
    ``include:`` lines name, so that an edited task (its data files, prompts, metrics) is
    another setup in the study's fingerprint; ``None`` when a file cannot be read (the task
    is refused later, with its own error)."""
    digest = hashlib.sha256()
    seen: set[Path] = set()
    todo = sorted(files)
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            text = path.read_bytes()
        except OSError:
            return None
        digest.update(f"{path}\0{len(text)}\0".encode())
        digest.update(text)
        todo.extend((path.parent / m).resolve() for m in
                    _INCLUDE_LINE.findall(text.decode("utf-8", "replace")))
    return digest.hexdigest()


def _check_limit(limit: object) -> int | float | None:
    """``limit`` as lm-eval takes it: ``None``, a number of documents, or a fraction < 1."""
    ok = limit is None or (
        isinstance(limit, (int, float)) and not isinstance(limit, bool)
        and math.isfinite(limit) and limit > 0 and (limit < 1 or float(limit).is_integer()))
    if not ok:
        raise ConfigError(f"limit must be a positive whole number of documents per task or a "
                          f"fraction in (0, 1), got {limit!r}")
    return limit  # type: ignore[return-value]


def _members(manager: Any, name: str) -> list[str]:
    """The tasks (or subgroups) a group or tag of lm-eval's index names, read from the index
    without building them."""
    index = manager.task_index
    cfg = getattr(index.get(name), "cfg", None) or {}
    listed = cfg.get("task") if isinstance(cfg, Mapping) else None
    if isinstance(listed, (list, tuple)):
        return [x if isinstance(x, str) else str(x.get("task", x)) if isinstance(x, Mapping)
                else str(x) for x in listed]
    return sorted(n for n, e in index.items() if name in (getattr(e, "tags", None) or ()))


@contextlib.contextmanager
def _quiet(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` logs nothing below ``level`` inside the block."""
    logger = logging.getLogger(name)
    before = logger.level
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _seeded_and_quiet(device: torch.device) -> Iterator[None]:
    """Seed python, numpy and torch as ``simple_evaluate`` does, restore their state after
    (torch's on the CPU and on ``device`` when it is a CUDA device), and keep lm-eval's
    per-evaluation INFO logging out of the study's log."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda), _quiet("lm_eval", logging.WARNING):
            random.seed(RANDOM_SEED)
            np.random.seed(OTHER_SEED)
            torch.manual_seed(OTHER_SEED)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class LMEvalHarnessEvaluator(HFEvaluator):
    """lm-evaluation-harness scores of a merged causal LM: one metric of one lm-eval task
    per objective, its direction from lm-eval's ``higher_is_better``.

    ``tasks`` lists lm-eval task names (built-in, or defined by the YAMLs of
    ``include_path``), task YAML paths, or mappings ``{task, name, metric, direction,
    range}`` (see :class:`HarnessTask`); ``metric`` is the default metric of every task
    (``None``: each task's first). The lm-eval settings are those of ``lm_eval.simple_evaluate``
    and mean the same: ``limit`` (documents per task: a count, or a fraction below 1),
    ``num_fewshot`` (overrides the tasks' own, except where a task fixes 0),
    ``batch_size``, ``max_length`` (``None``: the model config's), ``apply_chat_template``
    (the tokenizer's chat template), ``fewshot_as_multiturn``, ``system_instruction``.
    ``dtype``, ``device``, ``storage``, ``reader``, ``merge_threads``, ``tokenizer``,
    ``attn_implementation`` and ``trust_remote_code`` are those of ``causal_lm``.

    The model is wrapped in ``HFLM`` once, in :meth:`setup`; the lm-eval task objects are
    built once too (when :attr:`tasks` is first read), with lm-eval's default seeds reset
    before every evaluation, so every merge is scored on the same prompts. lm-eval's
    built-in task index is read only when a task is not found among ``include_path``'s.
    """

    name: ClassVar[str] = "lm_eval"

    def __init__(self, tasks: Sequence[str | Mapping[str, Any] | HarnessTask],
                 include_path: str | Sequence[str] | None = None, metric: str | None = None,
                 limit: int | float | None = None, num_fewshot: int | None = None,
                 batch_size: int = 8, max_length: int | None = None,
                 apply_chat_template: bool = False, fewshot_as_multiturn: bool = True,
                 system_instruction: str | None = None, dtype: str = "auto",
                 device: str = "auto", storage: str = "disk", tokenizer: str | None = None,
                 attn_implementation: str | None = None, trust_remote_code: bool = False,
                 reader: str = "pread", merge_threads: int | None = None) -> None:
        # max_length is lm-eval's (None: the model's); the base class's is not used here.
        super().__init__(batch_size=batch_size, max_length=max_length or 2048, dtype=dtype,
                         device=device, storage=storage, tokenizer=tokenizer,
                         trust_remote_code=trust_remote_code, reader=reader,
                         merge_threads=merge_threads)
        self._lm_max_length = _positive_int("max_length", max_length, allow_none=True)
        if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)) or not tasks:
            raise ConfigError(f"tasks must be a non-empty list of lm-eval task names or task "
                              f"YAML paths (e.g. [arc_easy, my_tasks/qa.yaml]), got {tasks!r}")
        self._specs = [_parse_task(t, i, metric) for i, t in enumerate(tasks)]
        names = [s.name for s in self._specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"task name(s) {', '.join(dup)} appear more than once; give each "
                              "entry its own name: {task: ..., metric: ..., name: ...}")
        self._include = _include_paths(include_path)
        self._limit = _check_limit(limit)
        if num_fewshot is not None and (isinstance(num_fewshot, bool)
                                        or not isinstance(num_fewshot, int) or num_fewshot < 0):
            raise ConfigError(f"num_fewshot must be a non-negative integer or null (the tasks' "
                              f"own), got {num_fewshot!r}")
        self._num_fewshot = num_fewshot
        if not isinstance(apply_chat_template, bool):
            # lm-eval 0.4.13 takes a template name too but scores with the tokenizer's own
            # template whatever the name: refused rather than silently ignored.
            raise ConfigError(f"apply_chat_template must be true (render prompts with the "
                              f"tokenizer's chat template) or false, got "
                              f"{apply_chat_template!r}")
        self._chat = apply_chat_template
        if not isinstance(fewshot_as_multiturn, bool):
            raise ConfigError(f"fewshot_as_multiturn must be true or false, got "
                              f"{fewshot_as_multiturn!r}")
        self._multiturn = fewshot_as_multiturn
        if system_instruction is not None and not isinstance(system_instruction, str):
            raise ConfigError("system_instruction must be a string or null")
        self._system = system_instruction
        if attn_implementation is not None and not isinstance(attn_implementation, str):
            raise ConfigError("attn_implementation must be a string such as 'sdpa' or 'eager'")
        self._attn = attn_implementation
        self._resolved: list[_Resolved] | None = None
        self._lm_tasks: dict[str, Any] | None = None
        self._hflm: Any = None

    # -- objectives --------------------------------------------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """One objective per entry of ``tasks``: its metric, maximised or minimised as
        lm-eval's ``higher_is_better`` says. Reading it builds the lm-eval tasks (once)."""
        return [r.objective for r in self._resolve()]

    @property
    def metric_keys(self) -> dict[str, str]:
        """Objective name -> ``"task: metric,filter"``, what each objective reads from
        lm-eval's results."""
        return {r.spec.name: f"{r.lm_task}: {r.key}" for r in self._resolve()}

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            lm_eval_version = version("lm_eval")
        except PackageNotFoundError:
            lm_eval_version = None
        tasks = []
        for s in self._specs:
            d: dict[str, Any] = {"task": s.task, "name": s.name, "metric": s.metric}
            if s.direction is not None:
                d["direction"] = s.direction
            if s.range is not None:
                d["range"] = list(s.range)
            if s.task.endswith((".yaml", ".yml")):
                d["yaml_sha256"] = _yaml_digest([Path(s.task).expanduser().resolve()])
            tasks.append(d)
        # The task YAMLs' contents, not only their paths: an edited YAML is another setup.
        include_yamls = [p.resolve() for folder in self._include
                         for p in Path(folder).rglob("*") if p.suffix in (".yaml", ".yml")]
        settings = self._settings()
        settings["max_length"] = self._lm_max_length
        # Scores depend on the lm-eval version (prompts, metrics): part of the fingerprint.
        return {"name": self.name, "tasks": tasks, "include_path": list(self._include),
                "include_path_sha256": _yaml_digest(include_yamls) if self._include else None,
                "limit": self._limit, "num_fewshot": self._num_fewshot,
                "apply_chat_template": self._chat,
                "fewshot_as_multiturn": self._multiturn,
                "system_instruction": self._system, "attn_implementation": self._attn,
                "lm_eval_version": lm_eval_version, **settings}

    # -- lm-eval tasks -----------------------------------------------------------------------

    def _resolve(self) -> list[_Resolved]:
        if self._resolved is None:
            self._resolved, self._lm_tasks = self._build_tasks()
        return self._resolved

    def _build_tasks(self) -> tuple[list[_Resolved], dict[str, Any]]:
        """Build the lm-eval task objects and resolve each entry's metric and direction."""
        lm_eval = _lm_eval()
        from lm_eval.tasks import TaskManager

        # The include_path index is cheap; lm-eval's ~15k built-in YAMLs take seconds to
        # index, so they are read only for a name include_path does not define.
        managers: list[Any] = [TaskManager(include_path=self._include or None,
                                           include_defaults=False)]
        objects: dict[str, Any] = {}
        by_spec: dict[str, str] = {}
        # lm-eval name -> (the entry that loaded it, its YAML file): lm-eval keys results by
        # name, so two sources of one name would be scored as one task.
        sources: dict[str, tuple[HarnessTask, str]] = {}
        resolved = []
        for spec in self._specs:
            if spec.task not in by_spec:
                task, source = self._load_task(spec, managers, lm_eval)
                name = str(task.task_name)
                if name in sources and sources[name][1] != source:
                    first, where = sources[name]
                    raise ConfigError(
                        f"tasks {first.name!r} ({where}) and {spec.name!r} ({source}) both "
                        f"define lm-eval task {name!r}; lm-eval keys results by task name, so "
                        "both would get one task's scores: give the YAMLs distinct 'task:' "
                        "names")
                sources.setdefault(name, (spec, source))
                objects.setdefault(name, task)
                by_spec[spec.task] = name
            lm_name = by_spec[spec.task]
            resolved.append(self._resolve_metric(spec, lm_name, objects[lm_name]))
        for task in objects.values():
            self._apply_fewshot(task)
        return resolved, objects

    def _load_task(self, spec: HarnessTask, managers: list[Any], lm_eval: Any
                   ) -> tuple[Any, str]:
        """The lm-eval task object of ``spec`` and the YAML file that defines it."""
        from lm_eval.tasks import TaskManager

        is_file = spec.task.endswith((".yaml", ".yml"))
        if is_file and not Path(spec.task).expanduser().is_file():
            raise ConfigError(f"task {spec.name!r}: task YAML {spec.task} not found (check "
                              "the path; relative paths are read from the working folder)")
        task_path = str(Path(spec.task).expanduser().resolve()) if is_file else spec.task
        tm = managers[0]
        if not is_file and task_path not in tm.all_tasks:
            if len(managers) == 1:
                managers.append(TaskManager(include_path=self._include or None,
                                            include_defaults=True))
            tm = managers[1]
            if task_path not in tm.all_tasks:
                near = difflib.get_close_matches(spec.task, tm.all_tasks, n=3)
                looked = [str(Path(lm_eval.__file__).parent / "tasks"), *self._include]
                hint = f"; closest: {', '.join(near)}" if near else ""
                raise ConfigError(
                    f"task {spec.name!r}: lm-eval knows no task, group or tag {spec.task!r} "
                    f"(looked in {', '.join(looked)}: {len(tm.all_tasks)} names{hint}); for "
                    "your own task, put its YAML in a folder and set include_path: <folder>, "
                    "or give the YAML's path")
        if task_path in tm.all_groups or task_path in tm.all_tags:
            # Refused before lm-eval builds (and downloads) every member.
            raise ConfigError(self._not_a_task(spec, _members(tm, task_path)))
        try:
            loaded = tm.load([task_path])
        except Exception as exc:  # lm-eval raises many kinds; one line each
            raise ConfigError(self._build_failure(spec, exc)) from None
        tasks, groups = loaded.get("tasks", {}), loaded.get("groups", {})
        if groups or len(tasks) != 1:  # a YAML file that defines a group
            raise ConfigError(self._not_a_task(spec, list(tasks)))
        entry = None if is_file else tm.task_index.get(task_path)
        yaml_path = getattr(entry, "yaml_path", None)
        source = str(Path(yaml_path).resolve()) if yaml_path else task_path
        return next(iter(tasks.values())), source

    @staticmethod
    def _not_a_task(spec: HarnessTask, members: list[str]) -> str:
        listed = ", ".join(members[:4]) + (", ..." if len(members) > 4 else "")
        return (f"task {spec.name!r}: {spec.task!r} is an lm-eval group or tag of "
                f"{len(members)} tasks ({listed}); mapframe scores one metric per task: list "
                "the tasks you want as separate entries")

    @staticmethod
    def _build_failure(spec: HarnessTask, exc: Exception) -> str:
        text = " ".join(str(exc).split())[:300]
        hint = ""
        if "offline" in text.lower() or "connect" in text.lower():
            hint = ("; offline (HF_DATASETS_OFFLINE=1), a task reads only datasets already in "
                    "the Hugging Face cache or local files (dataset_path: json, dataset_kwargs: "
                    "{data_files: ...})")
        return (f"task {spec.name!r}: lm-eval could not build task {spec.task!r} "
                f"({type(exc).__name__}: {text}){hint}")

    @staticmethod
    def _resolve_metric(spec: HarnessTask, lm_name: str, task: Any) -> _Resolved:
        hib: dict[str, Any] = dict(task.higher_is_better() or {})
        metrics = list(hib)
        filters = [str(f["name"]) for f in (task.config.filter_list or [])
                   if isinstance(f, Mapping) and "name" in f] or ["none"]
        produced = ", ".join(metrics) + (f" (filters: {', '.join(filters)})"
                                         if filters != ["none"] else "")
        if not metrics:
            raise ConfigError(f"task {spec.name!r}: lm-eval task {lm_name!r} defines no "
                              "metric")
        metric, _, filt = (spec.metric or metrics[0]).partition(",")
        filt = filt or filters[0]
        if metric not in hib:
            raise ConfigError(f"task {spec.name!r}: lm-eval task {lm_name!r} does not produce "
                              f"metric {metric!r}; it produces {produced}")
        if filt not in filters:
            raise ConfigError(f"task {spec.name!r}: lm-eval task {lm_name!r} has no filter "
                              f"{filt!r}; its metrics are {produced}")
        higher = hib[metric]
        if higher is None:
            if spec.direction is None:
                raise ConfigError(
                    f"task {spec.name!r}: lm-eval does not say whether {metric!r} is better "
                    "higher or lower (no higher_is_better); set direction: max or min")
            direction = spec.direction
        else:
            direction = "max" if higher else "min"
            if spec.direction is not None and spec.direction != direction:
                raise ConfigError(
                    f"task {spec.name!r}: direction {spec.direction} contradicts lm-eval's "
                    f"higher_is_better: {bool(higher)} for {metric!r}; remove direction")
        lo, hi = spec.range or metric_range(metric)
        return _Resolved(spec, lm_name, f"{metric},{filt}", Task(spec.name, direction, lo, hi))

    def _apply_fewshot(self, task: Any) -> None:
        # simple_evaluate's rule: num_fewshot overrides a task's own, except a task that
        # fixes 0; a task without one gets 0.
        own = task.get_config("num_fewshot")
        if self._num_fewshot is not None:
            if own != 0:
                task.set_config(key="num_fewshot", value=self._num_fewshot)
        elif own is None:
            task.set_config(key="num_fewshot", value=0)

    # -- setup -------------------------------------------------------------------------------

    def _ensure_lm_tasks(self) -> dict[str, Any]:
        """The lm-eval task objects: those :attr:`tasks` built, or (in a worker that
        received this evaluator pickled, without them) built again and checked to resolve
        to the same metrics."""
        resolved = self._resolve()
        if self._lm_tasks is None:
            again, self._lm_tasks = self._build_tasks()
            if [(r.lm_task, r.key) for r in again] != [(r.lm_task, r.key) for r in resolved]:
                raise ConfigError("evaluator 'lm_eval': the lm-eval tasks resolve to other "
                                  "metrics here than where the study started (another "
                                  "lm-eval version or task YAML?)")
        return self._lm_tasks

    def build_model(self) -> torch.nn.Module:
        """The pretrained causal LM on the evaluator's device, in its dtype, wrapped once in
        lm-eval's ``HFLM`` (every merge overwrites its weights); the lm-eval tasks are built
        first unless :attr:`tasks` already built them."""
        self._ensure_lm_tasks()
        model = self.load_causal_lm(self._attn)
        from lm_eval.models.huggingface import HFLM

        # Wrapped before the merged tensors are bound: HFLM ties weights on construction.
        # Its warnings that a model object ignores loading arguments do not apply here.
        with _quiet("lm_eval", logging.ERROR):
            self._hflm = HFLM(pretrained=model, tokenizer=self._tokenizer, backend="causal",
                              batch_size=self.batch_size, max_length=self._lm_max_length,
                              trust_remote_code=self._trust_remote_code)
        return model  # type: ignore[no-any-return]

    def prepare(self) -> None:
        """Check that the tokenizer fits the model (lm-eval would fail at the first
        evaluation with an IndexError): every id it has must be an embedding row."""
        self.check_token_id(len(self._tokenizer) - 1,
                            f"evaluator {self.name!r}: the tokenizer has token ids up to")

    @property
    def lm(self) -> Any:
        """The ``HFLM`` around the resident model (after :meth:`setup`)."""
        if self._hflm is None:
            raise ConfigError("evaluator 'lm_eval' was used before setup(merger)")
        return self._hflm

    # -- evaluation --------------------------------------------------------------------------

    def run_harness(self, lm_tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """lm-eval's results (``{task: {"metric,filter": value}}``) of the model as it is now
        on the lm-eval tasks ``lm_tasks``: ``lm_eval.evaluator.evaluate`` with this
        evaluator's settings and ``simple_evaluate``'s default seeds."""
        from lm_eval.evaluator import evaluate

        objects = self._ensure_lm_tasks()
        chosen = {n: objects[n] for n in lm_tasks}
        for task in chosen.values():
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
        with _seeded_and_quiet(self.model_device()):
            out = evaluate(lm=self.lm, task_dict={"tasks": chosen, "groups": {},
                                                  "group_map": {}},
                           limit=self._limit, bootstrap_iters=0, log_samples=False,
                           system_instruction=self._system,
                           apply_chat_template=self._chat,
                           fewshot_as_multiturn=self._multiturn)
        return dict((out or {}).get("results", {}))

    def score_tasks(self, model: torch.nn.Module, tasks: Sequence[int]) -> list[float]:
        """Run lm-eval once on the lm-eval tasks behind ``tasks`` (a task read by several
        objectives runs once) and read each objective's metric; NaN where lm-eval gives
        none."""
        import time

        t0 = time.perf_counter()
        resolved = self._resolve()
        chosen = [resolved[i] for i in tasks]
        results = self.run_harness(list(dict.fromkeys(r.lm_task for r in chosen)))
        scores = []
        for r in chosen:
            value = results.get(r.lm_task, {}).get(r.key)
            try:
                x = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                x = math.nan
            scores.append(x if math.isfinite(x) else math.nan)
        self._timings["score_s"] += time.perf_counter() - t0
        return scores

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """The metric of objective ``task`` for the model as it is now."""
        return self.score_tasks(model, [task])[0]

    def close(self) -> None:
        """Drop the ``HFLM`` wrapper, the model and the checkpoint files."""
        self._hflm = None
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        # lm-eval's task objects (datasets) and the wrapped model stay in this process; a
        # worker rebuilds them in setup().
        state = dict(self.__dict__)
        state["_lm_tasks"] = None
        state["_hflm"] = None
        return state
