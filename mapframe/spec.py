"""One validated description of a study: :class:`StudySpec`.

Every setting of a study is declared and checked here, once, whatever it comes from:
:class:`~mapframe.study.MergeStudy`'s keyword arguments (:meth:`StudySpec.from_kwargs`), a
YAML file (:meth:`StudySpec.from_config`, via :mod:`mapframe.config`), or Nested MAP
(:class:`~mapframe.nested.NestedMergeStudy`, a spec with :attr:`StudySpec.nested` set). The
spec holds settings and *component specs* (a registry name, ``{"name": ..., **params}`` or an
instance); building the components from them and checking them against each other (budget
against the surrogate's size, preference against the task count) is
:mod:`mapframe.assembly`'s job.

A bad value is a one-line :class:`~mapframe.errors.ConfigError` naming the field as the
source spells it (``budget`` for a keyword argument, ``study.budget`` in a YAML file), what
it must be, and what it was; an unknown field says "did you mean" the closest known one.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from mapframe.errors import ConfigError
from mapframe.plugin.kinds import COMPONENT_KINDS, kind_named
from mapframe.problem import as_tasks, refuse_a_string_of_names, unquoted_name_hint
from mapframe.settings import refuse_number_string

__all__ = [
    "CHECKPOINT_KEYS",
    "NESTED_KEYS",
    "STUDY_KEYS",
    "TOP_LEVEL_KEYS",
    "CheckpointsSpec",
    "NestedSpec",
    "StudySpec",
    "check_preference",
    "check_preference_bounds",
    "unknown_field",
]


class _Invalid(ValueError):
    """A field's problem; ``{loc}`` in the text is replaced by the field as the source
    spells it."""


def unknown_field(key: str, allowed: Mapping[str, Any] | set[str] | frozenset[str] | Sequence[str],
                  where: str) -> ConfigError:
    """The one-line error for an unknown field, with the closest known one."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown field {key!r} in {where}{hint} (allowed: {', '.join(sorted(allowed))})"
    )


def _misplaced(key: str, where: str) -> ConfigError | None:
    """The one-line error for a known field in the wrong section (``seed`` at the top level,
    ``sampler`` under ``study``, ``pair_budget`` under ``study``), or ``None``."""
    if where == "nested" and key == "budget":
        return None  # a pair's budget: unknown_field suggests pair_budget
    sections = {"top": (TOP_LEVEL_KEYS, "at the top level of the config"),
                "study": (STUDY_KEYS, "under study"), "nested": (NESTED_KEYS, "under nested")}
    for name, (keys, place) in sections.items():
        if name != where and key in keys and key not in ("study", "nested"):
            here = "at the top level" if where == "top" else f"under {where}"
            return ConfigError(f"{key!r} is not a field {here}: it belongs {place}; move it "
                               "there")
    return None


# -- field checks (each raises _Invalid with the message; "{loc}" names the field) ---------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _no_number_strings(v: Any, what: str) -> None:
    """Raise ``_Invalid`` ("{loc} must be <what>, got the string '1e-6' (YAML reads ...)")
    when ``v``, or an item of ``v`` at any depth, is a string that reads as a number: a number
    field never converts a string (:func:`~mapframe.settings.refuse_number_string`)."""
    try:
        _refuse_number_strings(v, "{loc}", what)
    except ConfigError as exc:
        raise _Invalid(str(exc)) from None


def _refuse_number_strings(v: Any, name: str, what: str) -> None:
    """:func:`~mapframe.settings.refuse_number_string` for ``v`` and each item of ``v`` at
    any depth."""
    if isinstance(v, (Sequence, np.ndarray)) and not isinstance(v, (str, bytes)):
        for x in v:
            _refuse_number_strings(x, name, what)
    else:
        refuse_number_string(v, name, what=what)


