"""Building the annotation index: scan a dataset, read what is new or changed, and replace the file atomically."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.datasets import read_dataset
from pipeline.sources.datasets.records import (
    OK,
    POSE_IN_FRAME_FAIL,
    POSE_IN_FRAME_WARN,
    REMOVED,
    DatasetReader,
    SampleRecord,
    SampleSource,
)
from pipeline.sources.index.read import (
    _NUMBER_COLUMNS,
    _STR_COLUMNS,
    _STRING,
    FORMAT_VERSION,
    POSE_CHUNK_FRAMES,
    read_column,
)

COPY_BLOCK_FRAMES = 1 << 16  # frames copied from the old index per read (~40 MB for NTU)


@dataclass(frozen=True)
class IndexReport:
    """What one `build_index` call did."""

    path: Path
    dataset: str
    total: int  # rows in the index after the build
    added: int  # new samples appended
    refreshed: int  # existing rows re-read because their sources changed (or the format did)
    unchanged: int  # rows copied as they were
    removed: int  # rows whose files vanished in this build (now status "removed")
    written: bool  # False: nothing changed, the file was left untouched
    seconds: float
    status_counts: Mapping[str, int] = field(default_factory=dict)  # over all rows after the build
    ignored: tuple[str, ...] = ()  # files in the dataset folders whose names are not samples
    pose_warnings: int = 0  # ok samples with less than POSE_IN_FRAME_WARN of their visible joints in the frame
    poses_estimated: int = 0  # videos without a pose file whose pose this build estimated

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items(), key=lambda kv: -kv[1]))
        action = "wrote" if self.written else "unchanged,"
        estimated = f", estimated {self.poses_estimated} poses" if self.poses_estimated else ""
        warning = (
            (
                f"; warning: {self.pose_warnings} usable samples have only {POSE_IN_FRAME_FAIL:.0%}-"
                f"{POSE_IN_FRAME_WARN:.0%} of their visible joints inside the frame"
            )
            if self.pose_warnings
            else ""
        )
        return (
            f"{self.dataset} index {action} {self.path}: {self.total} samples ({statuses}); "
            f"added {self.added}, refreshed {self.refreshed}, unchanged {self.unchanged}, "
            f"removed {self.removed}, ignored files {len(self.ignored)}{estimated}; {self.seconds:.1f} s{warning}"
        )


def build_index(
    dataset: str,
    root: Path,
    out_path: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Build or update the index of `dataset` under `root` at `out_path` (see the module docstring).

    `progress(done, total)` is called as samples are read (total = samples to read in this build). Poses a
    custom folder's samples lack are estimated and kept in `pose_store_folder(out_path)` as well as the index.
    """
    started = time.perf_counter()
    out_path = Path(out_path).expanduser().resolve()
    reader = read_dataset(dataset, root, pose_store=pose_store_folder(out_path))
    scan = reader.scan()
    meta = _metadata(reader)
    old = _read_table(out_path) if out_path.exists() else None
    if old is not None:
        _check_dataset(old, path=out_path, dataset=dataset)
    refresh_all = old is None or any(old.attrs.get(k) != meta[k] for k in ("format_version", "layout", "persons"))

    sources = {s.sample_id: s for s in scan.sources}
    fingerprints = {sample_id: _fingerprint(s) for sample_id, s in sources.items()}
    plan: list[tuple[str, int, str]] = []  # (action, old row or -1, sample_id); action keep/load/remove
    counts = Counter()
    old_ids = old.columns["sample_id"] if old is not None else np.empty(0, str)
    for row, sample_id in enumerate(old_ids):
        if sample_id in sources:
            same = not refresh_all and old.columns["fingerprint"][row] == fingerprints[sample_id]
            action = "keep" if same else "load"
            counts["unchanged" if same else "refreshed"] += 1
        elif old.columns["status"][row] == REMOVED:
            action = "keep"
            counts["unchanged"] += 1
        else:
            action = "remove"
            counts["removed"] += 1
        plan.append((action, row, sample_id))
    known = set(old_ids.tolist())
    for sample_id in sorted(sources.keys() - known):
        plan.append(("load", -1, sample_id))
        counts["added"] += 1

    written = old is None or counts["refreshed"] + counts["added"] + counts["removed"] > 0
    written = written or any(old.attrs.get(k) != v for k, v in meta.items())
    if written:
        final_status, final_in_frame = _write_index(
            out_path, reader=reader, plan=plan, old=old, sources=sources, fingerprints=fingerprints,
            meta=meta, progress=progress,
        )  # fmt: skip
    else:
        final_status, final_in_frame = old.columns["status"], old.columns["pose_in_frame"]
    return IndexReport(
        path=out_path,
        dataset=dataset,
        total=len(plan),
        added=counts["added"],
        refreshed=counts["refreshed"],
        unchanged=counts["unchanged"],
        removed=counts["removed"],
        written=written,
        seconds=time.perf_counter() - started,
        status_counts=dict(Counter(str(s) for s in final_status)),
        ignored=tuple(str(p) for p in scan.ignored),
        pose_warnings=int(np.sum((np.asarray(final_status) == OK) & (np.asarray(final_in_frame) < POSE_IN_FRAME_WARN))),
        poses_estimated=reader.poses_estimated,
    )


