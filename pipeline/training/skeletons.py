"""Skeleton training data: full-rate skeletons -> sampled, normalised, augmented pose features for STAR.

The recipe of the skeleton recognisers (pyskl's UniformSampleFrames, PreNormalize and GenSkeFeat; ST-GCN,
CTR-GCN), applied to STAR's pose tokens:

1. Sampling: T equal segments of the clip's frames; training takes a random frame in each segment every epoch
   (`pipeline.sources.clips.clip_indices`), evaluation averages the class probabilities of `test_clips` samplings
   (the segment centres first, then random frames under fixed seeds: the same for every model and clip).
2. Normalisation, per clip: the centre of the box around every visible joint of the clip goes to 0 and half its
   longer side to 1, so features do not depend on the frame size or where the person stands, and the
   person's motion inside the clip is kept.
3. Augmentation (training only), one draw per clip: a horizontal flip with the layout's left/right pairs
   swapped, a rotation, a scale per axis, a shift, and joint dropout.
4. Features per joint and frame, as the streams ask (each an (x, y) pair): the joint, its bone (joint minus
   its parent in the layout's bone tree; zero at the root), the joint's motion to the next sampled frame and
   the bone's motion; the confidence last. A feature that needs an invisible joint is zero, and the model
   zeroes every feature of a joint whose confidence is 0.

Every random draw of a sample comes from `numpy.random.default_rng((seed, epoch, row))`, as for cached maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import StarError
from pipeline.extraction.skeleton_store import SkeletonCache
from pipeline.sources.clips import clip_indices
from pipeline.sources.layouts import JointLayout

STREAMS = ("joint", "bone", "joint_motion", "bone_motion")
TEST_SEED = 255  # the fixed seed of the evaluation samplings (pyskl's choice), independent of the training seed


@dataclass(frozen=True)
class SkeletonSpec:
    """How a full-rate skeleton becomes model input: T sampled frames and the feature streams."""

    frames: int = 16
    streams: tuple[str, ...] = ("joint",)

    def __post_init__(self) -> None:
        if self.frames < 2 or self.frames % 2:
            raise StarError(
                f"frames must be even and >= 2 (zigzag/binary attention split time in two), got {self.frames}"
            )
        unknown = [s for s in self.streams if s not in STREAMS]
        if unknown or not self.streams or len(set(self.streams)) != len(self.streams):
            raise StarError(f"streams {list(self.streams)}: give one or more of {', '.join(STREAMS)}, each once")

    @property
    def channels(self) -> int:
        """Per-joint input size: an (x, y) pair per stream and the confidence."""
        return 2 * len(self.streams) + 1


@dataclass(frozen=True)
class SkeletonAugment:
    """Train-time augmentations of a normalised skeleton; all zero means none."""

    hflip: float = 0.0  # probability of mirroring (left/right joints swapped)
    rotate: float = 0.0  # largest rotation, degrees
    scale: float = 0.0  # each axis scaled by a factor in [1 - scale, 1 + scale]
    shift: float = 0.0  # largest shift per axis, in half person extents
    joint_dropout: float = 0.0  # probability of hiding each (frame, person, joint)


def bone_parents(layout: JointLayout) -> np.ndarray:
    """parent[j] for every joint, from the layout's (parent, child) bones; a root is its own parent."""
    parents = np.arange(layout.num_joints)
    for parent, child in layout.bones:
        if parents[child] != child:
            raise StarError(
                f"layout {layout.name!r}: joint {layout.joint_names[child]} has two parents in its bones, "
                'so bone features are undefined; train with streams = ["joint", "joint_motion"]'
            )
        parents[child] = parent
    return parents


def normalise(skeleton: np.ndarray) -> np.ndarray:
    """(F, P, J, 3) pixel joints -> the same with (x, y) centred on the clip's joint box and scaled to its half side."""
    visible = skeleton[..., 2] > 0
    out = skeleton.astype(np.float32, copy=True)
    if not visible.any():
        return out
    xy = skeleton[..., :2][visible]  # (V, 2)
    low, high = xy.min(axis=0), xy.max(axis=0)
    half = float((high - low).max()) / 2 or 1.0
    out[..., :2] = (skeleton[..., :2] - (low + high) / 2) / half
    out[..., :2][~visible] = 0.0
    return out


