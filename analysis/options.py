"""The options of ``bertology analyze``, declared once: type, constraint, default, flag and help.

As scikit-learn declares an estimator's parameter constraints beside its parameters, each field of
:class:`AnalyzeConfig` carries its constraint (:func:`option`). The dataclass validates itself at
construction (an unknown value is refused with the valid set), and :func:`add_arguments` makes the command
line's flags, choices and help from the same declarations, so no option exists in one place only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

from bertology import BertologyError
from bertology.store.schema import SITES

from .bootstrap import DEFAULT_RESAMPLES
from .regression import ERROR_THRESHOLD

CORRECTIONS = ("holm", "fdr_bh")
SKIP_STATISTICS = ("fisher_trace", "centroid_ratio", "probe_accuracy", "probe_r2")
SKIP_RULES = ("nonpositive", "k_lowest")
POOLINGS = ("cls", "mean")
#: An error is confident when its margin p(predicted) − p(true) exceeds this (the mission's Finding 3).
CONFIDENT_MARGIN = 0.3


class OptionError(BertologyError, ValueError):
    """A setting outside its constraint: the message names the option and the values it takes."""


@dataclass(frozen=True)
class Constraint:
    """What values an option takes: ``kind`` (int, float, str, bool, tuple), ``choices``, bounds ``low`` and
    ``high`` (inclusive), ``optional`` (None allowed); on the command line ``flag`` (``""``: none),
    ``negate`` (a boolean whose flag turns it off, e.g. ``--no-probe``) or ``turns_on`` (a flag that sets the
    field to this value, e.g. ``--mean-pooled``)."""

    kind: type
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    optional: bool = False
    flag: str | None = None
    negate: bool = False
    turns_on: Any = None

    def check(self, name: str, value) -> None:
        """Refuse a value outside the constraint, naming the option and what it takes."""
        if value is None:
            if self.optional:
                return
            raise OptionError(f"{name}: a value is required ({self.describe()})")
        if self.kind is tuple and self.choices is None:   # increasing numbers (edges)
            values = tuple(value) if isinstance(value, (list, tuple)) else ()
            ok = len(values) >= 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not ok or any(b <= a for a, b in zip(values, values[1:])):
                raise OptionError(f"{name}={value!r}: {self.describe()}")
            return
        if self.kind is tuple:
            values = tuple(value) if isinstance(value, (list, tuple)) else None
            bad = [v for v in values or () if self.choices and v not in self.choices]
            if values is None or not values or bad:
                raise OptionError(f"{name}={value!r}: one or more of {', '.join(map(str, self.choices))}")
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise OptionError(f"{name}={value!r}: true or false")
            return
        if self.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or (self.kind is int and not float(value).is_integer())):
            raise OptionError(f"{name}={value!r}: {self.describe()}")
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"{name}={value!r}: one of {', '.join(map(str, self.choices))}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise OptionError(f"{name}={value!r}: {self.describe()}")

    def describe(self) -> str:
        if self.kind is tuple and self.choices is None:
            return "at least three increasing numbers, e.g. 0,1,2,3,4,5"
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = {int: "an integer", float: "a number"}.get(self.kind, self.kind.__name__)
        if self.low is not None and self.high is not None:
            return f"{kind} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{kind} of at least {self.low:g}"
        return kind


def option(default, kind: type, help: str, **constraint):
    """A dataclass field with its :class:`Constraint`."""
    return field(default=default, metadata={"constraint": Constraint(kind, help, **constraint)})


@dataclass(frozen=True)
class AnalyzeConfig:
    """Every setting of ``bertology analyze``; :mod:`registry` says which analysis reads which."""

    resamples: int = option(DEFAULT_RESAMPLES, int, "bootstrap resamples of means, shares and paired "
                            "differences (default 1000)", low=10)
    seed: int = option(0, int, "seed of the bootstrap, the permutations, the probes' folds", low=0)
    correction: str = option("holm", str, "multiple-comparison correction across layers, heads, kinds",
                             choices=CORRECTIONS)
    skip_statistic: str = option("fisher_trace", str, "the separability statistic whose Δ picks skip "
                                 "candidates", choices=SKIP_STATISTICS)
    skip_rule: str = option("nonpositive", str, "skip candidates: Δ ≤ 0, or the k lowest", choices=SKIP_RULES)
    skip_k: int = option(1, int, "with --skip-rule k_lowest: how many layers", low=1)
    probe: bool = option(True, bool, "skip the cross-validated probe accuracy", flag="--no-probe", negate=True)
    pooling: tuple = option(("cls",), tuple, "also measure separability of mean-pooled tokens (needs "
                            "token-level states)", choices=POOLINGS, flag="--mean-pooled", turns_on=("cls", "mean"))
    permutations: int = option(200, int, "label permutations for the separability ratios' chance level "
                               "(0: none)", low=0)
    strength_layer: int | None = option(None, int, "layer for token strength (default: 8 of 12, else 2/3 "
                                        "depth)", low=1, optional=True)
    strength_site: str = option("ln2", str, "site for token strength", choices=SITES)
    confident_margin: float = option(CONFIDENT_MARGIN, float, "margin above which an error is confident",
                                     low=0.0, high=1.0)
    bins: tuple | None = option(None, tuple, "a regression task's score bins, as edges (e.g. 0,1,2,3,4,5 on "
                                "STS-B's 0-5 scale): separability and the FFN's energies are measured on them "
                                "(without: left out)", optional=True)
    error_threshold: float = option(ERROR_THRESHOLD, float, "a regression's error: an absolute error above this "
                                    "(default 1.0, on STS-B's 0-5 scale)", low=0.0)
    attention: bool = option(True, bool, "skip the attention-head tables", flag="--no-attention", negate=True)
    attribution_samples: int = option(50, int, "norm-based attribution (Kobayashi et al.) on the first N "
                                      "samples (0: none; default 50)", low=0)
    ig_steps: int | None = option(None, int, "integrated-gradient steps through the FFN activation (default: "
                                  "the exact integral)", low=1, optional=True)
    block_size: int | None = option(None, int, "samples per analysis task (default 256); results do not "
                                    "depend on it", low=1, optional=True)

    def __post_init__(self):
        for f in fields(self):
            c: Constraint = f.metadata["constraint"]
            value = getattr(self, f.name)
            if c.kind is tuple and isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
                value = getattr(self, f.name)
            c.check(f.name, getattr(self, f.name))
            if c.kind is int and value is not None:
                object.__setattr__(self, f.name, int(value))     # 1000.0 is 1000
        if self.skip_statistic in ("probe_accuracy", "probe_r2") and not self.probe:
            raise OptionError(f"skip_statistic={self.skip_statistic!r} needs the probe: drop --no-probe, or choose "
                              f"another --skip-statistic")


def constraints(cls=AnalyzeConfig) -> dict[str, Constraint]:
    """Each option's :class:`Constraint`, by field name."""
    return {f.name: f.metadata["constraint"] for f in fields(cls)}


