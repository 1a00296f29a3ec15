"""Train-time augmentations that stay valid on cached maps: a horizontal flip of every map with the joints
mirrored and left/right swapped, and joint dropout; the same two on decoded video (end-to-end mode). Off for
evaluation. Every draw comes from the caller's per-sample generator, so augmentations do not depend on workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import StarError


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
            f"cannot flip: {channels} heatmaps for {persons}x{num_joints} joints "
            f"and a {len(flip_permutation)}-joint layout"
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
