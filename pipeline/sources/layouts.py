"""Joint layouts: the names of a skeleton's joints and the left/right pairs swapped by a horizontal flip.

Joint layouts: `ntu25` (Kinect v2 `JointType` order),
`penn13` (Penn Action README order, left before right), `coco17` (the 17 COCO
keypoints most 2D pose estimators emit, offered for custom folders) and `blazepose33` (the 33
landmarks of MediaPipe's BlazePose, what `star pose` estimates; `pipeline/sources/pose/mapping.py` turns it
into the other layouts). Left and right are the person's own, in every layout. A custom layout is any
`JointLayout` built from a folder's `layout.json` (see `pipeline/sources/datasets/folder.py`).

Indices are 0-based everywhere. `bones` (parent, child) pairs are for drawing only; for NTU they are
the official MATLAB demo's parent list, hand tips and thumbs hanging off the hands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import StarError


@dataclass(frozen=True)
class JointLayout:
    """Joint names in array order and the (left, right) index pairs a horizontal flip swaps."""

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    bones: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        count = len(self.joint_names)
        if not self.name:
            raise StarError("A joint layout needs a non-empty name.")
        if count == 0 or len(set(self.joint_names)) != count:
            raise StarError(f"Layout {self.name!r}: joint names must be non-empty and unique.")
        seen: set[int] = set()
        for pair in self.flip_pairs + self.bones:
            if len(pair) != 2 or not all(0 <= int(j) < count for j in pair) or pair[0] == pair[1]:
                raise StarError(
                    f"Layout {self.name!r}: pair {pair} must hold two different joint indices in 0..{count - 1}."
                )
        for left, right in self.flip_pairs:
            if left in seen or right in seen:
                raise StarError(f"Layout {self.name!r}: joint {left} or {right} appears in two flip pairs.")
            seen.update((left, right))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def flip_permutation(self) -> np.ndarray:
        """Index map `perm` such that `flipped[..., j, :] = joints[..., perm[j], :]` after mirroring x."""
        perm = np.arange(self.num_joints)
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "joint_names": list(self.joint_names),
                "flip_pairs": [list(p) for p in self.flip_pairs],
                "bones": [list(b) for b in self.bones],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> JointLayout:
        spec = json.loads(text)
        return layout_from_spec(spec, where="JSON layout")


def layout_from_spec(spec: object, *, where: str) -> JointLayout:
    """Build a layout from a parsed `layout.json`-style mapping; `where` names the source in errors."""
    if not isinstance(spec, dict) or "name" not in spec or "joint_names" not in spec:
        raise StarError(f"{where}: a layout needs 'name' and 'joint_names' (and optionally 'flip_pairs', 'bones').")
    try:
        return JointLayout(
            name=str(spec["name"]),
            joint_names=tuple(str(n) for n in spec["joint_names"]),
            flip_pairs=tuple((int(a), int(b)) for a, b in spec.get("flip_pairs", [])),
            bones=tuple((int(a), int(b)) for a, b in spec.get("bones", [])),
        )
    except (TypeError, ValueError) as err:
        raise StarError(f"{where}: flip_pairs and bones must be lists of [int, int] pairs ({err}).") from err


NTU25 = JointLayout(
    name="ntu25",
    joint_names=(
        "SpineBase",
        "SpineMid",
        "Neck",
        "Head",
        "ShoulderLeft",
        "ElbowLeft",
        "WristLeft",
        "HandLeft",
        "ShoulderRight",
        "ElbowRight",
        "WristRight",
        "HandRight",
        "HipLeft",
        "KneeLeft",
        "AnkleLeft",
        "FootLeft",
        "HipRight",
        "KneeRight",
        "AnkleRight",
        "FootRight",
        "SpineShoulder",
        "HandTipLeft",
        "ThumbLeft",
        "HandTipRight",
        "ThumbRight",
    ),
    flip_pairs=((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19), (21, 23), (22, 24)),
    # The MATLAB demo's 1-based parent list `2 1 21 3 21 5 6 7 21 9 10 11 1 13 14 15 1 17 18 19 2 8 8 12 12`,
    # written 0-based as (parent, child) without the root's self-loop.
    bones=(
        (0, 1),
        (20, 2),
        (2, 3),
        (20, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (20, 8),
        (8, 9),
        (9, 10),
        (10, 11),
        (0, 12),
        (12, 13),
        (13, 14),
        (14, 15),
        (0, 16),
        (16, 17),
        (17, 18),
        (18, 19),
        (1, 20),
        (7, 21),
        (7, 22),
        (11, 23),
        (11, 24),
    ),
)

PENN13 = JointLayout(
    name="penn13",
    joint_names=(
        "head",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)),
    bones=((0, 1), (0, 2), (1, 3), (3, 5), (2, 4), (4, 6), (1, 7), (2, 8), (7, 9), (9, 11), (8, 10), (10, 12)),
)

COCO17 = JointLayout(
    name="coco17",
    joint_names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    bones=(
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (5, 6),
        (5, 7),
        (7, 9),
        (6, 8),
        (8, 10),
        (5, 11),
        (6, 12),
        (11, 12),
        (11, 13),
        (13, 15),
        (12, 14),
        (14, 16),
    ),
)

BLAZEPOSE33 = JointLayout(
    name="blazepose33",
    joint_names=(
        "nose",
        "left_eye_inner",
        "left_eye",
        "left_eye_outer",
        "right_eye_inner",
        "right_eye",
        "right_eye_outer",
        "left_ear",
        "right_ear",
        "mouth_left",
        "mouth_right",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_pinky",
        "right_pinky",
        "left_index",
        "right_index",
        "left_thumb",
        "right_thumb",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "left_heel",
        "right_heel",
        "left_foot_index",
        "right_foot_index",
    ),
    flip_pairs=(
        (1, 4),
        (2, 5),
        (3, 6),
        (7, 8),
        (9, 10),
        (11, 12),
        (13, 14),
        (15, 16),
        (17, 18),
        (19, 20),
        (21, 22),
        (23, 24),
        (25, 26),
        (27, 28),
        (29, 30),
        (31, 32),
    ),
    bones=(
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 7),
        (0, 4),
        (4, 5),
        (5, 6),
        (6, 8),
        (9, 10),
        (11, 12),
        (11, 13),
        (13, 15),
        (15, 17),
        (15, 19),
        (15, 21),
        (17, 19),
        (12, 14),
        (14, 16),
        (16, 18),
        (16, 20),
        (16, 22),
        (18, 20),
        (11, 23),
        (12, 24),
        (23, 24),
        (23, 25),
        (25, 27),
        (27, 29),
        (29, 31),
        (27, 31),
        (24, 26),
        (26, 28),
        (28, 30),
        (30, 32),
        (28, 32),
    ),
)

BUILTIN_LAYOUTS = {layout.name: layout for layout in (NTU25, PENN13, COCO17, BLAZEPOSE33)}


def builtin_layout(name: str) -> JointLayout:
    """The built-in layout called `name` (ntu25, penn13, coco17, blazepose33)."""
    try:
        return BUILTIN_LAYOUTS[name]
    except KeyError:
        raise StarError(
            f"Unknown joint layout {name!r}; built-in layouts are {sorted(BUILTIN_LAYOUTS)}, "
            "or give 'joint_names' and 'flip_pairs' for a custom one."
        ) from None
