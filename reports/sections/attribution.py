"""Kobayashi et al.'s norm-based attribution, and the FFN output beside its bypass (the attribution and
ffn_output analyses)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertology.analysis import published as P
from bertology.analysis.vocabulary import SCOPES

from .. import figures
from ..collect import ReportData
from ..render import ci, esc, image_html, num, table_html
from .common import Section, Tables, csv_link, layer_means, md_table, section


def _similarity_rows(sim: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    """Task × consecutive-scope Spearman ρ (both map variants), with the published BERT-base row."""
    scopes = list(dict.fromkeys(sim["scope"]))
    header = ["task", "maps", *[f"{s} vs previous" for s in scopes]]
    rows = []
    for (task, maps), t in sim.groupby(["task", "maps"], sort=False):
        t = t.set_index("scope")
        rows.append([task.upper(), maps.replace("_", "-"),
                     *[ci(t.at[s, "spearman"], t.at[s, "ci_low"], t.at[s, "ci_high"]) for s in scopes]])
    pub = {len(rows)}
    rows.append([P.LABEL + " (2023, Wikipedia)", "", *[num(P.SCOPE_SIMILARITY.get(s, np.nan)) for s in scopes]])
    return header, rows, pub


def _amp_pair_rows(pr: pd.DataFrame, top: int = 3) -> tuple[list[str], list[list]]:
    header = ["task", "layer", "input → output (FF-amp, count)"]
    rows = []
    for (task, layer), t in pr.groupby(["task", "layer"], sort=False):
        t = t[t["rank"] <= top]
        rows.append([task.upper(), int(layer), "; ".join(f"{r.input_token} → {r.output_token} ({r.ff_amp:.3f}, {int(r.n)})"
                                                         for r in t.itertuples())])
    return header, rows


def _attribution_example_html(data: ReportData) -> str:
    """The maps of one sentence at every scope: the first analysed sentence of the first task that has one,
    at the middle layer."""
    ex = data.table("attribution_example")
    if not len(ex):
        return ""
    first = ex[ex["run_id"] == next(r.run_id for r in data.runs if (ex["run_id"] == r.run_id).any())]
    layer = int(first["layer"].max() + 1) // 2
    one = first[first["layer"] == layer]
    task = next(r.task for r in data.runs if r.run_id == one["run_id"].iloc[0])
    return (f"<h3>One sentence at each scope ({esc(task.upper())} dev #{int(one['sample_id'].iloc[0])}, "
            f"layer {layer})</h3>" + image_html(figures.attribution_maps(
                one.assign(_s=one["scope"].map({s: i for i, s in enumerate(SCOPES)})).sort_values(
                    ["_s", "output", "input"])), "attribution maps by scope"))


def _ffn_attribution_html(data: ReportData, tabs: Tables) -> str:
    """What the FFN adds to the attribution maps: FF-amp of word-split pairs, the most amplified subword
    pairs, the FFN output's norm beside its bypass, and attention weights against norms by token class."""
    inner = ""
    ws = tabs.get("ff_amp_wordsplit")
    if ws is not None:
        inner += ("<h3>What the FFN amplifies</h3><p>FF-amp: the map after the FFN minus the map before it "
                  "(ATTNRESLN-N), both normalised per output token. Word-split pairs (two subwords of one word) "
                  "against other pairs at the same distances: the difference of mean FF-amp, with an unpaired "
                  "bootstrap CI and p (Holm across layers). After RES2 and LN2 the same difference shows how much "
                  "of the amplification survives (Kobayashi et al. 2023 find it partly cancelled).</p>"
                  + image_html(figures.ff_amp_wordsplit(ws), "FF-amp word-split pairs")
                  + csv_link("ff_amp_wordsplit"))
    pr = tabs.get("ff_amp_pairs")
    if pr is not None:
        h, rows = _amp_pair_rows(pr)
        inner += ("<h3>Most amplified (input → output) subword pairs, top 3 per layer</h3>"
                  + table_html(h, rows, left=3) + csv_link("ff_amp_pairs"))
    fn = tabs.get("ffn_norms")
    if fn is not None:
        h, rows = layer_means(fn, data.tasks, "ff_over_bypass")
        inner += ("<h3>FFN output beside the vector it bypasses</h3><p>‖ff‖ / ‖ln1‖ per token, mean over "
                  "tokens (95% CI). The FFN output's outlier dimensions and LN2's γ at them are in the CSV.</p>"
                  + table_html(h, rows) + csv_link("ffn_norms"))
    an = tabs.get("attention_norms")
    if an is not None:
        inner += ("<h3>Attention weights vs norms by token class (Kobayashi et al. 2020)</h3><p>Mean over "
                  "heads and tasks: the attention weight a token of the class receives, the norm of its "
                  "transformed vector ‖f(x)‖, and ‖α f(x)‖. The 2020 paper finds [SEP], [CLS] and punctuation "
                  "receive large weights but carry small ‖f(x)‖.</p>"
                  + image_html(figures.attention_norms(an), "attention weights and norms")
                  + csv_link("attention_norms"))
    return inner


@section("attribution")
def section_attribution(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Kobayashi et al. (2020, 2021, 2023) on this model: norm-based attribution maps through each scope of a
    layer (attention, residuals, LayerNorms, FFN), how much each scope reorders the previous one's map, and
    what the FFN amplifies."""
    sim = tabs.get("attribution_similarity")
    if sim is None:
        return None
    h, rows, pub = _similarity_rows(sim)
    inner = ("<p>Norm-based attribution through the whole layer (Kobayashi et al. 2020, 2021, 2023): each site "
             "of a layer is a sum of one vector per input token plus a bias term, so output token i's "
             "attribution to input token j is the norm of j's vector, scope by scope: the attention weights "
             "(ATTN-W), the attention's transformed vectors (ATTN-N), + residual (RES), + LayerNorm 1 (LN, "
             "exact, with the actual standard deviation), + FFN (integrated gradients through the activation, "
             "zero baseline), + RES2, + LN2. Completeness is checked on every sentence and layer: the vectors "
             "plus the bias sum to the stored site (largest relative error below). The maps are computed on "
             "the first analysed dev sentences of each task.</p>" + _attribution_example_html(data))
    inner += ("<h3>Similarity of consecutive scopes</h3><p>Spearman ρ between the flattened map of each scope "
              "and the previous scope's, per sentence and layer, averaged (95% CI). <i>norm</i>: the raw norms; "
              "<i>row-normalised</i>: each output token's attributions scaled to sum 1 first. On raw norms a "
              "residual only raises the diagonal, leaving the ranks of the other n² − n pairs in place.</p>"
              + table_html(h, rows, pub_rows=pub) + csv_link("attribution_similarity"))
    cp = tabs.get("attribution_completeness")
    if cp is not None:
        worst = cp.groupby("scope", sort=False)["max_relative_error"].max()
        inner += ("<p class=\"sub\">Completeness, largest relative error ‖Σ<sub>j</sub> v<sub>ij</sub> + b<sub>i</sub> − "
                  "site<sub>i</sub>‖ / ‖site<sub>i</sub>‖ over every task, sentence and layer: "
                  + "; ".join(f"{esc(k)} {v:.1e}" for k, v in worst.items())
                  + " (the stores hold float16 states).</p>" + csv_link("attribution_completeness"))
    inner += _ffn_attribution_html(data, tabs)
    return Section("attribution", "Norm-based attribution through the layer", inner,
                   md_table("## Attribution: Spearman ρ with the previous scope [95% CI]", h, rows))
