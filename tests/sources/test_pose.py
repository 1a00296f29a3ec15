"""Pose estimation: BlazePose on the real NTU clip, tracking, layout mapping, `star pose`, and videos without
pose files in `star predict` and custom folders (estimated once, kept in the index and its pose store)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.extraction.extract import ExtractConfig
from pipeline.sources.datasets.folder import FolderReader, read_pose_file
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.index.build import pose_store_folder
from pipeline.sources.layouts import BLAZEPOSE33, COCO17, NTU25, PENN13, JointLayout
from pipeline.sources.pose import estimate_pose
from pipeline.sources.pose.blazepose import mediapipe_pose
from pipeline.sources.pose.mapping import DERIVED_SCORE, convert_joints
from pipeline.sources.pose.tracking import Detection, box_iou, track_people
from pipeline.sources.video import iter_frames
from tests.fixtures.data_files import REAL_NTU_VIDEO

pytest.importorskip("mediapipe", reason="the pose extra is not installed: pip install 'star-action[pose]'")

J = BLAZEPOSE33.joint_names.index


def _write_video(path: Path, frames) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _real_frames(count: int, *, size: tuple[int, int] | None = None, mirror: bool = False):
    for _, rgb in zip(range(count), iter_frames(REAL_NTU_VIDEO), strict=False):  # the first `count` frames
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if size else rgb
        yield np.ascontiguousarray(rgb[:, ::-1]) if mirror else rgb


def _nobody(count: int, size=(160, 120)):
    rng = np.random.default_rng(0)
    return [rng.integers(100, 140, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def real_pose():
    return estimate_pose(REAL_NTU_VIDEO, persons=1)


# ------------------------------------------------------------------------------------------- real pixels


def test_real_clip_frame_50_joints_fall_on_the_person(real_pose):
    assert real_pose.keypoints.shape == (103, 1, 33, 3) and real_pose.frame_size == (1920, 1080)
    assert (real_pose.keypoints[:, 0, :, 2] > 0).any(axis=1).all(), "the person is found in every frame"
    joints = real_pose.keypoints[50, 0]
    confident = joints[joints[:, 2] > 0.5]
    assert len(confident) >= 25
    assert (confident[:, 0] >= 960).all() and (confident[:, 0] <= 1130).all(), confident[:, 0]
    assert (confident[:, 1] >= 270).all() and (confident[:, 1] <= 760).all(), confident[:, 1]
    head, hips, ankles = joints[J("nose"), 1], joints[[J("left_hip"), J("right_hip")], 1], \
        joints[[J("left_ankle"), J("right_ankle")], 1]  # fmt: skip
    assert head < hips.min() and hips.max() < ankles.min()


def test_real_clip_mapped_to_ntu25_keeps_the_body_upright(real_pose):
    ntu = convert_joints(real_pose.keypoints[50, 0], source=BLAZEPOSE33, target=NTU25)
    y = dict(zip(NTU25.joint_names, ntu[:, 1], strict=True))
    assert y["Head"] < y["Neck"] < y["SpineShoulder"] < y["SpineMid"] < y["SpineBase"] < y["KneeLeft"] < y["FootLeft"]
    assert ((ntu[:, 0] >= 960) & (ntu[:, 0] <= 1130)).all()


def test_two_people_keep_their_slots(tmp_path):
    # The person stands at x 480-565 of a 960 x 540 frame: side by side with the mirrored frame, 800 px wide.
    pairs = [
        np.hstack([left[:, 300:700], right[:, 260:660]])
        for left, right in zip(
            _real_frames(20, size=(960, 540)), _real_frames(20, size=(960, 540), mirror=True), strict=True
        )
    ]
    video = _write_video(tmp_path / "two.avi", pairs)
    pose = estimate_pose(video, persons=2).keypoints  # (20, 2, 33, 3)
    seen = pose[..., 2] > 0
    assert seen.any(axis=2).all(), "both slots hold someone in every frame"
    centre = np.nanmean(np.where(seen, pose[..., 0], np.nan), axis=2)  # (frames, 2)
    sides = centre < 400
    assert (sides[:, 0] == sides[0, 0]).all() and (sides[:, 1] == ~sides[0, 0]).all(), centre


def test_a_video_without_people(tmp_path):
    video = _write_video(tmp_path / "empty.avi", _nobody(12))
    assert not estimate_pose(video).found
    result = CliRunner().invoke(app, ["pose", str(video), "-o", str(tmp_path / "out.json")])
    assert result.exit_code == 1 and "found nobody in the 12 frames" in result.stderr
    assert not (tmp_path / "out.json").exists()


# ------------------------------------------------------------------------------------------- star pose


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_star_pose_writes_a_pose_file_the_readers_take(tmp_path, suffix):
    video = _write_video(tmp_path / "clip.avi", _real_frames(8, size=(480, 270)))
    out = tmp_path / "poses" / f"clip{suffix}"
    result = CliRunner().invoke(app, ["pose", str(video), "-o", str(out), "--layout", "coco17", "--persons", "2"])
    assert result.exit_code == 0, result.output
    assert "person 1 in 8 frames, person 2 in 0 frames" in result.stdout
    read = read_pose_file(out, layout=COCO17, persons=2)
    expected = estimate_pose(video, layout=COCO17, persons=2).keypoints
    np.testing.assert_allclose(read, expected, atol=1e-3)
    assert read[:, 0, :, 2].max() > 0.5 and not read[:, 1].any()
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary file left behind"


def test_star_pose_default_output_and_refusals(tmp_path):
    video = _write_video(tmp_path / "clip.avi", _real_frames(3, size=(480, 270)))
    assert CliRunner().invoke(app, ["pose", str(video)]).exit_code == 0
    assert read_pose_file(tmp_path / "clip.pose.json", layout=BLAZEPOSE33, persons=1).shape == (3, 1, 33, 3)
    for args, message in [
        (["-o", str(tmp_path / "out.csv")], "use a .json or .npz file name"),
        (["--layout", "body99"], "Unknown joint layout 'body99'"),
        (["--persons", "0"], "persons must be at least 1"),
    ]:
        result = CliRunner().invoke(app, ["pose", str(video), *args])
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    result = CliRunner().invoke(app, ["pose", str(broken)])
    assert result.exit_code == 1 and str(broken) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_star_pose_on_several_videos_writes_each_and_reports_the_one_that_fails(tmp_path):
    videos = [_write_video(tmp_path / f"{name}.avi", _real_frames(3, size=(480, 270))) for name in ("a", "b")]
    empty = _write_video(tmp_path / "empty.avi", _nobody(3))
    out = tmp_path / "poses"
    result = CliRunner().invoke(app, ["pose", str(videos[0]), str(empty), str(videos[1]), "--out-dir", str(out)])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]
    for video in videos:
        np.testing.assert_array_equal(
            read_pose_file(out / f"{video.stem}.json", layout=BLAZEPOSE33, persons=1),
            read_pose_file(_single(video, tmp_path), layout=BLAZEPOSE33, persons=1),
        )  # the same estimate as a run on that video alone: no tracking state carries over between videos
    assert result.stderr.splitlines() == [
        f"Error: The pose estimator found nobody in the 3 frames of {empty}; nothing written.",
        "1 of 3 videos failed; the poses of the others are written.",
    ]
    for args, message in [
        ([str(videos[0]), str(videos[1]), "-o", str(tmp_path / "x.json")], "use --out-dir"),
        ([str(videos[0]), str(tmp_path / "elsewhere" / "a.avi"), "--out-dir", str(out)], "the same pose file"),
        ([str(videos[0]), "--out-dir", str(videos[1])], "is a file"),
    ]:
        result = CliRunner().invoke(app, ["pose", *args])
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)


def _single(video: Path, tmp_path: Path) -> Path:
    out = tmp_path / "single" / f"{video.stem}.json"
    assert CliRunner().invoke(app, ["pose", str(video), "-o", str(out)]).exit_code == 0
    return out


def test_without_mediapipe_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # what `import mediapipe` meets when it is not installed
    with pytest.raises(StarError, match=r"pip install 'star-action\[pose\]'"):
        mediapipe_pose()
    result = CliRunner().invoke(app, ["pose", str(REAL_NTU_VIDEO), "-o", str(tmp_path / "p.json")])
    assert result.exit_code == 1 and "star-action[pose]" in result.stderr
    root = _folder(tmp_path / "mine", {"a.avi": _nobody(4)}, pose_column=False)
    with pytest.raises(StarError, match="star-action"):
        FolderReader(root)


# ------------------------------------------------------------------------------------------- tracking and mapping


def _person(x: float, score: float = 1.0) -> Detection:
    keypoints = np.zeros((33, 3), np.float32)
    keypoints[:, 0] = x + np.linspace(0, 20, 33)
    keypoints[:, 1] = np.linspace(0, 100, 33)
    keypoints[:, 2] = score
    return Detection(keypoints)


def test_tracks_follow_people_across_order_changes_and_gaps():
    frames = []
    for t in range(30):
        a, b = _person(10 + 2 * t, 0.9), _person(200 - 2 * t, 0.6)  # they walk towards each other, never overlapping
        people = [b, a] if t % 2 else [a, b]  # the estimator's order means nothing
        frames.append([] if 10 <= t < 14 else people)  # four frames without anybody
    frames[20].append(_person(600, 0.1))  # a passer-by in one frame: a weak track, dropped
    out = track_people(frames, persons=2, joints=33)
    assert out.shape == (30, 2, 33, 3)
    first = out[:, 0, 0, 0][out[:, 0, 0, 2] > 0]
    assert np.all(np.diff(first) > 0), "slot 1 is the confident person walking right, in every frame"
    assert np.all(out[10:14] == 0) and (out[:, 1, 0, 2] > 0).sum() == 26
    assert track_people(frames, persons=1, joints=33)[:, 0].tolist() == out[:, 0].tolist()


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(boxes, boxes)
    np.testing.assert_allclose(np.diag(iou), 1)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0


def test_mapping_copies_named_joints_and_derives_the_rest():
    rng = np.random.default_rng(0)
    source = np.concatenate([rng.uniform(0, 100, (4, 33, 2)), rng.uniform(0.2, 1, (4, 33, 1))], -1).astype(np.float32)
    coco = convert_joints(source, source=BLAZEPOSE33, target=COCO17)
    np.testing.assert_array_equal(coco, source[:, [J(name) for name in COCO17.joint_names]])
    ntu = convert_joints(source, source=BLAZEPOSE33, target=NTU25)
    k = NTU25.joint_names.index
    hips = source[:, [J("left_hip"), J("right_hip")]]
    np.testing.assert_allclose(ntu[:, k("SpineBase"), :2], hips[..., :2].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(ntu[:, k("SpineBase"), 2], DERIVED_SCORE * hips[..., 2].min(axis=1))
    np.testing.assert_array_equal(ntu[:, k("ElbowRight")], source[:, J("right_elbow")])
    assert convert_joints(source, source=BLAZEPOSE33, target=PENN13).shape == (4, 13, 3)
    mine = JointLayout(name="mine", joint_names=("left_wrist", "right_wrist"), flip_pairs=((0, 1),))
    np.testing.assert_array_equal(
        convert_joints(source, source=BLAZEPOSE33, target=mine), source[:, [J("left_wrist"), J("right_wrist")]]
    )
    with pytest.raises(StarError, match="cannot make joint 'tail'"):
        convert_joints(source, source=BLAZEPOSE33, target=JointLayout(name="dog", joint_names=("tail",), flip_pairs=()))


# ------------------------------------------------------------------------------------------- folders without poses


def _folder(root: Path, videos: dict[str, list], *, pose_column: bool = True, layout: str = "ntu25") -> Path:
    for name, frames in videos.items():
        _write_video(root / "videos" / name, frames)
    (root / "layout.json").write_text(f'{{"layout": "{layout}", "persons": 1}}')
    header = "video,label,split,pose" if pose_column else "video,label,split"
    rows = [
        f"videos/{name},{'drink' if i % 2 == 0 else 'other'},{'train' if i < 2 else 'test'}"
        + ("," if pose_column else "")
        for i, name in enumerate(videos)
    ]
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_folder_without_poses_estimates_once_and_records_failures(tmp_path):
    root = _folder(
        tmp_path / "mine",
        {
            "person.avi": list(_real_frames(10, size=(480, 270))),
            "mirrored.avi": list(_real_frames(10, size=(480, 270), mirror=True)),
            "nobody.avi": _nobody(10),
        },
        pose_column=False,
    )
    index_path = tmp_path / "out" / "folder-index.h5"
    first = build_index("folder", root, index_path)
    assert first.poses_estimated == 3 and "estimated 3 poses" in first.summary()
    index = AnnotationIndex(index_path)
    status = dict(zip(index.sample_ids, index.status, strict=True))
    assert status == {"videos/person": "ok", "videos/mirrored": "ok", "videos/nobody": "empty_skeleton"}
    row = list(index.sample_ids).index("videos/nobody")
    assert "found nobody in the video's 10 frames" in index.record(row).detail
    person = index.record(list(index.sample_ids).index("videos/person")).skeleton  # (10, 1, 25, 3) in video pixels
    assert person.shape == (10, 1, 25, 3) and (person[..., 2] > 0).any(axis=-1).all()
    assert (person[..., 0][person[..., 2] > 0] < 480).all()

    again = build_index("folder", root, index_path)  # the index keeps the estimates: nothing to do
    assert again.poses_estimated == 0 and not again.written
    index_path.unlink()  # a lost (or killed, never renamed) index: the pose store still has every estimate
    rebuilt = build_index("folder", root, index_path)
    assert rebuilt.poses_estimated == 0 and len(list(pose_store_folder(index_path).glob("*.npz"))) == 3
    np.testing.assert_array_equal(AnnotationIndex(index_path).record(1).skeleton, index.record(1).skeleton)
    nobody = AnnotationIndex(index_path).record(row)
    assert nobody.status == "empty_skeleton" and "found nobody in the video's 10 frames" in nobody.detail

    _write_video(root / "videos" / "person.avi", list(_real_frames(10, size=(480, 270), mirror=True)))
    assert build_index("folder", root, index_path).poses_estimated == 1, "a replaced video is estimated again"


def test_folder_without_poses_goes_through_the_prefect_flow(tmp_path):
    from flows.extract import run_extract
    from pipeline.extraction.store import FeatureCache

    root = _folder(
        tmp_path / "mine",
        {
            "a.avi": list(_real_frames(8, size=(320, 180))),
            "b.avi": list(_real_frames(8, size=(320, 180), mirror=True)),
            "c.avi": _nobody(8),
        },
        pose_column=False,
        layout="coco17",
    )
    config = ExtractConfig(
        dataset="folder",
        root=root,
        out=str(tmp_path / "cache.zarr"),
        frames=4,
        size=32,
        weights="random",
        batch_size=2,
        workers=1,
        device="cpu",
    )
    summary = run_extract(config)
    assert summary.done == 2 and [reason.split(":")[0] for _, reason in summary.failures] == ["empty_skeleton"]
    cache = FeatureCache.open(str(tmp_path / "cache.zarr"))
    assert cache.layout.num_joints == 17
    assert len(list(pose_store_folder(config.index_path).glob("*.npz"))) == 3


@pytest.mark.slow
def test_predict_without_a_pose_estimates_it(video_checkpoint, tmp_path):
    checkpoint = video_checkpoint
    video = _write_video(tmp_path / "mine.avi", _real_frames(12, size=(480, 270)))
    result = CliRunner().invoke(
        app, ["predict", str(video), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert '"pose": "estimated by blazepose-full' in result.stdout
    nobody = _write_video(tmp_path / "nobody.avi", _nobody(12))
    result = CliRunner().invoke(app, ["predict", str(nobody), "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert result.exit_code == 1 and "found nobody" in result.stderr and "--pose" in result.stderr
