"""The HDF5 annotation index: contents, incremental rebuilds, bad samples with reasons, crash safety,
and reading from several processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.datasets import read_dataset
from pipeline.sources.index import AnnotationIndex, build_index


def file_state(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


def test_index_contents_match_the_reader(synthetic_ntu_root, tmp_path):
    out = tmp_path / "ntu120.h5"
    report = build_index("ntu120", synthetic_ntu_root, out)
    assert report.written and report.added == report.total == 60 and report.status_counts == {"ok": 60}
    index = AnnotationIndex(out)
    assert len(index) == 60 and index.dataset == "ntu120" and index.persons == 2
    assert index.layout.name == "ntu25" and len(index.class_names) == 120
    assert index.benchmarks == ["ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"]
    assert list(index.sample_ids) == sorted(index.sample_ids)  # first build: sorted by id
    reader = read_dataset("ntu120", synthetic_ntu_root)
    row = index.index_of("S001C001P001R001A010")
    expected = reader.load(reader.scan().sources[row])
    record = index.record(row)
    assert record.sample_id == expected.sample_id and record.label == 9 and record.class_name == "clapping"
    assert record.splits == expected.splits == {
        "ntu60-xsub": "train", "ntu60-xview": "test", "ntu120-xsub": "train", "ntu120-xset": "test",
    }  # fmt: skip
    assert np.array_equal(record.skeleton, expected.skeleton) and record.skeleton.dtype == np.float32
    assert (record.num_frames, record.width, record.height, record.fps) == (expected.num_frames, 160, 90, 30.0)
    assert record.video_path.is_absolute() and record.video_path.is_file()
    assert np.array_equal(index.labels, [int(s[-3:]) - 1 for s in index.sample_ids])
    assert (index.usable_frames == index.num_frames).all()
    for benchmark in index.benchmarks:
        train, test = index.split_mask(benchmark, "train"), index.split_mask(benchmark, "test")
        assert train.any() and test.any() and not (train & test).any()
    ntu60_part = index.split_mask("ntu60-xsub", "train") | index.split_mask("ntu60-xsub", "test")
    assert all(int(s[1:4]) <= 17 and int(s[-3:]) <= 60 for s in index.sample_ids[ntu60_part])
    with pytest.raises(StarError, match="not in this ntu120 index"):
        index.split_mask("penn", "train")


def test_second_build_is_a_no_op(synthetic_ntu_root, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu120", synthetic_ntu_root, out)
    before = file_state(out)
    report = build_index("ntu120", synthetic_ntu_root, out)
    assert not report.written and report.unchanged == 60
    assert report.added == report.refreshed == report.removed == 0
    assert file_state(out) == before  # not rewritten: same bytes, same mtime


def test_new_sample_is_appended_and_rows_keep_their_numbers(synthetic_ntu_copy, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu120", synthetic_ntu_copy, out)
    old_ids = list(AnnotationIndex(out).sample_ids)
    old_skeleton = AnnotationIndex(out).skeleton(7)
    new_id = "S001C003P004R002A010"  # a name the fixture does not use; copy an existing sample's files
    assert new_id not in old_ids
    videos, skeletons = synthetic_ntu_copy / "nturgb+d_rgb", synthetic_ntu_copy / "nturgb+d_skeletons"
    shutil.copy(videos / f"{old_ids[0]}_rgb.avi", videos / f"{new_id}_rgb.avi")
    shutil.copy(skeletons / f"{old_ids[0]}.skeleton", skeletons / f"{new_id}.skeleton")
    report = build_index("ntu120", synthetic_ntu_copy, out)
    assert (report.added, report.unchanged, report.refreshed, report.written) == (1, 60, 0, True)
    index = AnnotationIndex(out)
    assert list(index.sample_ids) == old_ids + [new_id]
    assert np.array_equal(index.skeleton(7), old_skeleton)  # copied rows are intact
    assert np.array_equal(index.skeleton(60), index.skeleton(0))


def test_changed_source_is_refreshed(synthetic_ntu_copy, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu120", synthetic_ntu_copy, out)
    index = AnnotationIndex(out)
    row = 5
    path = synthetic_ntu_copy / "nturgb+d_skeletons" / f"{index.sample_ids[row]}.skeleton"
    lines = path.read_text().split("\n")
    tokens = lines[4].split()  # joint 0 of frame 1
    tokens[5] = "150"  # colorX in the 1920x1080 Kinect frame: 12.5 px of the 160x90 video
    lines[4] = " ".join(tokens)
    path.write_text("\n".join(lines))
    index.close()
    report = build_index("ntu120", synthetic_ntu_copy, out)
    assert (report.refreshed, report.unchanged, report.added) == (1, 59, 0)
    fresh = AnnotationIndex(out)
    assert fresh.skeleton(row)[0, 0, 0, 0] == 12.5 and fresh.status[row] == "ok"
    assert build_index("ntu120", synthetic_ntu_copy, out).written is False


def test_vanished_sample_keeps_its_row_as_removed(synthetic_ntu_root, synthetic_ntu_copy, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu120", synthetic_ntu_copy, out)
    gone = str(AnnotationIndex(out).sample_ids[3])
    (synthetic_ntu_copy / "nturgb+d_rgb" / f"{gone}_rgb.avi").unlink()
    (synthetic_ntu_copy / "nturgb+d_skeletons" / f"{gone}.skeleton").unlink()
    report = build_index("ntu120", synthetic_ntu_copy, out)
    assert report.removed == 1 and report.total == 60 and report.status_counts == {"ok": 59, "removed": 1}
    index = AnnotationIndex(out)
    assert index.sample_ids[3] == gone and index.status[3] == "removed" and index.skeleton(3).shape[0] == 0
    assert not index.split_mask("ntu120-xsub", "train", ok_only=True)[3]
    assert not build_index("ntu120", synthetic_ntu_copy, out).written  # stays removed, no rewrite
    for folder, name in (("nturgb+d_rgb", f"{gone}_rgb.avi"), ("nturgb+d_skeletons", f"{gone}.skeleton")):
        shutil.copy2(synthetic_ntu_root / folder / name, synthetic_ntu_copy / folder / name)  # back, old mtimes
    report = build_index("ntu120", synthetic_ntu_copy, out)
    assert report.refreshed == 1 and AnnotationIndex(out).status[3] == "ok"


def test_bad_samples_are_recorded_with_a_reason(synthetic_ntu_copy, tmp_path):
    videos, skeletons = synthetic_ntu_copy / "nturgb+d_rgb", synthetic_ntu_copy / "nturgb+d_skeletons"
    ids = sorted(p.name[:20] for p in skeletons.iterdir())
    (videos / f"{ids[0]}_rgb.avi").unlink()  # missing video
    (videos / f"{ids[1]}_rgb.avi").write_bytes(b"RIFF junk" * 50)  # unreadable video
    (skeletons / f"{ids[2]}.skeleton").unlink()  # missing skeleton
    text = (skeletons / f"{ids[3]}.skeleton").read_text()
    (skeletons / f"{ids[3]}.skeleton").write_text(text[: len(text) // 2])  # truncated skeleton
    (skeletons / f"{ids[4]}.skeleton").write_text("3\n0\n0\n0\n")  # nobody in any frame
    frames = text.split("\n")
    short = ["10"] + frames[1 : 1 + 10 * 28]  # the first 10 of ~60 frames (1 body: 28 lines per frame)
    (skeletons / f"{ids[5]}.skeleton").write_text("\n".join(short) + "\n")
    (videos / "notes.txt").write_text("not a sample")
    out = tmp_path / "index.h5"
    report = build_index("ntu120", synthetic_ntu_copy, out)
    expected = {
        ids[0]: "missing_video", ids[1]: "unreadable_video", ids[2]: "missing_skeleton",
        ids[3]: "malformed_skeleton", ids[4]: "empty_skeleton", ids[5]: "frame_mismatch",
    }  # fmt: skip
    index = AnnotationIndex(out)
    assert {sid: index.status[index.index_of(sid)] for sid in expected} == expected
    assert report.status_counts["ok"] == 54 and sum(report.status_counts.values()) == 60
    assert report.ignored == (str((videos / "notes.txt").resolve()),)
    detail = index.details[index.index_of(ids[3])]
    assert f"{ids[3]}.skeleton, line " in detail and "truncated" in detail
    mismatch = index.index_of(ids[5])
    assert index.usable_frames[mismatch] == 10 and index.skeleton(mismatch).shape[0] == 10
    assert "skeleton 10" in index.details[mismatch]


def test_failed_build_leaves_the_old_index_intact(synthetic_ntu_copy, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu60", synthetic_ntu_copy, out)
    before = file_state(out)
    for path in (synthetic_ntu_copy / "nturgb+d_skeletons").iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # all "changed"

    def crash(done: int, total: int) -> None:
        if done == 7:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a build

    with pytest.raises(KeyboardInterrupt):
        build_index("ntu60", synthetic_ntu_copy, out, progress=crash)
    assert file_state(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.h5", "ntu"]  # no temporary file left
    seen = []
    report = build_index("ntu60", synthetic_ntu_copy, out, progress=lambda d, t: seen.append((d, t)))
    assert report.refreshed == report.total == 36 and seen[0] == (0, 36) and seen[-1] == (36, 36)


def test_wrong_dataset_or_broken_file_is_refused(synthetic_ntu_root, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu60", synthetic_ntu_root, out)
    with pytest.raises(StarError, match="index of 'ntu60', not 'ntu120'"):
        build_index("ntu120", synthetic_ntu_root, out)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF junk")
    with pytest.raises(StarError, match="not a readable STAR annotation index"):
        build_index("ntu60", synthetic_ntu_root, broken)
    with pytest.raises(StarError, match="not a readable annotation index"):
        len(AnnotationIndex(broken))
    with pytest.raises(StarError, match="Unknown dataset"):
        build_index("kinetics", synthetic_ntu_root, tmp_path / "k.h5")


def test_format_change_refreshes_every_row(synthetic_ntu_root, tmp_path):
    out = tmp_path / "index.h5"
    build_index("ntu60", synthetic_ntu_root, out)
    with h5py.File(out, "r+") as h5:
        h5.attrs["format_version"] = 0
    with pytest.raises(StarError, match="run build_index again"):
        len(AnnotationIndex(out))
    report = build_index("ntu60", synthetic_ntu_root, out)
    assert report.refreshed == report.total == 36 and len(AnnotationIndex(out)) == 36


def _skeleton_sums(args: tuple[AnnotationIndex, list[int]]) -> list[float]:
    index, rows = args
    return [float(index.skeleton(i).sum()) for i in rows]


# Every start method this platform offers (Linux: both; macOS and Windows: spawn only).
@pytest.mark.parametrize("method", [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()])
def test_index_is_safe_in_worker_processes(synthetic_ntu_root, tmp_path, method):
    out = tmp_path / "index.h5"
    build_index("ntu120", synthetic_ntu_root, out)
    index = AnnotationIndex(out)
    expected = _skeleton_sums((index, list(range(len(index)))))  # the parent has the file open now
    restored = pickle.loads(pickle.dumps(index))
    assert restored.sample_ids.tolist() == index.sample_ids.tolist()
    chunks = [(index, list(range(start, len(index), 3))) for start in range(3)]
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(_skeleton_sums, chunks)
    for start, sums in enumerate(results):
        assert sums == expected[start::3]
    assert _skeleton_sums((index, [0, 1])) == expected[:2]  # the parent's handle still works


class _SkeletonDataset:
    """A minimal map-style dataset over the index, as a training stage would write one."""

    def __init__(self, index: AnnotationIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, float]:
        return int(self.index.labels[i]), float(self.index.skeleton(i)[..., 2].sum())


def test_index_in_a_torch_dataloader_with_workers(synthetic_ntu_root, tmp_path):
    torch = pytest.importorskip("torch")
    out = tmp_path / "index.h5"
    build_index("ntu60", synthetic_ntu_root, out)
    dataset = _SkeletonDataset(AnnotationIndex(out))
    expected = [dataset[i] for i in range(len(dataset))]  # opens the file in the parent first
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2)
    labels, confidence = [], []
    for batch_labels, batch_confidence in loader:
        labels += batch_labels.tolist()
        confidence += batch_confidence.tolist()
    assert labels == [e[0] for e in expected] and np.allclose(confidence, [e[1] for e in expected])
