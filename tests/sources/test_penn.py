"""Penn Action: `.mat` labels read with scipy, the fixed class order, the frame-folder videos, bad labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from pipeline.core.errors import StarError
from pipeline.sources.datasets.penn import PENN_CLASSES, PennReader, read_penn_labels
from pipeline.sources.index import AnnotationIndex, build_index


def test_class_order_is_fixed_not_sorted_at_load_time():
    assert len(PENN_CLASSES) == 15
    assert PENN_CLASSES.index("jump_rope") == 6 and PENN_CLASSES.index("jumping_jacks") == 7
    assert PENN_CLASSES[3] == "bowl" and PENN_CLASSES[8] == "pullup"  # stored strings, not display names


def test_generated_labels_have_the_documented_field_shapes(synthetic_penn_root):
    mat = scipy.io.loadmat(synthetic_penn_root / "labels" / "0001.mat")
    frames = int(mat["nframes"][0][0])
    assert mat["action"].shape == (1,) and mat["action"][0] == "jumping_jacks"
    assert mat["x"].shape == mat["y"].shape == (frames, 13) and mat["x"].dtype == np.float64
    assert mat["visibility"].shape == (frames, 13) and mat["visibility"].dtype == np.uint8
    assert mat["train"].shape == (1, 1) and int(mat["train"][0][0]) == 1
    assert mat["bbox"].shape == (frames, 4) and mat["dimensions"].tolist() == [[72, 96, frames]]
    assert len(list((synthetic_penn_root / "frames" / "0001").glob("*.jpg"))) == frames


def test_read_penn_labels(synthetic_penn_root):
    path = synthetic_penn_root / "labels" / "0002.mat"
    labels = read_penn_labels(path)
    action, train, skeleton = labels.action, labels.train, labels.skeleton
    mat = scipy.io.loadmat(path)
    assert labels.frame_size == (96, 72)  # from `dimensions` = [H W nframes]
    assert action == "jumping_jacks" and train is False  # the second video of each class is a test video
    assert skeleton.shape == (int(mat["nframes"][0][0]), 1, 13, 3) and skeleton.dtype == np.float32
    assert np.allclose(skeleton[:, 0, :, 0], mat["x"]) and np.allclose(skeleton[:, 0, :, 1], mat["y"])
    visible = mat["visibility"].astype(bool)
    assert (skeleton[:, 0, :, 2][visible] == 1.0).all() and (skeleton[:, 0, :, 2][~visible] == 0.5).all()


def test_penn_index(synthetic_penn_root, tmp_path):
    report = build_index("penn", synthetic_penn_root.parent, tmp_path / "penn.h5")  # the folder above works too
    assert report.status_counts == {"ok": 6}
    index = AnnotationIndex(tmp_path / "penn.h5")
    assert index.dataset == "penn" and index.persons == 1 and index.layout.name == "penn13"
    assert index.class_names == list(PENN_CLASSES) and index.benchmarks == ["penn"]
    assert list(index.sample_ids) == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert [index.class_names[i] for i in index.labels] == ["jumping_jacks"] * 2 + ["jump_rope"] * 2 + ["squat"] * 2
    assert index.split_mask("penn", "train").tolist() == [True, False] * 3
    assert (index.width == 96).all() and (index.height == 72).all() and (index.fps == 0.0).all()
    assert (index.num_frames == index.skeleton_frames).all()
    record = index.record(4)
    assert record.video_path.is_dir() and record.skeleton.shape == (record.num_frames, 1, 13, 3)


def save_label(path, **overrides):
    frames = 4
    fields = {
        "action": "squat", "pose": "front", "x": np.full((frames, 13), 10.0), "y": np.full((frames, 13), 20.0),
        "visibility": np.ones((frames, 13), bool), "train": np.array([[1]]), "bbox": np.zeros((frames, 4)),
        "dimensions": np.array([[72, 96, frames]]), "nframes": np.array([[frames]]),
    }  # fmt: skip
    fields.update(overrides)
    for key in [k for k, v in fields.items() if v is None]:
        del fields[key]
    scipy.io.savemat(path, fields)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nframes": None}, r"lacks the fields \['nframes'\]"),
        ({"x": np.zeros((4, 12))}, r"'x' has shape \(4, 12\)"),
        ({"train": np.array([[0]])}, "train is 0"),
        ({"nframes": np.array([[5]])}, "nframes is 5 but x has 4 rows"),
        ({"action": np.array(["a", "b"])}, "'action' must be one string"),
    ],
)
def test_malformed_labels(tmp_path, overrides, message):
    path = tmp_path / "0001.mat"
    save_label(path, **overrides)
    with pytest.raises(StarError, match=message):
        read_penn_labels(path)


def test_bad_samples_get_a_status(synthetic_penn_copy, tmp_path):
    labels = synthetic_penn_copy / "labels"
    (labels / "0001.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    frames = int(scipy.io.loadmat(labels / "0002.mat")["nframes"][0][0])
    save_label(labels / "0002.mat", action="breakdance", x=np.full((frames, 13), 5.0), y=np.full((frames, 13), 5.0),
               visibility=np.ones((frames, 13), bool), nframes=np.array([[frames]]))  # fmt: skip
    (labels / "0003.mat").unlink()
    for jpg in (synthetic_penn_copy / "frames" / "0004").iterdir():
        jpg.unlink()
    (labels / "README.txt").write_text("not a label")
    report = build_index("penn", synthetic_penn_copy, tmp_path / "penn.h5")
    index = AnnotationIndex(tmp_path / "penn.h5")
    assert index.status.tolist() == [
        "malformed_skeleton", "unknown_label", "missing_skeleton", "unreadable_video", "ok", "ok",
    ]  # fmt: skip
    assert "0001.mat cannot be read" in index.details[0] and index.labels[1] == -1
    assert report.ignored == (str(labels / "README.txt"),)


def test_invisible_joints_outside_the_frame_have_no_confidence(tmp_path):
    root = tmp_path / "Penn_Action"
    (root / "labels").mkdir(parents=True)
    (root / "frames" / "0001").mkdir(parents=True)
    for i in range(1, 5):
        cv2.imwrite(str(root / "frames" / "0001" / f"{i:06d}.jpg"), np.zeros((72, 96, 3), np.uint8))
    x = np.full((4, 13), 10.0)
    x[:, 0] = -30.0  # head outside the frame
    x[:, 1] = 500.0  # left shoulder outside but marked visible: kept as annotated
    visibility = np.ones((4, 13), bool)
    visibility[:, 0] = False
    visibility[:, 2] = False  # right shoulder occluded but inside: inferred-like
    save_label(root / "labels" / "0001.mat", x=x, visibility=visibility)
    reader = PennReader(root)
    record = reader.load(reader.scan().sources[0])
    assert record.status == "ok"
    assert (record.skeleton[:, 0, 0, 2] == 0).all() and (record.skeleton[:, 0, 1, 2] == 1).all()
    assert (record.skeleton[:, 0, 2, 2] == 0.5).all()


def test_not_a_penn_root(tmp_path):
    with pytest.raises(StarError, match="Penn_Action"):
        PennReader(tmp_path)
