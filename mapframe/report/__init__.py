"""The interactive report of a study: ``report.html`` and the live dashboard.

- :mod:`mapframe.report.sources` finds the data (a results folder, a store, both);
- :mod:`mapframe.report.analysis` computes what is shown (search hypervolume, trade-offs);
- :mod:`mapframe.report.data` assembles it into :class:`ReportData` (JSON-ready, no plotly);
- :mod:`mapframe.report.figures` and :mod:`mapframe.report.page` render the page (plotly);
- :mod:`mapframe.report.dashboard` serves it on localhost and refreshes it.

::

    from mapframe.report import write_report
    write_report("results/digits")   # -> results/digits/report.html

Rendering needs plotly (``pip install 'mapframe[report]'``); it is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path

from mapframe.errors import ConfigError
from mapframe.report.data import ReportData, assemble
from mapframe.report.sources import ReportSource, locate

__all__ = ["ReportData", "ReportSource", "assemble", "locate", "plotly_available",
           "write_report"]

REPORT_NAME = "report.html"


def plotly_available() -> bool:
    """Whether plotly can be imported (the report needs it)."""
    from mapframe._imports import installed

    return installed("plotly")


def write_report(results: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 study: str | None = None) -> Path:
    """Write the report of the results folder or store ``results`` to ``out`` and return its
    path. The file is self-contained: it opens offline.

    ``results`` may be a store: the report of its study ``study`` (default: the study of
    the results folder the store is in, else the store's latest; a Nested MAP tournament's
    final-model or profile evaluation, which has no front, is a one-line error listing the
    tournament's pair studies to give instead) is written from the store
    alone when no results folder of it is found, its front being the one the study stored
    when its last run finished. ``out`` defaults to ``report.html`` in the study's results
    folder; a store outside it needs ``out``. A ``report.html`` already in the folder is
    replaced only when mapframe wrote it, or the folder is a mapframe results folder (a
    one-line error otherwise)."""
    from mapframe._imports import optional_import

    optional_import("plotly", "report", "the report (report.html)")
    from mapframe.report.page import render_page
    from mapframe.results import write_atomically

    source = locate(results, study)
    if source.directory is None:
        from mapframe.storage.manage import read_stored_run

        if source.stored_run() is None:
            raise ConfigError(
                f"{results} is a store without a finished study's results beside it (study "
                f"{source.study!r} has not finished); give the results folder, run the study "
                f"to its end, or watch the store with: mapframe dashboard {results}")
        assert source.store is not None  # locate gives a folder or a store
        # the study's stored front, else a one-line error: its run stored none
        read_stored_run(source.store, source.study)
        if out is None:
            raise ConfigError(
                f"{results} is a store outside the results folder of study {source.study!r}: give "
                "the report a file (--out FILE; out= in Python)")
    elif out is None:  # never over a report.html of the user's own (an explicit out may)
        from mapframe._foreign_files import refuse_foreign_files

        refuse_foreign_files(source.directory, [REPORT_NAME],
                             "give the report another file (-o FILE; out= in Python)")
    target = Path(out) if out is not None else Path(source.directory or ".") / REPORT_NAME
    return write_atomically(target, render_page(assemble(source)))
