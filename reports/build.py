"""``bertology report RESULTS_DIR --out DIR``: the reproducible report of a results folder.

Writes ``DIR/index.html`` (one self-contained page: figures embedded, opens from disk with no server or
network), ``DIR/summary.md`` (the same tables in Markdown) and ``DIR/tables/*.csv`` (every table, in the
layout shown). The folder is assembled beside ``DIR`` and renamed into place only when complete, so a crash
never leaves a half-written report. The sections are :mod:`.sections`, in the analysis registry's order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bertology import BertologyError
from bertology.store.location import Location, locate

from . import tables as T
from .collect import collect
from .render import page
from .sections import make_sections

TITLE = "bertology report"


#: What a report folder holds; a folder holding nothing else is a (possibly partly removed) report.
REPORT_ENTRIES = {"index.html", "summary.md", "tables"}


def _check_out(out: Location) -> None:
    """A report replaces only a report (or an empty folder): never a folder that happens to be named.

    A report folder is one whose entries are all report entries: a workflow rerun has removed its
    declared files (index.html, summary.md) and left ``tables/``, and that is still a report.
    """
    if out.isfile():
        raise BertologyError(f"{out}: is a file; the report is written only over a report or an empty folder. "
                             f"Choose another --out")
    if set(out.listdir()) <= REPORT_ENTRIES:
        return
    raise BertologyError(f"{out}: is a folder that is not a bertology report; the report is written only over a "
                         f"report or an empty folder. Choose another --out")


def _write_report(folder: Location, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def build_report(results: str | Path, out: str | Path, db: str | Path | None = None,
                 tasks: list[str] | None = None, workflow_config: dict | None = None, reindex: bool = False):
    """Write the report of ``results`` to ``out`` (see the module docstring); return ``out/index.html``.

    ``results`` and ``out`` may be URLs. On disk the report is assembled beside ``out`` and renamed into
    place; on an object store its files are written one by one, ``index.html`` last.
    """
    out = locate(out)
    _check_out(out)
    data = collect(results, db, tasks, reindex=reindex)
    tabs = T.all_tables(data)
    sections = make_sections(data, tabs, workflow_config)
    models = sorted({r.meta["model_type"] + f" ({r.n_layers} layers, hidden {r.meta['hidden']})" for r in data.runs})
    subtitle = (f"{', '.join(t.upper() for t in data.tasks)} · {'; '.join(models)} · every estimate with its 95% "
                f"bootstrap CI")
    md = [f"# {TITLE}", "", subtitle, "", "Figures and example sentences: index.html. Tables as CSV: tables/.", ""]
    md += [line for s in sections for line in s.md_lines]
    files = {f"tables/{name}.csv": T.to_csv_bytes(df) for name, df in tabs.items()}
    files.update({f"tables/{name}.csv": T.to_csv_bytes(df) for s in sections for name, df in s.csv.items()})
    files["summary.md"] = "\n".join(md).encode("utf-8")
    files["index.html"] = page(TITLE, subtitle, [(s.key, s.title, s.html) for s in sections]).encode("utf-8")
    if not out.local:
        _write_report(out, files)
        return out / "index.html"
    out = out.local_path
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "tables").mkdir(parents=True)
    _write_report(Location(str(tmp)), files)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old)
    else:
        tmp.replace(out)
    return out / "index.html"
