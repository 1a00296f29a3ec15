"""Probe and decode a sample's video: a video file (OpenCV) or a folder of frame images (Penn Action).

`probe_video` reads the container header only, never frames: frame count, fps and size. For AVI
(every NTU video) it reads the RIFF headers itself: `avih` / `strh` / `strf` (and OpenDML `dmlh` when
present) hold exactly what `cv2.CAP_PROP_FRAME_COUNT/FPS/FRAME_WIDTH/FRAME_HEIGHT` report, without
opening an H.264 decoder as OpenCV does, which adds up over NTU120's 114,480 videos (figures:
docs/design.md, "Figures behind the code"). It also catches a file cut short (RIFF size larger than the file), which
OpenCV's header values do not show. Other containers, or an AVI without those headers, go to OpenCV.

`read_frames` decodes sequentially: `grab()` every frame up to the last one wanted and `retrieve()`
only the wanted ones. Seeking (`CAP_PROP_POS_FRAMES`) is slow and inexact in H.264, and the decoder
has to decode every frame up to the last wanted one anyway.
Memory holds only the returned frames. Frames come back RGB (OpenCV decodes BGR).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import StarError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# A frame folder has no frame rate of its own (Penn Action does not state one): 0.0 means unknown.
UNKNOWN_FPS = 0.0


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def probe_video(source: Path) -> VideoInfo:
    """Frame count, fps and size from the container header (video file) or a frame folder listing."""
    source = Path(source)
    if source.is_dir():
        frames = frame_files(source)
        first = _read_image(frames[0])
        return VideoInfo(frames=len(frames), fps=UNKNOWN_FPS, width=first.shape[1], height=first.shape[0])
    if not source.is_file():
        raise StarError(f"Video not found: {source}. Check the dataset root and the file name.")
    if source.suffix.lower() == ".avi":
        info = _probe_riff_avi(source)
        if info is not None:
            return info
    return _probe_opencv(source)


def read_frames(source: Path, indices: Sequence[int]) -> np.ndarray:
    """Frames `indices` (ascending, repeats allowed) as uint8 RGB, shape (len(indices), H, W, 3)."""
    source = Path(source)
    wanted = np.asarray(indices, dtype=np.int64)
    if wanted.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {wanted.shape}")
    if wanted.size and (wanted[0] < 0 or np.any(np.diff(wanted) < 0)):
        raise ValueError("frame indices must be >= 0 and sorted ascending")
    if source.is_dir():
        return _read_folder_frames(source, wanted)
    if not source.is_file():
        raise StarError(f"Video not found: {source}. Check the dataset root and the file name.")
    return _read_video_frames(source, wanted)


def iter_frames(source: Path) -> Iterator[np.ndarray]:
    """Every frame of a video file or frame folder in order, as uint8 RGB (H, W, 3), holding one at a time."""
    source = Path(source)
    if source.is_dir():
        for path in frame_files(source):
            yield _read_image(path)
        return
    if not source.is_file():
        raise StarError(f"Video not found: {source}. Check the path.")
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise StarError(f"OpenCV cannot open the video {source}: not a video, or a codec it lacks.")
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a frame folder, in name order (Penn Action: 000001.jpg, 000002.jpg, ...)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise StarError(f"No frame images ({', '.join(FRAME_SUFFIXES)}) in the frame folder {folder}.")
    return files


def _probe_opencv(path: Path) -> VideoInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise StarError(f"OpenCV cannot open the video {path}: not a video, or a codec it lacks.")
        info = VideoInfo(
            frames=int(round(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.frames <= 0 or info.width <= 0 or info.height <= 0:
        found = f"{max(info.frames, 0)} frames of {max(info.width, 0)}x{max(info.height, 0)}"
        raise StarError(
            f"The video {path} has no usable frame count or size in its header (OpenCV reads {found}): "
            "an image or a damaged file? Re-encode it as a video, or give a folder of frames."
        )
    return info


def _probe_riff_avi(path: Path) -> VideoInfo | None:
    """VideoInfo from the AVI headers, or None when the file has no usable RIFF AVI header."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1 << 16)  # hdrl sits at the start and is a few KB (NTU: 4.6 KB)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    riff_size = struct.unpack_from("<I", head, 4)[0] + 8
    if riff_size > file_size:
        raise StarError(
            f"The video {path} is truncated: its RIFF header says {riff_size} bytes, the file has {file_size}. "
            "Copy or download it again."
        )
    chunks = _riff_chunks(head, 12, len(head))
    hdrl = chunks.get(b"hdrl")
    if hdrl is None:
        return None
    header = _riff_chunks(head, *hdrl)
    total = None
    if b"odml" in header:
        dmlh = _riff_chunks(head, *header[b"odml"]).get(b"dmlh")
        if dmlh is not None and dmlh[1] - dmlh[0] >= 4:
            total = struct.unpack_from("<I", head, dmlh[0])[0]  # OpenDML: all RIFF-AVIX parts together
    for start, end in header.get(b"strl", []):
        stream = _riff_chunks(head, start, end)
        strh, strf = stream.get(b"strh"), stream.get(b"strf")
        if strh is None or strf is None or head[strh[0] : strh[0] + 4] != b"vids":
            continue
        scale, rate, _start, length = struct.unpack_from("<4I", head, strh[0] + 20)
        width, height = struct.unpack_from("<ii", head, strf[0] + 4)
        frames = total if total else length
        if scale == 0 or rate == 0 or frames == 0 or width == 0 or height == 0:
            return None
        return VideoInfo(frames=int(frames), fps=rate / scale, width=abs(width), height=abs(height))
    return None


