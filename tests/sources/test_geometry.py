"""Input geometry: frames and joints go through the same box, in both crop modes."""

import cv2
import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.geometry import clip_geometry, person_box


def _dot_frames(*, width, height, points, radius):
    """One black frame per point with a white filled disc at that (integer) point."""
    frames = np.zeros((len(points), height, width, 3), dtype=np.uint8)
    for frame, (x, y) in zip(frames, points, strict=True):
        cv2.circle(frame, (int(x), int(y)), radius, (255, 255, 255), thickness=-1)
    return frames


def _centroid(image):
    """Intensity-weighted (x, y) of a (S, S, 3) image, in continuous pixels (pixel i spans [i, i + 1))."""
    weight = image.astype(np.float64).sum(axis=2)
    rows, cols = np.indices(weight.shape) + 0.5
    return (cols * weight).sum() / weight.sum(), (rows * weight).sum() / weight.sum()


def _assert_dots_land_on_joints(geometry, frames, skeleton, tolerance):
    inputs = geometry.frames_to_input(frames)
    mapped = geometry.joints_to_input(skeleton)  # (T, persons, joints, 3)
    assert inputs.shape == (len(frames), geometry.size, geometry.size, 3) and inputs.dtype == np.uint8
    for t, image in enumerate(inputs):
        x, y = _centroid(image)
        assert abs(x - mapped[t, 0, 0, 0]) < tolerance and abs(y - mapped[t, 0, 0, 1]) < tolerance, (t, x, y, mapped[t])
        assert mapped[t, 0, 0, 2] == skeleton[t, 0, 0, 2]


def _skeleton(points, confidence=1.0):
    """(T, 1 person, 1 joint, 3) from one (x, y) per frame."""
    return np.array([[[[x, y, confidence]]] for x, y in points], dtype=np.float32)


def test_full_frame_dot_lands_on_mapped_joint():
    points = [(40, 30), (200, 100), (300, 210), (160, 120)]
    frames = _dot_frames(width=320, height=240, points=points, radius=5)
    geometry = clip_geometry(frame_size=(320, 240), skeleton=_skeleton(points), size=112, crop="full")
    assert geometry.box == (0, 0, 320, 240)
    _assert_dots_land_on_joints(geometry, frames, _skeleton(points), tolerance=0.15)


def test_full_frame_ntu_resolution():
    points = [(960, 540), (1500, 300)]
    frames = _dot_frames(width=1920, height=1080, points=points, radius=12)
    geometry = clip_geometry(frame_size=(1920, 1080), skeleton=None, size=112)
    _assert_dots_land_on_joints(geometry, frames, _skeleton(points), tolerance=0.15)


def test_person_box_dot_lands_on_mapped_joint_when_shrinking():
    # The figure spans x 700..1100, y 300..900 of an NTU-sized frame: box side 600 * 1.3 = 780 > 112.
    extent = np.array([[[[700, 300, 1.0], [1100, 900, 1.0]]]], dtype=np.float32)  # (1, 1, 2, 3)
    points = [(800, 400), (1000, 850), (900, 600)]
    skeleton = np.concatenate([np.concatenate([_skeleton([p]), extent[:, :, :1]], axis=2) for p in points])
    skeleton[0, 0, 1] = extent[0, 0, 1]  # frame 0 also carries the far corner
    frames = _dot_frames(width=1920, height=1080, points=points, radius=12)
    geometry = clip_geometry(frame_size=(1920, 1080), skeleton=skeleton, size=112, crop="person", margin=0.15)
    x0, y0, side, side_y = geometry.box
    assert side == side_y == 780 and x0 >= 0 and x0 + side <= 1920 and y0 >= 0 and y0 + side <= 1080
    _assert_dots_land_on_joints(geometry, frames, skeleton, tolerance=0.15)


def test_person_box_enlarging_uses_the_same_mapping():
    # A small figure (40 px) is enlarged to 112: INTER_LINEAR, same pixel-centre mapping.
    points = [(150, 100), (170, 120), (160, 110)]
    frames = _dot_frames(width=320, height=240, points=points, radius=2)
    skeleton = _skeleton(points)
    geometry = clip_geometry(frame_size=(320, 240), skeleton=skeleton, size=112, crop="person", margin=0.5)
    assert geometry.box[2] < 112
    _assert_dots_land_on_joints(geometry, frames, skeleton, tolerance=0.2)


