"""Input geometry of a clip, shared by extraction and on-the-fly decoding.

The backbone sees S x S frames (S = 224 in the paper). Two modes:
- "full" (the paper's default): the whole W x H frame is resized to S x S, aspect ratio not kept.
- "person": a square box around every confident joint of the clip (all frames, all persons), enlarged by a margin on
  each side, shifted to stay inside the frame where it fits and zero-padded where it cannot, then resized to S x S.
  It matters for NTU, whose actors fill a small part of a 1920x1080 frame. Without a confident joint it falls back
  to "full". One box per clip (not per frame), so the crop does not jitter and motion stays visible.

The same box maps frames and joints. Coordinate conventions (x right, y down):
- original joints (dataset readers, pose estimators, OpenCV drawing): pixel index, i.e. the centre of pixel column
  i is x = i;
- output joints: continuous input pixels, pixel column i spans [i, i + 1) (centre i + 0.5), the convention of
  `model.tokens.joints_to_cells`, which scales them straight to local-map cells.
cv2.resize of a w-pixel-wide box starting at x0 to S pixels puts the content of original pixel x at continuous
position (x - x0 + 0.5) * S / w (pixel centres map to pixel centres), which `ClipGeometry.joints_to_input` computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.core.errors import StarError

CROP_MODES = ("full", "person")


@dataclass(frozen=True)
class ClipGeometry:
    """One clip's transform from original frames (W x H) to the S x S backbone input."""

    frame_size: tuple[int, int]  # (W, H) of the original frames
    box: tuple[int, int, int, int]  # (x0, y0, width, height) in original pixels; may extend past the frame
    size: int  # S

    def frame_to_input(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> (S, S, C) uint8: crop the box (zeros outside the frame), then resize."""
        width, height = self.frame_size
        if frame.shape[:2] != (height, width):
            raise StarError(
                f"A decoded frame is {frame.shape[1]}x{frame.shape[0]} but the video was indexed as "
                f"{width}x{height}; re-index the dataset (`star extract` rebuilds changed entries)"
            )
        x0, y0, box_w, box_h = self.box
        if x0 >= 0 and y0 >= 0 and x0 + box_w <= width and y0 + box_h <= height:
            crop = frame[y0 : y0 + box_h, x0 : x0 + box_w]
        else:
            crop = np.zeros((box_h, box_w, *frame.shape[2:]), dtype=frame.dtype)
            # The intersection of box and frame, in frame coordinates.
            left, top = max(x0, 0), max(y0, 0)
            right, bottom = min(x0 + box_w, width), min(y0 + box_h, height)
            if right > left and bottom > top:
                crop[top - y0 : bottom - y0, left - x0 : right - x0] = frame[top:bottom, left:right]
        # INTER_AREA averages when shrinking (no aliasing); it degrades to nearest-like output when enlarging.
        shrinking = box_w >= self.size and box_h >= self.size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(crop, (self.size, self.size), interpolation=interpolation)
        return resized.reshape(self.size, self.size, *frame.shape[2:])  # cv2 drops a trailing channel of 1

    def frames_to_input(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, C) uint8 -> (T, S, S, C) uint8."""
        out = np.empty((frames.shape[0], self.size, self.size, *frames.shape[3:]), dtype=frames.dtype)
        for t, frame in enumerate(frames):
            out[t] = self.frame_to_input(frame)
        return out

    def joints_to_input(self, joints: np.ndarray) -> np.ndarray:
        """(..., 3) (x, y, confidence), original pixel indices -> continuous pixels of the S x S input, float32.

        Confidence is unchanged, except 0 for joints that land outside [0, S) (or have non-finite coordinates).
        """
        x0, y0, box_w, box_h = self.box
        out = np.array(joints, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - x0 + 0.5) * (self.size / box_w)
        out[..., 1] = (out[..., 1] - y0 + 0.5) * (self.size / box_h)
        inside = (out[..., 0] >= 0) & (out[..., 0] < self.size) & (out[..., 1] >= 0) & (out[..., 1] < self.size)
        out[..., 2] = np.where(inside, out[..., 2], 0.0)
        return out


def clip_geometry(
    *,
    frame_size: tuple[int, int],
    skeleton: np.ndarray | None,
    size: int = 224,
    crop: str = "full",
    margin: float = 0.15,
    min_confidence: float = 0.0,
) -> ClipGeometry:
    """The transform of one clip.

    `skeleton` is (T, persons, joints, 3) = (x, y, confidence) in original pixels (None: no skeleton, "person"
    falls back to the full frame). `margin` enlarges the person box by this fraction of the joints' extent on each side;
    joints with confidence <= `min_confidence` do not count.
    """
    width, height = frame_size
    if width < 1 or height < 1:
        raise StarError(f"Frame size {width}x{height} is empty: the video's header is unusable; check the file")
    if size < 1:
        raise StarError(f"--size must be a positive number of pixels, got {size}")
    if crop == "full":
        return ClipGeometry(frame_size=(width, height), box=(0, 0, width, height), size=size)
    if crop == "person":
        box = person_box(frame_size=(width, height), skeleton=skeleton, margin=margin, min_confidence=min_confidence)
        return ClipGeometry(frame_size=(width, height), box=box or (0, 0, width, height), size=size)
    raise StarError(f"Unknown crop mode {crop!r}: use one of {', '.join(CROP_MODES)}")


def person_box(
    *, frame_size: tuple[int, int], skeleton: np.ndarray | None, margin: float = 0.15, min_confidence: float = 0.0
) -> tuple[int, int, int, int] | None:
    """Square (x0, y0, side, side) around the clip's confident joints; None when there is no confident joint.

    Joints are clipped to the frame first (NTU projections can fall far outside it). The side is at least a quarter
    of the frame's shorter side (a lone joint still gives a usable crop) and at most its longer side (anything
    larger would only add padding).
    """
    if skeleton is None:
        return None
    width, height = frame_size
    points = np.asarray(skeleton, dtype=np.float64).reshape(-1, 3)  # (T * persons * joints, 3)
    usable = (points[:, 2] > min_confidence) & np.isfinite(points[:, :2]).all(axis=1)
    if not usable.any():
        return None
    xs = np.clip(points[usable, 0], 0, width - 1)
    ys = np.clip(points[usable, 1], 0, height - 1)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min())
    side = extent * (1 + 2 * margin)
    side = int(round(min(max(side, min(width, height) / 4), max(width, height))))
    side = max(side, 1)
    x0 = _place(centre=(xs.min() + xs.max()) / 2, side=side, length=width)
    y0 = _place(centre=(ys.min() + ys.max()) / 2, side=side, length=height)
    return x0, y0, side, side


def _place(*, centre: float, side: int, length: int) -> int:
    """Start of a `side`-long window centred on `centre`, shifted inside [0, length) when it fits, else centred."""
    if side >= length:
        return -((side - length) // 2)  # pad both sides equally
    start = int(round(centre + 0.5 - side / 2))  # centre + 0.5: the pixel-centre of `centre` sits mid-window
    return min(max(start, 0), length - side)
