"""One sample's maps from its run's store: attention as stored, norm-based attribution computed on demand."""

from __future__ import annotations

import math

import numpy as np

from bertology.analysis.registry import store_supports
from bertology.analysis.vocabulary import SCOPES
from bertology.store.capabilities import capabilities
from bertology.store.reader import sample_tokens

from .common import BadRequest, Unavailable, finite_map, no_sample, run_key, snapshot


class MapService:
    """Attention and attribution maps (a mixin of :class:`~.explorer.Explorer`)."""

    @snapshot
    def available(self, run: dict) -> dict:
        """Which per-sample maps this run can show, with the reason where not."""
        has = bool(len(self.index.query("SELECT 1 FROM intervention_predictions WHERE run_id = ? LIMIT 1",
                                        [run["run_id"]]))) if "intervention_predictions" in self.index.tables() else False
        return {**self._store_shows(run),
                "interventions": True if has else "no intervention sweep was analysed for this run"}

    def _store_shows(self, run: dict) -> dict:
        """Which per-sample maps the run's store can show (``attention``, ``attribution``): True, or why not."""
        try:
            ds = self.store(run)
        except Unavailable as e:
            return {"attention": str(e), "attribution": str(e)}

        def read():
            caps = capabilities(ds)
            return {shows: store_supports(analysis, caps) or True
                    for shows, analysis in (("attention", "attention_heads"), ("attribution", "attribution"))}

        return self._shows.get(run_key(run), read)

    def _sample_in_store(self, run_id: str, sample_index: int, need: str):
        run = self.run(run_id)
        if not 0 <= sample_index < int(run["n_samples"]):
            raise no_sample(run, sample_index)
        why = self._store_shows(run)[need]
        if why is not True:
            raise Unavailable(f"run {run_id}: no {need} maps: {why}")
        return run, self.store(run)

    @staticmethod
    def _check_layer(ds, layer: int) -> None:
        L = ds.sizes["layer"]
        if not 1 <= layer <= L:
            raise BadRequest(f"layer={layer}: this model's layers are 1…{L}")

    @staticmethod
    def tokens_of(ds, i: int) -> list[str]:
        return [str(t) for t in sample_tokens(ds, i, "token_text").values]

    def attention(self, run_id: str, sample_index: int, layer: int, head: int | None) -> dict:
        """The attention map (query × key) of one head at one layer, or the mean over heads (``head`` None),
        as stored: each row sums to 1."""
        run, ds = self._sample_in_store(run_id, sample_index, "attention")
        self._check_layer(ds, layer)
        H = ds.sizes["head"]
        if head is not None and not 1 <= head <= H:
            raise BadRequest(f"head={head}: this model's heads are 1…{H} (omit head for the mean over heads)")
        n = int(ds.bertology.lengths[sample_index])
        flat = np.asarray(ds["attention"].isel(pair=ds.bertology.pair_slice(sample_index), layer=layer - 1).values,
                          np.float64)
        maps = flat.reshape(n, n, H)
        m = maps.mean(axis=2) if head is None else maps[:, :, head - 1]
        return {"run_id": run_id, "sample_index": sample_index, "layer": layer, "head": head,
                "tokens": self.tokens_of(ds, sample_index), "map": finite_map(m)}

    def attribution(self, run_id: str, sample_index: int, layer: int, scope: str) -> dict:
        """One scope's token-to-token attribution map (output token × input token) at one layer, computed
        from the store's states and the checkpoint's parameters (Kobayashi et al.; see
        :mod:`bertology.analysis.attribution`), with each scope's completeness error at that layer."""
        from bertology.analysis.attribution import completeness_errors, decompose_layer, read_sentence
        from bertology.store.errors import StoreError
        from bertology.store.params import ModelParameters

        if scope not in SCOPES:
            raise BadRequest(f"scope={scope!r}: one of {', '.join(SCOPES)}")
        run, ds = self._sample_in_store(run_id, sample_index, "attribution")
        self._check_layer(ds, layer)
        def read():
            try:
                return ModelParameters(ds.attrs)
            except StoreError as e:
                raise Unavailable(f"run {run_id}: attribution needs the checkpoint's weights: {e}") from None

        params = self._params.get(run_key(run), read)
        sent = read_sentence(ds, sample_index)
        res = decompose_layer(sent.inputs(layer), sent.attention[layer - 1], params.layer(layer))
        errors = completeness_errors(res, sent, layer)
        return {"run_id": run_id, "sample_index": sample_index, "layer": layer, "scope": scope,
                "tokens": sent.tokens, "map": finite_map(res.maps()[scope]),
                "completeness_error": {k: (v if math.isfinite(v) else None) for k, v in errors.items()}}
