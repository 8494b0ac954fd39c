"""The ``mapframe`` command line: ``run``, ``example`` and ``plugins``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mapframe._version import __version__
from mapframe.errors import ConfigError, MapframeError
from mapframe.progress import ProgressDisplay

__all__ = ["main"]

DESCRIPTION = """\
mapframe finds the Pareto front of model merges with MAP: it evaluates a few dozen merges
theta0 + sum_i c_i tau_i, fits one quadratic surrogate per task, solves the multi-objective
problem on the surrogates, and writes the whole trade-off front (and, for a preference, the
merged model) to a results folder.

Evaluations are stored in SQLite as they finish; re-running the same command resumes an
interrupted study without redoing finished evaluations.
"""


#: The progress display (kept under its old name for scripts that import it).
Progress = ProgressDisplay


def _print_summary(result: Any, paths: dict[str, Path], out: TextIO) -> None:
    s = result.summary()
    n_ver = (s["verification"] or {}).get("n_verified", 0)
    out.write(f"\nstudy {s['study']!r}: {s['n_search_evaluations']} search + {n_ver} "
              "verification evaluations "
              f"({s['n_evaluated_this_run']} new this run, {s['n_reused_from_store']} reused "
              f"from the store, {s['n_failed_or_invalid']} failed/invalid; seed "
              f"{s.get('seed')})\n")
    if s.get("stopped_early"):
        out.write(f"stopped early: {s['stopped_early']}\n")
    if len(s.get("rounds") or []) > 1:
        prop = sum(r["propose_s"] for r in s["rounds"])
        out.write(f"sampling: {len(s['rounds'])} rounds, the sampler's own time {prop:.2f} s\n")
    out.write("surrogate fit per task (R2 / leave-one-out R2):\n")
    for task, d in s["surrogates"].items():
        r2, loo = d.get("r2"), d.get("loo_r2")
        out.write(f"  {task:20s} {r2 if r2 is None else f'{r2:.3f}'} / "
                  f"{loo if loo is None else f'{loo:.3f}'}  ({d.get('model', '')})\n")
    src = s.get("front_sources") or {}
    parts = ", ".join(f"{n} {k}" for k, n in src.items() if n)
    out.write(f"front: {s['front_size']} points" + (f" ({parts})" if parts else "") + "\n")
    ver = s["verification"]
    if ver and ver.get("mean_abs_error"):
        errs = ", ".join(f"{k} {v:.4f}" for k, v in ver["mean_abs_error"].items())
        # a verified point that a measurement beats leaves the front: count both
        out.write(f"verified {ver['n_verified']} predicted points "
                  f"({src.get('verified', 0)} remain on the front); mean |predicted - real| "
                  f"over the {ver['n_verified']}: {errs}\n")
    if s["selected"]:
        sel = s["selected"]
        out.write(f"selected for preference {s['preference']} ({sel.get('source')} point): "
                  + ", ".join(f"{k}={v:.4g}" for k, v in sel.items()
                              if k.startswith(("c_", "predicted_", "std_", "real_"))
                              and v is not None)
                  + "\n")
    for key, p in paths.items():
        out.write(f"  {key:16s} {p}\n")


def _print_nested_summary(result: Any, paths: dict[str, Path], out: TextIO) -> None:
    ev = result.evaluations
    out.write(f"\nnested study {result.study_name!r}: {len(result.pairs)} merges in "
              f"{len(result.rounds)} rounds (pairing {result.pairing}); "
              f"{ev['search_task_evaluations']} search task evaluations "
              f"({ev['search_model_evaluations']} merged models), "
              f"{ev['verify_model_evaluations']} verification and "
              f"{ev['extra_model_evaluations']} other model evaluations "
              f"({ev['new_this_run']} new this run, {ev['reused_from_store']} reused"
              f"{'' if result.seed is None else f'; seed {result.seed}'})\n")
    for r, recs in enumerate(result.rounds, 1):
        for p in recs:
            real = p.score("real")
            out.write(f"  round {r}: {p.left} x {p.right} -> coefficients "
                      f"({p.coefficients[0]:.3f}, {p.coefficients[1]:.3f}), pair score "
                      f"{'n/a' if real is None else f'{real:.4f}'}\n")
    metrics = ", ".join(f"{n}={v:.4g}" for n, v in zip(result.task_names,
                                                       result.final_metrics))
    out.write(f"final model: {metrics}; preference-weighted score {result.final_score:.4f}\n")
    if result.effective_coefficients:
        out.write("coefficients on the original task vectors: " + ", ".join(
            f"{k}={v:.3f}" for k, v in result.effective_coefficients.items()) + "\n")
    for key, p in paths.items():
        out.write(f"  {key:16s} {p}\n")


def _save_config(cfg: dict[str, Any], output: Path, source: Path | None,
                 overrides: dict[str, Any], store: str | None = None,
                 seed: int | None = None) -> Path | None:
    """Write the study's config (with the command line's overrides) to
    ``output/config.yaml``, so that ``mapframe export`` and ``mapframe.load_results`` can
    rebuild the merge later and ``mapframe run`` of it, from any folder, resumes the same
    study. The results folder is written as ``output: .`` and a store inside it (the
    default ``evaluations.sqlite``) relative to it, so that the folder still resumes its
    study after it is moved or copied (a config's relative paths are relative to the config
    file's folder); a store elsewhere is written as an absolute path (defaults included,
    which are relative to the folder the run started in), as is every other path (the
    checkpoints). Not over the config the study was started from. ``seed`` is the one the
    run used: a config's ``seed: null`` is saved as the seed drawn for it, so that the saved
    config repeats the run even without its store."""
    import yaml

    from mapframe.results import write_atomically

    path = output / "config.yaml"
    if source is not None and path.exists() and path.resolve() == source.resolve():
        return None
    study = {**cfg.get("study", {}), **{k: v for k, v in overrides.items()
                                         if v is not None}}
    study["output"] = "."
    if study.get("seed") is None and seed is not None:
        study["seed"] = seed
    if study.get("storage") is None and store is not None:
        study["storage"] = store if "://" in store else os.path.abspath(store)
    storage = study.get("storage")
    if isinstance(storage, str) and "://" not in storage and os.path.isabs(storage):
        study["storage"] = _inside(storage, output)
    elif isinstance(storage, dict) and isinstance(storage.get("path"), str) and (
            os.path.isabs(storage["path"])):
        study["storage"] = {**storage, "path": _inside(storage["path"], output)}
    return write_atomically(path, yaml.safe_dump({**cfg, "study": study}, sort_keys=False))


def _inside(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it (the folder's own store);
    else ``path`` as it is (absolute)."""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def _run_config(cfg: dict[str, Any], args: argparse.Namespace,
                source: Path | None = None) -> int:
    """``mapframe run`` of ``cfg``: a Ctrl-C or SIGTERM at any moment, from building the
    study to the last line of the summary, ends with a one-line message saying what is kept
    and what to run (exit status 130, or 143 for SIGTERM), never a traceback."""
    state: dict[str, Any] = {"stage": "prepare"}
    try:
        with _terminate_as_interrupt():
            return _run_config_stages(cfg, args, source, state)
    except (KeyboardInterrupt, _Terminated) as exc:
        sys.stderr.write(_interrupted_message(exc, state))
        return _interrupted_status(exc)


