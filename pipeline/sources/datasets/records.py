"""The one sample record every dataset reader produces, the source description the index fingerprints,
and the per-sample status codes.

Skeleton arrays are float32 (frames, persons, joints, 3) = (x, y, confidence) in pixel coordinates of
the ORIGINAL video frames. Confidence: 1.0 tracked / visible, 0.5 inferred / occluded, 0.0 not
tracked or no person in that slot (then x = y = 0 too, unless the source gave a position).

A pose must land on its video. `pose_in_frame` is the share of visible joints (confidence > 0, all
frames, all persons) inside the frame, 0 <= x < width and 0 <= y < height. Below
`POSE_IN_FRAME_FAIL` (0.5) the sample fails as `pose_outside_frame`: most of the pose misses the
frame, which is what a pose file in another pixel space looks like (NTU colour coordinates read as
pixels of a downscaled video give ~0; a person who walks out of view loses a few joints, not half).
Between that and `POSE_IN_FRAME_WARN` (0.9) the sample stays usable and is counted as a warning.
A dataset whose annotations are by definition on its own frames (Penn Action: annotators marked joints
past the border) passes `pose_on_own_frames=True`: there the share is only ever a warning, since such
a pose cannot be in another pixel space.

A record whose status is not "ok" is still a record: the index stores it with the reason, so one bad
sample never stops a build and nothing is dropped silently. Statuses, in the order a reader checks
them (the first that applies wins, `detail` says more): `listed_missing_skeleton` (on the official
NTU list), `missing_skeleton`, `malformed_skeleton` (truncated, wrong counts, non-numeric, NaN or
infinite coordinates, wrong shape), `empty_skeleton` (no frame holds a visible joint), `pose_outside_frame`
(see above), `unknown_label`, `missing_video`, `unreadable_video`, `frame_mismatch` (skeleton and video
frame counts differ beyond `pipeline.sources.clips.frames_agree`), and `removed` (the files vanished after an
earlier build; the index keeps the row so row numbers stay stable). The annotation's problems come before
the video's, so a status in `SKELETON_USABLE` says that the skeleton and the label are sound: what a
skeleton-only cache needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.clips import frames_agree, usable_frames
from pipeline.sources.layouts import JointLayout
from pipeline.sources.video import VideoInfo, probe_video

OK = "ok"
LISTED_MISSING_SKELETON = "listed_missing_skeleton"  # on the official NTU missing-skeleton list
MISSING_VIDEO = "missing_video"
UNREADABLE_VIDEO = "unreadable_video"
MISSING_SKELETON = "missing_skeleton"  # .skeleton / .mat / pose file absent
MALFORMED_SKELETON = "malformed_skeleton"  # truncated, wrong counts, non-numeric, wrong shape
EMPTY_SKELETON = "empty_skeleton"  # no frame holds a person
POSE_OUTSIDE_FRAME = "pose_outside_frame"  # most visible joints fall outside the video frame
UNKNOWN_LABEL = "unknown_label"  # a class name that the dataset's class list does not hold
FRAME_MISMATCH = "frame_mismatch"  # skeleton and video frame counts differ beyond the tolerance
REMOVED = "removed"  # the sample's files vanished after an earlier build; its row is kept

STATUSES = (
    OK, LISTED_MISSING_SKELETON, MISSING_SKELETON, MALFORMED_SKELETON, EMPTY_SKELETON, POSE_OUTSIDE_FRAME,
    UNKNOWN_LABEL, MISSING_VIDEO, UNREADABLE_VIDEO, FRAME_MISMATCH, REMOVED,
)  # fmt: skip
SKELETON_USABLE = (OK, MISSING_VIDEO, UNREADABLE_VIDEO, FRAME_MISMATCH)  # the skeleton and label are sound
POSE_IN_FRAME_FAIL = 0.5  # below this share of visible joints inside the frame a sample fails
POSE_IN_FRAME_WARN = 0.9  # below this (and at least POSE_IN_FRAME_FAIL) it is counted as a warning


@dataclass(frozen=True)
class SampleSource:
    """Where one sample lives, found by a cheap directory scan; the index fingerprints these files.

    `video_path` is a video file or a folder of frames; `annotation_path` the skeleton / label / pose
    file. Either may not exist (the record then says so). `key` is extra identity folded into the
    fingerprint, e.g. the manifest row of a custom folder, so that an edited label refreshes the sample.
    """

    sample_id: str
    video_path: Path
    annotation_path: Path | None
    key: str = ""


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """One sample of any dataset, as the index stores it and `AnnotationIndex.record(i)` returns it."""

    sample_id: str
    label: int  # 0-based class index; -1 when the sample's class could not be read
    class_name: str
    splits: Mapping[str, str]  # benchmark -> "train" / "test" / "val"; benchmarks it is not part of are absent
    video_path: Path  # absolute; a video file or a folder of frames
    num_frames: int  # frames of the video (0 when it could not be probed)
    fps: float
    width: int
    height: int
    skeleton: np.ndarray  # (skeleton_frames, persons, joints, 3) float32
    layout: JointLayout
    usable_frames: int  # common range of video and skeleton frames (see pipeline.sources.clips.usable_frames)
    status: str = OK
    detail: str = ""  # the reason in words when status != "ok"
    pose_in_frame: float = float("nan")  # share of visible joints inside the frame; NaN: nothing to measure

    @property
    def skeleton_frames(self) -> int:
        return int(self.skeleton.shape[0])

    @property
    def persons(self) -> int:
        return int(self.skeleton.shape[1])


class DatasetReader(Protocol):
    """What the index needs from a dataset: its metadata, a cheap scan, and a loader per sample."""

    name: str  # "ntu60", "ntu120", "penn", "folder"
    root: Path
    layout: JointLayout
    persons: int
    class_names: tuple[str, ...]
    benchmarks: tuple[str, ...]
    poses_estimated: int  # poses this reader estimated so far (videos without a pose file)

    def scan(self) -> DatasetScan:
        """Every sample found on disk, sorted by sample_id; lists folders but reads no file."""
        ...

    def load(self, source: SampleSource) -> SampleRecord:
        """The full record; problems of this one sample become its status, never an exception."""
        ...


def empty_skeleton(persons: int, joints: int) -> np.ndarray:
    """A zero-frame skeleton of the right shape, for samples whose skeleton could not be read."""
    return np.zeros((0, persons, joints, 3), np.float32)


@dataclass(frozen=True)
class DatasetScan:
    """What a directory scan found: the samples, and files it skipped because their names do not fit."""

    sources: list[SampleSource]
    ignored: tuple[Path, ...] = ()


def probe_for_record(path: Path, problems: list[tuple[str, str]]) -> VideoInfo | None:
    """Probe a sample's video; a missing or unreadable one becomes a problem of the sample, not an error."""
    if not path.exists():
        problems.append((MISSING_VIDEO, f"video not found: {path}"))
        return None
    try:
        return probe_video(path)
    except StarError as err:
        problems.append((UNREADABLE_VIDEO, str(err)))
        return None


