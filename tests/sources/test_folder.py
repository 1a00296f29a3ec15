"""Custom folders: manifest CSV, layout.json, classes.txt, NPZ and JSON pose files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.datasets.folder import FolderReader, read_pose_file
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.layouts import COCO17, JointLayout


def write_video(path: Path, frames: int, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 8 * i, np.uint8))
    writer.release()


def make_folder(root: Path, *, layout: dict | None = None, rows: list[str] | None = None) -> Path:
    """Two videos (8 and 6 frames) with NPZ and JSON poses in COCO-17, and a folder of frames."""
    rng = np.random.default_rng(0)
    write_video(root / "videos" / "wave_01.avi", 8)
    write_video(root / "videos" / "jump_01.avi", 6)
    (root / "frames" / "jump_02").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(root / "frames" / "jump_02" / f"{i:04d}.png"), np.zeros((48, 64, 3), np.uint8))
    (root / "poses").mkdir()
    two_people = rng.uniform(0, 60, (8, 2, 17, 3)).astype(np.float32)
    two_people[..., 2] = [[0.2], [0.9]]  # person slot 1 is the confident one
    np.savez(root / "poses" / "wave_01.npz", keypoints=two_people)

    def person() -> list:
        return np.concatenate([rng.uniform(0, 60, (17, 2)), rng.uniform(0, 1, (17, 1))], 1).tolist()

    ragged = [[person()] if t % 2 else [] for t in range(6)]
    ragged[3].append(person())  # a second person in one frame only
    (root / "poses" / "jump_01.json").write_text(json.dumps({"keypoints": ragged}))
    np.savez(root / "poses" / "jump_02.npz", keypoints=np.full((5, 17, 3), 0.5))  # one person: (frames, joints, 3)
    (root / "layout.json").write_text(json.dumps(layout or {"layout": "coco17", "persons": 2}))
    lines = rows or [
        "video,label,split,pose",
        "videos/wave_01.avi,wave,train,poses/wave_01.npz",
        "videos/jump_01.avi,jump,test,poses/jump_01.json",
        "frames/jump_02,jump,val,poses/jump_02.npz",
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_custom_folder_index(tmp_path):
    root = make_folder(tmp_path / "mine")
    report = build_index("folder", root / "manifest.csv", tmp_path / "mine.h5")
    assert report.status_counts == {"ok": 3}
    index = AnnotationIndex(tmp_path / "mine.h5")
    assert index.dataset == "folder" and index.layout == COCO17 and index.persons == 2
    assert index.class_names == ["jump", "wave"] and index.benchmarks == ["custom"]
    assert list(index.sample_ids) == ["frames/jump_02", "videos/jump_01", "videos/wave_01"]
    assert index.labels.tolist() == [0, 0, 1]
    assert index.splits("custom").tolist() == ["val", "test", "train"]
    assert index.num_frames.tolist() == [5, 6, 8]
    wave = np.load(root / "poses" / "wave_01.npz")["keypoints"]
    assert np.allclose(index.skeleton(2)[:, 0], wave[:, 1]) and np.allclose(index.skeleton(2)[:, 1], wave[:, 0])
    jump = index.skeleton(1)
    ragged = json.loads((root / "poses" / "jump_01.json").read_text())["keypoints"]
    assert jump.shape == (6, 2, 17, 3) and not jump[0].any() and np.allclose(jump[1, 0], ragged[1][0])
    assert np.allclose(jump[3, 1], ragged[3][1]) and not jump[1, 1].any()
    assert index.skeleton(0).shape == (5, 2, 17, 3) and not index.skeleton(0)[:, 1].any()
    assert not build_index("folder", root, tmp_path / "mine.h5").written  # the folder form, no change


def test_edited_manifest_row_refreshes_that_sample(tmp_path):
    root = make_folder(tmp_path / "mine")
    build_index("folder", root, tmp_path / "mine.h5")
    text = (root / "manifest.csv").read_text().replace("jump,test", "jump,train")
    (root / "manifest.csv").write_text(text)
    report = build_index("folder", root, tmp_path / "mine.h5")
    assert (report.refreshed, report.unchanged) == (1, 2)
    assert AnnotationIndex(tmp_path / "mine.h5").splits("custom").tolist() == ["val", "train", "train"]


def test_classes_file_custom_layout_and_bad_rows(tmp_path):
    names = [f"j{i}" for i in range(17)]
    layout = {"name": "seventeen", "joint_names": names, "flip_pairs": [[1, 2]], "persons": 1}
    rows = [
        "video,label,split,pose,sample_id",
        "videos/wave_01.avi,wave,train,poses/wave_01.npz,a",
        "videos/jump_01.avi,dance,test,poses/jump_01.json,b",
        "videos/jump_01.avi,jump,test,poses/absent.npz,c",
        "videos/absent.avi,jump,test,poses/jump_02.npz,d",
        "videos/wave_01.avi,wave,test,poses/bad.npz,e",
    ]
    root = make_folder(tmp_path / "mine", layout=layout, rows=rows)
    np.savez(root / "poses" / "bad.npz", keypoints=np.zeros((8, 1, 13, 3)))
    (root / "classes.txt").write_text("wave\njump\n")
    report = build_index("folder", root, tmp_path / "mine.h5")
    index = AnnotationIndex(tmp_path / "mine.h5")
    assert index.layout == JointLayout(name="seventeen", joint_names=tuple(names), flip_pairs=((1, 2),))
    assert index.class_names == ["wave", "jump"] and index.persons == 1
    assert index.status.tolist() == ["ok", "unknown_label", "missing_skeleton", "missing_video", "malformed_skeleton"]
    assert index.labels.tolist() == [0, -1, 1, 1, 0]
    assert "expected (frames, persons, 17, 3)" in index.details[4]
    assert index.skeleton(0).shape == (8, 1, 17, 3)  # the more confident of two persons
    assert report.status_counts["ok"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda root: (root / "layout.json").unlink(), "No layout.json"),
        (lambda root: (root / "layout.json").write_text('{"layout": "body99"}'), "Unknown joint layout 'body99'"),
        (lambda root: (root / "manifest.csv").write_text("video,label,pose\n"), r"lacks the columns \['split'\]"),
        (lambda root: (root / "manifest.csv").write_text("video,label,split,pose\na.avi,x,dev,p.npz\n"),
         r"line 2: split 'dev' must be one of"),
        (lambda root: (root / "manifest.csv").write_text("video,label,split,pose\na.avi,x,train,p\na.avi,y,test,q\n"),
         "appears twice"),
        (lambda root: (root / "manifest.csv").unlink(), "No manifest"),
    ],
)  # fmt: skip
def test_manifest_mistakes_are_explained(tmp_path, change, message):
    root = make_folder(tmp_path / "mine")
    change(root)
    with pytest.raises(StarError, match=message):
        FolderReader(root)


def test_pose_file_formats(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"keypoints": [[[[1, 2, 1.7]] * 17], [[[np.nan, 2, 0.9]] * 17]]}))
    pose = read_pose_file(path, layout=COCO17, persons=1)
    assert pose.shape == (2, 1, 17, 3) and pose[0, 0, 0, 2] == 1.0  # score clipped to [0, 1]
    assert not pose[1].any()  # non-finite joint: score 0 at (0, 0)
    (tmp_path / "p.csv").write_text("x")
    with pytest.raises(StarError, match="use .npz or .json"):
        read_pose_file(tmp_path / "p.csv", layout=COCO17, persons=1)
    (tmp_path / "q.json").write_text('{"keypoints": [[[1, 2]]]}')
    with pytest.raises(StarError, match=r"frame 0, person 0 has shape \(2,\)"):
        read_pose_file(tmp_path / "q.json", layout=COCO17, persons=1)
    np.savez(tmp_path / "r.npz", poses=np.zeros((2, 17, 3)))
    with pytest.raises(StarError, match="no array 'keypoints'"):
        read_pose_file(tmp_path / "r.npz", layout=COCO17, persons=1)


def test_layout_validation():
    with pytest.raises(StarError, match="two flip pairs"):
        JointLayout(name="x", joint_names=("a", "b", "c"), flip_pairs=((0, 1), (1, 2)))
    with pytest.raises(StarError, match="0..2"):
        JointLayout(name="x", joint_names=("a", "b", "c"), flip_pairs=((0, 3),))
    assert COCO17.flip_permutation()[5] == 6 and JointLayout.from_json(COCO17.to_json()) == COCO17
