"""A live progress bar for extraction that reads the cache itself, so it works for any runner (threads, local or
remote Dask workers): done/failed counts come from the store's status array, polled once a second."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import numpy as np
from rich.console import Console

from pipeline.core.errors import StarError
from pipeline.core.progress import progress_bar
from pipeline.extraction.cache_layout import SampleStatus
from pipeline.extraction.store import FeatureCache


class CacheProgress:
    """`with CacheProgress(out): run()` shows clips done, clips/s, ETA and failures so far."""

    def __init__(self, out: str, *, console: Console | None = None, interval: float = 1.0) -> None:
        self.out, self.interval, self.console = out, interval, console
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="star-progress", daemon=True)
        self._bar = ExitStack()
        self._baseline: int | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> CacheProgress:
        self._update = self._bar.enter_context(progress_bar("extract", console=self.console or Console()))
        self._update(note="- clips/s  failed 0")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        self._bar.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def _refresh(self) -> None:
        try:
            status = FeatureCache.open(self.out).status()
        except StarError:  # the store is not created yet (the index is still being built)
            return
        finished = int(np.sum(status != SampleStatus.PENDING))
        failed = int(np.sum(status == SampleStatus.FAILED))
        if self._baseline is None:
            self._baseline, self._started = finished, time.perf_counter()
        elapsed = time.perf_counter() - self._started
        rate = (finished - self._baseline) / elapsed if elapsed > 0 else 0.0
        self._update(total=len(status), completed=finished, note=f"{rate:.2f} clips/s  failed {failed}")
