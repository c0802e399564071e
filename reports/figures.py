"""The report's figures, drawn with matplotlib (Agg) to PNG bytes for embedding in the page.

PNGs are written without a timestamp or software tag, so the same tables give byte-identical images.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bertology.analysis import published as P  # noqa: E402
from bertology.analysis.vocabulary import PATTERNS, TOKEN_CLASSES  # noqa: E402

DPI = 110
COLORS = {"cola": "#1f77b4", "sst2": "#d62728", "mrpc": "#2ca02c", "rte": "#9467bd", "qnli": "#ff7f0e",
          "wnli": "#8c564b", "stsb": "#e377c2", "qqp": "#17becf", "mnli": "#bcbd22"}
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _color(task: str, i: int) -> str:
    return COLORS.get(task, plt.get_cmap("tab10")(i % 10))


def separability(sep: pd.DataFrame, skip: pd.DataFrame) -> bytes:
    """Per task: the debiased Fisher trace of [CLS] at ln2 by layer with its 95% CI band, the plug-in value
    (dashed: it carries the (k−1)/n noise floor) and the chance level (dotted: the 97.5th percentile under
    label permutations), the a-priori skip candidates circled; below, the per-layer probe accuracy with its CI."""
    tasks = list(dict.fromkeys(sep["task"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(tasks), figsize=(2.6 * len(tasks) + 0.6, 5.0), squeeze=False,
                                 sharex="col")
        for i, task in enumerate(tasks):
            s = sep[sep["task"] == task].sort_values("layer")
            c = _color(task, i)
            ax = axes[0, i]
            ax.fill_between(s["layer"], s["fisher_trace_ci_low"], s["fisher_trace_ci_high"], color=c, alpha=0.25,
                            lw=0)
            ax.plot(s["layer"], s["fisher_trace"], "-o", color=c, ms=3, label="Fisher trace (debiased)")
            if "fisher_trace_plugin" in s and s["fisher_trace_plugin"].notna().any():
                ax.plot(s["layer"], s["fisher_trace_plugin"], "--", color="0.55", lw=0.8, label="plug-in")
            if "fisher_trace_chance_high" in s and s["fisher_trace_chance_high"].notna().any():
                ax.plot(s["layer"], s["fisher_trace_chance_high"], ":", color="0.3", lw=1,
                        label="chance (97.5% of permutations)")
            if len(skip):
                cand = skip[(skip["task"] == task) & skip["candidate"].astype(bool)]
                at = s.set_index("layer").reindex(cand["layer"])
                ax.plot(cand["layer"], at["fisher_trace"], "o", ms=10, mfc="none", mec="black", mew=1.5,
                        label="skip candidate")
            ax.set_title(task.upper())
            if i == 0:
                ax.set_ylabel("tr(S_B) / tr(S_W) at ln2")
                ax.legend(fontsize=7, frameon=False, loc="upper left")
            ax = axes[1, i]
            ax.fill_between(s["layer"], s["probe_accuracy_ci_low"], s["probe_accuracy_ci_high"], color=c,
                            alpha=0.25, lw=0)
            ax.plot(s["layer"], s["probe_accuracy"], "-s", color=c, ms=3)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_xticks(s["layer"])
            if i == 0:
                ax.set_ylabel("probe accuracy")
        fig.tight_layout()
        return _png(fig)


def ffn_ratio(tables: dict[str, pd.DataFrame], tasks: list[str]) -> bytes:
    """Structural/classification energy ratio of each FFN update by relative depth, log scale, per task and
    scope ([CLS] and all tokens): the debiased ratio (solid) with its 95% interval (band; open triangles:
    the lower bound of a ratio with no upper bound, whose classification energy cannot be told from 0) and
    the plug-in ratio (dashed), with the published BERT-base end points as black stars."""
    scopes = [(k, t) for k, t in (("cls", "[CLS]"), ("tokens", "all tokens")) if k in tables]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(scopes), figsize=(5.2 * len(scopes), 3.4), squeeze=False)
        for ax, (scope, title) in zip(axes[0], scopes):
            df = tables[scope]
            for i, task in enumerate(tasks):
                if f"{task}_ratio" not in df:
                    continue
                c = _color(task, i)
                lo, hi, est = df[f"{task}_ratio_ci_low"], df[f"{task}_ratio_ci_high"], df[f"{task}_ratio"]
                finite = np.isfinite(hi)
                top = float(np.nanmax(np.r_[hi[finite], est[np.isfinite(est)], lo, 1.0])) * 3
                ax.fill_between(df["relative_depth"], lo, np.where(finite, hi, top), color=c, alpha=0.2, lw=0)
                ax.plot(df["relative_depth"], np.where(np.isfinite(est), est, np.nan), "-o", color=c, ms=3,
                        label=task.upper())
                ax.plot(df["relative_depth"][~finite], lo[~finite], "^", color=c, ms=6, mfc="none")
                if f"{task}_ratio_plugin" in df:
                    ax.plot(df["relative_depth"], df[f"{task}_ratio_plugin"], "--", color=c, lw=0.7, alpha=0.7)
            depth = len(df)
            ax.plot([P.nearest_layer(p, depth) / depth for p in P.FFN_RATIO], [p.low for p in P.FFN_RATIO], "*",
                    color="black", ms=11, label=f"{P.LABEL} (layers 1 and 12 of 12)")
            ax.set_yscale("log")
            ax.set_xlabel("relative depth (layer / number of layers)")
            ax.set_ylabel("structural / classification")
            ax.set_title(f"FFN update ln2 − ln1, over {title}")
            ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


def confident_wrong(cw: pd.DataFrame) -> bytes:
    """Share of errors with margin above the threshold, per task with its CI, over the published range."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.1 * len(cw) + 2.4, 3.0))
        x = np.arange(len(cw))
        ax.axhspan(P.CONFIDENT_SHARE.low, P.CONFIDENT_SHARE.high, color="0.85", label=f"{P.LABEL}: "
                   f"{P.CONFIDENT_SHARE.value}")
        err = np.vstack([cw["confident_share"] - cw["confident_share_ci_low"],
                         cw["confident_share_ci_high"] - cw["confident_share"]])
        ax.bar(x, cw["confident_share"], color=[_color(t, i) for i, t in enumerate(cw["task"])], width=0.6)
        ax.errorbar(x, cw["confident_share"], yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(x, [t.upper() for t in cw["task"]])
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"share of errors, margin > {cw['margin_threshold'].iloc[0]:g}")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
        fig.tight_layout()
        return _png(fig)


