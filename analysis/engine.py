"""Where an analysis's work runs: tasks over the store's sample blocks, on one dask scheduler.

Every analysis splits its per-sample work (class moments, per-sample sums over tokens, attention features,
attribution per sentence, per-layer probes) into tasks over blocks of consecutive samples. A task reads its
block straight from the store (zarr, no nested dask graph) and returns either per-sample values, which are
concatenated in sample order, or partial sums, which are added in a fixed tree. The graph is the same
whichever scheduler runs it, so the results do not depend on the number of workers; bootstrap weights are a
function of (seed, sample id) (:mod:`bootstrap`), so they do not depend on how blocks are formed either
(sums over blocks of another size agree to floating-point rounding).

:func:`engine` chooses the scheduler for a ``with`` block (``--scheduler``):

- ``threads`` (the default on one machine): dask's threaded scheduler;
- ``processes``: dask's multiprocessing scheduler;
- ``local:N``: a ``distributed.LocalCluster`` of N single-threaded worker processes on this machine;
- ``tcp://host:port`` (or ``$DASK_SCHEDULER_ADDRESS``): a running ``dask.distributed`` scheduler. Its
  workers must be able to import bertology and reach the stores (credentials from their own environment).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

import dask
import numpy as np

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Samples per analysis task unless ``--block-size`` says otherwise.
DEFAULT_BLOCK = 256


def parse_scheduler(text: str | None) -> tuple[str, int | str | None]:
    """``(kind, argument)`` of a ``--scheduler`` value: ('threads', None), ('processes', None),
    ('local', N) or ('address', 'tcp://…')."""
    text = (text or "threads").strip()
    if text in ("threads", "processes", "sync"):
        return text, None
    if text.startswith("local:"):
        n = text.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--scheduler {text}: local:N needs a positive number of workers, e.g. local:4")
        return "local", int(n)
    if "://" in text:
        return "address", text
    raise ValueError(f"--scheduler {text}: use threads, processes, local:N, or a scheduler address tcp://host:port")


@contextmanager
def engine(spec: str | None = None, *, say=None):
    """Run the dask computations inside the block on the scheduler ``spec`` (see the module docstring);
    ``None`` means ``$DASK_SCHEDULER_ADDRESS`` if set, else ``threads``. ``say`` receives one line naming
    the cluster and its dashboard."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    kind, arg = parse_scheduler(spec or os.environ.get(SCHEDULER_ENV) or "threads")
    if kind in ("threads", "processes", "sync"):
        with dask.config.set(scheduler=kind):
            yield kind
        return
    from distributed import Client, LocalCluster

    if kind == "local":
        cluster = LocalCluster(n_workers=arg, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        cluster, client = None, Client(arg)
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        say(f"bertology analyze: dask cluster {client.scheduler.address} with {workers} worker(s); "
            f"dashboard {client.dashboard_link}")
        with dask.config.set(scheduler=client.get):
            yield kind
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def sample_blocks(n: int, size: int | None = None) -> list[slice]:
    """Consecutive blocks of at most ``size`` samples covering 0..n−1."""
    size = size or DEFAULT_BLOCK
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def shared(obj):
    """``obj`` as one node of the graph, sent to each worker once rather than with every task (named, not
    hashed: hashing a dataset for a key would read its data)."""
    return dask.delayed(obj, pure=False, traverse=False)


def task(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` as a task."""
    return dask.delayed(fn, pure=True, traverse=False)(*args, **kwargs)


def tree_sum(parts: list, fan_in: int = 4):
    """The sum of ``parts`` (tasks returning arrays, tuples of arrays or dicts of them), added in a fixed
    tree of ``fan_in`` parts per node: the same additions in the same order on any scheduler."""
    parts = list(parts)
    if not parts:
        raise ValueError("tree_sum of no parts")
    while len(parts) > 1:
        parts = [task(_add, *parts[i:i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def _add(*xs):
    first = xs[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        parts = (_add(*parts) for parts in zip(*xs))
        return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)
    if isinstance(first, dict):
        return {k: _add(*(x[k] for x in xs)) for k in first}
    out = first
    for x in xs[1:]:
        out = out + x
    return out


def concat(parts: list, axis: int = 0):
    """Per-block results (arrays, or tuples/dicts of arrays) joined along ``axis`` in block order."""
    return task(_concat, axis, *parts)


def _concat(axis, *xs):
    first = xs[0]
    if isinstance(first, tuple):
        return tuple(_concat(axis, *parts) for parts in zip(*xs))
    if isinstance(first, dict):
        return {k: _concat(axis, *(x[k] for x in xs)) for k in first}
    return np.concatenate(xs, axis=axis)


def compute(*tasks):
    """Compute tasks on the current scheduler (see :func:`engine`)."""
    return dask.compute(*tasks)
