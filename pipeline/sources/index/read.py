"""Reading the annotation index: `AnnotationIndex(path)`, lazy, read-only, safe to hand to worker processes;
and the file's format (version, columns, chunking) that the builder writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.datasets.records import (
    SampleRecord,
)
from pipeline.sources.layouts import JointLayout

# Bump whenever what a reader stores for the same files changes (parser, body selection, columns):
# an index with another version refreshes every row on the next build.
# 2: NTU colour coordinates mapped to the video's frame size, pose_in_frame column; 3: annotation problems ranked
# before video problems, Penn Action's frame size from its labels and its joints past the border kept
FORMAT_VERSION = 3


POSE_CHUNK_FRAMES = 256  # one chunk ~ 8 NTU clips; small enough that skeleton(i) reads little extra


_STRING = h5py.string_dtype("utf-8")


_NUMBER_COLUMNS = {
    "label": np.int32, "num_frames": np.int32, "usable_frames": np.int32, "width": np.int32,
    "height": np.int32, "skeleton_offset": np.int64, "skeleton_frames": np.int32, "fps": np.float64,
    "pose_in_frame": np.float32,
}  # fmt: skip


_STR_COLUMNS = ("sample_id", "class_name", "status", "detail", "video_path", "fingerprint")


def read_column(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr()[()], dtype=str)
    return dataset[()]


class AnnotationIndex:
    """Read-only view of an index file; opened on first use, safe to pickle into worker processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._cache: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {"path": self.path}  # no h5py handle, no cached columns: the worker reopens lazily

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __enter__(self) -> AnnotationIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # In a forked child the parent's handle is not ours to use or close: just drop it.
            self._file = None
            if not self.path.is_file():
                problem = "is a folder, not an index file" if self.path.is_dir() else "not found"
                raise StarError(
                    f"Annotation index {self.path} {problem}; build it with build_index (or `star extract`) first."
                )
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise StarError(f"{self.path} is not a readable annotation index ({err}); rebuild it.") from err
            self._pid = os.getpid()
            version = self._file.attrs.get("format_version")
            if version is None or "samples" not in self._file or "poses" not in self._file:
                self.close()
                raise StarError(
                    f"{self.path} is an HDF5 file but not a STAR annotation index; pass the index "
                    "`star extract` wrote next to the cache."
                )
            if version != FORMAT_VERSION:
                self.close()
                raise StarError(
                    f"{self.path} has index format {version}, this STAR reads {FORMAT_VERSION}: run build_index again."
                )
        return self._file

    def _column(self, name: str) -> np.ndarray:
        key = f"samples/{name}"
        if key not in self._cache:
            self._cache[key] = read_column(self._h5()["samples"][name])
        return self._cache[key]

    def _attr(self, name: str):
        value = self._h5().attrs[name]
        return value.item() if isinstance(value, np.generic) else value

    def __len__(self) -> int:
        return int(self._h5()["samples"]["sample_id"].shape[0])

    @property
    def dataset(self) -> str:
        return str(self._attr("dataset"))

    @property
    def root(self) -> Path:
        return Path(self._attr("root"))

    @property
    def layout(self) -> JointLayout:
        if "layout" not in self._cache:
            self._cache["layout"] = JointLayout.from_json(self._attr("layout"))
        return self._cache["layout"]

    @property
    def persons(self) -> int:
        return int(self._attr("persons"))

    @property
    def class_names(self) -> list[str]:
        return list(json.loads(self._attr("class_names")))

    @property
    def benchmarks(self) -> list[str]:
        return list(json.loads(self._attr("benchmarks")))

    @property
    def sample_ids(self) -> np.ndarray:
        return self._column("sample_id")

    @property
    def labels(self) -> np.ndarray:
        return self._column("label").astype(np.int64)

    @property
    def status(self) -> np.ndarray:
        return self._column("status")

    @property
    def details(self) -> np.ndarray:
        return self._column("detail")

    @property
    def fingerprints(self) -> np.ndarray:
        """Per row, the fingerprint of the sample's source files: it changes when they do."""
        return self._column("fingerprint")

    @property
    def video_paths(self) -> np.ndarray:
        return self._column("video_path")

    @property
    def num_frames(self) -> np.ndarray:
        return self._column("num_frames")

    @property
    def usable_frames(self) -> np.ndarray:
        return self._column("usable_frames")

    @property
    def skeleton_frames(self) -> np.ndarray:
        return self._column("skeleton_frames")

    @property
    def width(self) -> np.ndarray:
        return self._column("width")

    @property
    def height(self) -> np.ndarray:
        return self._column("height")

    @property
    def pose_in_frame(self) -> np.ndarray:
        return self._column("pose_in_frame")

    @property
    def fps(self) -> np.ndarray:
        return self._column("fps")

    def splits(self, benchmark: str) -> np.ndarray:
        """Per row "train", "test", "val" or "" (not in the benchmark)."""
        key = f"splits/{benchmark}"
        if key not in self._cache:
            if benchmark not in self._h5()["splits"]:
                raise StarError(
                    f"Benchmark {benchmark!r} is not in this {self.dataset} index; it has {self.benchmarks}."
                )
            self._cache[key] = read_column(self._h5()["splits"][benchmark])
        return self._cache[key]

    def split_mask(self, benchmark: str, split: str, *, ok_only: bool = False) -> np.ndarray:
        """Bool per row: the sample is in `split` of `benchmark` (and has status "ok" if ok_only)."""
        mask = self.splits(benchmark) == split
        return mask & (self.status == "ok") if ok_only else mask

    def index_of(self, sample_id: str) -> int:
        matches = np.flatnonzero(self.sample_ids == sample_id)
        if matches.size == 0:
            raise StarError(f"Sample {sample_id!r} is not in the index {self.path}.")
        return int(matches[0])

    def _row(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for an index of {n} samples")
        return int(i) % n

    def skeleton(self, i: int) -> np.ndarray:
        """(frames, persons, joints, 3) float32 (x, y, confidence) in original-frame pixels."""
        row = self._row(i)
        start = int(self._column("skeleton_offset")[row])
        return self._h5()["poses"][start : start + int(self.skeleton_frames[row])]

    def record(self, i: int) -> SampleRecord:
        row = self._row(i)
        return SampleRecord(
            sample_id=str(self.sample_ids[row]),
            label=int(self.labels[row]),
            class_name=str(self._column("class_name")[row]),
            splits={b: str(s) for b in self.benchmarks if (s := self.splits(b)[row])},
            video_path=Path(self.video_paths[row]),
            num_frames=int(self.num_frames[row]),
            fps=float(self.fps[row]),
            width=int(self.width[row]),
            height=int(self.height[row]),
            skeleton=self.skeleton(row),
            layout=self.layout,
            usable_frames=int(self.usable_frames[row]),
            status=str(self.status[row]),
            detail=str(self.details[row]),
            pose_in_frame=float(self.pose_in_frame[row]),
        )


def default_index_path(*, cache_path: str, dataset: str) -> Path:
    """Where the annotation index lives unless --index says otherwise: next to the cache, one per dataset."""
    return Path(cache_path).resolve().parent / f"{dataset}-index.h5"