def _interrupted_status(exc: BaseException) -> int:
    return 143 if isinstance(exc, _Terminated) else 130


def _interrupted_message(exc: BaseException, state: dict[str, Any]) -> str:
    """The one line ``mapframe run`` prints when it is interrupted in ``state["stage"]``."""
    what = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
    study, stage = state.get("study"), state["stage"]
    where = "memory (nothing kept)"
    if study is not None:
        where = study.storage.location or where
    if stage == "prepare":
        return (f"\n{what} before the study started; nothing was evaluated: run the same "
                "command again to start it\n")
    if stage == "run":
        return (f"\n{what}; finished evaluations are stored in {where}; run the same command "
                "again to resume\n")
    if stage == "writing report.html":
        return (f"\n{what} while writing report.html; the other results are written: run "
                f"'mapframe report {state['output']}' to write it\n")
    if stage == "save":
        return (f"\n{what} while writing the results to {state['output']}; every evaluation "
                f"is stored in {where}: run the same command again to write them (nothing is "
                "evaluated again)\n")
    return (f"\n{what} while {stage}; the results are written to {state['output']} and every "
            f"evaluation is stored in {where}: run the same command again to finish (nothing "
            "is evaluated again)\n")


def _run_config_stages(cfg: dict[str, Any], args: argparse.Namespace, source: Path | None,
                       state: dict[str, Any]) -> int:
    """The stages of :func:`_run_config`, each named in ``state["stage"]`` as it begins."""
    from mapframe.config import build_study

    progress = Progress(quiet=args.quiet)
    overrides = {"budget": args.budget, "seed": args.seed,
                 "output": os.path.abspath(args.output) if args.output else None}
    study, options = build_study(cfg, **overrides)
    study.progress = progress
    output = Path(options["output"])
    state.update(study=study, output=output)
    _refuse_lost_store(study, output, source)
    # before any evaluation (and before the store is made there), not after the whole study
    _check_writable(output, _run_writes(study, output, source, bool(options["export"])))
    state["stage"] = "run"
    with _one_line_warnings():
        try:
            result = study.run()
        finally:
            progress.close()
    state["stage"] = "save"
    # the same one-line warnings (a missing matplotlib) as the run
    with _one_line_warnings():
        paths = result.save(output, plot=not args.no_plot)
    state["stage"] = "writing config.yaml"
    saved_cfg = _save_config(cfg, output, source, overrides, study.storage.location,
                             seed=getattr(result, "seed", None))
    if saved_cfg is not None:
        paths["config_yaml"] = saved_cfg
    from mapframe.nested import NestedResult

    if isinstance(result, NestedResult):
        if options["export"]:
            state["stage"] = "exporting the merged model"
            paths["merged_model"] = result.export(output / "merged.safetensors")
        if study.storage.location is not None:
            paths["store"] = Path(study.storage.location)
        state["stage"] = "printing the summary"
        _print_nested_summary(result, paths, sys.stdout)
        return 0
    if options["export"] and result.merge_spec is not None:
        index = result.selected if result.selected is not None else None
        if index is None:
            sys.stderr.write("export: no preference given, so no model was selected to "
                             "export; set study.preference\n")
        else:
            state["stage"] = "exporting the selected model"
            # No suffix: a safetensors file by default, or the checkpoints' own format.
            paths["merged_model"] = result.export(output / "selected", index)
    if study.storage.location is not None:
        paths["store"] = Path(study.storage.location)
    if not getattr(args, "no_report", False):
        state["stage"] = "writing report.html"
        report = _write_report(output)
        if report is not None:
            paths["report_html"] = report
    state["stage"] = "printing the summary"
    _print_summary(result, paths, sys.stdout)
    return 0


