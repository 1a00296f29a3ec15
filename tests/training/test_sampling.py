"""The training order over a feature cache: random, complete, cheap to read, the same on any number of ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extraction.store import FeatureCache
from pipeline.training.data import CachedClips
from pipeline.training.distributed import DistContext
from pipeline.training.sampling import WindowSampler
from pipeline.training.setup import make_loader
from tests.fixtures.feature_caches import TOY_BENCHMARK, write_toy_cache

GROUPS = np.repeat(np.arange(10), [16, 16, 9, 16, 3, 16, 16, 12, 16, 16])  # units with some rows of another split


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_every_item_once_per_epoch_in_batches_of_few_units(streams):
    sampler = WindowSampler(GROUPS, batch_size=8, seed=0, window_rows=16, streams=streams)
    batches = list(sampler)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(GROUPS))) and len(batches) == len(sampler)
    assert sum(len(batch) < 8 for batch in batches) <= streams  # one short batch at most per stream
    assert max(len(set(GROUPS[batch])) for batch in batches) <= 3  # a window holds >= 16 rows of whole units
    # Batch j goes to DataLoader worker j mod streams: each unit is read by one worker only, but for a few
    # where the streams' last batches fall out of step.
    owners = {}
    for j, batch in enumerate(batches):
        for group in set(GROUPS[batch].tolist()):
            owners.setdefault(group, set()).add(j % streams)
    assert sum(len(owner) > 1 for owner in owners.values()) <= streams - 1


def test_the_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch, window_rows=16):
        sampler = WindowSampler(GROUPS, batch_size=8, seed=seed, window_rows=window_rows)
        sampler.set_epoch(epoch)
        return np.concatenate(list(sampler)).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    full = order(0, 0, window_rows=len(GROUPS))  # one window: a plain permutation of everything
    assert sorted(full) == list(range(len(GROUPS))) and full != list(range(len(GROUPS)))


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_every_global_batch(world_size):
    one = list(WindowSampler(GROUPS, batch_size=8, seed=3, window_rows=16, streams=2))
    ranks = [
        list(WindowSampler(GROUPS, batch_size=8, seed=3, window_rows=16, streams=2, world_size=world_size, rank=r))
        for r in range(world_size)
    ]
    assert len({len(batches) for batches in ranks}) == 1  # no rank waits for a batch the others do not have
    padded = 0
    for j, batch in enumerate(one):
        parts = [ranks[r][j] for r in range(world_size)]
        assert len({len(part) for part in parts}) == 1
        together = np.concatenate(parts).tolist()
        assert set(batch) <= set(together) and 0 <= len(together) - len(batch) < world_size
        padded += len(together) - len(batch)
    assert padded <= 2 * (world_size - 1)  # each stream's last batch is padded to a multiple of the world size
    with pytest.raises(ValueError, match="divisible"):
        WindowSampler(GROUPS, batch_size=6, seed=0, window_rows=16, world_size=4)


def test_training_reads_each_unit_once_per_epoch(tmp_path, monkeypatch):
    cache = write_toy_cache(tmp_path / "toy.zarr", n=24)  # units of 4 rows
    reads = []
    original = FeatureCache.read_rows
    monkeypatch.setattr(
        FeatureCache, "read_rows", lambda self, rows, **kw: reads.append(list(rows)) or original(self, rows, **kw)
    )
    dataset = CachedClips(path=cache.path, split_name=f"{TOY_BENCHMARK}-train")
    process = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    loader = make_loader(dataset, batch_size=4, seed=0, workers=0, ctx=process, shuffle=True)
    labels = torch.cat([batch["label"] for batch in loader])
    assert sorted(labels.tolist()) == sorted(dataset.labels.tolist())
    assert sorted(row for rows in reads for row in rows) == dataset.rows.tolist()  # every row read once
    assert len(reads) == len(np.unique(dataset.units))  # one read per unit
    assert next(iter(loader))["local"].dtype == torch.float16  # maps stay float16 until the model