def token_strength(ts: pd.DataFrame) -> bytes:
    """Content-word share among HIGH vs LOW tokens (subwords, corpus-wide upper quartile), per task."""
    sub = ts[(ts["level"] == "subword") & (ts["threshold"] == "corpus") & (ts["category"] == "content")]
    tasks = list(dict.fromkeys(sub["task"]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2.4, 3.0))
        x = np.arange(len(tasks))
        for k, (bucket, color, dx) in enumerate((("HIGH", "#d62728", -0.18), ("LOW", "#7f7f7f", 0.18))):
            b = sub[sub["bucket"] == bucket].set_index("task").reindex(tasks)
            ax.bar(x + dx, b["share"], width=0.36, color=color, label=f"{bucket} tokens")
            ax.errorbar(x + dx, b["share"], yerr=np.nan_to_num(np.vstack([b["share"] - b["ci_low"],
                                                                          b["ci_high"] - b["share"]])),
                        fmt="none", ecolor="black", capsize=2)
        ax.set_xticks(x, [t.upper() for t in tasks])
        ax.set_ylim(0, 1)
        ax.set_ylabel("content-word share")
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


def _layer_head_axes(ax, n_layers: int, n_heads: int, task: str, extra: list[str] = ()) -> None:
    """Ticks and labels of one task's layer × head grid (``extra`` columns after the heads)."""
    ax.set_xticks(range(n_heads + len(extra)), [str(h) for h in range(1, n_heads + 1)] + list(extra), fontsize=6)
    ax.set_yticks(range(n_layers), [str(l) for l in range(1, n_layers + 1)])
    ax.set_xlabel("head")
    ax.set_title(task.upper())


