"""Person tracks from per-frame detections: box IoU + Hungarian matching, then the best `persons` tracks.

Each frame's detections are matched to the tracks seen within the last `max_gap` frames by maximising the
summed IoU of their boxes (`scipy.optimize.linear_sum_assignment`); a pair below `min_iou` is no match. An
unmatched detection starts a track. Finally the tracks with the highest total score fill the person slots,
best first, as the dataset readers order persons; a slot's frames without its person are zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One person in one frame: joints (J, 3) = (x, y, score) in pixels, and their box."""

    keypoints: np.ndarray

    @cached_property
    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) around the joints with a positive score (all joints when none has one)."""
        seen = self.keypoints[self.keypoints[:, 2] > 0]
        points = (seen if len(seen) else self.keypoints)[:, :2]
        return np.concatenate([points.min(axis=0), points.max(axis=0)])

    @property
    def score(self) -> float:
        return float(self.keypoints[:, 2].sum())


@dataclass
class _Track:
    last_box: np.ndarray
    last_frame: int
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    total: float = 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4): (N, M)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def track_people(
    frames: list[list[Detection]], *, persons: int, joints: int, min_iou: float = 0.1, max_gap: int = 15
) -> np.ndarray:
    """(frames, persons, joints, 3) float32: the `persons` tracks with the highest total score, best first."""
    from scipy.optimize import linear_sum_assignment  # here: importing it takes 0.7 s of every `star` start

    tracks: list[_Track] = []
    for t, detections in enumerate(frames):
        live = [track for track in tracks if t - track.last_frame <= max_gap]
        matched: set[int] = set()
        if live and detections:
            iou = box_iou(np.stack([track.last_box for track in live]), np.stack([d.box for d in detections]))
            for row, col in zip(*linear_sum_assignment(iou, maximize=True)):
                if iou[row, col] >= min_iou:
                    _extend(live[row], t, detections[col])
                    matched.add(int(col))
        for col, detection in enumerate(detections):
            if col not in matched:
                track = _Track(last_box=detection.box, last_frame=t)
                _extend(track, t, detection)
                tracks.append(track)
    best = sorted(tracks, key=lambda track: -track.total)[:persons]  # stable: earlier tracks win ties
    out = np.zeros((len(frames), persons, joints, 3), np.float32)
    for slot, track in enumerate(best):
        for t, keypoints in track.frames.items():
            out[t, slot] = keypoints
    return out


def _extend(track: _Track, t: int, detection: Detection) -> None:
    track.frames[t] = detection.keypoints
    track.last_box, track.last_frame = detection.box, t
    track.total += detection.score