def _refuse_lost_store(study: Any, output: Path, source: Path | None) -> None:
    """Before anything is evaluated: a one-line :class:`ConfigError` when the results folder
    (``output``, or the results folder whose ``config.yaml`` is being run) holds results of
    this study whose evaluations were stored, and the SQLite store this run uses holds none
    of them (the store, or the folder with its store, was moved or deleted). Running on
    would evaluate the whole study again into a new store and replace those results."""
    from mapframe.nested import NestedMergeStudy

    store = getattr(study, "storage", None)
    location = getattr(store, "location", None)
    if (isinstance(study, NestedMergeStudy) or getattr(store, "name", None) != "sqlite"
            or not isinstance(location, str)):
        return
    folders = [output]
    if source is not None and source.name == "config.yaml":
        folders.append(source.parent)  # a results folder's own config (an older one, say)
    for folder in dict.fromkeys(f.absolute() for f in folders):
        earlier = _stored_results(folder, study.study_name)
        if earlier is None:
            continue
        n, where = earlier
        if _stored_count(location, study.study_name) != 0:
            continue  # the same store, a copy, or one moved and named: it resumes
        moved = "" if folder == output.absolute() else (
            f" (this run writes to {output}: if the folder was moved, set its config's "
            "study.output to '.' and study.storage to the store's place)")
        store_now = ("that store now holds none of them" if where is not None and
                     Path(where).absolute() == Path(location).absolute() else
                     f"the store this run uses, {location}, holds none of them")
        raise ConfigError(
            f"the results folder {folder} holds {n} stored evaluations of study "
            f"{study.study_name!r} in {where or 'its store'}, but {store_now}{moved}: if "
            "the store was moved, point study.storage at its new place; to start the study "
            "again, give another --output (or study.output), or delete the folder")