def add_arguments(parser: argparse.ArgumentParser, cls=AnalyzeConfig, only: tuple[str, ...] | None = None) -> None:
    """The command-line flags of every option of ``cls`` (or of those named in ``only``): ``--field-name``
    with its type, bounds, choices and help, all from the declarations."""
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        c: Constraint = f.metadata["constraint"]
        flag = c.flag or "--" + f.name.replace("_", "-")
        if c.negate:
            parser.add_argument(flag, dest=f.name, action="store_false", default=f.default, help=c.help)
        elif c.turns_on is not None:
            parser.add_argument(flag, dest=f.name, action="store_const", const=c.turns_on, default=f.default,
                                help=c.help)
        else:
            parser.add_argument(flag, dest=f.name, type=_parser(f.name, c), default=f.default,
                                choices=c.choices, help=c.help)


def from_arguments(args: argparse.Namespace, cls=AnalyzeConfig):
    """The options parsed by :func:`add_arguments`."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _parser(name: str, c: Constraint):
    """An argparse type that refuses a value outside the constraint before any work."""
    def parse(text: str):
        try:
            value = tuple(float(t) for t in text.replace(",", " ").split()) if c.kind is tuple else c.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {c.describe()}") from None
        try:
            c.check(name, value)
        except OptionError:
            raise argparse.ArgumentTypeError(f"{text} is not {c.describe()}") from None
        return value
    return parse
