"""Which frames make a clip (T indices from uniform temporal segments) and how a clip is loaded.

The STAR paper feeds 16 frames per clip. The video is cut into `length` equal segments over
[0, num_frames); extraction takes each segment's centre (deterministic), training may take a random
frame inside each segment (temporal jitter, TSN-style). A video shorter than `length` gets segments
shorter than one frame, so the same frame index comes out more than once: frames repeat instead of
the clip being padded with blanks.

Skeleton and video may disagree on their frame count (NTU's files were written by different
recorders). A clip is then sampled from the common range `usable_frames(...)`, and a sample whose
counts differ by more than `frames_agree`'s tolerance is flagged by the index instead of being used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.geometry import clip_geometry
from pipeline.sources.video import read_frames

# Counts within max(MIN_FRAME_SLACK, FRAME_SLACK_FRACTION x the longer count) are treated as the same
# recording cut a little differently; beyond that the skeleton probably belongs to another take.
MIN_FRAME_SLACK = 3
FRAME_SLACK_FRACTION = 0.1


def clip_indices(num_frames: int, length: int, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """`length` frame indices in [0, num_frames), ascending (repeats when the video is short).

    rng None: the centre of each of `length` equal segments (deterministic, for extraction).
    With rng: a uniformly random frame inside each segment (temporal jitter for training).
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample a clip from {num_frames} frames")
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    starts = np.arange(length, dtype=np.float64) * num_frames / length  # (length,)
    width = num_frames / length
    offset = np.full(length, 0.5) if rng is None else rng.random(length)
    indices = np.floor(starts + offset * width).astype(np.int64)
    # floor(start + u * width) < start + width <= num_frames, but rounding can touch the end.
    return np.minimum(indices, num_frames - 1)


def usable_frames(video_frames: int, skeleton_frames: int) -> int:
    """Frames that exist in both the video and the skeleton: clips are sampled from [0, this)."""
    return max(0, min(int(video_frames), int(skeleton_frames)))


def frames_agree(video_frames: int, skeleton_frames: int) -> bool:
    """Whether two frame counts are close enough to belong to the same recording."""
    slack = max(MIN_FRAME_SLACK, FRAME_SLACK_FRACTION * max(video_frames, skeleton_frames))
    return abs(int(video_frames) - int(skeleton_frames)) <= slack


@dataclass(frozen=True)
class ClipSpec:
    """How a clip becomes backbone input: T frames, S x S pixels, full-frame resize or person crop."""

    frames: int = 16
    size: int = 224
    crop: str = "full"


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB
    joints: np.ndarray  # (T, P, J, 3) (x, y, confidence) in input pixels of the S x S frames
    frame_indices: np.ndarray  # (T,) indices into the original video


def load_clip(
    *,
    video: Path,
    skeleton: np.ndarray,
    usable_frames: int,
    frame_size: tuple[int, int],
    spec: ClipSpec,
    rng: np.random.Generator | None = None,
) -> Clip:
    """Decode and transform one clip. rng None: segment centres (extraction); else temporal jitter (training).

    `skeleton` is (frames, P, J, 3) in original pixels; clips are sampled from the frames that both the video and
    the skeleton have (`usable_frames`), and the one crop box of the clip maps frames and joints alike.
    """
    if usable_frames < 1:
        raise StarError(f"{video}: no frame is shared by the video and its skeleton")
    indices = clip_indices(usable_frames, spec.frames, rng=rng)  # (T,)
    return make_clip(
        frames=read_frames(video, indices), joints=skeleton[indices], frame_indices=indices, frame_size=frame_size,
        spec=spec,
    )  # fmt: skip


def make_clip(
    *, frames: np.ndarray, joints: np.ndarray, frame_indices: np.ndarray, frame_size: tuple[int, int], spec: ClipSpec
) -> Clip:
    """A clip from its decoded frames (T, H, W, 3) and their joints (T, P, J, 3) in original pixels: the one crop box
    of `spec` maps both (`load_clip` for a file, `pipeline.inference.watch` for frames held in memory)."""
    geometry = clip_geometry(frame_size=frame_size, skeleton=joints, size=spec.size, crop=spec.crop)
    return Clip(
        frames=geometry.frames_to_input(frames),  # (T, S, S, 3)
        joints=geometry.joints_to_input(joints),
        frame_indices=np.asarray(frame_indices),
    )