def _stored_results(folder: Path, study_name: str) -> tuple[int, str | None] | None:
    """From ``folder/summary.json``: how many evaluations a run of ``study_name`` stored
    there (search and verification) and the path of its SQLite store; ``None`` when the
    folder holds no such results (no summary, another study's, or nothing stored)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("study") != study_name:
        return None
    verification = summary.get("verification")
    counts = [summary.get("n_search_evaluations"),
              verification.get("n_verified") if isinstance(verification, dict) else 0]
    n = sum(c for c in counts if isinstance(c, int) and not isinstance(c, bool))
    if n <= 0:
        return None
    settings = summary.get("settings")
    storage = settings.get("storage") if isinstance(settings, dict) else None
    if isinstance(storage, dict) and storage.get("name") not in (None, "sqlite"):
        return None  # in memory, or another kind of store: nothing to compare
    from mapframe.storage.manage import summary_store

    where = summary_store(folder)  # a relative path is the folder's, as store list reads it
    return n, None if where is None else str(where)


def _stored_count(path: str, study_name: str) -> int | None:
    """How many evaluations of ``study_name`` the SQLite store at ``path`` holds (0 when
    there is no such file), read without writing anything; ``None`` when it cannot be read
    (the store's own open reports why)."""
    import sqlite3

    from mapframe.storage.sqlite import sqlite_uri

    p = Path(path)
    if not p.exists():
        return 0
    try:
        conn = sqlite3.connect(sqlite_uri(p), uri=True)
    except (sqlite3.Error, ValueError):
        return None
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM evaluations e JOIN studies s ON e.study_id = s.id "
            "WHERE s.name = ?", (study_name,)).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _write_report(output: Path) -> Path | None:
    """Write ``output/report.html``; a one-line note instead when plotly is missing or the
    report fails (the study's results are written already). An interruption is
    :func:`_run_config`'s to report."""
    from mapframe.report import plotly_available, write_report

    if not plotly_available():
        sys.stderr.write("report.html not written: it needs plotly (pip install "
                         "'mapframe[report]')\n")
        return None
    try:
        return write_report(output)
    except (MapframeError, OSError, ValueError) as exc:
        sys.stderr.write(f"report.html not written: {exc}\n")
    return None


def _run_writes(study: Any, output: Path, source: Path | None, export: bool) -> list[str]:
    """The names ``mapframe run`` writes or removes in its results folder ``output``."""
    from mapframe.nested import NESTED_FILES, NestedMergeStudy
    from mapframe.results import SAVED_FILES

    nested = isinstance(study, NestedMergeStudy)
    names = list(NESTED_FILES if nested else SAVED_FILES)
    if export:
        names.append("merged.safetensors" if nested else "selected.safetensors")
    cfg = output / "config.yaml"
    if source is None or not (cfg.exists() and cfg.resolve() == source.resolve()):
        names.append("config.yaml")  # _save_config leaves the study's own config alone
    return names  # (report.html is among SAVED_FILES: a save removes an older one)


def _check_writable(folder: Path, names: Sequence[str] = ()) -> None:
    """A one-line error now when the results folder cannot be written, or when it holds a
    file of the user's own among ``names`` (those the command writes or removes there) and
    is not a mapframe results folder."""
    import tempfile

    from mapframe._foreign_files import refuse_foreign_files

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"the results folder {folder} is a file: give --output (or "
                          "study.output) a folder")
    refuse_foreign_files(folder, names, "give --output (or study.output) another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mapframe-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the results folder {folder} "
                          f"({exc.strerror or exc}); give --output a writable folder") from None


