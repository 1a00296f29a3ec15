"""Skeletons land on their video: NTU colour coordinates (1920x1080) are mapped to the video's own size, and a
pose that misses its frame fails its sample (or counts as a warning) instead of leaving empty heat maps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from cli import app
from pipeline.extraction.cache_layout import CacheLayout
from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.extraction.store import FeatureCache
from pipeline.sources.datasets.records import POSE_OUTSIDE_FRAME, pose_in_frame
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.synthetic import generate_ntu_dataset, generate_penn_dataset, write_video
from pipeline.sources.video import probe_video, read_frames
from tests.fixtures.data_files import REAL_NTU_VIDEO
from tests.fixtures.ntu_skeleton_text import joint_lines, skeleton_text

pytestmark = pytest.mark.usefixtures("one_thread")

BIG_ID = 72057594037931101


def _downscale_videos(root: Path, factor: int) -> None:
    """Re-encode every NTU video of `root` at 1/factor of its size, as users do to save disk; skeletons untouched."""
    for video in sorted((root / "nturgb+d_rgb").iterdir()):
        info = probe_video(video)
        frames = read_frames(video, list(range(info.frames)))[..., ::-1]  # RGB -> BGR for the writer
        small = np.stack(
            [cv2.resize(f, (info.width // factor, info.height // factor), interpolation=cv2.INTER_AREA) for f in frames]
        )
        write_video(video, small)


def _extract(root: Path, out: Path, **options) -> tuple:
    """Extract `root` into `out` with its own index `<out stem>-index.h5`."""
    summary = extract(
        ExtractConfig(
            dataset="ntu120",
            root=root,
            out=str(out),
            index=out.with_name(f"{out.stem}-index.h5"),
            frames=4,
            size=32,
            weights="random",
            unit_size=4,
            workers=1,
            **options,
        )
    )
    return summary, FeatureCache.open(out), AnnotationIndex(out.with_name(f"{out.stem}-index.h5"))


@pytest.fixture(scope="module")
def small_ntu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ntu") / "ntu"
    generate_ntu_dataset(
        root, samples_per_class=2, actions=(10, 23), subjects=(1, 3), cameras=(1,), frame_size=(192, 108)
    )
    return root


def test_generated_skeletons_are_in_the_kinect_frame_and_land_on_the_video(small_ntu, tmp_path):
    """The files hold 1920x1080 colour pixels (far beyond a 192x108 frame); the index maps them onto the video."""
    text = next((small_ntu / "nturgb+d_skeletons").iterdir()).read_text().splitlines()
    color_x = [float(line.split()[5]) for line in text[4:29]]
    assert max(color_x) > 192  # not video pixels
    build_index("ntu120", small_ntu, tmp_path / "index.h5")
    index = AnnotationIndex(tmp_path / "index.h5")
    assert set(index.status) == {"ok"}
    for row in range(len(index)):
        share = pose_in_frame(index.skeleton(row), width=192, height=108)
        assert share > 0.95 and share == pytest.approx(index.pose_in_frame[row])


@pytest.mark.parametrize("crop", ["full", "person"])
def test_a_downscaled_copy_gives_the_same_joints_in_cells(small_ntu, tmp_path, crop):
    small = Path(shutil.copytree(small_ntu, tmp_path / "small"))
    _downscale_videos(small, factor=2)  # 80x45 videos next to the same .skeleton files
    full_summary, full, full_index = _extract(small_ntu, tmp_path / "full.zarr", crop=crop)
    small_summary, reduced, small_index = _extract(small, tmp_path / "small.zarr", crop=crop)
    assert full_summary.exit_code == small_summary.exit_code == 0 and full_summary.done == small_summary.done == 4
    assert (full_index.width[0], small_index.width[0]) == (192, 96)
    np.testing.assert_allclose(small_index.skeleton(0)[..., :2], full_index.skeleton(0)[..., :2] / 2, rtol=1e-5)
    # Cells agree up to resampling: the person crop's box is whole pixels, so half-size frames move it by <= 1 px.
    tolerance = {"full": 0.02, "person": 0.08}[crop]  # cells of the 4-cell map; 0.08 ~ 1 px of a 58 px box
    for row in range(len(full)):
        a, b = full.read(row), reduced.read(row)
        visible = a["joints"][..., 2] > 0  # empty person slots sit at pixel (0, 0), wherever the box puts it
        np.testing.assert_array_equal(visible, b["joints"][..., 2] > 0)
        np.testing.assert_allclose(a["joints"][visible], b["joints"][visible], atol=tolerance)
        np.testing.assert_allclose(a["heatmaps"], b["heatmaps"], atol=2 * tolerance)
    assert np.allclose(full.pose_coverage(), reduced.pose_coverage())
    assert (full.pose_coverage() > 0.9).all() and full.info().empty_heatmaps == 0


def test_a_skeleton_shifted_out_of_its_frame_fails_with_its_own_reason(small_ntu, tmp_path):
    root = Path(shutil.copytree(small_ntu, tmp_path / "ntu"))
    skeletons = sorted((root / "nturgb+d_skeletons").iterdir())
    _shift_color_x(skeletons[0], by=1920.0, frames="all")  # every joint one frame-width to the right
    _shift_color_x(skeletons[1], by=1920.0, frames="some")  # a quarter of the frames: a usable sample, warned about
    summary, _, index = _extract(root, tmp_path / "cache.zarr")
    row = index.index_of(skeletons[0].stem)
    assert index.status[row] == POSE_OUTSIDE_FRAME
    assert "only 0% of the" in index.details[row] and "inside the 192x108 frame" in index.details[row]
    low, high = map(float, re.search(r"joints span x (-?\d+)\.\.(-?\d+)", index.details[row]).groups())
    assert 192 <= low < high  # the range the user can compare with the frame size
    warned = index.index_of(skeletons[1].stem)
    assert index.status[warned] == "ok" and 0.5 <= index.pose_in_frame[warned] < 0.9
    assert summary.exit_code == 3 and summary.failed == 1 and summary.index_warnings == 1
    ((sample_id, reason),) = summary.failures
    assert sample_id == skeletons[0].stem and reason.startswith("pose_outside_frame: only 0% of the")
    text = summary.format()
    assert "warning: 1 usable sample(s) have only 50%-90% of their visible joints inside the video frame" in text
    assert "joint heat maps:" in text


def _shift_color_x(path: Path, *, by: float, frames: str) -> None:
    lines = path.read_text().splitlines()
    total, cursor, out = int(lines[0]), 1, lines[:1]
    for frame in range(total):
        bodies = int(lines[cursor])
        out.append(lines[cursor])
        cursor += 1
        for _ in range(bodies):
            out += lines[cursor : cursor + 2]
            for line in lines[cursor + 2 : cursor + 27]:
                values = line.split()
                if frames == "all" or frame < total // 4:
                    values[5] = f"{float(values[5]) + by:.4f}"
                out.append(" ".join(values))
            cursor += 27
    path.write_text("\n".join(out) + "\n")


@pytest.mark.slow
def test_the_real_1080p_clip_and_its_downscaled_copy(tmp_path):
    """The real NTU video (1920x1080 H.264): colour coordinates are its pixels; a 480x270 copy maps them by 1/4."""
    frames = 103
    text = skeleton_text([[(BIG_ID, joint_lines(1000.0, 300.0, frame=t, wobble=2.0))] for t in range(frames)])
    roots = []
    for name in ("full", "quarter"):
        root = tmp_path / name
        (root / "nturgb+d_rgb").mkdir(parents=True)
        (root / "nturgb+d_skeletons").mkdir()
        shutil.copy(REAL_NTU_VIDEO, root / "nturgb+d_rgb" / REAL_NTU_VIDEO.name)
        (root / "nturgb+d_skeletons" / "S001C001P001R001A001.skeleton").write_text(text)
        roots.append(root)
    _downscale_videos(roots[1], factor=4)
    caches, indexes = [], []
    for root in roots:
        summary, cache, index = _extract(root, tmp_path / f"{root.name}.zarr", benchmark="ntu60-xsub")
        assert summary.exit_code == 0 and summary.done == 1, summary.format()
        assert index.pose_in_frame[0] == 1.0
        caches.append(cache)
        indexes.append(index)
    full_index, quarter_index = indexes
    assert (full_index.width[0], full_index.height[0]) == (1920, 1080)
    assert (quarter_index.width[0], quarter_index.height[0]) == (480, 270)
    np.testing.assert_allclose(full_index.skeleton(0)[0, 0, 0, :2], [1000.0, 300.0], atol=1e-3)  # identity at 1080p
    np.testing.assert_allclose(quarter_index.skeleton(0)[..., :2], full_index.skeleton(0)[..., :2] / 4, rtol=1e-5)
    a, b = caches[0].read(0)["joints"], caches[1].read(0)["joints"]
    np.testing.assert_allclose(a, b, atol=0.02)
    x, y = a[:, 0, :, 0], a[:, 0, :, 1]  # cells of the 4x4 local map of a 32 px input
    assert (x > 1000 / 1920 * 4 - 0.1).all() and (x < 1030 / 1920 * 4).all() and (y > 300 / 1080 * 4 - 0.1).all()


def test_penn_joints_past_the_border_are_kept_and_custom_poses_in_another_pixel_space_fail(tmp_path):
    """Penn's annotations are on its own frames by definition (real files mark joints far outside): kept, with their
    share inside measured; a custom folder's pose file in another pixel space still fails."""
    penn = tmp_path / "Penn_Action"
    generate_penn_dataset(penn, videos_per_class=2, frame_size=(96, 72), seed=0)
    label_file = sorted((penn / "labels").iterdir())[0]
    labels = scipy.io.loadmat(label_file)
    labels["x"] = labels["x"] * 20.0  # coordinates of a 1920-wide original instead of the 96-px frames
    scipy.io.savemat(label_file, {k: v for k, v in labels.items() if not k.startswith("__")})
    build_index("penn", penn, tmp_path / "penn.h5")
    index = AnnotationIndex(tmp_path / "penn.h5")
    row = index.index_of(label_file.stem)
    assert (np.asarray(index.status) == "ok").all()
    assert index.pose_in_frame[row] < 0.2 and (np.delete(np.asarray(index.pose_in_frame), row) > 0.9).all()

    custom = tmp_path / "custom"
    (custom / "poses").mkdir(parents=True)
    write_video(custom / "clip.avi", np.full((12, 54, 96, 3), 90, np.uint8))
    pose = np.zeros((12, 1, 17, 3), np.float32)
    pose[..., 0], pose[..., 1], pose[..., 2] = 960.0, 500.0, 1.0  # pixels of a 1920x1080 original
    np.savez(custom / "poses" / "clip.npz", keypoints=pose)
    (custom / "manifest.csv").write_text("video,label,split,pose\nclip.avi,wave,train,poses/clip.npz\n")
    (custom / "layout.json").write_text('{"layout": "coco17", "persons": 1}\n')
    build_index("folder", custom, tmp_path / "custom.h5")
    record = AnnotationIndex(tmp_path / "custom.h5").record(0)
    assert record.status == POSE_OUTSIDE_FRAME and "x 960..960, y 500..500" in record.detail


