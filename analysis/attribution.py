"""Norm-based attribution through the whole post-LN layer (Kobayashi et al. 2020, 2021, 2023).

Each site of layer l is a sum of one vector per input token j plus a bias term, so an n × n map (output
token i, input token j) can be read off at every scope (x_j: the token states entering the layer):

============================  ====================================================================================
scope                         vector of input token j in output i (the bias term b_i is kept apart)
============================  ====================================================================================
``ATTN-W``                    the attention weight α_ij, averaged over heads (a weight, not a vector)
``ATTN-N``                    a_ij = Σ_h α_ij^h f^h(x_j), f^h(x) = x W_V^h W_O^h;  b = Σ_h (Σ_j α_ij^h) b_V^h W_O^h + b_O
``ATTNRES-N``                 r_ij = a_ij + [i = j] x_i  (the residual adds the token's own input); same bias
``ATTNRESLN-N``               z_ij = γ₁ ⊙ (r_ij − mean(r_ij)) / s_i, s_i the actual pre-LN1 standard deviation
                              √(var(res1_i) + ε); b = γ₁ ⊙ (b − mean(b)) / s_i + β₁ (exact: LN is linear once s is fixed)
``ATTNRESLNFF-N``             the FFN output decomposed through its activation by integrated gradients with a zero
                              baseline: with pre-activations h_i = Σ_j z_ij W_1 + (b_i W_1 + b_1), each part is scaled
                              by ∫₀¹ g′(t h_i) dt and mapped by W_2. For an elementwise g that integral is exactly
                              g(h)/h (``ig_steps=None``); ``ig_steps=m`` uses the m-point midpoint rule, the IG of the
                              paper, whose completeness error falls as m grows. Bias: the b_1 / bias part, plus b_2
``ATTNRESLNFFRES-N``          z_ij + F_ij (RES2); bias summed
``ATTNRESLNFFRESLN-N``        LN2 decomposed as LN1, with the actual pre-LN2 standard deviation
============================  ====================================================================================

The map of a scope is ‖vector‖ (the 2020–2023 papers' norms). Completeness — the vectors plus the bias sum to
the stored site (``attn``, ``res1``, ``ln1``, ``ff``, ``res2``, ``ln2``) — is checked for every layer and
sentence and reported. The (heads, n, n, d) tensor is never formed: Σ_h α^h f^h is contracted per head.

FF-amp (2023): each map is normalised per output token (its attributions over the input tokens sum to 1, as
attention weights do) and the map after the FFN minus the map before it (``ATTNRESLN-N``) is the
amplification of each pair; ``ffres`` and ``ffresln`` measure what is left after RES2 and LN2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import xarray as xr
from scipy import special
from scipy import stats as sps

from bertology import BertologyError
from bertology.store.capabilities import capabilities
from bertology.store.params import LayerParams, ModelParameters
from bertology.store.reader import sample_attention
from bertology.store.schema import token_var

from .attention_heads import token_classes
from .published import SCOPE_SIMILARITY
from .bootstrap import Bootstrap, adjust, percentile_ci
from .engine import compute, sample_blocks, shared, task
from .token_strength import is_special, word_ids
from .vocabulary import SCOPE_SITE, SCOPES, TOKEN_CLASSES

AMP_STAGES = {"ff": "ATTNRESLNFF-N", "ffres": "ATTNRESLNFFRES-N", "ffresln": "ATTNRESLNFFRESLN-N"}


def activation(name: str):
    """The FFN activation g and its derivative g′ by the config's ``hidden_act``."""
    if name == "gelu":
        return (lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2))),
                lambda x: 0.5 * (1 + special.erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        c = np.sqrt(2 / np.pi)

        def g(x):
            return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))

        def dg(x):
            t = np.tanh(c * (x + 0.044715 * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        return g, dg
    if name == "relu":
        return (lambda x: np.maximum(x, 0.0)), (lambda x: (x > 0).astype(x.dtype))
    raise BertologyError(f"attribution through the activation {name!r} is not implemented (gelu, gelu_new, relu)")


def _ln_parts(vectors: np.ndarray, bias: np.ndarray, gamma, beta, eps: float):
    """LayerNorm of Σ_j vectors_ij + bias_i split into per-token parts and a bias part (s from the actual sum)."""
    total = vectors.sum(axis=1) + bias
    s = np.sqrt(total.var(axis=-1) + eps)                                     # (n,)
    parts = gamma * (vectors - vectors.mean(axis=-1, keepdims=True)) / s[:, None, None]
    b = gamma * (bias - bias.mean(axis=-1, keepdims=True)) / s[:, None] + beta
    return parts, b


@dataclass
class LayerAttribution:
    """One layer on one sentence: the vectors (n, n, d) and bias (n, d) of every vector scope, ATTN-W,
    ‖f^h(x_j)‖ = ‖x_j W_V^h W_O^h‖ per head and input token ((heads, n), Kobayashi et al. 2020), and the
    seconds the FFN (integrated-gradient) step took."""

    vectors: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]
    weights: np.ndarray
    value_norms: np.ndarray
    ig_seconds: float

    def maps(self) -> dict[str, np.ndarray]:
        out = {"ATTN-W": self.weights}
        out.update({k: np.linalg.norm(v, axis=-1).astype(np.float64) for k, v in self.vectors.items()})
        return out

    def sums(self) -> dict[str, np.ndarray]:
        """Σ_j vectors + bias of every scope: what the stored sites should equal."""
        return {k: v.sum(axis=1) + self.bias[k] for k, v in self.vectors.items()}


def decompose_layer(x: np.ndarray, alpha: np.ndarray, p: LayerParams, ig_steps: int | None = None,
                    dtype=np.float64) -> LayerAttribution:
    """Decompose one layer on one sentence: ``x`` (n, d) the states entering it, ``alpha`` (heads, n, n)."""
    x, alpha = np.asarray(x, dtype), np.asarray(alpha, dtype)
    p = replace(p, **{f.name: getattr(p, f.name).astype(dtype) for f in fields(p)
                      if isinstance(getattr(p, f.name), np.ndarray)})
    n = x.shape[0]
    W_V, W_O = p.W_V, p.W_O
    f = np.einsum("jd,hde,hef->hjf", x, W_V, W_O, optimize=True)             # f^h(x_j): (h, n, d)
    a = np.einsum("hij,hjd->ijd", alpha, f, optimize=True)                    # Σ_h α^h_ij f^h(x_j)
    bias_v = np.einsum("he,hef->hf", p.b_V, W_O)                              # b_V^h W_O^h: (h, d)
    b_attn = np.einsum("hi,hf->if", alpha.sum(axis=2), bias_v) + p.b_O
    r = a.copy()
    r[np.arange(n), np.arange(n)] += x
    z, b_ln1 = _ln_parts(r, b_attn, p.ln1_gamma, p.ln1_beta, p.eps)
    t0 = time.perf_counter()
    g, dg = activation(p.activation)
    W_1, W_2 = p.W_1, p.W_2
    h_parts = z @ W_1                                                          # (n, n, d_ff)
    h_bias = b_ln1 @ W_1 + p.b_1
    h = h_parts.sum(axis=1) + h_bias
    if ig_steps is None:                                                       # ∫₀¹ g′(t h) dt = g(h)/h exactly
        small = np.abs(h) < 1e-6
        scale = np.where(small, dg(np.zeros_like(h)), g(h) / np.where(small, 1.0, h))
    else:
        ts = (np.arange(ig_steps) + 0.5) / ig_steps
        scale = np.mean([dg(t * h) for t in ts], axis=0)
    F = (h_parts * scale[:, None, :]) @ W_2
    b_ff = (h_bias * scale) @ W_2 + p.b_2
    ig_seconds = time.perf_counter() - t0
    R2, b_res2 = z + F, b_ln1 + b_ff
    Z2, b_ln2 = _ln_parts(R2, b_res2, p.ln2_gamma, p.ln2_beta, p.eps)
    vectors = dict(zip(SCOPES[1:], (a, r, z, F, R2, Z2)))
    bias = dict(zip(SCOPES[1:], (b_attn, b_attn, b_ln1, b_ff, b_res2, b_ln2)))
    return LayerAttribution(vectors, bias, alpha.mean(axis=0), np.linalg.norm(f, axis=-1).astype(np.float64),
                            ig_seconds)


def _normalise_rows(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)


@dataclass
class Sentence:
    """One stored sentence, read once: its tokens, attention (layer, head, query, key) and every token site
    at every layer (``embed``: (n, d); the others: (n, layer, d))."""

    tokens: list[str]
    attention: np.ndarray
    sites: dict[str, np.ndarray]

    def inputs(self, layer: int) -> np.ndarray:
        """The states entering ``layer``: the embedding output for layer 1, else the ``ln2`` below."""
        return self.sites["embed"] if layer == 1 else self.sites["ln2"][:, layer - 2]

    def site(self, site: str, layer: int) -> np.ndarray:
        return self.sites[site][:, layer - 1]


def read_sentence(ds: xr.Dataset, i: int) -> Sentence:
    tokens = ds.bertology.token_slice(i)
    layers = list(range(1, ds.sizes["layer"] + 1))
    sites = {"embed": np.asarray(ds["token_embed"].isel(token=tokens).values, np.float64)}
    for site in SCOPE_SITE.values():
        sites[site] = np.asarray(ds[token_var(site)].isel(token=tokens).sel(token_layer=layers).values, np.float64)
    return Sentence([str(t) for t in ds["token_text"].values[tokens]],
                    np.asarray(sample_attention(ds, i).values, np.float64), sites)


def completeness_errors(res: LayerAttribution, sent: Sentence, layer: int) -> dict[str, float]:
    """Per vector scope, how far its vectors plus bias miss the stored site: ‖Σ − site‖ / ‖site‖."""
    errors = {}
    for scope, total in res.sums().items():
        actual = sent.site(SCOPE_SITE[scope], layer)
        errors[scope] = float(np.linalg.norm(total.astype(np.float64) - actual) / max(np.linalg.norm(actual), 1e-12))
    return errors


def needs(ds: xr.Dataset) -> None:
    """Refuse a store that is not a full capture (what a layer's whole decomposition reads), with the fix."""
    why = capabilities(ds).missing_full_capture()
    if why is not None:
        raise BertologyError(f"attribution needs {why}")


def attribute(ds: xr.Dataset, samples: int | slice | None = 50, ig_steps: int | None = None,
              params: ModelParameters | None = None, progress: bool = False, dtype=np.float32):
    """Decompose every layer on the first ``samples`` sentences of a full-capture store (or the sentences
    of a slice). Yields, per sentence and layer, the maps, the completeness errors and the FFN step's
    seconds."""
    from tqdm.auto import tqdm

    needs(ds)
    params = params or ModelParameters(ds.attrs)
    L = ds.sizes["layer"]
    lp = {l: params.layer(l) for l in range(1, L + 1)}
    if isinstance(samples, slice):
        which = range(samples.start, samples.stop)
    else:
        which = range(ds.sizes["sample"] if samples is None else min(samples, ds.sizes["sample"]))
    for i in tqdm(which, desc=f"attribution {ds.attrs.get('task', '')}", disable=not progress):
        sent = read_sentence(ds, i)
        for layer in range(1, L + 1):
            alpha = sent.attention[layer - 1]
            res = decompose_layer(sent.inputs(layer), alpha, lp[layer], ig_steps, dtype)
            yield (i, layer, sent.tokens, res.maps(), completeness_errors(res, sent, layer), res.ig_seconds,
                   res.value_norms, alpha)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(sps.spearmanr(a.ravel(), b.ravel())[0])


def attribution_tables(ds: xr.Dataset, boot_seed: int = 0, resamples: int = 1000, samples: int | None = 50,
                       ig_steps: int | None = None, correction: str = "holm", params: ModelParameters | None = None,
                       top: int = 10, min_count: int = 3, progress: bool = False,
                       dtype=np.float32) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every attribution table of a store, and the cost record (seconds of the FFN step per sentence and layer)."""
    L = ds.sizes["layer"]
    n_s = ds.sizes["sample"] if samples is None else min(samples, ds.sizes["sample"])
    needs(ds)
    params = params or ModelParameters(ds.attrs)
    example_index = next((i for i in range(n_s) if 8 <= int(ds["length"][i]) <= 24), 0)
    src, weights = shared(ds), shared(params)
    parts = compute(*(task(_block_attribution, src, sl, ig_steps, weights, dtype, example_index)
                      for sl in sample_blocks(n_s, SENTENCES_PER_TASK)))
    joined = {k: [p[k] for p in parts] for k in parts[0]} if parts else {}
    sim = np.concatenate(joined["sim"], axis=1)
    errs = np.concatenate(joined["errs"])
    cls_sums, cls_counts = np.concatenate(joined["cls_sums"]), np.concatenate(joined["cls_counts"])
    ig_seconds = [x for p in joined["ig_seconds"] for x in p]
    pair_rows = [x for p in joined["pair_rows"] for x in p]
    split_rows = [x for p in joined["split_rows"] for x in p]
    example = [x for p in joined["example"] for x in p]
    boot = Bootstrap.draw(n_s, resamples, boot_seed, keys=ds["sample"].values[:n_s])
    tables = {
        "attribution_similarity": _similarity_table(sim, boot),
        "attribution_completeness": _completeness_table(errs),
        "ff_amp_pairs": _pair_table(pd.concat(pair_rows, ignore_index=True), top, min_count),
        "ff_amp_wordsplit": _wordsplit_table(pd.concat(split_rows, ignore_index=True), resamples, boot_seed,
                                             correction),
        "attention_norms": _norms_table(cls_sums, cls_counts, boot),
        "attribution_example": pd.concat(example, ignore_index=True) if example else pd.DataFrame(),
    }
    cost = {"sentences": n_s, "layers": L, "ig_steps": ig_steps,
            "ig_seconds_per_sentence_layer": float(np.mean(ig_seconds)) if ig_seconds else float("nan"),
            "mean_tokens": float(ds["length"].values[:n_s].mean())}
    return tables, cost


#: Sentences per attribution task (each decomposes every layer of its sentences).
SENTENCES_PER_TASK = 4


def _block_attribution(ds: xr.Dataset, idx: slice, ig_steps, params: ModelParameters, dtype, example_index: int):
    """One task: the attribution of sentences ``idx`` at every layer: Spearman similarities, completeness
    errors, attention-norm sums per token class, FF-amp rows and (for the example sentence) the maps."""
    L, H = ds.sizes["layer"], ds.sizes["head"]
    nb = idx.stop - idx.start
    sim = np.full((2, nb, L, len(SCOPES) - 1), np.nan)                       # raw norms; row-normalised
    errs = np.zeros((nb, L, len(SCOPE_SITE)))
    ig_seconds = []
    pair_rows, split_rows, example = [], [], []
    cls_sums = np.zeros((nb, L, H, len(TOKEN_CLASSES), 3))                    # α, ‖f‖, ‖αf‖ summed over keys
    cls_counts = np.zeros((nb, len(TOKEN_CLASSES)))
    bpe = ds.attrs.get("model_type") == "roberta"
    for i, layer, tokens, maps, errors, secs, fnorm, alpha in attribute(ds, idx, ig_steps, params, False, dtype):
        j = i - idx.start
        ig_seconds.append(secs)
        normed = {k: _normalise_rows(m) for k, m in maps.items()}
        for k, (prev, cur) in enumerate(zip(SCOPES[:-1], SCOPES[1:])):
            sim[0, j, layer - 1, k] = _spearman(maps[prev], maps[cur])
            sim[1, j, layer - 1, k] = _spearman(normed[prev], normed[cur])
        errs[j, layer - 1] = [errors[s] for s in SCOPE_SITE]
        n = len(tokens)
        classes, _ = token_classes(tokens)
        if layer == 1:
            cls_counts[j] = np.bincount(classes, minlength=len(TOKEN_CLASSES))
        onehot = np.eye(len(TOKEN_CLASSES))[classes]                           # (n, C)
        a_bar = alpha.mean(axis=1)                                              # (h, n): mean over queries
        cls_sums[j, layer - 1, :, :, 0] = a_bar @ onehot
        cls_sums[j, layer - 1, :, :, 1] = fnorm @ onehot
        cls_sums[j, layer - 1, :, :, 2] = (a_bar * fnorm) @ onehot
        before = _normalise_rows(maps["ATTNRESLN-N"])
        amps = {stage: _normalise_rows(maps[scope]) - before for stage, scope in AMP_STAGES.items()}
        special_tok = np.array([is_special(t) for t in tokens])
        words = word_ids(tokens, bpe)
        qi, kj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ok = (qi != kj) & ~special_tok[qi] & ~special_tok[kj]
        pair_rows.append(pd.DataFrame({
            "layer": layer, "output_token": np.array(tokens, dtype=object)[qi[ok]],
            "input_token": np.array(tokens, dtype=object)[kj[ok]], "amp": amps["ff"][ok]}))
        same_word = ok & (words[qi] == words[kj])
        split_rows.append(pd.DataFrame({
            "sample": i, "layer": layer, "distance": np.abs(qi - kj)[ok], "word_split": same_word[ok],
            **{f"amp_{stage}": v[ok] for stage, v in amps.items()}}))
        if i == example_index:
            for scope, m in maps.items():
                example.append(pd.DataFrame({
                    "sample_id": int(ds["sample"].values[i]), "layer": layer, "scope": scope,
                    "output": qi.ravel(), "input": kj.ravel(), "value": m.ravel(),
                    "output_token": np.array(tokens, dtype=object)[qi.ravel()],
                    "input_token": np.array(tokens, dtype=object)[kj.ravel()]}))
    return dict(sim=sim, errs=errs, cls_sums=cls_sums, cls_counts=cls_counts, ig_seconds=ig_seconds,
                pair_rows=pair_rows, split_rows=split_rows, example=example)


def _similarity_table(sims: np.ndarray, boot: Bootstrap) -> pd.DataFrame:
    """Spearman ρ of each scope's flattened map with the previous scope's, per sentence, averaged; per layer
    (``unit`` layer) and over layers (``unit`` model, ``layer`` NULL). ``maps``: ``norm`` (the raw norms) or
    ``row_normalised`` (each output token's attributions scaled to sum 1 first). A residual adds to the
    diagonal only, so on raw norms it leaves the off-diagonal ranks — nearly all of the n² — in place; row
    normalisation lets it rescale whole rows."""
    rows = []
    for variant, sim in zip(("norm", "row_normalised"), sims):
        rows += _similarity_rows(sim, boot, variant)
    order = {s: i for i, s in enumerate(SCOPES)}
    return pd.DataFrame(rows).assign(_s=lambda d: d["scope"].map(order)).sort_values(
        ["maps", "layer", "_s"], na_position="first").drop(columns="_s").reset_index(drop=True)


def _similarity_rows(sim: np.ndarray, boot: Bootstrap, variant: str) -> list[dict]:
    n, L, K = sim.shape
    rows = []
    for k in range(K):
        per_layer = sim[:, :, k]
        values = np.concatenate([per_layer, np.nanmean(per_layer, axis=1, keepdims=True)], axis=1)
        ok = np.isfinite(values)
        est, bs = boot.ratio(np.where(ok, values, 0.0), ok.astype(float))
        lo, hi = percentile_ci(bs)
        for j in range(L + 1):
            rows.append(dict(unit="layer" if j < L else "model", layer=j + 1 if j < L else None,
                             scope=SCOPES[k + 1], previous=SCOPES[k], maps=variant,
                             statistic="spearman_with_previous_scope", estimate=float(est[j]), ci_low=float(lo[j]),
                             ci_high=float(hi[j]), n=int(ok[:, j].sum()), published=SCOPE_SIMILARITY[SCOPES[k + 1]]))
    return rows


def _completeness_table(errs: np.ndarray) -> pd.DataFrame:
    """How exactly each scope's vectors plus bias sum to the stored site: relative error per layer."""
    n, L, K = errs.shape
    rows = []
    for layer in range(L):
        for k, scope in enumerate(SCOPE_SITE):
            rows.append(dict(layer=layer + 1, scope=scope, site=SCOPE_SITE[scope], statistic="relative_error_max",
                             estimate=float(errs[:, layer, k].max()), mean=float(errs[:, layer, k].mean()), n=n))
    return pd.DataFrame(rows)


def _pair_table(df: pd.DataFrame, top: int, min_count: int) -> pd.DataFrame:
    """The ``top`` (input subword, output subword) type pairs the FFN amplifies most, per layer."""
    g = df.groupby(["layer", "input_token", "output_token"])["amp"].agg(["mean", "count"]).reset_index()
    g = g[g["count"] >= min_count]
    g = g.sort_values(["layer", "mean", "input_token", "output_token"], ascending=[True, False, True, True])
    out = g.groupby("layer").head(top).rename(columns={"mean": "estimate", "count": "n"})
    out["rank"] = out.groupby("layer").cumcount() + 1
    out["statistic"] = "ff_amp_mean"
    return out.reset_index(drop=True)


def _wordsplit_table(df: pd.DataFrame, resamples: int, seed: int, correction: str) -> pd.DataFrame:
    """Word-split pairs (two subwords of one word) against other pairs at the same distances: the difference
    of mean FF-amp, an unpaired bootstrap CI and p per layer and stage (``ff``; ``ffres``, ``ffresln``: after
    RES2 and LN2), Holm-corrected across layers within each stage."""
    rng = np.random.default_rng(seed)
    rows = []
    for stage in AMP_STAGES:
        col = f"amp_{stage}"
        for layer, d in df.groupby("layer"):
            ws = d[d["word_split"]]
            other = d[~d["word_split"] & d["distance"].isin(set(ws["distance"]))]
            if len(ws) < 2 or other.empty:
                rows.append(dict(layer=int(layer), stage=stage, estimate=np.nan, ci_low=np.nan, ci_high=np.nan,
                                 p=np.nan, n=len(ws), n_other=len(other)))
                continue
            weights = ws["distance"].value_counts(normalize=True)              # match the distance mix
            buckets = {k: g[col].to_numpy() for k, g in other.groupby("distance")}
            ws_v = ws[col].to_numpy()

            def matched(bs):
                return sum(weights[k] * bs[k] for k in weights.index)
            est = ws_v.mean() - matched({k: v.mean() for k, v in buckets.items()})
            boot = np.empty(resamples)
            for b in range(resamples):
                w = ws_v[rng.integers(0, len(ws_v), len(ws_v))].mean()
                o = matched({k: v[rng.integers(0, len(v), len(v))].mean() for k, v in buckets.items()})
                boot[b] = w - o
            lo, hi = np.quantile(boot, [0.025, 0.975])
            centred = boot - boot.mean()
            p = float(min(1.0, (np.sum(np.abs(centred) >= abs(est)) + 1) / (resamples + 1)))
            rows.append(dict(layer=int(layer), stage=stage, estimate=float(est), ci_low=float(lo), ci_high=float(hi),
                             p=p, n=len(ws), n_other=len(other)))
    out = pd.DataFrame(rows)
    out["statistic"] = "ff_amp_wordsplit_minus_other"
    out["p_adj"] = np.nan
    for stage in AMP_STAGES:
        m = (out["stage"] == stage) & out["p"].notna()
        if m.any():
            out.loc[m, "p_adj"] = adjust(out.loc[m, "p"].to_numpy(), correction)
    return out


def _norms_table(sums: np.ndarray, counts: np.ndarray, boot: Bootstrap) -> pd.DataFrame:
    """Kobayashi et al. 2020's check per layer and head (``unit`` layer, ``head`` NULL: the mean over heads)
    and token class: the mean
    attention weight α a token of the class receives, its ‖f(x)‖, and ‖α f(x)‖."""
    n, L, H, C, _ = sums.shape
    rows = []
    for c, name in enumerate(TOKEN_CLASSES):
        den = counts[:, c]
        if den.sum() == 0:
            continue
        for q, what in enumerate(("alpha", "f_norm", "alpha_f_norm")):
            per_head = sums[:, :, :, c, q].reshape(n, L * H)
            per_layer = sums[:, :, :, c, q].mean(axis=2)
            est, bs = boot.ratio(np.concatenate([per_head, per_layer], axis=1), den)
            lo, hi = percentile_ci(bs)
            keys = [(l + 1, h + 1) for l in range(L) for h in range(H)] + [(l + 1, None) for l in range(L)]
            rows += [dict(unit="head" if h else "layer", layer=l, head=h, token_class=name, statistic=what,
                          estimate=float(est[k]),
                          ci_low=float(lo[k]), ci_high=float(hi[k]), n=int(den.sum())) for k, (l, h) in enumerate(keys)]
    return pd.DataFrame(rows)


def analyze(ctx) -> dict:
    """The registry's entry: every attribution table on the first ``attribution_samples`` sentences; the
    FFN step's measured cost goes to ``timings.json``."""
    cfg = ctx.cfg
    tables, cost = attribution_tables(ctx.ds, cfg.seed, cfg.resamples, cfg.attribution_samples, cfg.ig_steps,
                                      cfg.correction, ctx.params())
    ctx.record["attribution_cost"] = cost
    return tables