class _Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM during a study."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While ``mapframe run`` runs (from building the study to its summary), SIGTERM (a
    scheduler stopping the job, ``kill``) unwinds like Ctrl-C: executors shut down, the
    store closes, and the user is told how to resume."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Every warning shown, as one line (``warning: ...``) on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning  # type: ignore[assignment]
        yield


def _show_warning(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: Any = None) -> None:
    sys.stderr.write(f"\nwarning: {message}\n")


def cmd_run(args: argparse.Namespace) -> int:
    from mapframe.config import load_config

    return _run_config(load_config(args.config), args, source=Path(args.config))


def example_folder(tasks: Sequence[str], all_tasks: Sequence[str]) -> str:
    """The example's default results folder: one per configuration, so that a 4-task run
    does not overwrite the 2-task one (the default 2 tasks keep ``results/digits``)."""
    tasks = list(tasks)
    if tasks == list(all_tasks[:2]):
        return "results/digits"
    if tasks == list(all_tasks[:len(tasks)]):
        return f"results/digits-{len(tasks)}tasks"
    return "results/digits-" + "-".join(tasks)


def cmd_example(args: argparse.Namespace) -> int:
    from mapframe.config import validate_config
    from mapframe.examples import digits

    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    else:
        if not 1 <= args.n_tasks <= len(digits.TASKS):
            raise ConfigError(f"--n-tasks must be between 1 and {len(digits.TASKS)}, got "
                              f"{args.n_tasks}")
        tasks = list(digits.TASKS[: args.n_tasks])
    if args.preference is not None:  # parsed by _preference; checked before any training
        _check_preference(args.preference, tasks, ",".join(map(str, args.preference)))
    output = Path(args.output or example_folder(tasks, digits.TASKS)).absolute()
    sys.stderr.write(f"preparing the digits example ({len(tasks)} tasks: {', '.join(tasks)}; "
                     "trained once, then cached) ...\n")
    t0 = time.perf_counter()
    ck = digits.prepare_checkpoints(args.cache_dir, tasks=tasks)
    sys.stderr.write(f"checkpoints ready in {time.perf_counter() - t0:.1f}s: "
                     f"{Path(ck['pretrained']).parent}\n")
    config = digits.digits_study_config(output, tasks, checkpoints=ck,
                                        budget=args.budget, preference=args.preference)
    # written into the folder itself: relative to it, so that the folder can be moved
    # (the checkpoints, in the cache, stay absolute)
    config["study"].update(output=".", storage="evaluations.sqlite")
    cfg_path = output / "config.yaml"
    # A bad argument (a preference of the wrong length, say) fails before anything is written.
    validated = validate_config(config, base_dir=output, source=str(cfg_path))
    # a file there, no permission, or the user's own config.yaml: one line, not a traceback
    from mapframe.results import SAVED_FILES

    _check_writable(output, [*SAVED_FILES, "config.yaml"])  # all the run writes there
    args.budget = None  # already in the config
    # The folder's config.yaml is written by the run once its results are saved, as for
    # `mapframe run`: written now, a run the store refuses (another setup under the study's
    # name) would leave it describing other checkpoints than the folder's front.json, and
    # `mapframe export` would merge those.
    status = _run_config(validated, args, source=None)
    if status == 0:
        sys.stderr.write(f"config written to {cfg_path} (edit it and run: mapframe run "
                         f"{cfg_path})\n")
    return status


