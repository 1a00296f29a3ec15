"""What one feature-cache sample holds: its array shapes and its extraction state."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core.jsonable import json_roundtrip


class SampleStatus(enum.IntEnum):
    """Per-sample state in the `status` array; 0 is zarr's fill value, so unwritten rows read as pending."""

    PENDING = 0
    DONE = 1
    FAILED = 2


@dataclass(frozen=True)
class CacheLayout:
    """Per-sample shapes: `frames` T, local maps (C', h', w'), global maps (C, h, w), persons P, `num_joints` J."""

    frames: int
    local_shape: tuple[int, int, int]
    global_shape: tuple[int, int, int]
    persons: int
    num_joints: int  # per person

    @classmethod
    def for_mc3_18(cls, *, frames: int, input_size: int, persons: int, num_joints: int) -> CacheLayout:
        """MC3-18 keeps T and downsamples space by 8 at layer3 (256 ch) and 16 at layer4 (512 ch)."""
        return cls(
            frames=frames,
            local_shape=(256, input_size // 8, input_size // 8),
            global_shape=(512, input_size // 16, input_size // 16),
            persons=persons,
            num_joints=num_joints,
        )

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one sample of each feature array."""
        _, h_local, w_local = self.local_shape
        return {
            "local": (self.frames, *self.local_shape),
            "global": (self.frames, *self.global_shape),
            "heatmaps": (self.frames, self.persons * self.num_joints, h_local, w_local),
            "joints": (self.frames, self.persons, self.num_joints, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return json_roundtrip(asdict(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheLayout:
        return cls(
            frames=int(data["frames"]),
            local_shape=tuple(data["local_shape"]),
            global_shape=tuple(data["global_shape"]),
            persons=int(data["persons"]),
            num_joints=int(data["num_joints"]),
        )
