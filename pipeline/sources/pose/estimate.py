"""A video in, its people's joints out: decode -> BlazePose per frame -> tracks -> the wanted joint layout.

`estimate_pose` returns (frames, persons, joints, 3) = (x, y, score) in pixels of the original frames, the
format every STAR reader produces; `write_pose_file` stores it as the custom pose format of
`pipeline/sources/datasets/folder.py` (`.json` or `.npz`), so `star pose` output feeds folders and `star predict`.
`PoseStore` keeps finished estimates of a dataset build on disk, one file per video version, so a killed or
repeated build never estimates a video twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError
from pipeline.core.files import write_atomically
from pipeline.core.progress import progress_bar
from pipeline.sources.layouts import BLAZEPOSE33, JointLayout
from pipeline.sources.pose.blazepose import NAME, BlazePose
from pipeline.sources.pose.mapping import convert_joints, joint_recipe
from pipeline.sources.pose.tracking import track_people
from pipeline.sources.video import iter_frames, probe_video

POSE_SUFFIXES = (".json", ".npz")


@dataclass(frozen=True)
class EstimatedPose:
    keypoints: np.ndarray  # (frames, persons, joints, 3) float32, original-frame pixels
    layout: JointLayout
    frame_size: tuple[int, int]  # (width, height)
    fps: float
    seconds: float  # decode + estimation + tracking

    @property
    def found(self) -> bool:
        return bool((self.keypoints[..., 2] > 0).any())

    def summary(self) -> str:
        frames, persons = self.keypoints.shape[:2]
        seen = (self.keypoints[..., 2] > 0).any(axis=-1).sum(axis=0)  # frames in which each slot has someone
        slots = ", ".join(f"person {p + 1} in {int(n)} frames" for p, n in enumerate(seen))
        return (
            f"{frames} frames, {self.layout.name} joints; {slots}; "
            f"{frames / max(self.seconds, 1e-9):.1f} frames/s with {NAME}"
        )


def estimate_pose(
    video: Path,
    *,
    layout: JointLayout = BLAZEPOSE33,
    persons: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> EstimatedPose:
    """Detect, track and map the people of `video` (a video file or frame folder); `progress(done, total)`."""
    started = time.perf_counter()
    info = probe_video(Path(video))
    joint_recipe(source=BLAZEPOSE33, target=layout)  # an impossible layout fails before any decoding
    per_frame = []
    with BlazePose(persons=persons) as estimator:
        for frame in iter_frames(Path(video)):
            per_frame.append(estimator(frame))
            if progress is not None:
                progress(len(per_frame), max(info.frames, len(per_frame)))
    if not per_frame:
        raise StarError(f"No frame of {video} could be decoded: the video is empty or corrupt.")
    tracks = track_people(per_frame, persons=persons, joints=BLAZEPOSE33.num_joints)
    keypoints = convert_joints(tracks, source=BLAZEPOSE33, target=layout)
    return EstimatedPose(
        keypoints=keypoints,
        layout=layout,
        frame_size=(info.width, info.height),
        fps=info.fps,
        seconds=time.perf_counter() - started,
    )


def write_pose_file(path: Path, pose: EstimatedPose, *, video: Path) -> None:
    """Write `pose` as a `.json` or `.npz` pose file, atomically (a killed write leaves no partial file)."""
    path = _checked_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "video": str(video),
        "layout": pose.layout.name,
        "joint_names": list(pose.layout.joint_names),
        "estimator": NAME,
        "frame_size": list(pose.frame_size),
        "fps": pose.fps,
    }
    if path.suffix.lower() == ".json":
        keypoints = np.round(pose.keypoints.astype(np.float64), 3).tolist()
        text = json.dumps({**meta, "keypoints": keypoints}, separators=(",", ":"))
        write_atomically(path, lambda handle: handle.write(text.encode()))
    else:
        write_atomically(
            path, lambda handle: np.savez_compressed(handle, keypoints=pose.keypoints, meta=json.dumps(meta))
        )


def _checked_output(path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in POSE_SUFFIXES:
        raise StarError(f"Pose output {path}: use a .json or .npz file name.")
    if path.is_dir():
        raise StarError(f"Pose output {path} is a folder: give a .json or .npz file name.")
    return path


class PoseStore:
    """Finished estimates of one dataset build: `<folder>/<key>.npz`, key = video file version + settings."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def key(self, video: Path, *, layout: JointLayout, persons: int) -> str:
        stat = os.stat(video)
        text = json.dumps([str(Path(video).resolve()), stat.st_size, stat.st_mtime_ns, NAME, layout.to_json(), persons])
        return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                return np.asarray(data["keypoints"], np.float32)
        except (OSError, ValueError, KeyError, EOFError):  # absent, or cut short by a kill: estimate again
            return None

    def put(self, key: str, keypoints: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{key}.npz", lambda handle: np.savez_compressed(handle, keypoints=keypoints))


@dataclass(frozen=True)
class PoseFileResult:
    """What `estimate_to_files` did with one video: the pose file written, or why there is none."""

    video: Path
    path: Path | None  # None: nothing written
    message: str  # the estimate's summary, or the one-line reason it failed


def estimate_to_files(
    videos: list[Path],
    *,
    out: Path | None = None,
    out_dir: Path | None = None,
    layout: JointLayout = BLAZEPOSE33,
    persons: int = 1,
    show_progress: bool = True,
) -> Iterator[PoseFileResult]:
    """`star pose`: estimate each video's pose and write it to its file (`pose_outputs`), one result per video as
    it finishes. Wrong settings fail before the first video; a video that fails is reported and the rest go on."""
    paths = pose_outputs(videos, out=out, out_dir=out_dir)
    joint_recipe(source=BLAZEPOSE33, target=layout)
    BlazePose(persons=persons)  # a missing MediaPipe or a wrong person count fails once, not once per video
    for video, path in zip(map(Path, videos), paths, strict=True):
        try:
            with progress_bar(
                f"estimating poses: {video.name}", unit="frames", enabled=show_progress and sys.stderr.isatty(),
                transient=True,
            ) as update:  # fmt: skip
                pose = estimate_pose(
                    video,
                    layout=layout,
                    persons=persons,
                    progress=lambda done, total: update(completed=done, total=total),
                )
            if not pose.found:
                frames = pose.keypoints.shape[0]
                raise StarError(f"The pose estimator found nobody in the {frames} frames of {video}; nothing written.")
            write_pose_file(path, pose, video=video)
        except StarError as err:
            yield PoseFileResult(video=video, path=None, message=str(err))
        else:
            yield PoseFileResult(video=video, path=path, message=pose.summary())


def pose_outputs(videos: list[Path], *, out: Path | None = None, out_dir: Path | None = None) -> list[Path]:
    """Where `star pose` writes the pose of each video: `out` (one video only), `<out_dir>/<name>.json`, or by
    default `<name>.pose.json` beside the video, where name is a frame folder's name or a video file's stem. Every
    name is checked before any estimation starts."""
    videos = [Path(video) for video in videos]
    if not videos:
        raise StarError("Give at least one video.")
    if out is not None and out_dir is not None:
        raise StarError("Give either --out (one video) or --out-dir, not both.")
    if out is not None and len(videos) > 1:
        raise StarError(f"--out names one pose file, but {len(videos)} videos were given: use --out-dir.")
    names = [video.name if video.is_dir() else video.stem for video in videos]
    if out is not None:
        paths = [Path(out)]
    elif out_dir is not None:
        if Path(out_dir).is_file():
            raise StarError(f"--out-dir {out_dir} is a file: give a folder.")
        paths = [Path(out_dir) / f"{name}.json" for name in names]
    else:
        paths = [video.with_name(f"{name}.pose.json") for video, name in zip(videos, names, strict=True)]
    clashes = sorted({str(path) for path in paths if paths.count(path) > 1})
    if clashes:
        raise StarError(f"Several videos would write the same pose file: {', '.join(clashes)}.")
    return [_checked_output(path) for path in paths]