def test_person_box_larger_than_frame_is_zero_padded():
    # Joints span the whole height: side 220 * 1.3 = 286 > 240, so the box sticks out at top and bottom.
    points = [(100, 10), (120, 230), (110, 120)]
    frames = np.full((3, 240, 320, 3), 40, dtype=np.uint8)  # grey, to tell the frame from the padding
    for frame, (x, y) in zip(frames, points, strict=True):
        cv2.circle(frame, (x, y), 4, (255, 255, 255), thickness=-1)
    skeleton = _skeleton(points)
    geometry = clip_geometry(frame_size=(320, 240), skeleton=skeleton, size=143, crop="person")
    x0, y0, side, _ = geometry.box
    assert side == 286 and y0 == -23 and 0 <= x0 <= 320 - side + 100
    inputs = geometry.frames_to_input(frames)
    pad_rows = int(23 * 143 / 286)  # 11 rows of padding at the top and at the bottom
    assert inputs[:, : pad_rows - 1].max() == 0 and inputs[:, -(pad_rows - 1) :].max() == 0
    assert inputs[:, pad_rows + 2 : -(pad_rows + 2)].min() >= 40
    grey = inputs.astype(np.float64) - 40 * (inputs > 0)  # dots only
    mapped = geometry.joints_to_input(skeleton)
    for t in range(3):
        x, y = _centroid(np.clip(grey[t], 0, None))
        assert abs(x - mapped[t, 0, 0, 0]) < 0.3 and abs(y - mapped[t, 0, 0, 1]) < 0.3


def test_joints_outside_the_input_lose_their_confidence():
    skeleton = np.array(
        [[[[100, 100, 0.9], [110, 120, 0.7], [5000, 120, 0.8], [300, 40, 0.0], [np.nan, 1, 1]]]], dtype=np.float32
    )  # (1, 1, 5, 3)
    geometry = clip_geometry(frame_size=(320, 240), skeleton=skeleton, size=112, crop="person", margin=0.1)
    mapped = geometry.joints_to_input(skeleton)
    assert mapped[0, 0, 0, 2] == pytest.approx(0.9) and mapped[0, 0, 1, 2] == pytest.approx(0.7)
    assert mapped[0, 0, 2, 2] == 0.0  # confident but far outside the frame: clipped for the box, then outside
    assert mapped[0, 0, 4, 2] == 0.0  # NaN coordinates
    assert (mapped[0, 0, :2, :2] >= 0).all() and (mapped[0, 0, :2, :2] < 112).all()


def test_frame_corners_stay_inside_and_pixels_beyond_do_not():
    skeleton = np.array([[[[0, 0, 1], [319, 239, 1], [-1, 5, 1], [5, 240, 1]]]], dtype=np.float32)
    mapped = clip_geometry(frame_size=(320, 240), skeleton=skeleton, size=112).joints_to_input(skeleton)
    assert mapped[0, 0, :, 2].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(mapped[0, 0, 0, :2], [0.5 * 112 / 320, 0.5 * 112 / 240])  # centre of pixel 0
    np.testing.assert_allclose(mapped[0, 0, 1, :2], [112 - 0.5 * 112 / 320, 112 - 0.5 * 112 / 240], rtol=1e-6)


def test_person_box_ignores_unconfident_joints_and_falls_back_to_full_frame():
    skeleton = np.array([[[[10, 10, 0.0], [300, 200, 0.0]]]], dtype=np.float32)
    assert person_box(frame_size=(320, 240), skeleton=skeleton) is None
    geometry = clip_geometry(frame_size=(320, 240), skeleton=skeleton, size=112, crop="person")
    assert geometry.box == (0, 0, 320, 240)
    assert clip_geometry(frame_size=(320, 240), skeleton=None, crop="person").box == (0, 0, 320, 240)
    skeleton[0, 0, 1, 2] = 0.5  # one confident joint: a minimum box of a quarter of the shorter side
    assert person_box(frame_size=(320, 240), skeleton=skeleton)[2] == 60


def test_bad_options_and_frames_are_star_errors():
    with pytest.raises(StarError, match="crop mode"):
        clip_geometry(frame_size=(320, 240), skeleton=None, crop="centre")
    geometry = clip_geometry(frame_size=(320, 240), skeleton=None, size=112)
    with pytest.raises(StarError, match="indexed as 320x240"):
        geometry.frame_to_input(np.zeros((480, 640, 3), dtype=np.uint8))
