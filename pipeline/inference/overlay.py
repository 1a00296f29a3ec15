"""The overlay video of `star watch`: every processed frame with the tracked skeletons (the joints the model reads),
each person's id and current label, and the time, as MJPG in AVI.

MJPG because every OpenCV build writes it and each frame is a JPEG of its own: a run stopped by Ctrl-C or SIGTERM
closes the file with its index, and even one killed outright stays readable up to its last frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.layouts import JointLayout

COLOURS = ((0, 200, 255), (255, 120, 0), (80, 220, 80), (220, 80, 220), (255, 255, 0), (0, 80, 255))  # BGR


class OverlayWriter:
    def __init__(self, path: Path, *, fps: float, frame_size: tuple[int, int], layout: JointLayout) -> None:
        self.path, self.layout = Path(path), layout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame_size)
        if not self._writer.isOpened():
            raise StarError(f"OpenCV cannot write the overlay video {self.path}; check the folder is writable.")
        self.frames = 0

    def write(self, rgb: np.ndarray, *, people: dict[int, np.ndarray], labels: dict[int | None, str], time: float):
        """Draw `people` (track id -> (J, 3) joints in pixels) and `labels` (id -> "class 83%") on a copy, write it."""
        image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        scale = max(1, round(max(image.shape[:2]) / 640))
        for person, joints in people.items():
            colour = COLOURS[person % len(COLOURS)]
            seen = joints[:, 2] > 0
            points = np.round(joints[:, :2]).astype(np.int32)
            for parent, child in self.layout.bones:
                if seen[parent] and seen[child]:
                    cv2.line(image, tuple(points[parent]), tuple(points[child]), colour, scale, cv2.LINE_AA)
            for point in points[seen]:
                cv2.circle(image, tuple(point), 2 * scale, colour, -1, cv2.LINE_AA)
            if seen.any():
                x, y = points[seen].min(axis=0)
                text = f"person {person}" + (f": {labels[person]}" if person in labels else "")
                _text(image, text, (int(x), max(int(y) - 6 * scale, 12 * scale)), colour, scale)
        status = f"{time:8.2f} s" + (f"  {labels[None]}" if None in labels else "")
        _text(image, status, (6 * scale, 18 * scale), (255, 255, 255), scale)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()


def _text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: int) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3 * scale, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, scale, cv2.LINE_AA)
