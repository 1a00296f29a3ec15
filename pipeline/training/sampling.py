"""The training order over a feature cache: random batches that are cheap to read.

The rows of a cache's work unit sit in one zarr chunk per array, and a zarr call costs milliseconds of
Python overhead whatever it reads. Reading a batch's rows one by one (a plain random permutation) decodes a
whole unit per row. `WindowSampler` shuffles in two levels instead: the groups (work units) in random order,
gathered into windows of at least `window_rows` items, and the items in random order inside each window. A
batch then draws its rows from a few units, which `CachedClips` reads once (one call per array) and keeps
while the window lasts.

DataLoader workers take batches in turn (batch j goes to worker j mod W). So that each window is read by
one worker only, the windows are dealt to `streams` interleaved streams of batches: with `streams` = the
number of workers, worker w reads exactly the windows of stream w. The order is a function of (seed, epoch,
streams). With data-parallel training each global batch is cut into one equal slice per rank, so W processes
train on exactly the batches of one process (each stream is padded to a multiple of the world size with its
own first rows, as `DistributedSampler` pads).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class WindowSampler:
    """Batch sampler (lists of dataset indices) of one rank; `groups[i]` is the group (work unit) of item i."""

    def __init__(
        self,
        groups: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        window_rows: int,
        streams: int = 1,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"the global batch {batch_size} must be positive and divisible by the {world_size} processes"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for {world_size} processes")
        self.groups = np.asarray(groups, dtype=np.int64)
        self.batch_size, self.seed, self.window_rows = batch_size, seed, max(1, window_rows)
        self.streams, self.world_size, self.rank = max(1, streams), world_size, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _windows(self, rng: np.random.Generator) -> list[np.ndarray]:
        names, counts = np.unique(self.groups, return_counts=True)
        by_group = np.argsort(self.groups, kind="stable")  # items grouped, in group order
        starts = np.concatenate([[0], np.cumsum(counts)])
        windows, window, size = [], [], 0
        for group in rng.permutation(len(names)):
            window.append(by_group[starts[group] : starts[group + 1]])
            size += counts[group]
            if size >= self.window_rows:
                windows.append(rng.permutation(np.concatenate(window)))
                window, size = [], 0
        if window:
            windows.append(rng.permutation(np.concatenate(window)))
        return windows

    def batches(self) -> list[np.ndarray]:
        """The epoch's global batches, in the order they are trained on."""
        windows = self._windows(np.random.default_rng((self.seed, self.epoch)))
        parts: list[list[np.ndarray]] = [[] for _ in range(self.streams)]
        for window in windows:  # each window to the stream with the fewest items so far: streams end together
            min(parts, key=lambda part: sum(len(w) for w in part)).append(window)
        streams = []
        for part in parts:
            sequence = np.concatenate([np.zeros(0, dtype=np.int64), *part])
            padding = -len(sequence) % self.world_size
            if padding:
                sequence = np.concatenate([sequence, np.resize(sequence, padding)])
            streams.append(
                [sequence[start : start + self.batch_size] for start in range(0, len(sequence), self.batch_size)]
            )
        # Longest first: a last round with fewer streams still sends stream s to worker s.
        streams.sort(key=len, reverse=True)
        longest = len(streams[0])
        return [stream[turn] for turn in range(longest) for stream in streams if turn < len(stream)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            share = len(batch) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return len(self.batches())
