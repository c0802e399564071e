"""What made the results: inputs, settings, software, and the workflow's run times."""

from __future__ import annotations

import numpy as np
import pandas as pd

import bertology

from ..collect import ReportData
from ..render import config_block, esc, pct, table_html
from .common import Section, Tables, csv_link, md_table, section


def _provenance_rows(pv: pd.DataFrame) -> tuple[list[str], list[list]]:
    keys = [c for c in pv.columns if c != "task"]
    header = ["", *[t.upper() for t in pv["task"]]]
    rows = [[k, *[("–" if isinstance(v, float) and np.isnan(v) else v) for v in pv[k]]] for k in keys]
    return header, rows


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "zarr", "xarray", "dask", "duckdb", "scipy", "statsmodels", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@section("provenance")
def section_provenance(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """What produced the numbers: software versions and commit, checkpoints and data with their checksums,
    seeds and bootstrap settings per task, and the workflow configuration."""
    pv = tabs.get("provenance")
    if pv is None:
        return None
    h, rows = _provenance_rows(pv)
    versions = ", ".join(f"{k} {v}" for k, v in _software().items())
    inner = (f"<p>bertology {esc(bertology.__version__)}, commit <code>{esc(pv['git_commit'].iloc[0])}</code>; "
             f"{esc(versions)}.</p>" + table_html(h, rows) + csv_link("provenance"))
    if config:
        inner += "<h3>Workflow configuration</h3><pre>" + esc(config_block(config)) + "</pre>"
    return Section("provenance", "Provenance", inner, md_table("## Provenance", h, rows))


def _run_time_rows(bench: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list], str]:
    """Per rule: its jobs' count, summed and longest wall time (a job is RULE_TASK[...], of the given tasks)."""
    tasks = "|".join(sorted(tasks, key=len, reverse=True))
    rule = bench["job"].str.replace(rf"_({tasks})([/_].*)?$", "", regex=True)   # and seed-S
    per_rule = bench.assign(rule=rule).groupby("rule", sort=False)["seconds"].agg(["count", "sum", "max"])
    per_rule = per_rule.sort_values("sum", ascending=False)
    total = bench["seconds"].sum()
    rows = [[r, int(c), f"{s:.0f}", f"{m:.0f}", pct(s / total)] for r, (c, s, m) in per_rule.iterrows()]
    top = per_rule.index[0] if len(per_rule) else ""
    return ["rule", "jobs", "seconds (sum)", "longest job (s)", "share"], rows, top


@section("runtime")
def section_run_times(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """What the run cost: the workflow's wall time per rule from the Snakemake benchmarks (not part of the
    reproducible tables)."""
    if not len(data.benchmarks):
        return None
    h, rows, top = _run_time_rows(data.benchmarks, data.tasks)
    total = data.benchmarks["seconds"].sum()
    inner = (f"<p>Wall time of the workflow's jobs (Snakemake benchmark files), {total:.0f} s summed over "
             f"{len(data.benchmarks)} jobs; <b>{esc(top)}</b> dominates. Times are not part of the "
             f"reproducible tables.</p>" + table_html(h, rows))
    return Section("runtime", "Run times", inner, md_table("## Run times (Snakemake benchmarks)", h, rows))
