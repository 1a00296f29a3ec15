"""Video probing and frame reading: the real NTU clip, OpenCV-written files, broken files, frame folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.video import VideoInfo, _probe_opencv, probe_video, read_frames
from tests.fixtures.data_files import REAL_NTU_VIDEO


def write_video(path: Path, frames: int, *, fourcc: str = "MJPG", size=(64, 48)) -> np.ndarray:
    """Frames whose colour encodes their index, so a test can tell which frame came back. Returns BGR frames."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (width, height))
    assert writer.isOpened()
    images = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        images[i, :, :, 0] = 10 * i  # blue channel = 10 x index
        images[i, :, : width // 2, 2] = 200  # red on the left half: tells RGB from BGR
        writer.write(images[i])
    writer.release()
    return images


def test_probe_real_ntu_video_reads_the_header_only():
    info = probe_video(REAL_NTU_VIDEO)
    assert info == VideoInfo(frames=103, fps=30.0, width=1920, height=1080)
    assert _probe_opencv(REAL_NTU_VIDEO) == info  # the RIFF reader agrees with cv2.CAP_PROP_*


def test_read_real_ntu_frames_rgb_with_repeats():
    frames = read_frames(REAL_NTU_VIDEO, [0, 0, 51, 102])
    assert frames.shape == (4, 1080, 1920, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], frames[1])
    capture = cv2.VideoCapture(str(REAL_NTU_VIDEO))
    for _ in range(52):
        ok, bgr = capture.read()
        assert ok
    capture.release()
    assert np.array_equal(frames[2], bgr[..., ::-1])  # frame 51, RGB


def test_opencv_written_mjpg_avi(tmp_path):
    path = tmp_path / "clip.avi"
    bgr = write_video(path, 12)
    info = probe_video(path)
    assert info == VideoInfo(frames=12, fps=25.0, width=64, height=48) == _probe_opencv(path)
    frames = read_frames(path, [1, 5, 5, 11])
    assert frames.shape == (4, 48, 64, 3)
    assert np.abs(frames[:, 10, 10, 2].astype(int) - bgr[[1, 5, 5, 11], 10, 10, 0]).max() < 8  # blue = 10 x index
    assert frames[0, 10, 5, 0] > 150 and frames[0, 10, 60, 0] < 50  # red (RGB channel 0) on the left half


def test_non_avi_container_goes_to_opencv(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 9, fourcc="mp4v")
    assert probe_video(path) == VideoInfo(frames=9, fps=25.0, width=64, height=48)
    assert read_frames(path, [8]).shape == (1, 48, 64, 3)


def test_truncated_video(tmp_path):
    path = tmp_path / "S001C001P001R001A001_rgb.avi"
    data = REAL_NTU_VIDEO.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StarError, match=r"truncated: its RIFF header says 987146 bytes, the file has 493573"):
        probe_video(path)
    with pytest.raises(StarError, match=rf"Frame \d+ of {path} cannot be decoded"):
        read_frames(path, [0, 100])


def test_index_past_the_end_names_file_and_frame(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, 6)
    with pytest.raises(StarError, match=rf"Frame 6 of {path} cannot be decoded"):
        read_frames(path, [2, 9])


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(StarError, match="Video not found: .*absent.avi"):
        probe_video(tmp_path / "absent.avi")
    with pytest.raises(StarError, match="absent.avi"):
        read_frames(tmp_path / "absent.avi", [0])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(StarError, match="garbage.avi"):
        probe_video(garbage)
    with pytest.raises(StarError, match="garbage.avi"):
        read_frames(garbage, [0])


def test_indices_must_be_sorted():
    with pytest.raises(ValueError, match="sorted"):
        read_frames(REAL_NTU_VIDEO, [5, 2])


def test_frame_folder_reads_only_the_needed_images(tmp_path):
    folder = tmp_path / "0001"
    folder.mkdir()
    for i in range(1, 8):
        image = np.full((30, 40, 3), 20 * i, np.uint8)
        image[:, :10] = (0, 0, 255)  # red in BGR
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), image)
    (folder / "000004.jpg").write_bytes(b"corrupt")  # never needed below
    assert probe_video(folder) == VideoInfo(frames=7, fps=0.0, width=40, height=30)
    frames = read_frames(folder, [0, 0, 6])
    assert frames.shape == (3, 30, 40, 3) and np.array_equal(frames[0], frames[1])
    assert abs(int(frames[2, 15, 30, 1]) - 140) < 6 and frames[2, 15, 2, 0] > 200  # grey level 7 x 20; red first
    with pytest.raises(StarError, match=r"000004\.jpg cannot be decoded"):
        read_frames(folder, [3])
    with pytest.raises(StarError, match="Frame 7 of .* does not exist: the folder holds 7"):
        read_frames(folder, [7])


def test_empty_frame_folder(tmp_path):
    with pytest.raises(StarError, match="No frame images"):
        probe_video(tmp_path)
