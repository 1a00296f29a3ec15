"""Turning an estimator's joints into another joint layout (BlazePose-33 -> NTU-25, COCO-17, Penn-13).

A target joint is either a source joint of the same name (or the one a recipe names: a copy, score kept)
or a point the source does not have, placed as a weighted mean of source joints (a *derived* joint) with
the score `DERIVED_SCORE` x the lowest score among them, so a model and `star explain` can tell
estimated from guessed. NTU-25 from BlazePose-33:

| NTU-25 joint | from BlazePose-33 | kind |
|---|---|---|
| ShoulderX, ElbowX, WristX, HipX, KneeX, AnkleX | x_shoulder, x_elbow, x_wrist, x_hip, x_knee, x_ankle | copy |
| FootX, HandTipX, ThumbX | x_foot_index, x_index, x_thumb | copy |
| HandX (palm centre) | mean of x_wrist, x_index, x_pinky | derived |
| SpineBase | mean of the hips | derived |
| SpineShoulder | mean of the shoulders | derived |
| SpineMid | mean of hips and shoulders | derived |
| Neck | 30 % of the way from the shoulders' to the mouth's centre | derived |
| Head | mean of the ears | derived |

Penn-13 `head` is the mean of the ears too; COCO-17 is a subset of BlazePose-33 by name. Any layout whose
joint names all appear in the source (a custom `layout.json` that uses BlazePose names) maps by name.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.layouts import JointLayout

DERIVED_SCORE = 0.5  # like Kinect's "inferred" joints in NTU skeletons

Recipe = dict[str, tuple[tuple[str, float], ...]]  # target joint -> (source joint, weight) pairs


def _mean(*names: str) -> tuple[tuple[str, float], ...]:
    return tuple((name, 1.0 / len(names)) for name in names)


def _sided(side: str) -> Recipe:
    s, k = side.lower(), side
    return {
        f"Shoulder{k}": _mean(f"{s}_shoulder"), f"Elbow{k}": _mean(f"{s}_elbow"), f"Wrist{k}": _mean(f"{s}_wrist"),
        f"Hand{k}": _mean(f"{s}_wrist", f"{s}_index", f"{s}_pinky"), f"Hip{k}": _mean(f"{s}_hip"),
        f"Knee{k}": _mean(f"{s}_knee"), f"Ankle{k}": _mean(f"{s}_ankle"), f"Foot{k}": _mean(f"{s}_foot_index"),
        f"HandTip{k}": _mean(f"{s}_index"), f"Thumb{k}": _mean(f"{s}_thumb"),
    }  # fmt: skip


RECIPES: dict[tuple[str, str], Recipe] = {
    ("blazepose33", "ntu25"): {
        "SpineBase": _mean("left_hip", "right_hip"),
        "SpineMid": _mean("left_hip", "right_hip", "left_shoulder", "right_shoulder"),
        "Neck": (("left_shoulder", 0.35), ("right_shoulder", 0.35), ("mouth_left", 0.15), ("mouth_right", 0.15)),
        "Head": _mean("left_ear", "right_ear"),
        "SpineShoulder": _mean("left_shoulder", "right_shoulder"),
        **_sided("Left"),
        **_sided("Right"),
    },
    ("blazepose33", "penn13"): {"head": _mean("left_ear", "right_ear")},
}


def joint_recipe(*, source: JointLayout, target: JointLayout) -> list[tuple[list[int], np.ndarray]]:
    """Per target joint, the source joint indices and their weights; StarError when a joint cannot be made."""
    recipe = {} if source.name == target.name else RECIPES.get((source.name, target.name), {})
    index = {name: j for j, name in enumerate(source.joint_names)}
    out = []
    for name in target.joint_names:
        parts = recipe.get(name) or ((name, 1.0),)
        if any(part not in index for part, _ in parts):
            raise StarError(
                f"The {source.name} joints of the pose estimator cannot make joint {name!r} of the layout "
                f"{target.name!r}: use a built-in layout (ntu25, coco17, penn13, blazepose33), a custom layout "
                f"whose joint names are {source.name} names, or your own pose files."
            )
        out.append(([index[part] for part, _ in parts], np.asarray([w for _, w in parts], np.float32)))
    return out


def convert_joints(keypoints: np.ndarray, *, source: JointLayout, target: JointLayout) -> np.ndarray:
    """(..., source joints, 3) (x, y, score) -> (..., target joints, 3); StarError when a joint cannot be made."""
    out = np.zeros((*keypoints.shape[:-2], target.num_joints, 3), np.float32)
    for j, (indices, weights) in enumerate(joint_recipe(source=source, target=target)):
        parts = keypoints[..., indices, :]  # (..., parts, 3)
        out[..., j, :2] = np.einsum("...pc,p->...c", parts[..., :2], weights)
        score = parts[..., 2].min(axis=-1)
        out[..., j, 2] = score if len(indices) == 1 else DERIVED_SCORE * score
    return out