def pose_store_folder(index_path: Path) -> Path:
    """Where the build of the index at `index_path` keeps the poses it estimated: `<index stem>-poses/`."""
    index_path = Path(index_path)
    return index_path.with_name(f"{index_path.stem}-poses")


def check_index_file(path: Path, *, dataset: str) -> None:
    """Refuse an existing file at `path` that a build of `dataset` could not update; a missing one is fine."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise StarError(f"The annotation index path {path} is a folder: give a .h5 file path with --index.")
    if not path.exists():
        return
    _check_dataset(_read_table(path), path=path, dataset=dataset)


def _check_dataset(table: _Table, *, path: Path, dataset: str) -> None:
    found = table.attrs.get("dataset")
    if found != dataset:
        raise StarError(
            f"{path} is an index of {found!r}, not {dataset!r}: choose another --index or delete that file."
        )


def _metadata(reader: DatasetReader) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "dataset": reader.name,
        "root": str(reader.root),
        "layout": reader.layout.to_json(),
        "persons": int(reader.persons),
        "class_names": json.dumps(list(reader.class_names)),
        "benchmarks": json.dumps(list(reader.benchmarks)),
    }


def _fingerprint(source: SampleSource) -> str:
    parts = [source.sample_id, source.key]
    for path in (source.video_path, source.annotation_path):
        if path is None:
            parts.append("-")
            continue
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            parts.append(f"{path}|missing")
        else:
            parts.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


@dataclass
class _Table:
    attrs: dict
    columns: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]


def _read_table(path: Path) -> _Table:
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
            columns = {name: read_column(h5["samples"][name]) for name in h5["samples"]}
            splits = {name: read_column(h5["splits"][name]) for name in h5["splits"]}
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise StarError(
            f"{path} is not a readable STAR annotation index ({err}); delete it or choose another path."
        ) from err
    rows = len(columns.get("sample_id", ()))
    if attrs.get("format_version") != FORMAT_VERSION:  # every row is re-read; columns added since get placeholders
        columns.setdefault("pose_in_frame", np.full(rows, np.nan, np.float32))
    missing = [name for name in (*_STR_COLUMNS, *_NUMBER_COLUMNS) if len(columns.get(name, ())) != rows]
    if missing:
        raise StarError(
            f"{path} is not a readable STAR annotation index (columns {missing} are missing or of the "
            "wrong length); delete it or choose another path."
        )
    return _Table(attrs=attrs, columns=columns, splits=splits)


class _PoseWriter:
    """Appends skeletons to the resizable `poses` dataset in large blocks, returning their offsets."""

    def __init__(self, poses: h5py.Dataset) -> None:
        self.poses = poses
        self.pending: list[np.ndarray] = []
        self.pending_frames = 0
        self.total = 0

    def append(self, skeleton: np.ndarray) -> int:
        offset = self.total
        if len(skeleton):
            self.pending.append(skeleton)
            self.pending_frames += len(skeleton)
            self.total += len(skeleton)
        if self.pending_frames >= COPY_BLOCK_FRAMES:
            self.flush()
        return offset

    def flush(self) -> None:
        if not self.pending:
            return
        block = np.concatenate(self.pending)  # (frames, persons, joints, 3)
        start = self.poses.shape[0]
        self.poses.resize(start + len(block), axis=0)
        self.poses[start:] = block
        self.pending, self.pending_frames = [], 0


class _OldPoseCopier:
    """Copies kept rows' skeletons from the old index, merging consecutive rows into one read."""

    def __init__(self, old_poses: h5py.Dataset | None, writer: _PoseWriter) -> None:
        self.old_poses = old_poses
        self.writer = writer
        self.run_start = self.run_end = 0

    def add(self, old_offset: int, frames: int) -> int:
        if frames == 0:
            return self.writer.total + (self.run_end - self.run_start)
        if self.run_end != self.run_start and old_offset != self.run_end:
            self.flush()
        if self.run_end == self.run_start:
            self.run_start = self.run_end = old_offset
        new_offset = self.writer.total + (self.run_end - self.run_start)
        self.run_end += frames
        return new_offset

    def flush(self) -> None:
        for start in range(self.run_start, self.run_end, COPY_BLOCK_FRAMES):
            self.writer.append(self.old_poses[start : min(start + COPY_BLOCK_FRAMES, self.run_end)])
        self.run_start = self.run_end = 0


