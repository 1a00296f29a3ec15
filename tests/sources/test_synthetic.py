"""The generated NTU-format dataset: determinism, exact official format, joints where they were drawn,
motions that match the official class names, splits, and enough signal to learn from."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.clips import clip_indices
from pipeline.sources.datasets.ntu import NTU_CLASS_NAMES, ntu_splits
from pipeline.sources.datasets.ntu_skeleton import parse_skeleton
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.synthetic import SYNTHETIC_ACTIONS, generate_ntu_dataset, synthetic_sample_names
from pipeline.sources.synthetic.body import make_body
from pipeline.sources.synthetic.render import draw_people, make_background, make_camera
from pipeline.sources.video import read_frames


@pytest.fixture(scope="module")
def index(synthetic_ntu_root, tmp_path_factory) -> AnnotationIndex:
    out = tmp_path_factory.mktemp("synthetic_index") / "ntu120.h5"
    build_index("ntu120", synthetic_ntu_root, out)
    return AnnotationIndex(out)


def test_deterministic_for_a_seed(tmp_path):
    kwargs = dict(samples_per_class=1, actions=(23, 59), frame_size=(96, 54))
    ids = generate_ntu_dataset(tmp_path / "a", seed=3, **kwargs)
    assert ids == generate_ntu_dataset(tmp_path / "b", seed=3, **kwargs)
    assert ids == generate_ntu_dataset(tmp_path / "c", seed=4, **kwargs)
    for sample_id in ids:
        skeletons = [(tmp_path / d / "nturgb+d_skeletons" / f"{sample_id}.skeleton").read_bytes() for d in "abc"]
        videos = [read_frames(tmp_path / d / "nturgb+d_rgb" / f"{sample_id}_rgb.avi", [0, 10]) for d in "abc"]
        assert skeletons[0] == skeletons[1] and np.array_equal(videos[0], videos[1])
        assert skeletons[0] != skeletons[2] and not np.array_equal(videos[0], videos[2])


def test_skeleton_files_are_in_the_official_format(synthetic_ntu_root):
    states, depths = [], []
    for path in sorted((synthetic_ntu_root / "nturgb+d_skeletons").iterdir()):
        parsed = parse_skeleton(path)  # strict: every count, 25 joints, 12 values per joint line
        lines = path.read_text().splitlines()
        assert int(lines[0]) == parsed.num_frames and lines[3] == "25"
        body_ids = [b.body_id for b in parsed.bodies]
        assert all(i > 2**53 for i in body_ids) and len(set(body_ids)) == len(body_ids)
        assert len(body_ids) == (2 if path.stem.endswith("A059") else 1)
        for line in lines[4:29]:  # the first frame's joints
            values = line.split()
            assert len(values) == 12 and values[11] in ("0", "1", "2")
            depths.append(float(values[2]))
            states.append(int(values[11]))
            assert 0 <= float(values[3]) < 512 and 0 <= float(values[4]) < 424  # depthX, depthY
    assert min(depths) > 1.5 and max(depths) < 4.5  # metres from the camera (Kinect v2 range: 0.5-4.5)
    assert 0.9 < np.mean(np.array(states) == 2) < 1.0  # mostly tracked, a few inferred


def read_joint_values(path) -> list[list[np.ndarray]]:
    """Per frame, per body: the (25, 12) joint values of a `.skeleton` file, read line by line."""
    lines = path.read_text().splitlines()
    frames, cursor = [], 1
    for _ in range(int(lines[0])):
        bodies = []
        for _ in range(int(lines[cursor])):
            bodies.append(np.array([line.split() for line in lines[cursor + 3 : cursor + 28]], float))
            cursor += 27
        cursor += 1
        frames.append(bodies)
    return frames


@pytest.mark.parametrize("sample_id", ["S001C001P001R001A010", "S001C003P006R001A059", "S019C003P003R001A097"])
def test_video_is_a_rendering_of_the_written_joints(synthetic_ntu_root, sample_id):
    """Redrawing the figure at the file's colorX/colorY reproduces the video; 2 px off, it does not."""
    setup, camera_id, subject = int(sample_id[1:4]), int(sample_id[5:8]), int(sample_id[9:12])
    frames = read_joint_values(synthetic_ntu_root / "nturgb+d_skeletons" / f"{sample_id}.skeleton")
    camera = make_camera(setup, camera_id, subject, seed=0, frame_size=(160, 90))
    room = make_background(setup, camera_id, seed=0, frame_size=(160, 90))
    picks = [0, len(frames) // 2, len(frames) - 1]
    video = read_frames(synthetic_ntu_root / "nturgb+d_rgb" / f"{sample_id}_rgb.avi", picks)[..., ::-1]  # BGR
    for k, t in enumerate(picks):
        renders = []
        for shift in (0.0, 2.0):
            image = room.copy()
            to_video = np.array([160 / 1920, 90 / 1080])  # colorX/colorY are in the 1920x1080 Kinect frame
            people = [(make_body(subject + 1000 * p, seed=0), body[:, :3], body[:, 5:7] * to_video + shift)
                      for p, body in enumerate(frames[t])]  # fmt: skip
            draw_people(image, people, focal=camera.focal)
            renders.append(image.astype(int))
        figure = (renders[0] != room).any(-1) | (renders[1] != room).any(-1)  # pixels either figure covers
        errors = [np.abs(render - video[k])[figure].mean() for render in renders]
        assert errors[0] < 10.0 and errors[1] > 2 * errors[0], (sample_id, t, errors)


def rows_of(index: AnnotationIndex, action: int) -> list[int]:
    return [i for i, s in enumerate(index.sample_ids) if s.endswith(f"A{action:03d}")]


def height_of(skeleton: np.ndarray) -> float:
    """Standing height in pixels (head to ankles) in the first frame."""
    first = skeleton[0, 0]
    return float(max(first[14, 1], first[18, 1]) - first[3, 1])


# Checks in image coordinates (y grows downwards) that the motion is what the class name says.
def waves_right_hand(s, h):
    return (s[:, 0, 10, 1] < s[:, 0, 3, 1]).any() and not (s[:, 0, 6, 1] < s[:, 0, 4, 1]).any()


def raises_both_hands(s, h):
    return (s[-1, 0, [6, 10], 1] < s[-1, 0, 3, 1]).all()


def circles_arms(s, h):
    s = s[len(s) // 5 :]  # after raising the arms
    wrists = s[:, 0, [6, 10], :2]  # (T, 2, xy)
    sideways = np.abs(wrists[..., 0] - s[:, 0, [1], 0]).mean(0)
    return (
        (np.ptp(wrists[..., 1], axis=0) > 0.12 * h).all()
        and (wrists[..., 1] < s[:, 0, [0], 1]).all()
        and (sideways > 0.15 * h).all()
    )


def claps(s, h):
    gap = np.linalg.norm(s[:, 0, 7, :2] - s[:, 0, 11, :2], axis=-1)
    chest = (s[:, 0, [7, 11], 1] < s[:, 0, [0], 1]).all(1)
    return gap.min() < 0.06 * h and np.ptp(gap) > 0.06 * h and chest.mean() > 0.7


def squats(s, h):
    return (s[:, 0, 0, 1] - s[0, 0, 0, 1]).max() > 0.2 * h


def jumps(s, h):
    return (s[0, 0, [14, 18], 1] - s[:, 0, [14, 18], 1]).min(1).max() > 0.12 * h


def bows(s, h):
    torso = s[:, 0, 0, 1] - s[:, 0, 3, 1]
    return torso.min() < 0.8 * torso[0]


def kicks_right_foot(s, h):
    return (s[:, 0, 14, 1] - s[:, 0, 18, 1]).max() > 0.15 * h


def runs_on_the_spot(s, h):
    left, right = s[0, 0, 13, 1] - s[:, 0, 13, 1], s[0, 0, 17, 1] - s[:, 0, 17, 1]
    return left.max() > 0.08 * h and right.max() > 0.08 * h and np.corrcoef(left, right)[0, 1] < 0


def walk_towards_each_other(s, h):
    gap = np.abs(s[:, 0, 0, 0] - s[:, 1, 0, 0])
    return (s[..., 2] > 0).any(-1).all() and gap[-1] < 0.6 * gap[0]


MOTION_CHECKS = {
    10: claps, 23: waves_right_hand, 24: kicks_right_foot, 27: jumps, 35: bows, 59: walk_towards_each_other,
    80: squats, 95: raises_both_hands, 97: circles_arms, 99: runs_on_the_spot,
}  # fmt: skip


@pytest.mark.parametrize("action", SYNTHETIC_ACTIONS)
def test_motions_match_their_official_class_names(index, action):
    assert index.class_names[action - 1] == NTU_CLASS_NAMES[action - 1]
    rows = rows_of(index, action)
    assert rows and all(index.labels[r] == action - 1 for r in rows)
    for row in rows:
        skeleton = index.skeleton(row)
        assert MOTION_CHECKS[action](skeleton, height_of(skeleton)), index.sample_ids[row]


def test_default_names_cover_train_and_test_of_every_benchmark():
    names = synthetic_sample_names(
        actions=SYNTHETIC_ACTIONS, samples_per_class=10, subjects=range(1, 9), cameras=(1, 2, 3)
    )
    assert len({n.sample_id for n in names}) == 100
    for benchmark in ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"):
        splits = [ntu_splits(n, version="ntu120").get(benchmark) for n in names]
        assert {"train", "test"} <= set(splits), benchmark
    for action in SYNTHETIC_ACTIONS:  # every class has held-out subjects in ntu120-xsub
        xsub = {ntu_splits(n, version="ntu120")["ntu120-xsub"] for n in names if n.action == action}
        assert xsub == {"train", "test"}


def test_motions_are_learnable_across_subjects(index):
    """A 1-nearest-neighbour on normalised joint trajectories already recognises held-out subjects."""
    features = []
    for row in range(len(index)):
        skeleton = index.skeleton(row)[clip_indices(int(index.usable_frames[row]), 16)]  # (16, 2, 25, 3)
        xy = skeleton[..., :2] - skeleton[:, :1, :1, :2].mean(0)  # relative to the first actor's mean SpineBase
        xy = xy / height_of(skeleton) * (skeleton[..., 2:] > 0)
        features.append(xy.ravel())
    features = np.array(features)
    train, test = index.split_mask("ntu120-xsub", "train"), index.split_mask("ntu120-xsub", "test")
    distances = ((features[test][:, None] - features[train][None]) ** 2).sum(-1)
    predicted = index.labels[train][distances.argmin(1)]
    assert test.sum() == 20 and (predicted == index.labels[test]).mean() >= 0.9


def test_bad_requests(tmp_path):
    with pytest.raises(StarError, match="No synthetic motion for actions \\[4\\]"):
        generate_ntu_dataset(tmp_path, actions=(4,))
    with pytest.raises(StarError, match="add subjects or cameras"):
        generate_ntu_dataset(tmp_path, samples_per_class=13, subjects=(1,), cameras=(1, 2, 3))


def test_time_reversed_classes_are_exact_reverses():
    """Standing up is sitting down played backwards: same draws, every joint angle and position in reverse order."""
    from pipeline.sources.synthetic import NTU_MOTIONS, TIME_REVERSED_PAIRS

    t = np.arange(70) / 30.0
    u = np.linspace(0.0, 1.0, 70)
    for forward, backward in TIME_REVERSED_PAIRS:
        (ahead,) = NTU_MOTIONS[forward](t, u, 1.1, np.random.default_rng(5))
        (behind,) = NTU_MOTIONS[backward](t, u, 1.1, np.random.default_rng(5))
        assert ahead.pose.keys() == behind.pose.keys()
        for name, angles in ahead.pose.items():
            np.testing.assert_array_equal(behind.pose[name], angles[::-1])
        np.testing.assert_array_equal(behind.position, ahead.position[::-1])
        assert ahead.pose["l_th_f"][0] < 10 < 80 < ahead.pose["l_th_f"][-1]  # standing at the start, seated at the end


def test_appearance_classes_differ_only_in_the_held_object():
    """Drink water, eat meal and brushing teeth: the same motion for the same draws, and frames that differ only
    in a few pixels at the right hand, where each class draws its own object."""
    from pipeline.sources.synthetic import NTU_MOTIONS
    from pipeline.sources.synthetic.motions import APPEARANCE_GROUPS
    from pipeline.sources.synthetic.render import render_sample

    (group,) = APPEARANCE_GROUPS
    camera = make_camera(1, 1, 1, seed=0, frame_size=(320, 180))
    background = make_background(1, 1, seed=0, frame_size=(320, 180))
    samples = [
        render_sample(
            NTU_MOTIONS[action], subject=1, camera=camera, background=background, rng=np.random.default_rng(9), seed=0
        )
        for action in group
    ]
    first = samples[0]
    for other in samples[1:]:
        np.testing.assert_array_equal(other.pixels, first.pixels)  # the skeletons are identical
        differs = np.any(other.frames != first.frames, axis=-1)  # (T, H, W)
        assert differs.any(axis=(1, 2)).all()  # every frame shows the object
        assert differs.mean() < 0.02  # small: the two objects together cover under 2 % of the frame
        for frame, mask in zip(first.pixels[:, 0], differs, strict=True):  # and at the right hand (joint 11)
            ys, xs = np.nonzero(mask)
            distance = np.hypot(xs - frame[11, 0], ys - frame[11, 1])
            assert np.percentile(distance, 95) < 40  # within about a forearm of the hand (the figure is ~130 px tall)
