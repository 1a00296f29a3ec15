"""Readers for NTU RGB+D 60/120, Penn Action and custom folders.

`read_dataset(name, root)` returns the reader the annotation index (`pipeline/sources/index/`) uses:
its metadata (layout, persons, class names, benchmarks), a cheap `scan()` of the files on disk and a
`load(source)` that turns one sample into a `SampleRecord` (problems become the record's status).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import StarError
from pipeline.sources.datasets.folder import FolderReader
from pipeline.sources.datasets.ntu import NtuReader
from pipeline.sources.datasets.penn import PennReader
from pipeline.sources.datasets.records import (
    DatasetReader,
    DatasetScan,
    SampleRecord,
    SampleSource,
)
from pipeline.sources.layouts import COCO17, NTU25, PENN13, JointLayout

DATASETS = ("ntu60", "ntu120", "penn", "folder")

__all__ = [
    "COCO17", "DATASETS", "NTU25", "PENN13", "DatasetReader", "DatasetScan", "JointLayout", "SampleRecord",
    "SampleSource", "read_dataset",
]  # fmt: skip


def read_dataset(dataset: str, root: Path, *, pose_store: Path | None = None) -> DatasetReader:
    """The reader for `dataset` ("ntu60", "ntu120", "penn", "folder") stored under `root`.

    For "folder", root is the manifest CSV or the folder holding `manifest.csv`, and `pose_store` the folder
    that keeps the poses it estimates for videos without a pose file (None: estimate, keep nothing).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise StarError(f"Dataset root {root} does not exist.")
    if dataset in ("ntu60", "ntu120"):
        return NtuReader(root, version=dataset)
    if dataset == "penn":
        return PennReader(root)
    if dataset == "folder":
        return FolderReader(root, pose_store=pose_store)
    raise StarError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
