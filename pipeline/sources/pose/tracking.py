"""Person tracks from per-frame detections: box IoU + Hungarian matching, then the best `persons` tracks.

Each frame's detections are matched to the tracks seen within the last `max_gap` frames by maximising the
summed IoU of their boxes (`scipy.optimize.linear_sum_assignment`); a pair below `min_iou` is no match. An
unmatched detection starts a track. Finally the tracks with the highest total score fill the person slots,
best first, as the dataset readers order persons; a slot's frames without its person are zeros.
`PersonTracker` is the matching alone, frame by frame, for streams (`star watch`); `track_people` runs it over
a whole video.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    id: int
    last_box: np.ndarray
    last_frame: int


class PersonTracker:
    """Online tracking: `update(t, detections)` matches frame t's detections to the tracks seen within the last
    `max_gap` frames and returns each detection's track id (ids count up from 1). Tracks unseen for longer are
    forgotten, so memory stays flat on a stream of any length."""

    def __init__(self, *, min_iou: float = 0.1, max_gap: int = 15) -> None:
        self.min_iou, self.max_gap = min_iou, max_gap
        self._live: list[_Track] = []
        self._next_id = 1

    def update(self, t: int, detections: list[Detection]) -> list[int]:
        from scipy.optimize import linear_sum_assignment  # here: importing it at the top would slow every `star` start

        self._live = [track for track in self._live if t - track.last_frame <= self.max_gap]
        ids = [0] * len(detections)
        if self._live and detections:
            iou = box_iou(np.stack([track.last_box for track in self._live]), np.stack([d.box for d in detections]))
            for row, col in zip(*linear_sum_assignment(iou, maximize=True), strict=True):
                if iou[row, col] >= self.min_iou:
                    ids[col] = self._live[row].id
                    self._live[row].last_box, self._live[row].last_frame = detections[col].box, t
        for col, detection in enumerate(detections):
            if not ids[col]:
                ids[col] = self._next_id
                self._live.append(_Track(id=self._next_id, last_box=detection.box, last_frame=t))
                self._next_id += 1
        return ids


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
    tracker = PersonTracker(min_iou=min_iou, max_gap=max_gap)
    seen: dict[int, dict[int, np.ndarray]] = {}  # track id -> frame -> keypoints
    totals: dict[int, float] = {}
    for t, detections in enumerate(frames):
        for track_id, detection in zip(tracker.update(t, detections), detections, strict=True):
            seen.setdefault(track_id, {})[t] = detection.keypoints
            totals[track_id] = totals.get(track_id, 0.0) + detection.score
    best = sorted(seen, key=lambda track_id: -totals[track_id])[:persons]  # stable: earlier tracks win ties
    out = np.zeros((len(frames), persons, joints, 3), np.float32)
    for slot, track_id in enumerate(best):
        for t, keypoints in seen[track_id].items():
            out[t, slot] = keypoints
    return out