def _head_grid(t: pd.DataFrame, values, n_layers: int, n_heads: int, extra: int = 0) -> np.ndarray:
    """A layer × head grid (NaN where a cell has no row; ``extra`` columns after the heads)."""
    grid = np.full((n_layers, n_heads + extra), np.nan)
    grid[t["layer"].to_numpy(int) - 1, t["head"].to_numpy(int) - 1] = values
    return grid


def _score_mark(df: pd.DataFrame, task: str) -> str:
    """" (r)" where a task's Δ is of Pearson's r (a regression), not of accuracy."""
    return " (r)" if "score" in df and (df.loc[df["task"] == task, "score"] == "pearson").any() else ""


def head_heatmaps(hd: pd.DataFrame, rm: pd.DataFrame) -> bytes:
    """Per task: Δ accuracy (percentage points) when one head attends uniformly, layer × head, and in the
    last column every head of the layer at once; a dot marks p < 0.05 after correction."""
    tasks = list(dict.fromkeys(hd["task"]))
    n_layers, n_heads = int(hd["layer"].max()), int(hd["head"].max())
    lim = max(1.0, float(np.nanmax(np.abs(100 * hd["delta"]))))
    whole = rm[rm["kind"] == "heads"] if len(rm) else rm
    if len(whole):
        lim = max(lim, float(np.nanmax(np.abs(100 * whole["delta"]))))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(tasks), figsize=(0.32 * (n_heads + 1) * len(tasks) + 1.6, 0.34 * n_layers + 1.3),
                                 squeeze=False)
        for ax, task in zip(axes[0], tasks):
            t = hd[hd["task"] == task]
            grid = _head_grid(t, 100 * t["delta"], n_layers, n_heads, extra=1)
            sig = _head_grid(t, t["p_adj"] < 0.05, n_layers, n_heads, extra=1) == 1
            w = whole[whole["task"] == task] if len(whole) else whole
            if len(w):
                grid[w["layer"] - 1, n_heads] = 100 * w["delta"]
                sig[w["layer"] - 1, n_heads] = w["p_adj"] < 0.05
            im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            yy, xx = np.nonzero(sig)
            ax.plot(xx, yy, "k.", ms=4)
            ax.axvline(n_heads - 0.5, color="black", lw=1)
            _layer_head_axes(ax, n_layers, n_heads, task, ["all"])
            ax.set_title(task.upper() + _score_mark(hd, task))
        axes[0, 0].set_ylabel("layer")
        fig.colorbar(im, ax=list(axes[0]), shrink=0.9, label="Δ accuracy (points; r × 100 where marked r)")
        return _png(fig)


def removals(rm: pd.DataFrame) -> bytes:
    """Per task: Δ accuracy by layer when the layer is skipped, its FFN or attention removed, or all its
    heads made uniform, with 95% CIs."""
    tasks = list(dict.fromkeys(rm["task"]))
    styles = {"skip": ("black", "o"), "ffn": ("#d62728", "s"), "attn": ("#1f77b4", "^"), "heads": ("#7f7f7f", "v")}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks) + 0.6, 2.8), squeeze=False, sharey=True)
        for ax, task in zip(axes[0], tasks):
            for kind, (c, m) in styles.items():
                r = rm[(rm["task"] == task) & (rm["kind"] == kind)].sort_values("layer")
                if r.empty:
                    continue
                ax.errorbar(r["layer"], 100 * r["delta"],
                            yerr=100 * np.vstack([r["delta"] - r["ci_low"], r["ci_high"] - r["delta"]]),
                            color=c, marker=m, ms=3, lw=1, capsize=2, label=kind)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_title(task.upper() + _score_mark(rm, task))
            ax.set_xlabel("layer")
        axes[0, 0].set_ylabel("Δ accuracy (points)")
        axes[0, 0].legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


PATTERN_COLORS = dict(zip(PATTERNS, ("#1f77b4", "#2ca02c", "#17becf", "#ff7f0e", "#bdbdbd")))