def _int(minimum: int | None, what: str, optional: bool = False,
         maximum: int | None = None) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        if v is None and optional:
            return None
        _no_number_strings(v, f"int{' or null' if optional else ''}")
        if not _is_int(v):
            raise _Invalid(f"{{loc}} must be int{' or null' if optional else ''}, got {v!r}")
        if minimum is not None and v < minimum:
            raise _Invalid(f"{{loc}} must be {what}, got {v!r}")
        if maximum is not None and v > maximum:
            raise _Invalid(f"{{loc}} must be at most {maximum:,}, got {v!r}")
        return int(v)
    return check


#: The most evaluations a study (or a Nested MAP pair) may be given: its samplers lay out
#: every point up front, and far fewer model evaluations than this fill any front.
MAX_BUDGET = 10_000_000


def _component(v: Any) -> Any:
    if isinstance(v, str):
        if not v:
            raise _Invalid("{loc}: expected a component name or a mapping with 'name', got ''")
        return v
    if isinstance(v, Mapping):
        if not isinstance(v.get("name"), str):
            raise _Invalid("{loc}: a component mapping needs 'name: <component name>'")
        return dict(v)
    if isinstance(v, (bool, int, float, list, tuple)) or v is None:
        raise _Invalid(f"{{loc}}: expected a component name or a mapping with 'name', got "
                       f"{v!r}")
    return v  # an instance (or class): the registry checks its kind


def _optional_component(v: Any) -> Any:
    return None if v is None else _component(v)


def _home(path: str) -> str:
    """``path`` with a leading ``~`` expanded, as a shell and the YAML config do (from
    Python it was a folder named ``~`` in the working directory)."""
    return os.path.expanduser(path) if path.startswith("~") else path


def _storage(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, os.PathLike):  # a path, never a store name: Path("memory") is a file
        return {"name": "sqlite", "path": _home(os.fspath(v))}
    if isinstance(v, str):
        _refuse_a_store_name_typo(v)
        v = _home(v)
    if isinstance(v, Mapping) and isinstance(v.get("path"), (str, os.PathLike)):
        v = {**v, "path": _home(os.fspath(v["path"]))}
    return _component(v)


def _refuse_a_store_name_typo(storage: str) -> None:
    """Raise ``_Invalid`` for a bare name (no suffix, no folder) close to a store's name:
    ``memroy`` would otherwise be an SQLite file named ``memroy``."""
    if not storage or _is_store_name(storage) or any(ch in storage for ch in "./\\"):
        return
    from mapframe.plugin import get_registry

    close = difflib.get_close_matches(storage, get_registry().names("storage"), n=1,
                                      cutoff=0.75)
    if close:
        raise _Invalid(f"{{loc}}: {storage!r} names no store: did you mean {close[0]!r}? (a "
                       "file path needs a suffix such as .sqlite or a directory part)")


def _numbers(v: Any) -> list[float] | None:
    if v is None:
        return None
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
        raise _Invalid(f"{{loc}} must be list, got {v!r}")
    if _holds_bool(v):
        raise _Invalid(f"{{loc}} must be a list of numbers, got {v!r}")
    _no_number_strings(v, "a list of numbers")
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise _Invalid(f"{{loc}} must be a list of numbers, got {v!r}") from None
    if arr.ndim != 1:  # [[0.5], [0.5]] is not a weight per task
        raise _Invalid(f"{{loc}} must be a flat list of numbers, got {v!r}")
    return [float(x) for x in arr]


def _bounds(v: Any) -> Any:
    if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, (Sequence, np.ndarray)):
        raise _Invalid(f"{{loc}} must be list, got {v!r}")
    if _holds_bool(v):  # [false, true] is not the box [0, 1]
        raise _Invalid(f"{{loc}} must hold numbers, not true/false, got {v!r}")
    _no_number_strings(v, "a [low, high] pair of numbers or one pair per coefficient")
    return v


