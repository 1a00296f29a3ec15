"""Training data for STAR: clips from the feature cache, or decoded from video.

- `CachedClips`: a torch `Dataset` over the zarr feature cache of `star extract`. It keeps only rows that
  are done and in the requested split, opens the store lazily in each process (DataLoader workers never
  share zarr handles) and reads a work unit's rows at a time (`FeatureCache.read_rows`), in the order of
  `pipeline.training.sampling.WindowSampler` when training.
- `VideoClips`: the same samples decoded from video on the fly (end-to-end mode), through the clip loader
  of extraction (`pipeline.extraction.extract.load_clip`: same frame sampling, crop/resize and joint mapping), with
  optional temporal jitter. Without jitter and augmentation it yields exactly the clip that extraction
  fed to the backbone.
- `ClipAugment`: train-time augmentations that stay valid on cached maps: a horizontal flip of every map
  with the joints mirrored and left/right swapped, and joint dropout. Off for evaluation.

Both datasets return joints flattened to (T, N, 3), N = persons * joints, the order of the cached heatmap
channels and of `STAR.forward`. Every random draw of a sample comes from
`numpy.random.default_rng((seed, epoch, row))`: augmentations do not depend on worker count, worker
scheduling or data-parallel rank, which is what makes resumed and multi-process training reproduce
single-process training.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import StarError
from pipeline.extraction.skeleton_store import SkeletonCache, is_skeleton_cache
from pipeline.extraction.store import MAP_NAMES, FeatureCache
from pipeline.sources.clips import ClipSpec, load_clip
from pipeline.sources.datasets.ntu import SAMPLE_NAME
from pipeline.sources.index import AnnotationIndex
from pipeline.sources.layouts import JointLayout, layout_from_spec


@dataclass(frozen=True)
class ClipAugment:
    """Probabilities of the train-time augmentations; all zero means none.

    hflip mirrors the clip and swaps left/right joints. It changes the meaning of lateralised classes
    ("wave left hand" becomes "wave right hand"), so it is off unless asked for.
    """

    hflip: float = 0.0
    joint_dropout: float = 0.0  # each (frame, person, joint) hidden independently

    @property
    def active(self) -> bool:
        return self.hflip > 0 or self.joint_dropout > 0


# ----------------------------------------------------------------------------------------- augmentations


def mirror_joints(joints: np.ndarray, *, extent: float, flip_permutation: np.ndarray) -> np.ndarray:
    """(T, P, J, 3) joints of a mirrored image: x -> extent - x for visible joints, left/right swapped."""
    mirrored = joints[:, :, flip_permutation].copy()
    visible = mirrored[..., 2] > 0
    mirrored[..., 0] = np.where(visible, extent - mirrored[..., 0], mirrored[..., 0])
    return mirrored


def flip_maps(sample: dict[str, Any], *, flip_permutation: np.ndarray) -> dict[str, Any]:
    """Mirror a cached sample: every map along its width, joints mirrored, left/right swapped in joints and heatmaps.

    Joints are in local-map cell units, cell i spanning [i, i + 1): mirroring sends cell i to w' - 1 - i,
    i.e. x to w' - x, so each joint stays at the peak of its mirrored heatmap.
    """
    heatmaps = sample["heatmaps"]  # (T, P*J, h', w')
    frames, channels, height, width = heatmaps.shape
    joints = sample["joints"]  # (T, P, J, 3)
    persons, num_joints = joints.shape[1], joints.shape[2]
    if channels != persons * num_joints or len(flip_permutation) != num_joints:
        raise StarError(
            f"cannot flip: {channels} heatmaps for {persons}x{num_joints} joints and a {len(flip_permutation)}-joint layout"
        )
    flipped = dict(sample)
    flipped["local"] = sample["local"][..., ::-1]
    flipped["global"] = sample["global"][..., ::-1]
    per_joint = heatmaps[..., ::-1].reshape(frames, persons, num_joints, height, width)  # (T, P, J, h', w')
    flipped["heatmaps"] = per_joint[:, :, flip_permutation].reshape(frames, channels, height, width)
    flipped["joints"] = mirror_joints(joints, extent=width, flip_permutation=flip_permutation)
    return flipped


def hidden_joints(shape: tuple[int, int, int], *, probability: float, rng: np.random.Generator) -> np.ndarray:
    """(T, P, J) bool mask of joints to hide, each with `probability`."""
    return rng.random(shape) < probability


def drop_joints(sample: dict[str, Any], *, hidden: np.ndarray) -> dict[str, Any]:
    """Hide joints of a cached sample as a missing detection looks: zero (x, y, confidence), empty heatmap."""
    dropped = dict(sample)
    dropped["joints"] = np.where(hidden[..., None], sample["joints"].dtype.type(0), sample["joints"])
    channel_hidden = hidden.reshape(hidden.shape[0], -1)[:, :, None, None]  # (T, P*J, 1, 1)
    dropped["heatmaps"] = np.where(channel_hidden, sample["heatmaps"].dtype.type(0), sample["heatmaps"])
    return dropped


def augment_maps(
    sample: dict[str, Any], *, augment: ClipAugment, flip_permutation: np.ndarray | None, rng: np.random.Generator
) -> dict[str, Any]:
    """Apply `augment` to one cached sample; the same draws for the same rng seed."""
    if _draw_flip(augment=augment, flip_permutation=flip_permutation, rng=rng):
        sample = flip_maps(sample, flip_permutation=flip_permutation)
    if augment.joint_dropout > 0:
        sample = drop_joints(
            sample, hidden=hidden_joints(sample["joints"].shape[:3], probability=augment.joint_dropout, rng=rng)
        )
    return sample


def augment_video(
    frames: np.ndarray,
    joints: np.ndarray,
    *,
    augment: ClipAugment,
    flip_permutation: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `augment` to decoded frames (T, S, S, 3) and input-pixel joints (T, P, J, 3).

    Input pixels follow OpenCV's pixel-centre convention (pixel i has coordinate i), so a mirror sends
    x to S - 1 - x. A hidden joint gets confidence 0, and the model then draws it an empty heatmap.
    """
    if _draw_flip(augment=augment, flip_permutation=flip_permutation, rng=rng):
        frames = frames[:, :, ::-1]
        joints = mirror_joints(joints, extent=frames.shape[2] - 1, flip_permutation=flip_permutation)
    if augment.joint_dropout > 0:
        hidden = hidden_joints(joints.shape[:3], probability=augment.joint_dropout, rng=rng)
        joints = np.where(hidden[..., None], np.float32(0), joints)
    return frames, joints