def pattern_shares(ps: pd.DataFrame) -> bytes:
    """Per task: stacked shares of the five pattern types over every head and sample, heterogeneous at the
    bottom beside the published range of its share (Kovaleva et al.) as a band."""
    tasks = list(dict.fromkeys(ps["task"]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 3.4, 3.0))
        x = np.arange(len(tasks))
        bottom = np.zeros(len(tasks))
        for name in ["heterogeneous"] + [n for n in PATTERN_COLORS if n != "heterogeneous"]:   # it sits on 0
            v = ps[ps["pattern"] == name].set_index("task")["share"].reindex(tasks).fillna(0.0).to_numpy()
            ax.bar(x, v, bottom=bottom, width=0.6, color=PATTERN_COLORS[name], label=name)
            bottom += v
        ax.axhspan(P.HETEROGENEOUS_SHARE.low, P.HETEROGENEOUS_SHARE.high, color="black", alpha=0.12,
                   label=f"heterogeneous share, {P.LABEL}:\n{P.HETEROGENEOUS_SHARE.value}")
        ax.set_xticks(x, [t.upper() for t in tasks])
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of head × sample maps")
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        return _png(fig)


def pattern_heatmaps(heads: pd.DataFrame) -> bytes:
    """Per task: each head's dominant pattern type (the type of most of its maps), layer × head."""
    tasks = list(dict.fromkeys(heads["task"]))
    names = list(PATTERN_COLORS)
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap([PATTERN_COLORS[n] for n in names])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(tasks), figsize=(0.3 * n_heads * len(tasks) + 2.8, 0.34 * n_layers + 1.3),
                                 squeeze=False)
        for ax, task in zip(axes[0], tasks):
            t = heads[heads["task"] == task]
            grid = _head_grid(t, [names.index(d) for d in t["dominant"]], n_layers, n_heads)
            ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto")
            _layer_head_axes(ax, n_layers, n_heads, task)
        axes[0, 0].set_ylabel("layer")
        fig.legend(handles=[Patch(color=PATTERN_COLORS[n], label=n) for n in names], fontsize=7, frameon=False,
                   loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _png(fig)


def token_class_trend(tc: pd.DataFrame) -> bytes:
    """Attention to [CLS], [SEP], punctuation and other tokens by layer (mean over heads, 95% CI band), per
    task; dotted: the mass uniform attention would give."""
    classes = list(zip(TOKEN_CLASSES, ("[CLS]", "[SEP]", "punctuation", "other tokens")))
    tasks = list(dict.fromkeys(tc["task"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(11.5, 2.8), squeeze=False)
        for ax, (c, title) in zip(axes[0], classes):
            for i, task in enumerate(tasks):
                t = tc[(tc["task"] == task) & (tc["token_class"] == c)].sort_values("layer")
                col = _color(task, i)
                ax.plot(t["layer"], t["attention"], "o-", color=col, ms=3, label=task.upper())
                ax.fill_between(t["layer"], t["ci_low"], t["ci_high"], color=col, alpha=0.2, lw=0)
                ax.axhline(t["uniform"].iloc[0], color=col, ls=":", lw=0.8)
            ax.set_title(f"attention to {title}")
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.set_ylim(0, None)
        axes[0, 0].set_ylabel("mass, mean over queries")
        axes[0, -1].legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


def finetune_heatmaps(fc: pd.DataFrame) -> bytes:
    """Per task: cosine similarity of pre-trained and fine-tuned attention maps, layer × head."""
    heads = fc[fc["head"].notna()]
    tasks = list(dict.fromkeys(heads["task"]))
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    lo = min(0.5, float(np.floor(10 * heads["cosine"].min()) / 10))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(tasks), figsize=(0.3 * n_heads * len(tasks) + 1.8, 0.34 * n_layers + 1.3),
                                 squeeze=False)
        for ax, task in zip(axes[0], tasks):
            t = heads[heads["task"] == task]
            grid = _head_grid(t, t["cosine"], n_layers, n_heads)
            im = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=1.0, aspect="auto")
            _layer_head_axes(ax, n_layers, n_heads, task)
        axes[0, 0].set_ylabel("layer")
        fig.colorbar(im, ax=list(axes[0]), shrink=0.9, label="cosine, pre-trained vs fine-tuned")
        return _png(fig)


def _token_map(ax, e: pd.DataFrame, row: str, col: str, value: str, vmax: float | None, fontsize: int) -> None:
    """A token × token map from long rows (``row``, ``col``, ``value`` and the ``<col>_token`` labels);
    ``vmax`` None: the panel's own maximum."""
    n = int(e[row].max()) + 1
    m = np.zeros((n, n))
    m[e[row], e[col]] = e[value]
    ax.imshow(m, cmap="Blues", vmin=0, vmax=vmax if vmax is not None else max(float(m.max()), 1e-12))
    tokens = e.drop_duplicates(col).sort_values(col)[f"{col}_token"].tolist()
    ax.set_xticks(range(n), tokens, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), tokens, fontsize=fontsize)