def pose_in_frame(skeleton: np.ndarray, *, width: int, height: int) -> float:
    """Share of visible joints (confidence > 0) of (frames, persons, joints, 3) inside a width x height frame.

    NaN when no joint is visible or the frame size is unknown (0).
    """
    visible = skeleton[..., 2] > 0
    count = int(visible.sum())
    if count == 0 or width < 1 or height < 1:
        return float("nan")
    x, y = skeleton[..., 0][visible], skeleton[..., 1][visible]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return float(inside.mean())


def pose_outside_frame_reason(
    skeleton: np.ndarray, *, width: int, height: int, share: float | None = None
) -> str | None:
    """Why the pose does not fit its width x height frame (share below POSE_IN_FRAME_FAIL), or None.

    `share` is `pose_in_frame(skeleton, ...)` when the caller has it already."""
    share = pose_in_frame(skeleton, width=width, height=height) if share is None else share
    if not share < POSE_IN_FRAME_FAIL:  # NaN passes: nothing visible is another status
        return None
    visible = skeleton[..., 2] > 0
    x, y = skeleton[..., 0][visible], skeleton[..., 1][visible]
    return (
        f"only {share:.0%} of the {int(visible.sum())} visible joints fall inside the {width}x{height} frame "
        f"(joints span x {x.min():.0f}..{x.max():.0f}, y {y.min():.0f}..{y.max():.0f}; at least "
        f"{POSE_IN_FRAME_FAIL:.0%} must): the pose is in another pixel space than the video"
    )


def assemble_record(
    *,
    sample_id: str,
    label: int,
    class_name: str,
    splits: Mapping[str, str],
    video_path: Path,
    video: VideoInfo | None,
    skeleton: np.ndarray | None,
    layout: JointLayout,
    persons: int,
    problems: list[tuple[str, str]],
    frame_size: tuple[int, int] | None = None,
    pose_on_own_frames: bool = False,
) -> SampleRecord:
    """The record with its status: the first problem in STATUSES order; all problems in `detail`.

    `frame_size` (width, height) is the frames' size when the video is absent but the annotation knows it;
    `pose_on_own_frames` makes a pose partly outside the frame a warning only (see the module docstring).
    """
    problems = list(problems)
    if skeleton is None:
        skeleton = empty_skeleton(persons, layout.num_joints)
    elif not any(p[0] in (MISSING_SKELETON, MALFORMED_SKELETON, EMPTY_SKELETON) for p in problems) and (
        skeleton.shape[0] == 0 or not (skeleton[..., 2] > 0).any()
    ):
        problems.append((EMPTY_SKELETON, f"no visible joint in any of the skeleton's {skeleton.shape[0]} frames"))
    video_frames = video.frames if video is not None else 0
    width, height = (video.width, video.height) if video is not None else frame_size or (0, 0)
    in_frame = pose_in_frame(skeleton, width=width, height=height)
    if not pose_on_own_frames and (
        reason := pose_outside_frame_reason(skeleton, width=width, height=height, share=in_frame)
    ):
        problems.append((POSE_OUTSIDE_FRAME, reason))
    if video is not None and skeleton.shape[0] and not frames_agree(video_frames, skeleton.shape[0]):
        problems.append(
            (FRAME_MISMATCH, f"video has {video_frames} frames, skeleton {skeleton.shape[0]} (beyond the tolerance)")
        )
    problems.sort(key=lambda p: STATUSES.index(p[0]))
    return SampleRecord(
        sample_id=sample_id,
        label=label,
        class_name=class_name,
        splits=dict(splits),
        video_path=video_path,
        num_frames=video_frames,
        fps=video.fps if video is not None else 0.0,
        width=width,
        height=height,
        skeleton=np.ascontiguousarray(skeleton, dtype=np.float32),
        layout=layout,
        usable_frames=usable_frames(video_frames, skeleton.shape[0]),
        status=problems[0][0] if problems else OK,
        detail="; ".join(p[1] for p in problems),
        pose_in_frame=in_frame,
    )