def _holds_bool(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype == bool
    if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        return any(_holds_bool(x) for x in v)
    return False


def _on_error(v: Any) -> str:
    if v not in ("raise", "record"):
        raise _Invalid(f"{{loc}} must be 'raise' or 'record', got {v!r}")
    return str(v)


def _name(v: Any) -> str:
    """A study name: also the results folder's name (``results/<name>``) where no output is
    given, so it must not leave that folder or be no name at all."""
    if not isinstance(v, str) or not v:
        raise _Invalid(f"{{loc}} must be a non-empty string, got {v!r}")
    if any(ord(ch) < 32 for ch in v):
        raise _Invalid(f"{{loc}} must not contain control characters, got {v!r}; use "
                       "letters, digits, '-', '_' or '.'")
    parts = v.replace("\\", "/").split("/")
    if os.path.isabs(v) or v.startswith(("/", "\\")) or any(p in (".", "..") for p in parts):
        raise _Invalid(f"{{loc}} must not be a path ('.', '..' or absolute), got {v!r}: it "
                       "names the results folder results/<name>; give a plain name (and "
                       "study.output for where the results go)")
    return v


def _optional_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, os.PathLike):
        return _home(os.fspath(v))
    if not isinstance(v, str) or not v:
        raise _Invalid(f"{{loc}} must be a non-empty string (a path), got {v!r}")
    return _home(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"{{loc}} must be true or false, got {v!r}")
    return v


def _path(v: Any) -> str:
    if isinstance(v, os.PathLike):
        return _home(os.fspath(v))
    if not isinstance(v, str) or not v:
        raise _Invalid(f"{{loc}} must be a path string, got {v!r}")
    return _home(v)


def _finetuned(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not v:
        raise _Invalid("{loc} must map each task name to its fine-tuned checkpoint path")
    out: dict[str, str] = {}
    for k, p in v.items():
        if not isinstance(k, str) or not k:
            raise _Invalid(f"{{loc}} keys must be task names (strings), got {k!r}"
                           f"{unquoted_name_hint(k)}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in k):
            # the name goes into the mergekit YAML, the model card and safetensors metadata
            raise _Invalid(f"{{loc}} key {k!r} holds a control character (a newline, tab, "
                           "...); name the checkpoint without one")
        if not isinstance(p, (str, os.PathLike)) or not os.fspath(p):
            raise _Invalid(f"{{loc}}.{k} must be a path string, got {p!r}")
        out[str(k)] = _home(os.fspath(p))
    return out


def _default(kind: str) -> str:
    """The default component of ``kind``, from the kinds table."""
    default = kind_named(kind).default
    assert default is not None
    return default


def _fingerprint_mode(v: Any) -> str:
    if v not in ("stat", "hash"):
        raise _Invalid(f"{{loc}} must be 'stat' (size and modification time) or 'hash' "
                       f"(contents), got {v!r}")
    return str(v)


Component = Annotated[Any, BeforeValidator(_component)]
OptionalComponent = Annotated[Any, BeforeValidator(_optional_component)]


# -- the spec --------------------------------------------------------------------------------
class CheckpointsSpec(BaseModel):
    """The pretrained checkpoint and one fine-tuned checkpoint per task (paths)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pretrained: Annotated[str, BeforeValidator(_path)]
    finetuned: Annotated[dict[str, str], BeforeValidator(_finetuned)]
    allow_pickle: Annotated[bool, BeforeValidator(_bool)] = False
    #: How the files are known in the study's fingerprint: ``stat`` (size and modification
    #: time) or ``hash`` (their contents).
    fingerprint: Annotated[str, BeforeValidator(_fingerprint_mode)] = "stat"

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if isinstance(data, CheckpointsSpec):
            return data.model_dump()
        if not isinstance(data, Mapping):
            raise _Invalid("{loc} must be a mapping with keys 'pretrained' (a path) and "
                           "'finetuned' ({task: path})")
        for key in data:
            if key not in CHECKPOINT_KEYS:
                raise _Raise(unknown_field(str(key), CHECKPOINT_KEYS, "checkpoints"))
        if "pretrained" not in data or "finetuned" not in data:
            raise _Invalid("{loc} needs both 'pretrained: <path>' and 'finetuned: {task: "
                           "<path>, ...}'")
        return data


class NestedSpec(BaseModel):
    """Nested MAP's settings: evaluations per pair and the pairing rule."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    pair_budget: Annotated[int, BeforeValidator(_int(
        1, "a positive integer", maximum=MAX_BUDGET))] = 20
    pairing: Component = _default("pairing")