def _draw_flip(*, augment: ClipAugment, flip_permutation: np.ndarray | None, rng: np.random.Generator) -> bool:
    flip = rng.random() < augment.hflip  # drawn even at p=0 so that later draws do not depend on the setting
    if flip and flip_permutation is None:
        raise StarError("hflip needs the joint layout's left/right pairs; set hflip to 0 or pass the layout")
    return bool(flip)


# ----------------------------------------------------------------------------------------- the cache and its backbone


@dataclass(frozen=True)
class CacheMeta:
    """What a feature or skeleton cache says about the data: its fingerprint, class names and joint layout."""

    path: str
    fingerprint: dict[str, Any]
    class_names: list[str]
    layout: JointLayout
    persons: int
    num_joints: int  # per person
    skeletons: bool = False  # a skeleton cache (`star extract --modality pose`): no maps, full-rate skeletons

    def open(self) -> FeatureCache | SkeletonCache:
        return SkeletonCache.open(self.path) if self.skeletons else FeatureCache.open(self.path, mode="r")

    @property
    def clip_spec(self) -> ClipSpec:
        """The clip geometry the cache was extracted with (frames, input size, crop)."""
        return ClipSpec(
            frames=int(self.fingerprint["frames"]),
            size=int(self.fingerprint["input_size"]),
            crop=str(self.fingerprint["crop"]),
        )


