"""The annotation index: one HDF5 file with every sample's metadata and skeleton (`build.py` writes it,
`read.py` reads it).

`build_index(dataset, root, out_path)` scans a dataset (`pipeline.sources.datasets.read_dataset`), loads what
is new or changed, and writes the index; `AnnotationIndex(path)` reads it, lazily and read-only.

File layout (h5py):
- attrs: `format_version`, `dataset`, `root`, `layout` (JSON), `persons`, `class_names` (JSON),
  `benchmarks` (JSON), `updated` (ISO time).
- `samples/<column>`, one row per sample: `sample_id`, `label` (int32, -1 unknown), `class_name`,
  `status` ("ok" or a code from `pipeline.sources.datasets.records`), `detail` (the reason in words),
  `video_path` (absolute), `num_frames`, `usable_frames`, `width`, `height` (int32), `fps` (float64),
  `skeleton_offset` (int64), `skeleton_frames` (int32), `pose_in_frame` (float32: share of visible
  joints inside the frame, NaN when none is visible), `fingerprint`.
- `splits/<benchmark>`: per row "train", "test", "val" or "" (not part of that benchmark).
- `poses`: float32 (total frames, persons, joints, 3), every sample's skeleton back to back;
  sample i is `poses[skeleton_offset[i] : skeleton_offset[i] + skeleton_frames[i]]`. One concatenated
  dataset + offsets reads and writes as fast as one dataset per sample and keeps
  114,480 samples from becoming 114,480 HDF5 objects. Compressed with LZF (built into h5py): much smaller
  than uncompressed and still fast to read one sample; gzip is little smaller and slower (figures:
  docs/design.md, "Figures behind the code").

Incremental builds: each row stores a fingerprint of its sources (path, size and mtime of the video
and annotation file; for a frame folder the folder's own mtime, which changes when frames are added
or removed; plus reader-specific keys such as a manifest row). A rebuild only stats files: unchanged
rows are copied, changed ones re-read ("refreshed"), new samples appended after the existing rows, and
a sample whose files vanished keeps its row with status `removed`. Row numbers therefore never change
between builds of one index, so caches keyed by row stay valid. When nothing changed, the file is not
touched at all (not even its mtime).

Crash safety: a build that changes anything writes a complete new file next to the old one
(`.<name>.tmp-<pid>`), fsyncs it and `os.replace`s it over the old one, an atomic rename on POSIX and
Windows. A crash or exception mid-build leaves the old index intact (an exception also removes the
temporary file; a killed process may leave it behind, harmless, never read). Readers that already
opened the old file keep reading it. Cost: an incremental build copies the unchanged skeletons, a
few seconds per GB; the reads and stats dominate anyway. Two builds racing on one path do not corrupt
it either: the last rename wins.

Parallel readers: `AnnotationIndex` opens the file on first use, reopens it in a forked child (h5py
handles must not cross processes) and pickles as its path only, so it can be handed to DataLoader
workers under fork, spawn or forkserver.
"""

from pipeline.sources.index.build import IndexReport, build_index, check_index_file
from pipeline.sources.index.read import FORMAT_VERSION, AnnotationIndex, default_index_path

__all__ = ["FORMAT_VERSION", "AnnotationIndex", "IndexReport", "build_index", "check_index_file", "default_index_path"]