def _riff_chunks(buf: bytes, start: int, end: int) -> dict:
    """Chunks between start and end: {fourcc: (data_start, data_end)}, LISTs keyed by their list type.

    `strl` lists repeat (one per stream), so that key holds a list of ranges.
    """
    found: dict = {}
    offset = start
    while offset + 8 <= min(end, len(buf)):
        fourcc = buf[offset : offset + 4]
        size = struct.unpack_from("<I", buf, offset + 4)[0]
        data = offset + 8
        if fourcc == b"LIST" and data + 4 <= len(buf):
            kind = buf[data : data + 4]
            span = (data + 4, min(data + size, len(buf)))
            if kind == b"strl":
                found.setdefault(kind, []).append(span)
            else:
                found.setdefault(kind, span)
        else:
            found.setdefault(fourcc, (data, min(data + size, len(buf))))
        offset = data + size + (size & 1)  # chunks are padded to even sizes
    return found


def _read_video_frames(path: Path, wanted: np.ndarray) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise StarError(f"OpenCV cannot open the video {path}: not a video, or a codec it lacks.")
    out: np.ndarray | None = None
    try:
        slot = 0
        for frame_index in range(int(wanted[-1]) + 1 if wanted.size else 0):
            if not capture.grab():
                raise StarError(
                    f"Frame {frame_index} of {path} cannot be decoded: the video ends early or is corrupt "
                    f"(wanted frames up to {int(wanted[-1])}). Re-encode or replace the file."
                )
            if wanted[slot] != frame_index:
                continue
            ok, bgr = capture.retrieve()
            if not ok or bgr is None:
                raise StarError(f"Frame {frame_index} of {path} cannot be decoded: the video is corrupt.")
            if out is None:
                out = np.empty((len(wanted), *bgr.shape[:2], 3), np.uint8)  # (T, H, W, 3)
            elif bgr.shape[:2] != out.shape[1:3]:
                raise StarError(f"Frame {frame_index} of {path} changes size to {bgr.shape[:2]}; re-encode the video.")
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[slot])
            slot += 1
            while slot < len(wanted) and wanted[slot] == frame_index:  # repeated index: copy, no re-decode
                out[slot] = out[slot - 1]
                slot += 1
    finally:
        capture.release()
    if out is None:
        return np.empty((0, 0, 0, 3), np.uint8)
    return out


def _read_folder_frames(folder: Path, wanted: np.ndarray) -> np.ndarray:
    files = frame_files(folder)
    if wanted.size and wanted[-1] >= len(files):
        raise StarError(
            f"Frame {int(wanted[-1])} of {folder} does not exist: the folder holds {len(files)} frame images."
        )
    out: np.ndarray | None = None
    previous = -1
    for slot, frame_index in enumerate(wanted.tolist()):
        if frame_index == previous:
            out[slot] = out[slot - 1]
            continue
        rgb = _read_image(files[frame_index])
        if out is None:
            out = np.empty((len(wanted), *rgb.shape[:2], 3), np.uint8)  # (T, H, W, 3)
        elif rgb.shape[:2] != out.shape[1:3]:
            raise StarError(
                f"Frame image {files[frame_index]} has size {rgb.shape[:2]}, unlike the folder's first frames."
            )
        out[slot] = rgb
        previous = frame_index
    if out is None:
        return np.empty((0, 0, 0, 3), np.uint8)
    return out


def _read_image(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        raise StarError(f"Frame image {path} cannot be read ({err.strerror}).") from err
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise StarError(f"Frame image {path} cannot be decoded (empty or corrupt); replace it.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