def cmd_plugins(args: argparse.Namespace) -> int:
    from mapframe.plugin import COMPONENT_KINDS, get_registry

    registry = get_registry(strict=False)
    rows: list[dict[str, Any]] = []
    for info in registry.plugins:
        rows.append({"plugin": info.name, "package": info.package, "version": info.version,
                     "module": info.module, "components": [f"{k}:{n}" for k, n in
                                                           info.components],
                     "error": info.error})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if any(r["error"] for r in rows) else 0
    for r in rows:
        status = "BROKEN" if r["error"] else "ok"
        print(f"{r['plugin']}  ({r['package']} {r['version']}, {r['module']})  [{status}]")
        if r["error"]:
            print(f"    failed to load: {r['error']}")
        by_kind: dict[str, list[str]] = {}
        for comp in r["components"]:
            kind, name = comp.split(":", 1)
            by_kind.setdefault(kind, []).append(name)
        for kind in registry.kinds:
            if kind in by_kind:
                print(f"    {kind:15s} {', '.join(by_kind[kind])}")
    if not rows:
        print("no plugins found in the 'mapframe' entry-point group: is mapframe installed "
              "with pip?")
        return 1
    print("\ncomponent kinds (config key, default, base class):")
    for row in COMPONENT_KINDS:
        print(f"    {row.kind:15s} {row.config_key:15s} {row.default or '-':16s} "
              f"{row.base_path.replace(':', '.')}  ({len(registry.names(row.kind))} "
              f"registered): {row.role}")
    return 1 if any(r["error"] for r in rows) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from mapframe.results_folder import load_results

    saved = load_results(args.results)
    index: int | None
    if args.preference is not None and args.point != "selected":
        raise ConfigError("give --point or --preference, not both: each picks the front "
                          "point to export")
    if args.preference is not None:
        index = saved.select(args.preference)
    elif args.point == "selected":
        index = saved.selected
    else:
        try:
            index = int(args.point)
        except ValueError:
            raise ConfigError(f"--point must be 'selected' or a row index of front.csv, got "
                              f"{args.point!r}") from None
    if args.max_shard_size is not None and args.format != "hf":
        raise ConfigError("--max-shard-size sizes the shards of a model folder: add --format hf")
    if args.push_to_hub:  # checked before anything is written
        if args.format != "hf":
            raise ConfigError("--push-to-hub uploads a model folder: add --format hf")
        from mapframe.export.point import hub_api

        hub_api()
    path = saved.export(args.out, index=index, preference=args.preference,
                        format=args.format, max_shard_size=args.max_shard_size,
                        allow_pickle=args.allow_pickle)
    if args.push_to_hub:
        from mapframe.export import push_to_hub

        sys.stdout.write(f"pushed to {push_to_hub(path, args.push_to_hub)}\n")
    if args.format == "mergekit" and saved.config is not None:
        from mapframe.export.mergekit_yaml import mergekit_notes

        strategy = saved.config.get("merge_strategy") or "task_arithmetic"
        desc = {"name": strategy} if isinstance(strategy, str) else dict(strategy)
        for note in mergekit_notes(desc):
            sys.stderr.write(f"note: {note}\n")
    i = index if index is not None else saved.selected
    assert i is not None  # export raised otherwise
    known = saved.front.measured[i]
    values = saved.front.real[i] if known else saved.front.predicted[i]
    metrics = ", ".join(f"{n}={v:.4g}" for n, v in zip(saved.task_names, values))
    coefs = ", ".join(f"{n}={v:.4g}" for n, v in zip(saved.coefficient_names,
                                                      saved.front.coefficients[i]))
    sys.stdout.write(f"front point {i} ({(saved.front.source or [])[i]}; "
                     f"{'measured' if known else 'predicted'} {metrics}; coefficients "
                     f"{coefs}) -> {path}\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mapframe.report import write_report

    if args.out is not None:
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            raise ConfigError(f"-o {out}: give a file path in an existing folder (e.g. "
                              f"{out / 'report.html' if out.is_dir() else 'report.html'})")
        if (out.exists() or out.is_symlink()) and not _is_mapframe_report(out):
            raise ConfigError(f"-o {out} exists and is not a mapframe report (only a report "
                              f"mapframe wrote is replaced): give -o another file, or remove "
                              f"{out} first")
    try:
        path = write_report(args.results, args.out, args.study)
    except OSError as exc:
        raise ConfigError(f"cannot write the report ({exc.strerror or exc}: "
                          f"{exc.filename or args.out}); give -o a file in a writable folder"
                          ) from None
    sys.stdout.write(f"report written to {path} (open it in a browser; it works offline)\n")
    return 0


def _is_mapframe_report(path: Path) -> bool:
    """Whether the file ``path`` is a report mapframe wrote: its title starts ``mapframe
    report`` (what every report's page has had; the test a results folder's report.html
    passes, :func:`mapframe._foreign_files.is_own_file`)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return "<title>mapframe report" in fh.read(4096)
    except OSError:
        return False


def cmd_dashboard(args: argparse.Namespace) -> int:
    from mapframe._imports import optional_import
    from mapframe.report import locate
    from mapframe.report.dashboard import MAX_INTERVAL_S, serve

    optional_import("plotly", "report", "the dashboard")
    if not 0 < args.interval <= MAX_INTERVAL_S:
        raise ConfigError(f"--interval must be a number of seconds in (0, {MAX_INTERVAL_S:g}], "
                          f"got {args.interval}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0-65535 (0 picks a free one), got {args.port}")
    return serve(locate(args.path, args.study), args.host, args.port, args.interval)


def preference_for(text: str | None, tasks: Sequence[str]) -> list[float] | None:
    """A ``--preference p1,p2,...`` value for ``tasks`` (``None`` when not given): one
    non-negative number per task, else a one-line :class:`ConfigError`. The plugins'
    example commands parse theirs with it too."""
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--preference takes comma-separated numbers, e.g. 0.5,0.5; got "
                          f"{text!r}") from None
    return _check_preference(values, tasks, text)


def _check_preference(values: list[float], tasks: Sequence[str], given: str) -> list[float]:
    if (len(values) != len(tasks) or any(not v >= 0 for v in values)
            or not any(v > 0 for v in values)):
        raise ConfigError(f"--preference needs one weight per task, each >= 0 and not all 0 "
                          f"({len(tasks)}: {', '.join(tasks)}), got {given!r}")
    return values


def _preference(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"preference must be comma-separated numbers, got {text!r}") from None


def _budget(text: str) -> int:
    from mapframe.spec import MAX_BUDGET

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BUDGET:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of evaluations from 1 to {MAX_BUDGET:,}, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _folder(text: str) -> str:
    """``--output``: a folder path; an empty one is refused (it silently meant the default
    folder, while ``study.output: ""`` is an error)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"must be a folder path, got {text!r}: leave --output out for the default "
            "(study.output, else results/<study name>)")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapframe", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mapframe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output", "-o", type=_folder,
                       help="results folder (run: default the config's study.output, else "
                       "results/<study name>; example: results/digits)")
        p.add_argument("--budget", type=_budget, help="override study.budget (evaluations)")
        p.add_argument("--seed", type=_seed, help="override study.seed")
        p.add_argument("--no-plot", action="store_true", help="do not draw front.png")
        p.add_argument("--no-report", action="store_true",
                       help="do not write report.html (the interactive report)")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress display")

    p_run = sub.add_parser("run", help="run or resume the study of a YAML config",
                           description="Run (or resume) the study described by CONFIG. "
                           "Relative paths in the file are relative to the file's folder.")
    p_run.add_argument("config", help="the study's YAML config file")
    common(p_run)
    p_run.set_defaults(func=cmd_run)

    p_ex = sub.add_parser("example", help="train (once) and run the built-in digits example",
                          description="Train a small network on scikit-learn's bundled "
                          "digits, fine-tune it into task variants (cached on disk), write a "
                          "config and run MAP on it. Fully offline.")
    p_ex.add_argument("--n-tasks", type=int, default=2, help="number of tasks (1..8)")
    p_ex.add_argument("--tasks", help="comma-separated task names instead of --n-tasks")
    p_ex.add_argument("--preference", type=_preference,
                      help="preference weights, comma-separated (one per task)")
    p_ex.add_argument("--cache-dir", help="checkpoint cache (default $MAPFRAME_CACHE or "
                      "~/.cache/mapframe)")
    common(p_ex)
    p_ex.set_defaults(func=cmd_example)

    p_xp = sub.add_parser("export", help="save the merged model of a front point",
                          description="Save the merged model of a front point of a finished "
                          "study from its results folder, without running the study again "
                          "(the folder's config.yaml says which checkpoints to merge).")
    p_xp.add_argument("results", help="the study's results folder")
    p_xp.add_argument("--point", default="selected",
                      help="'selected' (the study's own choice, default) or a row index of "
                      "front.csv")
    p_xp.add_argument("--preference", type=_preference,
                      help="select the point for these weights instead (one per task)")
    p_xp.add_argument("--out", "-o", required=True,
                      help="where to write: a .safetensors file, or (no suffix) the "
                      "checkpoints' own format (the LLM plugin writes a model folder); a "
                      "folder for --format hf, a .yaml file for --format mergekit")
    p_xp.add_argument("--format", choices=("safetensors", "hf", "mergekit"),
                      default="safetensors",
                      help="safetensors (default, as above), hf (a Hugging Face model "
                      "folder with a model card) or mergekit (the equivalent mergekit YAML)")
    p_xp.add_argument("--max-shard-size", default=None,
                      help="--format hf: largest weight shard, e.g. 5GB (default) or 200MB")
    p_xp.add_argument("--push-to-hub", metavar="REPO",
                      help="--format hf: upload the folder to this Hugging Face Hub "
                      "repository (needs huggingface_hub and a login)")
    p_xp.add_argument("--allow-pickle", action="store_true",
                      help="allow torch checkpoints that need full unpickling (it runs code "
                      "from the file: only for a folder you trust; the folder's config.yaml "
                      "cannot allow it)")
    p_xp.set_defaults(func=cmd_export)

    from mapframe.cli_store import add_store_parser

    add_store_parser(sub)  # check, salvage, list, delete, rename, copy, export

    p_rp = sub.add_parser("report", help="write the interactive report.html of a results "
                          "folder or a store", description="Write RESULTS/report.html: the "
                          "front (predicted and measured points), a preference control with "
                          "the export command for the point it selects, search progress, "
                          "surrogate diagnostics and a trade-off summary. One self-contained "
                          "file: it opens offline. RESULTS may be a store (.sqlite): a "
                          "finished study's report is then written from the store alone (the "
                          "front its last run stored). Needs plotly (pip install "
                          "'mapframe[report]').")
    p_rp.add_argument("results", help="the study's results folder, or its store (.sqlite)")
    p_rp.add_argument("--study", help="the study to report, in a store holding several "
                      "(default: the folder's study, else the store's latest)")
    p_rp.add_argument("--out", "-o", help="where to write (default RESULTS/report.html, "
                      "in the study's results folder; needed for a store outside it); an "
                      "existing file is replaced only when it is a mapframe report")
    p_rp.set_defaults(func=cmd_report)

    p_db = sub.add_parser("dashboard", help="serve the report on localhost, live while a "
                          "study runs", description="Serve the report of a results folder or "
                          "an evaluation store (.sqlite) on localhost, and refresh it as the "
                          "study stores evaluations, so that a long study can be watched. "
                          "Ctrl-C stops it.")
    p_db.add_argument("path", help="a results folder, or the study's evaluations.sqlite")
    p_db.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p_db.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                      "127.0.0.1: this machine only)")
    p_db.add_argument("--interval", type=float, default=2.0,
                      help="seconds between checks for new evaluations (default 2)")
    p_db.add_argument("--study", help="the study to show, in a store holding several "
                      "(default: the folder's study, else the latest)")
    p_db.set_defaults(func=cmd_dashboard)

    p_pl = sub.add_parser("plugins", help="list plugins and their components")
    p_pl.add_argument("--json", action="store_true", help="machine-readable output")
    p_pl.set_defaults(func=cmd_plugins)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``: help and exit status 2
    without a sub-command; a :class:`MapframeError` becomes a one-line error (status 2),
    prefixed with the parser's ``prog``. Plugins' own commands use it too."""
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except MapframeError as exc:
        sys.stderr.write(f"\n{parser.prog}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:  # a command's own handler says more where it has one
        sys.stderr.write(f"\n{parser.prog}: interrupted\n")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapframe`` command."""
    return dispatch(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
