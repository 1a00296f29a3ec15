"""Frames of a source as they arrive: a video file of any length, a camera, or a network stream OpenCV opens.

`open_stream("clip.mp4" | "0" | "rtsp://..." | "http://...")` returns an iterator of `StreamFrame`s holding one
frame at a time (and, for a live source, at most `queue` waiting ones), so memory does not depend on the length.

- A file is decoded completely, in order, at the pace of its consumer: nothing is dropped, and a frame's time is
  its index / the container's frame rate, so a run gives the same frames whatever the machine.
- A camera (an index) or a URL is *live*: a thread decodes it as fast as it delivers frames and keeps the newest
  `queue` ones. When the consumer falls behind, the oldest waiting frame is dropped (and counted), so a frame
  waits at most `queue` frame intervals. A frame's time is its capture time (the moment OpenCV returned it).
  When the stream fails (a camera unplugged, a server gone), it is reopened with exponential back-off up to
  `reconnects` times in a row; then the iterator ends, with `ended` saying why.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import StarError

DEFAULT_FPS = 25.0  # what a source that states no frame rate is taken to run at
OPEN_TIMEOUT_S = 5.0  # the longest wait for a network source to open, or for its next frame
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class StreamFrame:
    index: int  # position in the source; live: frames dropped before it count too
    time: float  # seconds since the source started: file: index / fps; live: since the first capture
    captured: float  # time.monotonic() when it was decoded
    rgb: np.ndarray  # (H, W, 3) uint8


def is_live(source: str) -> bool:
    """A camera index or a URL; anything else is a file path."""
    return source.isdigit() or "://" in source


class _Stream:
    """What both kinds share: the source, its frame rate and size, and what the run saw."""

    def __init__(self, source: str, capture: cv2.VideoCapture) -> None:
        self.source = source
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 1.0 <= fps <= 240.0 else DEFAULT_FPS
        self.frame_size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.read = 0  # frames decoded
        self.dropped = 0  # decoded but never delivered (live sources that were not kept up with)
        self.reconnects = 0
        self.ended = ""

    def close(self) -> None:
        pass


class FileStream(_Stream):
    live = False

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise StarError(f"Video not found: {path}. Give a video file, a camera index (0) or a stream URL.")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise StarError(f"OpenCV cannot open the video {path}: not a video, or a codec it lacks.")
        super().__init__(str(path), self._capture)

    def __iter__(self) -> Iterator[StreamFrame]:
        while True:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                self.ended = "end of the file" if self.read else "no frame could be decoded"
                if not self.read:
                    raise StarError(f"No frame of {self.source} could be decoded: the video is empty or corrupt.")
                return
            yield StreamFrame(self.read, self.read / self.fps, time.monotonic(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            self.read += 1

    def close(self) -> None:
        self._capture.release()


class LiveStream(_Stream):
    live = True

    def __init__(self, source: str, *, queue: int = 4, reconnects: int = 5, backoff_s: float = 0.5) -> None:
        self._target: int | str = int(source) if source.isdigit() else source
        capture = _open_live(self._target)
        if capture is None:
            kind = f"camera {source}" if source.isdigit() else f"stream {source}"
            raise StarError(f"Cannot open the {kind}: unreachable, or not a source OpenCV reads (check it plays).")
        super().__init__(source, capture)
        self.reconnect_limit, self.backoff_s = reconnects, backoff_s
        self._waiting: collections.deque[StreamFrame] = collections.deque()
        self._queue = max(1, queue)
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._started: float | None = None
        self._thread = threading.Thread(target=self._decode, args=(capture,), name="star-watch-capture", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[StreamFrame]:
        while True:
            with self._ready:
                while not self._waiting and self._thread.is_alive() and not self._stop.is_set():
                    self._ready.wait(0.1)
                if not self._waiting or self._stop.is_set():
                    return
                frame = self._waiting.popleft()
            yield frame

    def stop(self) -> None:
        """End the iteration at the next frame or wait (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=OPEN_TIMEOUT_S + 1)

    def _decode(self, capture: cv2.VideoCapture) -> None:
        try:
            while not self._stop.is_set():
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    capture.release()
                    capture = self._reopen()
                    if capture is None:
                        return
                    continue
                captured = time.monotonic()
                self._started = captured if self._started is None else self._started
                frame = StreamFrame(self.read, captured - self._started, captured, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self.read += 1
                with self._ready:
                    if len(self._waiting) >= self._queue:
                        self._waiting.popleft()
                        self.dropped += 1
                    self._waiting.append(frame)
                    self._ready.notify()
        finally:
            if capture is not None:
                capture.release()
            if self._stop.is_set() and not self.ended:
                self.ended = "stopped"

    def _reopen(self) -> cv2.VideoCapture | None:
        """The source opened again after a failure, or None (`ended` says why) after `reconnect_limit` tries."""
        for attempt in range(self.reconnect_limit):
            if self._stop.wait(min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)):
                return None
            capture = _open_live(self._target)
            if capture is not None:
                self.reconnects += 1
                return capture
        self.ended = (
            f"the source failed and did not come back after {self.reconnect_limit} reconnection attempts"
            if self.reconnect_limit
            else "the source ended"
        )
        return None


def _open_live(target: int | str) -> cv2.VideoCapture | None:
    timeout_ms = int(OPEN_TIMEOUT_S * 1000)
    if isinstance(target, int):
        capture = cv2.VideoCapture(target)
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    if capture.isOpened():
        return capture
    capture.release()
    return None


def open_stream(source: str, *, queue: int = 4, reconnects: int = 5, backoff_s: float = 0.5) -> FileStream | LiveStream:
    """A file, camera or URL as an iterator of frames; StarError when it cannot be opened (before any frame)."""
    if is_live(source):
        return LiveStream(source, queue=queue, reconnects=reconnects, backoff_s=backoff_s)
    return FileStream(Path(source))