def read_cache_meta(path: str | os.PathLike) -> CacheMeta:
    """Open a cache (one-line StarError when absent or damaged) and read what training needs from it."""
    if not str(path):
        raise StarError("no feature cache given: pass --from-cache CACHE (the --out of `star extract`)")
    if is_skeleton_cache(path):
        skeletons = SkeletonCache.open(path)
        fingerprint = skeletons.fingerprint
        return CacheMeta(
            path=skeletons.path,
            fingerprint=fingerprint,
            class_names=list(fingerprint["class_names"]),
            layout=layout_from_spec(fingerprint["layout"], where=f"joint layout of {skeletons.path}"),
            persons=skeletons.persons,
            num_joints=skeletons.num_joints,
            skeletons=True,
        )
    cache = FeatureCache.open(path, mode="r")
    fingerprint = cache.fingerprint
    missing = [
        key for key in ("class_names", "layout", "frames", "input_size", "crop", "weights") if key not in fingerprint
    ]
    if missing:
        raise StarError(
            f"the cache {cache.path} lacks {', '.join(missing)} in its fingerprint: it was written by an older STAR; extract it again"
        )
    layout = layout_from_spec(fingerprint["layout"], where=f"joint layout of {cache.path}")
    return CacheMeta(
        path=cache.path,
        fingerprint=fingerprint,
        class_names=list(fingerprint["class_names"]),
        layout=layout,
        persons=cache.layout.persons,
        num_joints=cache.layout.num_joints,
    )


# ----------------------------------------------------------------------------------------- splits


def cache_split_name(cache: FeatureCache | SkeletonCache, *, benchmark: str, split: str) -> str:
    """The cache's name for (benchmark, split): "<benchmark>-<split>"; without a benchmark, the only match."""
    names = cache.split_names
    if benchmark:
        candidates = [f"{benchmark}-{split}"] if f"{benchmark}-{split}" in names else []
    else:
        candidates = [split] if split in names else [name for name in names if name.endswith(f"-{split}")]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        where = f" for benchmark {benchmark!r}" if benchmark else ""
        raise StarError(f"the cache {cache.path} has no split {split!r}{where}; it has: {', '.join(names) or 'none'}")
    benchmarks = ", ".join(name.removesuffix(f"-{split}") for name in candidates)
    raise StarError(f"split {split!r} exists for several benchmarks in {cache.path} ({benchmarks}): pass --benchmark")


def done_rows(cache: FeatureCache | SkeletonCache, *, split_name: str) -> np.ndarray:
    """Cache rows of `split_name` whose extraction is done (pending and failed samples are never read)."""
    return np.flatnonzero(cache.split(split_name) & cache.done_mask())


# ----------------------------------------------------------------------------------------- datasets


def carve_validation(
    sample_ids: np.ndarray | list[str], *, fraction: float, labels: np.ndarray | list[int] | None = None
) -> tuple[list[str], list[str]]:
    """(train, validation) sample ids: `fraction` of the performers held out, so no person is in both.

    Performers are read from NTU names (SsssCcccPpppRrrrAaaa); other datasets, and training sets of one performer,
    carve whole samples, stratified by class when `labels` are given (each class keeps about `fraction` of its
    samples in validation, at least one, never all). The choice is a fixed function of the ids (not of the
    training seed), so runs with different seeds see the same data.
    """
    ids = [str(sample_id) for sample_id in sample_ids]
    names = [SAMPLE_NAME.fullmatch(sample_id) for sample_id in ids]
    groups = [f"P{int(name.group(3))}" for name in names] if all(names) else ids
    if len(set(groups)) < 2:
        groups = ids
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise StarError(
            f"cannot carve a validation split from {len(unique)} training sample(s): pass --val-split with "
            "a split of the cache, or --val-split '' to train without validation"
        )
    rng = np.random.default_rng(0)
    if groups is ids and labels is not None:
        by_class: dict[int, list[str]] = {}
        for sample_id, label in sorted(zip(ids, np.asarray(labels).tolist(), strict=True)):
            by_class.setdefault(int(label), []).append(sample_id)
        held = set()
        for members in by_class.values():
            count = min(max(1, round(fraction * len(members))), len(members) - 1)
            held.update(rng.permutation(members)[:count].tolist())
    else:
        count = min(max(1, round(fraction * len(unique))), len(unique) - 1)
        held = set(rng.permutation(unique)[:count].tolist())
    return ([i for i, g in zip(ids, groups) if g not in held], [i for i, g in zip(ids, groups) if g in held])


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
            f"{physical / 2**20:,.0f} MiB: train with --no-preload to read them from the cache each epoch"
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
                f"{len(missing)} sample(s) are not in the annotation index {index_path} (e.g. {missing[0]}): pass the index the cache was extracted from"
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