def augment_skeleton(
    joints: np.ndarray, *, augment: SkeletonAugment, flip_permutation: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Apply `augment` to normalised joints (T, P, J, 3); every draw is made whatever the settings."""
    flip = rng.random() < augment.hflip
    angle = np.deg2rad(augment.rotate) * rng.uniform(-1, 1)
    scale = 1 + augment.scale * rng.uniform(-1, 1, size=2)
    shift = augment.shift * rng.uniform(-1, 1, size=2)
    hidden = rng.random(joints.shape[:3]) < augment.joint_dropout  # (T, P, J)
    out = joints[:, :, flip_permutation].copy() if flip else joints.copy()
    if flip:
        out[..., 0] = -out[..., 0]
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = (np.array([[cos, -sin], [sin, cos]]) * scale[None, :]).astype(np.float32)  # rotate after scaling
    out[..., :2] = out[..., :2] @ matrix.T + shift.astype(np.float32)
    out[..., 2][hidden] = 0.0
    out[..., :2][out[..., 2] <= 0] = 0.0
    return out


def skeleton_features(joints: np.ndarray, *, streams: tuple[str, ...], parents: np.ndarray) -> np.ndarray:
    """(T, P, J, 3) normalised joints -> (T, P * J, 2 * len(streams) + 1) features, the confidence last."""
    xy, confidence = joints[..., :2], joints[..., 2:]
    visible = confidence > 0  # (T, P, J, 1)
    bone = np.where(visible & visible[:, :, parents], xy - xy[:, :, parents], 0.0)

    def motion(values: np.ndarray) -> np.ndarray:
        moved = np.zeros_like(values)
        both = visible[1:] & visible[:-1]
        moved[:-1] = np.where(both, values[1:] - values[:-1], 0.0)
        return moved

    computed = {
        "joint": lambda: xy,
        "bone": lambda: bone,
        "joint_motion": lambda: motion(xy),
        "bone_motion": lambda: motion(bone),
    }
    features = np.concatenate([computed[name]() for name in streams] + [confidence], axis=-1)  # (T, P, J, C)
    return features.reshape(features.shape[0], -1, features.shape[-1]).astype(np.float32)


class SkeletonTransform:
    """One full-rate skeleton -> model input (T, N, C), with the sampling, normalisation and features of `spec`."""

    def __init__(self, *, spec: SkeletonSpec, layout: JointLayout) -> None:
        self.spec = spec
        self.parents = (
            bone_parents(layout) if {"bone", "bone_motion"} & set(spec.streams) else np.arange(layout.num_joints)
        )
        self.flip_permutation = layout.flip_permutation()

    def __call__(
        self, skeleton: np.ndarray, *, rng: np.random.Generator | None, augment: SkeletonAugment | None = None
    ) -> np.ndarray:
        """rng None: segment centres; otherwise a random frame per segment (and the augmentation draws)."""
        normalised = normalise(skeleton)
        joints = normalised[clip_indices(len(skeleton), self.spec.frames, rng=rng)]  # (T, P, J, 3)
        if augment is not None and rng is not None:
            joints = augment_skeleton(joints, augment=augment, flip_permutation=self.flip_permutation, rng=rng)
        return skeleton_features(joints, streams=self.spec.streams, parents=self.parents)

    def test_clips(self, skeleton: np.ndarray, *, clips: int) -> np.ndarray:
        """(clips, T, N, C): the segment centres, then `clips - 1` random samplings under fixed seeds (the same
        draws for every clip, so `star predict` on a clip's skeleton sees what `star evaluate` saw)."""
        return np.stack(
            [self(skeleton, rng=None if k == 0 else np.random.default_rng((TEST_SEED, k))) for k in range(clips)]
        )


class SkeletonClips(Dataset):
    """Samples `rows` of a skeleton cache: joints (T, N, C) for training, (test_clips, T, N, C) otherwise, and label."""

    def __init__(
        self,
        *,
        cache: SkeletonCache,
        rows: np.ndarray,
        transform: SkeletonTransform,
        augment: SkeletonAugment | None = None,
        seed: int = 0,
        train: bool,
        test_clips: int = 1,
    ) -> None:
        if test_clips < 1:
            raise StarError(f"test_clips must be >= 1, got {test_clips}")
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = cache.labels[self.rows]
        self.sample_ids = cache.sample_ids[self.rows]
        self.transform = transform
        self.augment = augment
        self.seed = seed
        self.train = train
        self.test_clips = test_clips
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[index])
        skeleton = self.cache.skeleton(row)
        if self.train:
            joints = self.transform(
                skeleton, rng=np.random.default_rng((self.seed, self.epoch, row)), augment=self.augment
            )
        else:
            joints = self.transform.test_clips(skeleton, clips=self.test_clips)
        return {"joints": torch.from_numpy(joints), "label": torch.tensor(int(self.labels[index]), dtype=torch.int64)}


def skeleton_spec(cfg: Any) -> SkeletonSpec:
    """The sampling and features a training config (`TrainConfig`, or its dict in a checkpoint) asks for."""
    get = cfg.get if isinstance(cfg, dict) else lambda name, default=None: getattr(cfg, name, default)
    return SkeletonSpec(frames=int(get("frames", 16)), streams=tuple(get("streams", ("joint",))))


def skeleton_dataset(
    *, cache: SkeletonCache, rows: np.ndarray, cfg: Any, layout: JointLayout, train: bool, test_clips: int = 1
) -> SkeletonClips:
    """`SkeletonClips` of `rows` as a training config says: augmented when `train`, else `test_clips` samplings."""
    get = cfg.get if isinstance(cfg, dict) else lambda name, default=None: getattr(cfg, name, default)
    augment = (
        SkeletonAugment(
            hflip=get("hflip", 0.0),
            rotate=get("rotate", 0.0),
            scale=get("scale", 0.0),
            shift=get("shift", 0.0),
            joint_dropout=get("joint_dropout", 0.0),
        )
        if train
        else None
    )
    return SkeletonClips(
        cache=cache,
        rows=rows,
        transform=SkeletonTransform(spec=skeleton_spec(cfg), layout=layout),
        augment=augment,
        seed=int(get("seed", 0)),
        train=train,
        test_clips=test_clips,
    )
