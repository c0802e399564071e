"""What every analysis of one ``bertology analyze`` run reads: the store, its capabilities, the options,
the one bootstrap, what ``analyze`` was given beside the store, and the tables computed before it."""

from __future__ import annotations

from dataclasses import dataclass, field

import xarray as xr

from bertology.store.capabilities import Capabilities

from .bootstrap import Bootstrap
from .options import AnalyzeConfig


@dataclass
class Context:
    ds: xr.Dataset
    cfg: AnalyzeConfig
    boot: Bootstrap
    caps: Capabilities
    store: object = None                 # the store's Location (for messages)
    train: xr.Dataset | None = None      # --train-store
    sweep: object = None                 # --sweep (a path or URL)
    pretrained: object = None            # --pretrained-store (a path or URL)
    checkpoint: object = None            # --checkpoint
    planned: frozenset = frozenset()             # every table the plan writes (some read it: ffn_output)
    tables: dict = field(default_factory=dict)   # every table computed so far, by name
    record: dict = field(default_factory=dict)   # what analysis.json and timings.json record (layer_fit, cost)
    _params: object = None

    def params(self):
        """The store's checkpoint parameters (checksum-verified), read once per run."""
        if self._params is None:
            from bertology.store.params import ModelParameters

            self._params = ModelParameters(self.ds.attrs, self.checkpoint)
        return self._params