def example_maps(ex: pd.DataFrame) -> bytes:
    """One attention map of each pattern type from the data, with its tokens."""
    patterns = [p for p in PATTERN_COLORS if (ex["pattern"] == p).any()]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(patterns), figsize=(3.3 * len(patterns), 3.7), squeeze=False)
        for ax, name in zip(axes[0], patterns):
            e = ex[ex["pattern"] == name]
            _token_map(ax, e, "query", "key", "weight", 1.0, 5 if e["query"].max() < 30 else 4)   # one scale
            r = e.iloc[0]
            ax.set_title(f"{name}\n{r['task'].upper()} #{int(r['sample_id'])}, layer {int(r['layer'])} head "
                         f"{int(r['head'])}", fontsize=8)
        fig.tight_layout()
        return _png(fig)


def attribution_maps(ex: pd.DataFrame) -> bytes:
    """One sentence's attribution map at each scope (rows: output token i, columns: input token j), at one
    layer; each panel on its own scale."""
    scopes = list(dict.fromkeys(ex["scope"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(scopes), figsize=(2.5 * len(scopes), 3.0), squeeze=False)
        for ax, scope in zip(axes[0], scopes):
            e = ex[ex["scope"] == scope]
            _token_map(ax, e, "output", "input", "value", None, 4)
            ax.set_title(scope, fontsize=8)
        fig.tight_layout()
        return _png(fig)


def attention_norms(an: pd.DataFrame) -> bytes:
    """Kobayashi et al. 2020's check: per token class, the mean attention weight α a token receives, ‖f(x)‖
    and ‖α f(x)‖ by layer (mean over heads and tasks)."""
    names = dict(zip(TOKEN_CLASSES, ("[CLS]", "[SEP]", "punctuation", "other")))
    colors = dict(zip(TOKEN_CLASSES, ("#1f77b4", "#d62728", "#2ca02c", "#7f7f7f")))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), squeeze=False)
        for ax, (stat, title) in zip(axes[0], (("alpha", "α received"), ("f_norm", "‖f(x)‖"),
                                               ("alpha_f_norm", "‖α f(x)‖"))):
            s = an[an["statistic"] == stat]
            for c, label in names.items():
                t = s[s["token_class"] == c].groupby("layer")["estimate"].mean()
                if len(t):
                    ax.plot(t.index, t.values, "o-", ms=3, color=colors[c], label=label)
            ax.set_title(title)
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        axes[0, 0].legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


def ff_amp_wordsplit(w: pd.DataFrame) -> bytes:
    """Per stage (after FF; after RES2; after LN2): FF-amp of word-split pairs minus distance-matched other
    pairs by layer, per task, 95% CI; above 0: the FFN amplifies subwords of one word more."""
    stages = [("ff", "after FF"), ("ffres", "after FF + RES2"), ("ffresln", "after FF + RES2 + LN2")]
    tasks = list(dict.fromkeys(w["task"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), squeeze=False, sharey=True)
        for ax, (stage, title) in zip(axes[0], stages):
            for i, task in enumerate(tasks):
                t = w[(w["task"] == task) & (w["stage"] == stage)].sort_values("layer")
                col = _color(task, i)
                ax.plot(t["layer"], t["estimate"], "o-", ms=3, color=col, label=task.upper())
                ax.fill_between(t["layer"], t["ci_low"], t["ci_high"], color=col, alpha=0.15, lw=0)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_title(title)
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        axes[0, 0].set_ylabel("FF-amp, word-split − other")
        axes[0, -1].legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)