def _write_index(
    out_path: Path,
    *,
    reader: DatasetReader,
    plan: list[tuple[str, int, str]],
    old: _Table | None,
    sources: dict[str, SampleSource],
    fingerprints: dict[str, str],
    meta: dict,
    progress: Callable[[int, int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write the new index next to the old one and rename it into place; returns the rows' statuses and
    pose_in_frame shares."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    to_load = sum(1 for action, _, _ in plan if action == "load")
    persons, joints = reader.persons, reader.layout.num_joints
    columns: dict[str, list] = {name: [] for name in (*_STR_COLUMNS, *_NUMBER_COLUMNS)}
    splits: dict[str, list[str]] = {name: [] for name in reader.benchmarks}
    old_file = h5py.File(out_path, "r") if old is not None else None
    try:
        with h5py.File(tmp_path, "w") as h5:
            poses = h5.create_dataset(
                "poses", shape=(0, persons, joints, 3), maxshape=(None, persons, joints, 3),
                dtype=np.float32, chunks=(POSE_CHUNK_FRAMES, persons, joints, 3), compression="lzf",
            )  # fmt: skip
            writer = _PoseWriter(poses)
            copier = _OldPoseCopier(old_file["poses"] if old_file is not None else None, writer)
            done = 0
            if progress is not None:
                progress(0, to_load)
            for action, old_row, sample_id in plan:
                if action == "load":
                    copier.flush()
                    record = reader.load(sources[sample_id])
                    _append_record(columns, splits, record, fingerprints[sample_id], writer.append(record.skeleton))
                    done += 1
                    if progress is not None:
                        progress(done, to_load)
                    continue
                for name in columns:
                    columns[name].append(old.columns[name][old_row])
                for name in splits:
                    splits[name].append(old.splits[name][old_row] if name in old.splits else "")
                if action == "keep":
                    columns["skeleton_offset"][-1] = copier.add(
                        int(old.columns["skeleton_offset"][old_row]), int(old.columns["skeleton_frames"][old_row])
                    )
                else:  # remove: the files are gone, keep the row so row numbers stay stable
                    columns["status"][-1] = REMOVED
                    columns["fingerprint"][-1] = ""  # files that come back are always re-read
                    columns["detail"][-1] = "its video and annotation files are no longer in the dataset folder"
                    columns["usable_frames"][-1] = 0
                    columns["skeleton_frames"][-1] = 0
                    columns["skeleton_offset"][-1] = copier.add(0, 0)
            copier.flush()
            writer.flush()
            samples = h5.create_group("samples")
            for name in _STR_COLUMNS:
                samples.create_dataset(name, data=np.array(columns[name], dtype=object), dtype=_STRING)
            for name, dtype in _NUMBER_COLUMNS.items():
                samples.create_dataset(name, data=np.array(columns[name], dtype=dtype))
            split_group = h5.create_group("splits")
            for name, values in splits.items():
                split_group.create_dataset(name, data=np.array(values, dtype=object), dtype=_STRING)
            for key, value in meta.items():
                h5.attrs[key] = value
            h5.attrs["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        if old_file is not None:
            old_file.close()
            old_file = None
        _fsync(tmp_path)
        os.replace(tmp_path, out_path)
        _fsync_directory(out_path.parent)
        return np.array(columns["status"], dtype=str), np.array(columns["pose_in_frame"], np.float32)
    except BaseException:
        if old_file is not None:
            old_file.close()
        tmp_path.unlink(missing_ok=True)
        raise


def _append_record(
    columns: dict[str, list], splits: dict[str, list[str]], record: SampleRecord, fingerprint: str, offset: int
) -> None:
    unknown = set(record.splits) - set(splits)
    if unknown:
        raise StarError(f"Sample {record.sample_id} names benchmarks {sorted(unknown)} its dataset does not have.")
    values = {
        "sample_id": record.sample_id, "class_name": record.class_name, "status": record.status,
        "detail": record.detail, "video_path": str(Path(record.video_path).resolve()), "fingerprint": fingerprint,
        "label": record.label, "num_frames": record.num_frames, "usable_frames": record.usable_frames,
        "width": record.width, "height": record.height, "skeleton_offset": offset,
        "skeleton_frames": record.skeleton_frames, "fps": record.fps, "pose_in_frame": record.pose_in_frame,
    }  # fmt: skip
    for name, value in values.items():
        columns[name].append(value)
    for name in splits:
        splits[name].append(record.splits.get(name, ""))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Make the rename itself durable; directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    _fsync(path)