def test_cache_info_counts_clips_with_empty_or_mostly_empty_heat_maps(tmp_path):
    layout = CacheLayout.for_mc3_18(frames=2, input_size=32, persons=1, num_joints=4)
    cache = FeatureCache.create_or_open(
        tmp_path / "c.zarr",
        fingerprint={"test": 1},
        layout=layout,
        sample_ids=["a", "b", "c", "d"],
        labels=[0, 0, 1, 1],
        splits={},
        unit_size=4,
    )
    shapes = layout.sample_shapes()

    def sample(x: float, inside: int) -> dict:
        joints = np.zeros(shapes["joints"], np.float32)
        joints[..., 0], joints[..., 1], joints[..., 2] = x, 1.5, 1.0
        joints[:, :, inside:, 0] = 9.0  # the rest lie right of the 4-cell map
        return {
            "local": np.zeros(shapes["local"], np.float32),
            "global": np.zeros(shapes["global"], np.float32),
            "heatmaps": np.zeros(shapes["heatmaps"], np.float32),
            "joints": joints,
        }

    cache.write_unit(0, {0: sample(1.5, 4), 1: sample(1.5, 0), 2: sample(1.5, 1), 3: "corrupt video"})
    np.testing.assert_allclose(cache.pose_coverage()[:3], [1.0, 0.0, 0.25])
    assert np.isnan(cache.pose_coverage()[3])
    info = cache.info()
    assert (info.empty_heatmaps, info.mostly_empty_heatmaps) == (1, 1)
    result = CliRunner().invoke(app, ["cache", "info", str(tmp_path / "c.zarr")])
    assert result.exit_code == 0
    assert (
        "joint heat maps: 1 done clip(s) empty, 1 mostly empty (under 50% of the visible joints on the map)"
        in result.output
    )
