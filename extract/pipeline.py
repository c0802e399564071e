"""Forward passes and store writes overlapped: a bounded queue to one writer thread.

While the writer thread compresses and writes window w (zstd and the chunk I/O release the GIL), the main
thread runs the forward passes of window w+1. At most ``depth`` finished windows wait in the queue, so memory
stays bounded by ``depth + 2`` windows. Windows are written and committed strictly in order by the one thread;
a window counts as done only after its commit, so a crash at any point loses at most uncommitted windows,
which a rerun redoes. ``threaded=False`` writes each window as it is handed over (what extraction does on
a CPU, where the forward passes already use every core: bench/RESULTS.md). An error in the writer (or in
the ``on_commit`` callback) stops the extraction: it is raised in the main thread at its next hand-over, or
when the pipeline closes.
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


class WindowPipeline:
    """``put(w, data)`` hands window ``w`` to the writer; ``close()`` waits for every write and commit."""

    def __init__(self, writer, on_commit=None, depth: int = 1, threaded: bool = True):
        self.writer, self.on_commit, self.threaded = writer, on_commit, threaded
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bertology-writer", daemon=True)
        if threaded:
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue                      # drain: nothing after a failed window is written
            try:
                self._write(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _write(self, w: int, data: dict) -> None:
        self.writer.write_window(w, data)
        self.writer.commit(w)
        if self.on_commit is not None:
            self.on_commit(w)

    def put(self, w: int, data: dict) -> None:
        self._raise()
        if not self.threaded:
            self._write(w, data)
            return
        while True:
            try:
                self._queue.put((w, data), timeout=0.2)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        if not self.threaded:
            return
        self._queue.put(_DONE)
        self._thread.join()
        self._raise()

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if not self.threaded:
            return False
        if exc is None:
            self.close()
        else:                                 # the main thread failed: stop after what is queued
            self._error = self._error or exc
            self._queue.put(_DONE)
            self._thread.join()
        return False