class StudySpec(BaseModel):
    """Everything that describes a study, validated. Immutable; build one with
    :meth:`from_kwargs` (what :class:`~mapframe.study.MergeStudy` does) or
    :meth:`from_config` (a YAML mapping), or directly with keyword arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: Field name -> the name a YAML file gives it under ``study:`` (the rest are top-level).
    YAML_STUDY_FIELDS: ClassVar[dict[str, str]] = {
        "study_name": "name", "budget": "budget", "seed": "seed", "output": "output",
        "storage": "storage", "search_bounds": "search_bounds",
        "n_coefficients": "n_coefficients", "verify": "verify", "preference": "preference",
        "on_error": "on_error", "export": "export",
    }

    evaluator: Component
    merge_strategy: Component = _default("merge_strategy")
    checkpoints: CheckpointsSpec | None = None
    task_vectors: Any = None
    sampler: Component = _default("sampler")
    surrogate: Component = _default("surrogate")
    front_solver: Component = _default("front_solver")
    executor: Component = _default("executor")
    stopping: OptionalComponent = None
    storage: Annotated[Any, BeforeValidator(_storage)] = None
    study_name: Annotated[str, BeforeValidator(_name)] = "study"
    budget: Annotated[int, BeforeValidator(_int(
        1, "a positive integer", maximum=MAX_BUDGET))] = 30
    seed: Annotated[int | None, BeforeValidator(
        _int(0, "a non-negative integer", optional=True))] = 0
    search_bounds: Annotated[Any, BeforeValidator(_bounds)] = (0.0, 1.0)
    n_coefficients: Annotated[int | None, BeforeValidator(
        _int(1, ">= 1", optional=True))] = None
    verify: Annotated[int, BeforeValidator(_int(0, "a non-negative integer"))] = 0
    preference: Annotated[list[float] | None, BeforeValidator(_numbers)] = None
    preference_bounds: Any = None
    on_error: Annotated[str, BeforeValidator(_on_error)] = "raise"
    #: Run options (the CLI's): the results folder and whether to export the selected model.
    output: Annotated[str | None, BeforeValidator(_optional_str)] = None
    export: Annotated[bool, BeforeValidator(_bool)] = False
    #: Set for Nested MAP.
    nested: NestedSpec | None = None

    @model_validator(mode="after")
    def _nested_rules(self) -> StudySpec:
        if self.nested is None:
            return self
        if self.stopping is not None:
            raise _Invalid("stopping does not apply to nested merging (each pair spends "
                           "nested.pair_budget)")
        if self.preference is None:
            raise _Invalid("nested merging needs study.preference: one weight per task "
                           "(it builds one merged model for that preference)")
        if self.verify < 1:
            raise _Invalid(
                f"verify must be an integer >= 1 for nested merging (the chosen point of "
                f"every pair is evaluated for real), got {self.verify!r}")
        return self

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def build(cls, where: Callable[[str], str] | None = None, **fields: Any) -> StudySpec:
        """``StudySpec(**fields)`` with pydantic's errors turned into one-line
        :class:`~mapframe.errors.ConfigError`\\ s; ``where(field)`` spells a field's name as
        the source does (default: the field name)."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise _config_error(exc, where or (lambda f: f)) from None

    @classmethod
    def from_kwargs(
        cls,
        objective: Callable[[np.ndarray], Any] | None = None,
        task_names: Sequence[str] | None = None,
        *,
        tasks: Sequence[Any] | None = None,
        directions: Sequence[str] | str | None = None,
        metric_ranges: Sequence[tuple[float, float] | None] | None = None,
        evaluator: Any = None,
        allow_pickle: bool = False,
        checkpoints: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> StudySpec:
        """The spec of ``MergeStudy(...)``'s keyword arguments: a black-box ``objective``
        (with ``task_names``/``tasks``, ``directions``, ``metric_ranges``) becomes a
        ``callable`` evaluator; ``allow_pickle`` joins ``checkpoints``."""
        if (objective is None) == (evaluator is None):
            raise ConfigError(
                "give exactly one of objective= (a function of coefficients) or evaluator= "
                "(a component that merges and evaluates models)"
            )
        refuse_a_string_of_names(task_names=task_names, tasks=tasks)  # before list(...)
        if objective is not None:
            if task_names is None and tasks is None:
                raise ConfigError("objective= needs task_names=[...] naming its T metrics")
            from mapframe.evaluators.callable import CallableEvaluator

            # the evaluator calls them ranges: check them first under the keyword's name
            items = tasks if tasks is not None else list(task_names or [])
            as_tasks(tasks=items, directions=directions, ranges=metric_ranges,
                     ranges_name="metric_ranges")
            evaluator = CallableEvaluator(objective, items, directions=directions,
                                          ranges=metric_ranges)
        elif task_names is not None or tasks is not None or directions is not None:
            raise ConfigError(
                "with evaluator=, the evaluator defines the tasks; drop task_names=, tasks= "
                "and directions="
            )
        if checkpoints is not None:
            if not isinstance(checkpoints, Mapping) or set(checkpoints) - {
                    "pretrained", "finetuned", "fingerprint"}:
                raise ConfigError(
                    "checkpoints must be a mapping with keys 'pretrained' (a path) and "
                    "'finetuned' ({task: path})")
            checkpoints = {**checkpoints, "allow_pickle": allow_pickle}
        if checkpoints is not None and fields.get("task_vectors") is not None:
            raise ConfigError("give checkpoints= or task_vectors=, not both")
        return cls.build(evaluator=evaluator, checkpoints=checkpoints, **fields)

    @classmethod
    def from_config(cls, data: Any, base_dir: str | os.PathLike[str] = ".",
                    source: str = "config", **study_overrides: Any) -> StudySpec:
        """The spec of a YAML config mapping; relative paths are resolved against
        ``base_dir`` (the file's folder). ``study_overrides`` replace ``study:`` fields
        (the CLI's ``--budget``, ``--seed``, ``--output``)."""
        base = Path(base_dir)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the config must be a mapping of fields, got "
                              f"{type(data).__name__}")
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                raise _misplaced(str(key), "top") or unknown_field(str(key), TOP_LEVEL_KEYS,
                                                                   source)
        if "evaluator" not in data:
            raise ConfigError(f"{source}: missing required field 'evaluator' (e.g. evaluator: "
                              "{name: digits, tasks: [rot90, flip]})")
        study = data.get("study") or {}
        if not isinstance(study, Mapping):
            raise ConfigError(f"{source}: 'study' must be a mapping")
        yaml_to_field = {y: f for f, y in cls.YAML_STUDY_FIELDS.items()}
        fields: dict[str, Any] = {}
        for key, value in study.items():
            if key not in yaml_to_field:
                raise _misplaced(str(key), "study") or unknown_field(str(key), STUDY_KEYS,
                                                                     "study")
            fields[yaml_to_field[key]] = value
        for key, value in study_overrides.items():
            if value is not None:
                fields[yaml_to_field.get(key, key)] = value
        for kind in COMPONENT_KINDS:
            if kind.config_key in data and kind.config_key in cls.model_fields:
                fields[kind.config_key] = data[kind.config_key]
        if "checkpoints" in data:
            ck = data["checkpoints"]
            if isinstance(ck, Mapping):
                ck = {**ck}
                for key in ("pretrained",):
                    if isinstance(ck.get(key), str) and ck[key]:
                        ck[key] = _resolve(ck[key], base)
                if isinstance(ck.get("finetuned"), Mapping):
                    ck["finetuned"] = {k: _resolve(v, base) if isinstance(v, str) and v else v
                                       for k, v in ck["finetuned"].items()}
            fields["checkpoints"] = ck
        if "nested" in data:
            nested = data["nested"] if data["nested"] is not None else {}
            if not isinstance(nested, Mapping):
                raise ConfigError("nested must be a mapping, e.g. nested: {pair_budget: 20, "
                                  "pairing: cosine}")
            for key in nested:
                if key not in NESTED_KEYS:
                    raise _misplaced(str(key), "nested") or unknown_field(str(key), NESTED_KEYS,
                                                                          "nested")
            for key, why in (("budget", "set nested.pair_budget (evaluations per pair) "
                                        "instead"),
                             ("n_coefficients", "nested merging has one model per task")):
                if key in fields:
                    raise ConfigError(f"study.{key} does not apply to nested merging: {why}")
            fields["nested"] = dict(nested)
            fields.setdefault("study_name", "nested")
            fields.setdefault("verify", 1)
        if isinstance(fields.get("output"), str) and fields["output"]:
            fields["output"] = _resolve(fields["output"], base)
        storage = fields.get("storage")
        if isinstance(storage, str) and storage and not _is_store_name(storage):
            try:
                _refuse_a_store_name_typo(storage)  # before it becomes an absolute path
            except _Invalid as exc:
                raise ConfigError(str(exc).replace("{loc}", "study.storage")) from None
            fields["storage"] = _resolve(storage, base)
        elif isinstance(storage, Mapping) and isinstance(storage.get("path"), str):
            fields["storage"] = {**storage, "path": _resolve(storage["path"], base)}
        return cls.build(where=_yaml_location, **fields)

    # -- reading ----------------------------------------------------------------------------
    @property
    def is_nested(self) -> bool:
        return self.nested is not None

    def results_folder(self) -> str:
        """Where the CLI writes results: ``output``, else ``results/<study name>``."""
        return self.output or os.path.join("results", self.study_name)

    def storage_spec(self) -> Any:
        """The store as a component spec: ``memory`` when none is given, a path (one that
        names no registered store) as SQLite at that path."""
        storage = self.storage
        if storage is None:
            return _default("storage")
        if isinstance(storage, str) and not _is_store_name(storage):
            return {"name": "sqlite", "path": storage}
        return storage

    def to_config(self) -> dict[str, Any]:
        """The spec as a config mapping in the YAML layout (components as given)."""
        cfg: dict[str, Any] = {"evaluator": self.evaluator}
        for kind in COMPONENT_KINDS:
            key = kind.config_key
            if key in ("evaluator", "storage") or key not in type(self).model_fields:
                continue
            value = getattr(self, key)
            if value is not None:
                cfg[key] = value
        study: dict[str, Any] = {}
        for field, yaml_name in self.YAML_STUDY_FIELDS.items():
            value = getattr(self, field)
            if field in self.model_fields_set or (value is not None and field in (
                    "output", "storage")):
                study[yaml_name] = value
        cfg["study"] = study
        if self.checkpoints is not None:
            cfg["checkpoints"] = self.checkpoints.model_dump()
        if self.nested is not None:
            cfg["nested"] = self.nested.model_dump()
        return cfg


