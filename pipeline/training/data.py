"""Training data for STAR: clips from the feature cache, or decoded from video.

- `CachedClips`: a torch `Dataset` over the zarr feature cache of `star extract`. It keeps only rows that
  are done and in the requested split, opens the store lazily in each process (DataLoader workers never
  share zarr handles) and reads a work unit's rows at a time (`FeatureCache.read_rows`), in the order of
  `pipeline.training.sampling.WindowSampler` when training.
- `VideoClips`: the same samples decoded from video on the fly (end-to-end mode), through the clip loader
  of extraction (`pipeline.extraction.extract.load_clip`: same frame sampling, crop/resize and joint mapping), with
  optional temporal jitter. Without jitter and augmentation it yields exactly the clip that extraction
  fed to the backbone.
- The train-time augmentations of cached maps and decoded video live in `pipeline.training.augment`.

Both datasets return joints flattened to (T, N, 3), N = persons * joints, the order of the cached heatmap
channels and of `STAR.forward`. Every random draw of a sample comes from
`numpy.random.default_rng((seed, epoch, row))`: augmentations do not depend on worker count, worker
scheduling or data-parallel rank, which is what makes resumed and multi-process training reproduce
single-process training.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import StarError
from pipeline.extraction.store import MAP_NAMES, FeatureCache
from pipeline.sources.clips import ClipSpec, load_clip
from pipeline.sources.index import AnnotationIndex
from pipeline.sources.layouts import JointLayout
from pipeline.training.augment import ClipAugment, augment_maps, augment_video
from pipeline.training.splits import done_rows


def check_preload_fits(cache: FeatureCache, *, rows: int) -> None:
    """Refuse to keep `rows` samples in memory when they would take more than half of this machine's RAM."""
    itemsize = 4 if cache.quantize else 2  # float16 maps as stored; 8-bit maps are dequantized to float32
    sample_bytes = sum(
        int(np.prod(shape)) * (4 if name == "joints" else itemsize)
        for name, shape in cache.layout.sample_shapes().items()
    )
    needed, physical = rows * sample_bytes, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > physical // 2:
        raise StarError(
            f"preloading {rows} cached samples needs {needed / 2**20:,.0f} MiB, more than half of this machine's "
            f"{physical / 2**20:,.0f} MiB: train with --set preload=false to read them from the cache each epoch"
        )


class CachedClips(Dataset):
    """Samples of one split of a feature cache: maps local, global, heatmaps (float16 as stored, float32 in 8-bit
    mode; `batch_to_device` makes them float32 where the batch lands), joints (T, N, 3) float32, and label.

    Reads go a work unit at a time: a batch's rows are grouped by unit, each unit's rows of this dataset are read
    in one call per array (`FeatureCache.read_rows`) and kept, the last `cached_rows` rows' worth, so that a batch
    order from `WindowSampler` reads every unit once per epoch. `preload` reads every unit up front and keeps
    them all.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        split_name: str,
        augment: ClipAugment | None = None,
        layout: JointLayout | None = None,
        seed: int = 0,
        sample_ids: np.ndarray | list[str] | None = None,
        preload: bool = False,
        cached_rows: int = 256,
    ) -> None:
        cache = FeatureCache.open(path, mode="r")
        self.path = cache.path
        self.split_name = split_name
        self.rows = done_rows(cache, split_name=split_name)  # ascending, so each unit's items are contiguous
        if sample_ids is not None:  # a subset of the split, e.g. the training subjects left after a validation carve
            self.rows = self.rows[np.isin(cache.sample_ids[self.rows].astype(str), np.asarray(sample_ids).astype(str))]
        self.labels = cache.labels[self.rows]
        self.sample_ids = cache.sample_ids[self.rows]
        self.units = self.rows // cache.unit_size
        self.augment = augment if augment is not None and augment.active else None
        self.flip_permutation = layout.flip_permutation() if layout is not None else None
        self.seed = seed
        self.epoch = 0
        self._cache: FeatureCache | None = None
        self._pid: int | None = None
        self.cached_rows = cached_rows
        self._blocks: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()  # unit -> its rows, least recent first
        self._preloaded = preload
        if preload:
            check_preload_fits(cache, rows=len(self.rows))
            for unit in np.unique(self.units):
                self._block(int(unit))

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on the epoch; call before creating the epoch's DataLoader iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _store(self) -> FeatureCache:
        # Opened on first use in each process: a handle inherited through fork is never reused.
        if self._cache is None or self._pid != os.getpid():
            self._cache = FeatureCache.open(self.path, mode="r")
            self._pid = os.getpid()
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_cache": None, "_pid": None}
        if not self._preloaded:
            state["_blocks"] = OrderedDict()  # each worker reads its own units
        return state

    def _block(self, unit: int) -> dict[str, np.ndarray]:
        """This dataset's rows of `unit`, read in one call per array and kept (least recently used dropped first)."""
        block = self._blocks.get(unit)
        if block is not None:
            self._blocks.move_to_end(unit)
            return block
        first, stop = np.searchsorted(self.units, [unit, unit + 1])
        block = self._store().read_rows(self.rows[first:stop], float32=False)
        block["first"] = np.asarray(first)
        self._blocks[unit] = block
        if not self._preloaded:
            while len(self._blocks) > 1 and sum(len(b["label"]) for b in self._blocks.values()) > self.cached_rows:
                self._blocks.popitem(last=False)
        return block

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """The samples at `indices` (what a DataLoader asks for per batch): each unit they touch is read once."""
        blocks = {int(unit): self._block(int(unit)) for unit in np.unique(self.units[indices])}
        return [self._sample(int(index), blocks[int(self.units[index])]) for index in indices]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def _sample(self, index: int, block: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        at = index - int(block["first"])
        sample = {name: block[name][at] for name in (*MAP_NAMES, "joints")}
        row = int(self.rows[index])
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, row))
            sample = augment_maps(sample, augment=self.augment, flip_permutation=self.flip_permutation, rng=rng)
        joints = sample["joints"]
        return {
            **{name: torch.from_numpy(np.ascontiguousarray(sample[name])) for name in MAP_NAMES},
            "joints": _tensor(joints.reshape(joints.shape[0], -1, 3)),  # (T, P*J, 3)
            "label": torch.tensor(int(block["label"][at]), dtype=torch.int64),
        }


