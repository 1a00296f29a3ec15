"""Penn Action: 2,326 clips of 15 sports actions, one annotated person with 13 joints per frame.

Layout: `<root>/frames/NNNN/NNNNNN.jpg` and `<root>/labels/NNNN.mat`, `root` being
the `Penn_Action` folder (a folder holding `Penn_Action/` works too). The frame folder is the
sample's video (see `pipeline.sources.video`, frame folders). Each `.mat` is read with `scipy.io.loadmat`:
`action` (class string), `x`, `y` (nframes, 13) pixel coordinates, `visibility` (nframes, 13),
`train` (1 train / -1 test: the "penn" benchmark), `nframes`, and `dimensions` ([H W nframes]: the
frame size when the frames are absent, as in a labels-only copy). Missing fields, wrong shapes, NaN or
infinite coordinates, or `nframes` disagreeing with `x` make the sample `malformed_skeleton`; a file
with no joint marked visible in any frame (there is one among the real training files) is
`empty_skeleton`.

Confidence: a visible joint 1.0; an invisible one 0.5 (annotated but occluded, like Kinect's
"inferred"), or 0.0 when it lies outside the frame (nothing to point at). Penn's annotations are
defined on its own frames, so visible joints past the border (annotators marked some far outside)
are a warning, never a reason to drop the sample.

Class order is fixed here in the order of the stored strings, not computed
with `sorted()` at load time, so label numbers never depend on which classes a copy happens to hold.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from pipeline.core.errors import StarError
from pipeline.sources.datasets.records import (
    EMPTY_SKELETON,
    MALFORMED_SKELETON,
    MISSING_SKELETON,
    UNKNOWN_LABEL,
    DatasetScan,
    SampleRecord,
    SampleSource,
    assemble_record,
    probe_for_record,
)
from pipeline.sources.layouts import PENN13

PENN_CLASSES = (
    "baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing", "jump_rope",
    "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar", "tennis_forehand", "tennis_serve",
)  # fmt: skip
VIDEO_ID = re.compile(r"\d{4}")
BENCHMARK = "penn"
REQUIRED_FIELDS = ("action", "x", "y", "visibility", "train", "nframes")
INVISIBLE_CONFIDENCE = 0.5


class PennReader:
    name = "penn"
    layout = PENN13
    persons = 1
    class_names = PENN_CLASSES
    benchmarks = (BENCHMARK,)
    poses_estimated = 0  # Penn Action ships joints per frame

    def __init__(self, root: Path) -> None:
        root = Path(root).resolve()
        if not (root / "labels").is_dir() and (root / "Penn_Action" / "labels").is_dir():
            root = root / "Penn_Action"
        if not (root / "labels").is_dir() and not (root / "frames").is_dir():
            raise StarError(
                f"{root} holds neither labels/ nor frames/: point at the Penn_Action folder of the dataset."
            )
        self.root = root

    def scan(self) -> DatasetScan:
        labels = self._ids(self.root / "labels", suffix=".mat", folders=False)
        frames = self._ids(self.root / "frames", suffix="", folders=True)
        ignored = labels.pop(None, []) + frames.pop(None, [])
        sources = [
            SampleSource(
                sample_id=video_id,
                video_path=self.root / "frames" / video_id,
                annotation_path=self.root / "labels" / f"{video_id}.mat",
            )
            for video_id in sorted(labels.keys() | frames.keys())
        ]
        return DatasetScan(sources=sources, ignored=tuple(sorted(ignored)))

    @staticmethod
    def _ids(folder: Path, *, suffix: str, folders: bool) -> dict:
        """{video id: path}, plus None -> [paths that do not look like Penn Action entries]."""
        found: dict = {}
        if not folder.is_dir():
            return found
        for path in folder.iterdir():
            stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
            if path.name.startswith("."):
                continue
            if path.is_dir() == folders and path.name.endswith(suffix) and VIDEO_ID.fullmatch(stem):
                found[stem] = path
            else:
                found.setdefault(None, []).append(path)
        return found

    def load(self, source: SampleSource) -> SampleRecord:
        problems: list[tuple[str, str]] = []
        video = probe_for_record(source.video_path, problems)
        label, class_name, splits, skeleton, frame_size = -1, "", {}, None, None
        mat_path = source.annotation_path
        if mat_path is None or not mat_path.exists():
            problems.append((MISSING_SKELETON, f"label file not found: {mat_path}"))
        else:
            try:
                labels = read_penn_labels(mat_path)
            except StarError as err:
                problems.append((MALFORMED_SKELETON, str(err)))
            else:
                class_name, skeleton = labels.action, labels.skeleton
                splits = {BENCHMARK: "train" if labels.train else "test"}
                if labels.action in PENN_CLASSES:
                    label = PENN_CLASSES.index(labels.action)
                else:
                    problems.append(
                        (UNKNOWN_LABEL, f"action {labels.action!r} is not one of the 15 Penn Action classes")
                    )
                if not (skeleton[..., 2] == 1.0).any():
                    problems.append(
                        (EMPTY_SKELETON, f"no joint is marked visible in any of the {len(skeleton)} frames")
                    )
                frame_size = (video.width, video.height) if video is not None else labels.frame_size
                if frame_size is not None:
                    width, height = frame_size
                    outside = (
                        (skeleton[..., 0] < 0) | (skeleton[..., 0] >= width)
                        | (skeleton[..., 1] < 0) | (skeleton[..., 1] >= height)
                    )  # fmt: skip
                    skeleton[..., 2][outside & (skeleton[..., 2] < 1.0)] = 0.0
        return assemble_record(
            sample_id=source.sample_id,
            label=label,
            class_name=class_name,
            splits=splits,
            video_path=source.video_path,
            video=video,
            skeleton=skeleton,
            layout=self.layout,
            persons=self.persons,
            problems=problems,
            frame_size=frame_size,
            pose_on_own_frames=True,
        )


@dataclass(frozen=True)
class PennLabels:
    """What one Penn Action `.mat` file says about its clip."""

    action: str
    train: bool
    skeleton: np.ndarray  # (nframes, 1, 13, 3) float32, (x, y, confidence) in frame pixels
    frame_size: tuple[int, int] | None  # (width, height) from `dimensions`; None when the file lacks it


def read_penn_labels(path: Path) -> PennLabels:
    """The action, split, skeleton and frame size of one Penn Action `.mat` file."""
    try:
        mat = scipy.io.loadmat(str(path))
    except (MatReadError, OSError, ValueError, IndexError, TypeError, zlib.error) as err:
        raise StarError(f"Penn Action label file {path} cannot be read ({type(err).__name__}: {err}).") from err
    missing = [f for f in REQUIRED_FIELDS if f not in mat]
    if missing:
        raise StarError(f"Penn Action label file {path} lacks the fields {missing}.")
    action = np.asarray(mat["action"]).ravel()
    if action.size != 1 or not isinstance(action[0], str):
        raise StarError(f"Penn Action label file {path}: 'action' must be one string, got {mat['action']!r}.")
    x, y, visibility = (np.asarray(mat[f]) for f in ("x", "y", "visibility"))
    joints = PENN13.num_joints
    for field, value in (("x", x), ("y", y), ("visibility", visibility)):
        if value.ndim != 2 or value.shape[1] != joints or value.shape != x.shape:
            raise StarError(
                f"Penn Action label file {path}: '{field}' has shape {value.shape}, expected (nframes, {joints})."
            )
        if not np.issubdtype(value.dtype, np.number) and value.dtype != bool:
            raise StarError(f"Penn Action label file {path}: '{field}' is not numeric ({value.dtype}).")
    nframes = _scalar(mat, "nframes", path)
    if nframes != x.shape[0]:
        raise StarError(f"Penn Action label file {path}: nframes is {nframes} but x has {x.shape[0]} rows.")
    train = _scalar(mat, "train", path)
    if train not in (1, -1):
        raise StarError(f"Penn Action label file {path}: train is {train}, expected 1 (train) or -1 (test).")
    for field, value in (("x", x), ("y", y)):
        bad = int(np.sum(~np.isfinite(value)))
        if bad:
            raise StarError(f"Penn Action label file {path}: '{field}' holds {bad} NaN or infinite coordinate(s).")
    skeleton = np.zeros((x.shape[0], 1, joints, 3), np.float32)  # (frames, persons=1, 13, xyc)
    skeleton[:, 0, :, 0] = x
    skeleton[:, 0, :, 1] = y
    skeleton[:, 0, :, 2] = np.where(visibility > 0, 1.0, INVISIBLE_CONFIDENCE)
    return PennLabels(
        action=action[0].strip(), train=train == 1, skeleton=skeleton, frame_size=_frame_size(mat, nframes)
    )


def _frame_size(mat: dict, nframes: int) -> tuple[int, int] | None:
    """(width, height) from `dimensions` = [H W nframes]; None when absent or not three positive numbers."""
    dims = np.asarray(mat.get("dimensions", [])).ravel()
    if dims.size != 3 or not np.issubdtype(dims.dtype, np.number) or not np.all(np.isfinite(dims)) or np.any(dims < 1):
        return None
    return int(dims[1]), int(dims[0])


def _scalar(mat: dict, field: str, path: Path) -> int:
    value = np.asarray(mat[field])
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise StarError(f"Penn Action label file {path}: '{field}' must be one number, got {value!r}.")
    number = float(value.ravel()[0])
    if not number.is_integer():
        raise StarError(f"Penn Action label file {path}: '{field}' must be an integer, got {number}.")
    return int(number)