#: The YAML file's top-level fields: the component kinds' config keys (storage lives under
#: ``study``) and the sections.
TOP_LEVEL_KEYS: dict[str, str] = {
    "study": "study settings (name, budget, seed, output, storage, ...)",
    **{k.config_key: f"the {k.title} component ({k.default_text})" for k in COMPONENT_KINDS
       if k.config_key in StudySpec.model_fields and k.config_key != "storage"},
    "checkpoints": "pretrained and fine-tuned checkpoint paths",
    "nested": "Nested MAP: merge in pairs for study.preference (pair_budget, pairing)",
    "mergekit": "a mergekit config (a path or inline): base_model, models, merge_method",
}
#: The ``study:`` section's fields and what each holds.
STUDY_KEYS: dict[str, str] = {
    "name": "the study's name in the store (default study; nested)",
    "budget": "search evaluations (a positive integer, default 30)",
    "seed": "random seed (an integer, or null for a fresh one)",
    "output": "results folder (default results/<name>)",
    "storage": "the store: a path (SQLite), a store name, or a store mapping",
    "search_bounds": "the coefficient box: [low, high], or one pair per coefficient",
    "n_coefficients": "coefficients for a black-box objective (default: one per task)",
    "verify": "front points evaluated for real after the solve",
    "preference": "one weight per task: select (and export) the merge for it",
    "on_error": "raise (stop at a failing evaluation) or record (skip it)",
    "export": "write the selected merged model to the results folder",
}
NESTED_KEYS: dict[str, str] = {"pair_budget": "evaluations per pair (default 20)",
                               "pairing": "pairing strategy component (default cosine)"}
