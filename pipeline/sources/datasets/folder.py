"""Custom datasets: your own videos plus any 2D pose estimator's output, described by a manifest.

A folder holds `manifest.csv`, `layout.json`, optionally `classes.txt`, and the files they name:

`manifest.csv` (UTF-8, header row, one sample per row; paths relative to the manifest's folder or
absolute)::

    video,label,split,pose
    videos/wave_01.mp4,wave,train,poses/wave_01.npz
    frames/jump_07,jump,test,poses/jump_07.json

- `video`: a video file OpenCV can read, or a folder of frame images (`.jpg`/`.png`, name order).
- `label`: the class name. `split`: `train`, `val` or `test` (the "custom" benchmark).
- `pose` (optional column): the pose file (below). Without the column, or with an empty cell, STAR
  estimates the pose while it indexes the sample (`pipeline/sources/pose`: BlazePose, needs the `pose` extra)
  and keeps it in the index and in the pose store next to it, so a re-run never estimates a video
  twice; the layout must then be one it can make (`blazepose33`, `coco17`, `penn13`, `ntu25`). A
  video in which it finds nobody fails as `empty_skeleton`.
- Optional column `sample_id` (default: the video path relative to the manifest folder, without its
  suffix); ids must be unique.

`layout.json`: the joint layout and how many persons a sample keeps, either a built-in layout,
`{"layout": "coco17", "persons": 1}` (also `ntu25`, `penn13`), or your own,
`{"name": "mypose", "joint_names": [...], "flip_pairs": [[1, 2], ...], "bones": [...], "persons": 2}`.

`classes.txt` (optional): one class name per line, fixing the label numbers (line 1 is label 0).
Without it the classes are the manifest's labels sorted by name, so adding a class renumbers them
(the index then refreshes every sample).

Pose files hold (x, y, score) per joint in pixel coordinates of the ORIGINAL video frames:
- `.npz`: array `keypoints`, float, shape (frames, persons, joints, 3), or (frames, joints, 3) for one
  person.
- `.json`: `{"keypoints": [...]}` nested frames -> persons -> joints -> [x, y, score]; the number of
  persons may vary from frame to frame (an empty list: nobody seen).
Person slot p must be the same person in every frame (track IDs, as in NTU). A sample keeps the
`persons` slots with the highest total score, best first; missing slots are zeros. Scores are
clipped to [0, 1]; a joint with a non-finite coordinate gets score 0 and position (0, 0).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError
from pipeline.core.files import read_text_file
from pipeline.sources.datasets.records import (
    EMPTY_SKELETON,
    MALFORMED_SKELETON,
    MISSING_SKELETON,
    MISSING_VIDEO,
    UNKNOWN_LABEL,
    UNREADABLE_VIDEO,
    DatasetScan,
    SampleRecord,
    SampleSource,
    assemble_record,
    probe_for_record,
)
from pipeline.sources.layouts import BLAZEPOSE33, JointLayout, builtin_layout, layout_from_spec
from pipeline.sources.pose.blazepose import NAME as ESTIMATOR
from pipeline.sources.pose.blazepose import mediapipe_pose
from pipeline.sources.pose.estimate import PoseStore, estimate_pose
from pipeline.sources.pose.mapping import joint_recipe

MANIFEST = "manifest.csv"
LAYOUT_FILE = "layout.json"
CLASSES_FILE = "classes.txt"
REQUIRED_COLUMNS = ("video", "label", "split")
SPLITS = ("train", "val", "test")
BENCHMARK = "custom"


class FolderReader:
    """A custom dataset: `root` is the manifest CSV or the folder that holds `manifest.csv`."""

    name = "folder"
    benchmarks = (BENCHMARK,)

    def __init__(self, root: Path, *, pose_store: Path | None = None) -> None:
        root = Path(root).resolve()
        self.manifest = root / MANIFEST if root.is_dir() else root
        if not self.manifest.is_file():
            raise StarError(f"No manifest at {self.manifest}: give the manifest CSV or the folder holding {MANIFEST}.")
        self.root = self.manifest.parent
        self.layout, self.persons, layout_text = _read_layout(self.root / LAYOUT_FILE)
        self.rows = {row["sample_id"]: row for row in _read_manifest(self.manifest)}
        classes_path = self.root / CLASSES_FILE
        if classes_path.exists():
            names = [n.strip() for n in read_text_file(classes_path, what="class list").splitlines() if n.strip()]
            if len(set(names)) != len(names):
                raise StarError(f"{classes_path} lists a class twice; each class once, one per line.")
            self.class_names = tuple(names)
        else:
            self.class_names = tuple(sorted({row["label"] for row in self.rows.values()}))
        # Everything a sample's record depends on besides its files: any change refreshes the sample.
        self._shared_key = json.dumps([layout_text, self.persons, self.class_names])
        self.poses_estimated = 0
        self.pose_store = PoseStore(pose_store) if pose_store is not None else None
        if any(not row["pose"] for row in self.rows.values()):
            mediapipe_pose()  # without the estimator, say so now rather than once per sample
            joint_recipe(source=BLAZEPOSE33, target=self.layout)

    def scan(self) -> DatasetScan:
        sources = [
            SampleSource(
                sample_id=row["sample_id"],
                video_path=self._path(row["video"]),
                annotation_path=self._path(row["pose"]) if row["pose"] else None,
                key=json.dumps([row, self._shared_key, "" if row["pose"] else ESTIMATOR], sort_keys=True),
            )
            for row in self.rows.values()
        ]
        return DatasetScan(sources=sorted(sources, key=lambda s: s.sample_id))

    def _path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.root / path

    def load(self, source: SampleSource) -> SampleRecord:
        row = self.rows[source.sample_id]
        problems: list[tuple[str, str]] = []
        video = probe_for_record(source.video_path, problems) if row["video"] else None
        if not row["video"]:
            problems.append((MISSING_VIDEO, "the manifest row has no video"))
        skeleton = None
        if not row["pose"]:
            skeleton = self._estimated(source.video_path, problems) if video is not None else None
        elif source.annotation_path is None or not source.annotation_path.is_file():
            problems.append((MISSING_SKELETON, f"pose file not found: {source.annotation_path or '(empty)'}"))
        else:
            try:
                skeleton = read_pose_file(source.annotation_path, layout=self.layout, persons=self.persons)
            except StarError as err:
                problems.append((MALFORMED_SKELETON, str(err)))
        label = self.class_names.index(row["label"]) if row["label"] in self.class_names else -1
        if label < 0:
            problems.append((UNKNOWN_LABEL, f"label {row['label']!r} is not in {CLASSES_FILE}"))
        return assemble_record(
            sample_id=source.sample_id,
            label=label,
            class_name=row["label"],
            splits={BENCHMARK: row["split"]},
            video_path=source.video_path,
            video=video,
            skeleton=skeleton,
            layout=self.layout,
            persons=self.persons,
            problems=problems,
        )

    def _estimated(self, video_path: Path, problems: list[tuple[str, str]]) -> np.ndarray | None:
        """The estimated pose of a video without a pose file: from the pose store, else estimated and stored."""
        key = self.pose_store.key(video_path, layout=self.layout, persons=self.persons) if self.pose_store else ""
        keypoints = self.pose_store.get(key) if self.pose_store is not None else None
        if keypoints is None:
            try:
                keypoints = estimate_pose(video_path, layout=self.layout, persons=self.persons).keypoints
            except StarError as err:
                problems.append((UNREADABLE_VIDEO, str(err)))
                return None
            self.poses_estimated += 1
            if self.pose_store is not None:
                self.pose_store.put(key, keypoints)
        if not (keypoints[..., 2] > 0).any():  # the same reason whether estimated now or read back from the store
            problems.append(
                (EMPTY_SKELETON, f"the pose estimator found nobody in the video's {keypoints.shape[0]} frames")
            )
        return keypoints


def _read_layout(path: Path) -> tuple[JointLayout, int, str]:
    if not path.is_file():
        raise StarError(
            f"No {LAYOUT_FILE} next to the manifest ({path}). Write e.g. "
            '{"layout": "coco17", "persons": 1} for COCO-17 keypoints, or your own joint_names and flip_pairs.'
        )
    text = read_text_file(path, what="layout file")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise StarError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(spec, dict):
        raise StarError(f"{path} must hold a JSON object.")
    layout = builtin_layout(str(spec["layout"])) if "layout" in spec else layout_from_spec(spec, where=str(path))
    persons = spec.get("persons", 1)
    if not isinstance(persons, int) or persons < 1:
        raise StarError(f"{path}: 'persons' must be a positive integer, got {persons!r}.")
    return layout, persons, text


def _read_manifest(path: Path) -> list[dict[str, str]]:
    text = read_text_file(path, what="manifest")
    try:
        return _manifest_rows(path, text)
    except csv.Error as err:
        raise StarError(f"manifest {path} is not a valid CSV file: {err}") from err


def _manifest_rows(path: Path, text: str) -> list[dict[str, str]]:
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise StarError(f"{path}: the header lacks the columns {missing}; it needs {list(REQUIRED_COLUMNS)}.")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            if row["split"] not in SPLITS:
                raise StarError(f"{path}, line {line}: split {row['split']!r} must be one of {list(SPLITS)}.")
            if not row["label"]:
                raise StarError(f"{path}, line {line}: the label is empty.")
            sample_id = row.get("sample_id") or str(Path(row["video"]).with_suffix("").as_posix())
            rows.append(
                {"sample_id": sample_id, "video": row["video"], "label": row["label"],
                 "split": row["split"], "pose": row.get("pose", "")}
            )  # fmt: skip
    seen: dict[str, int] = {}
    for number, row in enumerate(rows):
        if row["sample_id"] in seen:
            raise StarError(
                f"{path}: sample id {row['sample_id']!r} appears twice; ids (or video paths) must be unique."
            )
        seen[row["sample_id"]] = number
    return rows


def read_pose_file(path: Path, *, layout: JointLayout, persons: int) -> np.ndarray:
    """(frames, persons, joints, 3) float32 from a `.npz` or `.json` pose file (module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise StarError(
                f"Pose file {path} is not a .npz archive (numpy.savez writes one): "
                "empty, truncated or another kind of file."
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                if "keypoints" not in data:
                    raise StarError(f"Pose file {path} has no array 'keypoints' (it holds {list(data.keys())}).")
                keypoints = np.asarray(data["keypoints"])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise StarError(f"Pose file {path} cannot be read as .npz ({err}).") from err
        if keypoints.ndim == 3:
            keypoints = keypoints[:, None]  # (frames, joints, 3) -> (frames, 1, joints, 3)
    elif suffix == ".json":
        keypoints = _json_keypoints(path, layout.num_joints)
    else:
        raise StarError(f"Pose file {path}: use .npz or .json (see pipeline/sources/datasets/folder.py).")
    if keypoints.ndim != 4 or keypoints.shape[2:] != (layout.num_joints, 3):
        raise StarError(
            f"Pose file {path} has shape {keypoints.shape}; expected (frames, persons, {layout.num_joints}, 3) "
            f"for the layout {layout.name!r}."
        )
    if not np.issubdtype(keypoints.dtype, np.number):
        raise StarError(f"Pose file {path}: keypoints must be numbers, got dtype {keypoints.dtype}.")
    keypoints = keypoints.astype(np.float32)
    unusable = ~np.isfinite(keypoints).all(-1)  # (frames, persons, joints)
    keypoints[unusable] = 0.0
    keypoints[..., 2] = np.clip(keypoints[..., 2], 0.0, 1.0)
    # Keep the most confident tracks: total score per person slot, best first.
    order = np.argsort(-keypoints[..., 2].sum(axis=(0, 2)), kind="stable")[:persons]
    out = np.zeros((keypoints.shape[0], persons, layout.num_joints, 3), np.float32)
    out[:, : len(order)] = keypoints[:, order]
    return out


def _json_keypoints(path: Path, joints: int) -> np.ndarray:
    text = read_text_file(path, what="pose file")
    try:
        frames = json.loads(text)["keypoints"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StarError(
            f"Pose file {path} must be JSON with a 'keypoints' list ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(frames, list):
        raise StarError(f"Pose file {path}: 'keypoints' must be a list of frames.")
    most = max((len(f) for f in frames if isinstance(f, list)), default=0)
    out = np.zeros((len(frames), most, joints, 3), np.float64)  # (frames, persons, joints, xys)
    for t, people in enumerate(frames):
        if not isinstance(people, list):
            raise StarError(f"Pose file {path}: frame {t} must be a list of persons.")
        for p, person in enumerate(people):
            try:
                values = np.asarray(person, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise StarError(f"Pose file {path}: frame {t}, person {p} is not numeric ({err}).") from err
            if values.shape != (joints, 3):
                raise StarError(
                    f"Pose file {path}: frame {t}, person {p} has shape {values.shape}, expected ({joints}, 3)."
                )
            out[t, p] = values
    return out