class VideoClips(Dataset):
    """Samples decoded from video: uint8 video (T, 3, S, S), joints (T, N, 3) in input pixels, and label.

    `sample_ids` selects the samples (e.g. the done rows of a cache split, so both paths train on the
    same clips). `jitter` draws each frame at random inside its temporal segment instead of the centre.
    """

    def __init__(
        self,
        *,
        index_path: str | os.PathLike,
        sample_ids: np.ndarray | list[str],
        spec: ClipSpec,
        jitter: bool = False,
        augment: ClipAugment | None = None,
        layout: JointLayout | None = None,
        seed: int = 0,
    ) -> None:
        self.index = AnnotationIndex(Path(index_path))  # pickles as its path; reopens per process
        row_of = {str(sample_id): row for row, sample_id in enumerate(self.index.sample_ids)}
        missing = [str(s) for s in sample_ids if str(s) not in row_of]
        if missing:
            raise StarError(
                f"{len(missing)} sample(s) are not in the annotation index {index_path} (e.g. {missing[0]}): "
                "pass the index the cache was extracted from"
            )
        self.rows = np.array([row_of[str(s)] for s in sample_ids], dtype=np.int64)
        self.labels = self.index.labels[self.rows]
        self.sample_ids = np.asarray(sample_ids)
        self.spec = spec
        self.jitter = jitter
        self.augment = augment if augment is not None and augment.active else None
        self.flip_permutation = layout.flip_permutation() if layout is not None else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[index])
        rng = np.random.default_rng((self.seed, self.epoch, row))
        clip = load_clip(
            video=Path(self.index.video_paths[row]),
            skeleton=self.index.skeleton(row),
            usable_frames=int(self.index.usable_frames[row]),
            frame_size=(int(self.index.width[row]), int(self.index.height[row])),
            spec=self.spec,
            rng=rng if self.jitter else None,
        )
        frames, joints = clip.frames, clip.joints  # (T, S, S, 3) uint8, (T, P, J, 3) input pixels
        if self.augment is not None:
            frames, joints = augment_video(
                frames, joints, augment=self.augment, flip_permutation=self.flip_permutation, rng=rng
            )
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, S, S)
        return {
            "video": video.contiguous(),
            "joints": _tensor(joints.reshape(joints.shape[0], -1, 3)),  # (T, P*J, 3)
            "label": torch.tensor(int(self.labels[index]), dtype=torch.int64),
        }


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