CHECKPOINT_KEYS: frozenset[str] = frozenset(CheckpointsSpec.model_fields)


class _Raise(ValueError):
    """Carries a ready :class:`ConfigError` through pydantic."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


def _yaml_location(field: str) -> str:
    if field in StudySpec.YAML_STUDY_FIELDS:
        return f"study.{StudySpec.YAML_STUDY_FIELDS[field]}"
    return field


def _config_error(exc: ValidationError, where: Callable[[str], str]) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    name = ".".join([where(loc[0]), *loc[1:]]) if loc else ""
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Raise):
        return cause.error
    if isinstance(cause, _Invalid):
        return ConfigError(str(cause).replace("{loc}", name))
    if err["type"] == "extra_forbidden":
        return unknown_field(loc[-1], StudySpec.model_fields, "the study's settings")
    if err["type"] == "missing":
        return ConfigError(f"missing required field {name!r}")
    return ConfigError(f"{name}: {err['msg']}, got {err.get('input')!r}")


def _resolve(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base / p)


def _is_store_name(name: str) -> bool:
    from mapframe.plugin import get_registry

    return name in get_registry().names("storage")


# -- checks that need the task count (run when the components exist) ----------------------
def check_preference(preference: Sequence[float], n: int) -> np.ndarray:
    """``preference`` as ``n`` non-negative weights summing to 1 (a one-line
    :class:`~mapframe.errors.ConfigError` otherwise)."""
    _refuse_number_strings(preference, "preference", f"{n} numbers")
    try:
        p = np.asarray(preference, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"preference must be {n} numbers, got {preference!r}") from None
    if p.size != n:
        raise ConfigError(f"preference has {p.size} weights for {n} tasks; give one per task")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.any(p > 0):
        raise ConfigError(
            f"preference weights must be finite, non-negative and not all zero, got {p.tolist()}"
        )
    p = p / p.max()  # first, so that the sum of huge weights (1e308) cannot overflow
    return p / p.sum()


def check_preference_bounds(
    bounds: tuple[Sequence[float], Sequence[float]] | None, n: int
) -> tuple[list[float], list[float]] | None:
    """``(lower, upper)`` metric bounds for preference scoring, ``n`` finite numbers each
    with lower < upper, or ``None``."""
    if bounds is None:
        return None
    _refuse_number_strings(bounds, "preference_bounds",
                           f"(lower, upper) with {n} numbers each")
    try:
        lo, hi = (np.asarray(b, dtype=float).reshape(-1) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(
            f"preference_bounds must be (lower, upper) with {n} numbers each, got {bounds!r}"
        ) from None
    if lo.size != n or hi.size != n or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
                                             and np.all(lo < hi)):
        raise ConfigError(
            f"preference_bounds must be (lower, upper) with {n} finite numbers each and "
            f"lower < upper, got {bounds!r}"
        )
    return lo.tolist(), hi.tolist()
