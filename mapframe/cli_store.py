"""``mapframe store ...``: check, salvage, list, delete, rename, copy and export the studies of
an SQLite evaluation store (:mod:`mapframe.storage.repair`, :mod:`mapframe.storage.manage`).

Every failure is a :class:`~mapframe.errors.MapframeError`, which ``mapframe`` prints as one
line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from mapframe.errors import StoreError

__all__ = ["add_store_parser"]


def cmd_store_check(args: argparse.Namespace) -> int:
    from mapframe.storage.repair import check_store

    report = check_store(args.path)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_store_salvage(args: argparse.Namespace) -> int:
    from mapframe.storage.repair import salvage_store

    copied = salvage_store(args.path, args.out)
    for name, n in copied.items():
        print(f"study {name!r}: {n} evaluations copied")
    print(f"salvaged into {args.out}; point the study's storage at it to resume")
    return 0


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _counted(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{phase} " + ", ".join(f"{n} {status}" for status, n in by.items())
                     for phase, by in counts.items())


def study_lines(s: Any) -> list[str]:
    """A :class:`~mapframe.storage.manage.StudySummary` for people."""
    counted = f" ({_counted(s.counts)})" if s.counts else ""
    lines = [f"study {s.name!r}: tasks {', '.join(s.task_names) or '?'}; "
             f"{s.n_evaluations} evaluations{counted}"]
    span = (f"evaluated {_when(s.first_evaluation)} to {_when(s.last_evaluation)}"
            if s.first_evaluation is not None else "nothing evaluated yet")
    if s.finished:
        got = [f"at {_when(s.finished_at)}" if s.finished_at is not None else "",
               f"budget {s.budget}" if s.budget is not None else "",
               f"seed {s.seed}" if s.seed is not None else ""]
        shown = ", ".join(g for g in got if g)
        done = f"a finished run's summary is stored{f' ({shown})' if shown else ''}"
        done += (f"; front of {s.front_size} points stored" if s.front_size is not None
                 else "; no front stored (the run predates stored fronts: rerun the study to "
                      "store it)")
    else:
        done = "no finished run stored"
    lines.append(f"  {span}; {done}")
    if s.running:
        more = f" and {len(s.drivers) - 1} more" if len(s.drivers) > 1 else ""
        lines.append(f"  RUNNING now: {s.live_claims} points claimed by {s.drivers[0]}{more}")
    if s.pending:
        lines.append(f"  {s.pending} finished evaluations wait in the store's .pending/ "
                     "folder (the study's next run stores them)")
    return lines


def cmd_store_list(args: argparse.Namespace) -> int:
    from mapframe.storage.manage import list_studies

    studies = list_studies(args.path)
    if args.json:
        print(json.dumps({"store": os.path.abspath(args.path),
                          "studies": [s.to_dict() for s in studies]}, indent=2))
        return 0
    print(f"store {args.path}: {len(studies)} "
          f"{'study' if len(studies) == 1 else 'studies'}")
    for s in studies:
        print("\n".join(study_lines(s)))
    return 0


def cmd_store_delete(args: argparse.Namespace) -> int:
    from mapframe.storage.manage import delete_study, list_studies

    studies = {s.name: s for s in list_studies(args.path)}
    study = studies.get(args.study)
    if study is not None and not args.yes:
        if study.running:
            delete_study(args.path, args.study)  # refused, with the one-line reason
        if not sys.stdin.isatty():
            raise StoreError(
                f"deleting study {args.study!r} ({study.n_evaluations} evaluations) from "
                f"{args.path} needs a confirmation and stdin is not a terminal: add --yes")
        print("\n".join(study_lines(study)))
        try:
            answer = input(f"delete study {args.study!r} and its {study.n_evaluations} "
                           f"evaluations from {args.path}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was deleted")
            return 1
    n = delete_study(args.path, args.study)
    print(f"deleted study {args.study!r} ({n} evaluations) from {args.path}")
    return 0


def cmd_store_rename(args: argparse.Namespace) -> int:
    from mapframe.storage.manage import rename_study

    rename_study(args.path, args.old, args.new)
    print(f"renamed study {args.old!r} to {args.new!r} in {args.path}; run it as "
          f"study name {args.new!r} to resume")
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    from mapframe.storage.manage import copy_study

    copied = copy_study(args.src, args.dst, args.study, args.new_name)
    for name, n in copied.items():
        print(f"study {name!r}: {n} evaluations copied")
    print(f"copied into {args.dst}; a study run there under the same name (and setup) "
          "resumes from them")
    return 0


def cmd_store_export(args: argparse.Namespace) -> int:
    from mapframe._files import write_atomically
    from mapframe.storage.manage import csv_text, export_study, write_csv

    rows = export_study(args.path, args.study)
    if args.out is None:
        write_csv(rows, sys.stdout)
        return 0
    if os.path.isdir(args.out):
        raise StoreError(f"-o {args.out} is a folder; give a file, e.g. "
                         f"{shlex.quote(os.path.join(args.out, args.study + '.csv'))}")
    if os.path.exists(args.out) and os.path.samefile(args.out, args.path):
        raise StoreError(f"-o {args.out} is the store itself; give another file")
    try:
        write_atomically(Path(args.out), csv_text(rows))
    except OSError as exc:
        raise StoreError(f"cannot write {args.out} ({exc}); give another -o") from None
    print(f"{len(rows)} evaluations of study {args.study!r} written to {args.out}")
    return 0


def add_store_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``store`` and its actions to the ``mapframe`` sub-command parsers ``sub``."""
    p_st = sub.add_parser(
        "store", help="list, check, copy, rename, delete, export or salvage the studies of "
        "an evaluation store",
        description="Manage the studies of an SQLite evaluation store (a .sqlite file; "
        "'mapframe run' keeps one in its results folder as evaluations.sqlite). Writes take "
        "the store's lock as a running study does, and a study a live driver is running is "
        "never deleted or renamed.")
    st_sub = p_st.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    p = st_sub.add_parser("list", help="the studies of a store: tasks, evaluations by phase "
                          "and status, times, finished runs, running drivers",
                          description="List the studies of a store without writing to it.")
    p.add_argument("path", help="the store (.sqlite file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_store_list)

    p = st_sub.add_parser("check", help="report what can be read (exit 1 if damaged)")
    p.add_argument("path", help="the store (.sqlite file)")
    p.set_defaults(func=cmd_store_check)

    p = st_sub.add_parser("salvage", help="copy every readable evaluation to OUT",
                          description="Copy every readable evaluation of a damaged store "
                          "into a new store (same study names, fingerprints and times: a "
                          "rerun resumes from it).")
    p.add_argument("path", help="the damaged store")
    p.add_argument("out", help="the new store to create")
    p.set_defaults(func=cmd_store_salvage)

    p = st_sub.add_parser("delete", help="delete a study (its evaluations, values, claims "
                          "and kept pending evaluations)",
                          description="Delete one study of a store. Asks for confirmation "
                          "on a terminal; elsewhere (a script) --yes is needed. Refused while "
                          "a live driver is running the study.")
    p.add_argument("path", help="the store (.sqlite file)")
    p.add_argument("study", help="the study's name")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_store_delete)

    p = st_sub.add_parser("rename", help="rename a study",
                          description="Rename a study of a store; run it under the new name "
                          "to resume. Refused when NEW exists or OLD is running.")
    p.add_argument("path", help="the store (.sqlite file)")
    p.add_argument("old", help="the study's name")
    p.add_argument("new", help="its new name")
    p.set_defaults(func=cmd_store_rename)

    p = st_sub.add_parser("copy", help="copy a study (or all) into another store, new or "
                          "existing",
                          description="Copy studies with their fingerprints and timestamps "
                          "into DST (created if absent): a study run on DST under the same "
                          "name resumes. Refused on a name DST already holds (use --as).")
    p.add_argument("src", help="the store to copy from")
    p.add_argument("dst", help="the store to copy into (new or existing)")
    p.add_argument("--study", help="the study to copy (default: every study)")
    p.add_argument("--as", dest="new_name", metavar="NEW",
                   help="the copied study's name in DST (with --study)")
    p.set_defaults(func=cmd_store_copy)

    p = st_sub.add_parser("export", help="every stored evaluation of a study as CSV",
                          description="Write every stored evaluation of a study as CSV: key, "
                          "phase, status, reason, round, coefficients (c_0, c_1...), one metric "
                          "per task, duration_s, created (ISO time) and error.")
    p.add_argument("path", help="the store (.sqlite file)")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--out", "-o", help="the CSV file to write (default: standard output)")
    p.set_defaults(func=cmd_store_export)
    return p_st
