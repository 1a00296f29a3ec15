"""The generated figure: a 25-joint body in the NTU joint layout, its look per subject, and forward kinematics
from per-frame joint angles to 3D joints (feet kept on the floor), placed in the scene."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NUM_JOINTS = 25


LEAF_JOINTS = (3, 15, 19, 21, 22, 23, 24)  # Kinect writes a zero orientation for these


EXTREMITIES = (7, 11, 15, 19, 21, 22, 23, 24)  # hands, feet, tips, thumbs: sometimes "inferred"


PARENT = (0, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11)  # 0-based


@dataclass(frozen=True)
class Body:
    """One performer: size, proportions (metres at scale 1) and clothing colours (BGR)."""

    scale: float
    shoulder: float  # half shoulder width
    hip: float  # half hip width
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shoes: tuple[int, int, int]


def make_body(subject: int, *, seed: int) -> Body:
    rng = np.random.default_rng([seed, 101, subject])
    scale = rng.uniform(0.88, 1.1)
    hue = int(rng.integers(0, 180))
    shirt = hsv_to_bgr(hue, rng.uniform(120, 230), rng.uniform(120, 230))
    trousers = hsv_to_bgr((hue + int(rng.integers(40, 140))) % 180, rng.uniform(40, 200), rng.uniform(40, 140))
    skin = hsv_to_bgr(int(rng.integers(8, 20)), rng.uniform(60, 150), rng.uniform(110, 230))
    hair = hsv_to_bgr(int(rng.integers(5, 25)), rng.uniform(40, 200), rng.uniform(20, 110))
    return Body(
        scale=scale,
        shoulder=scale * rng.uniform(0.17, 0.21),
        hip=scale * rng.uniform(0.08, 0.11),
        upper_arm=scale * rng.uniform(0.27, 0.31),
        forearm=scale * rng.uniform(0.24, 0.27),
        thigh=scale * rng.uniform(0.41, 0.45),
        shin=scale * rng.uniform(0.40, 0.44),
        shirt=shirt,
        trousers=trousers,
        skin=skin,
        hair=hair,
        shoes=(int(rng.integers(20, 60)),) * 3,
    )


def hsv_to_bgr(hue: int, saturation: float, value: float) -> tuple[int, int, int]:
    hsv = np.array([[[hue, int(saturation), int(value)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


# Per-frame pose parameters (degrees for angles, metres for lift/shift): bend / nod: torso / head
# pitched forward; lift: height above the floor (jumps); shift_x / shift_f: root moved to the person's
# left / forward; yaw: facing, 0 = towards the camera, 90 = towards the image's right. Limb directions
# in the torso (arms) or pelvis (legs) frame as (abduction a, flexion f) of each segment: up / fo =
# upper arm / forearm, th / sh = thigh / shin, l / r = the person's left / right side. a = 0, f = 0
# points down; a = 90 sideways; a = 180 up; f = 90 forward.
ANGLE_NAMES = (
    "bend", "nod", "lift", "shift_x", "shift_f", "yaw",
    "l_up_a", "l_up_f", "l_fo_a", "l_fo_f", "r_up_a", "r_up_f", "r_fo_a", "r_fo_f",
    "l_th_a", "l_th_f", "l_sh_a", "l_sh_f", "r_th_a", "r_th_f", "r_sh_a", "r_sh_f",
)  # fmt: skip


def neutral_pose(frames: int) -> dict[str, np.ndarray]:
    pose = {name: np.zeros(frames) for name in ANGLE_NAMES}
    for side in "lr":
        pose[f"{side}_up_a"][:] = 8.0
        pose[f"{side}_fo_a"][:] = 6.0
        pose[f"{side}_fo_f"][:] = 12.0
        pose[f"{side}_th_a"][:] = 3.0
        pose[f"{side}_sh_a"][:] = 3.0
    return pose


def _direction(abduction: np.ndarray, flexion: np.ndarray, side: float) -> np.ndarray:
    """(T, 3) unit vectors in the body frame (x = person's left, y = up, z = forward)."""
    a, f = np.radians(abduction), np.radians(flexion)
    return np.stack([side * np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)], axis=-1)


def body_joints(body: Body, pose: dict[str, np.ndarray]) -> np.ndarray:
    """(T, 25, 3) joint positions in the person's frame (x left, y up, z forward; floor at y = 0)."""
    frames = len(pose["bend"])
    s = body.scale
    joints = np.zeros((frames, NUM_JOINTS, 3))
    pelvis = np.array([0.0, body.thigh + body.shin + 0.12 * s, 0.0])
    joints[:, 0] = pelvis
    for side, sign, (hip, knee, ankle, foot) in (("l", 1.0, (12, 13, 14, 15)), ("r", -1.0, (16, 17, 18, 19))):
        joints[:, hip] = pelvis + [sign * body.hip, -0.05 * s, 0.0]
        joints[:, knee] = joints[:, hip] + body.thigh * _direction(pose[f"{side}_th_a"], pose[f"{side}_th_f"], sign)
        joints[:, ankle] = joints[:, knee] + body.shin * _direction(pose[f"{side}_sh_a"], pose[f"{side}_sh_f"], sign)
        joints[:, foot] = joints[:, ankle] + [0.0, -0.045 * s, 0.11 * s]
    # Upper body in the torso frame, relative to the pelvis, then pitched forward by `bend`.
    upper = np.zeros((frames, NUM_JOINTS, 3))
    upper[:, 1] = [0.0, 0.25 * s, 0.0]
    upper[:, 20] = [0.0, 0.50 * s, 0.0]
    upper[:, 2] = [0.0, 0.57 * s, 0.0]
    nod = np.radians(pose["nod"])
    upper[:, 3] = upper[:, 2] + 0.13 * s * np.stack([np.zeros(frames), np.cos(nod), np.sin(nod)], -1)
    for side, sign, (shoulder, elbow, wrist, hand, tip, thumb) in (
        ("l", 1.0, (4, 5, 6, 7, 21, 22)),
        ("r", -1.0, (8, 9, 10, 11, 23, 24)),
    ):
        fore = _direction(pose[f"{side}_fo_a"], pose[f"{side}_fo_f"], sign)
        upper[:, shoulder] = [sign * body.shoulder, 0.47 * s, 0.0]
        upper_arm = _direction(pose[f"{side}_up_a"], pose[f"{side}_up_f"], sign)
        upper[:, elbow] = upper[:, shoulder] + body.upper_arm * upper_arm
        upper[:, wrist] = upper[:, elbow] + body.forearm * fore
        upper[:, hand] = upper[:, wrist] + 0.06 * s * fore
        upper[:, tip] = upper[:, hand] + 0.07 * s * fore
        upper[:, thumb] = upper[:, wrist] + 0.05 * s * fore + [0.0, 0.0, 0.035 * s]
    bend = np.radians(pose["bend"])[:, None]  # (T, 1)
    y, z = upper[..., 1].copy(), upper[..., 2].copy()
    upper[..., 1] = y * np.cos(bend) - z * np.sin(bend)
    upper[..., 2] = y * np.sin(bend) + z * np.cos(bend)
    for joint in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20, 21, 22, 23, 24):
        joints[:, joint] = pelvis + upper[:, joint]
    # Keep the lowest foot on the floor, then add the jump height.
    sole = np.minimum(joints[:, (14, 18), 1].min(1), joints[:, (15, 19), 1].min(1))  # (T,)
    joints[..., 1] += (0.03 * s - sole + pose["lift"])[:, None]
    joints[..., 0] += pose["shift_x"][:, None]
    joints[..., 2] += pose["shift_f"][:, None]
    return joints


def place_in_scene(joints: np.ndarray, *, yaw_deg: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Person frame -> scene frame (X right, Y up, Z away from the camera; person centred at `position`)."""
    yaw = np.radians(yaw_deg)[:, None]  # (T, 1)
    x, y, f = joints[..., 0], joints[..., 1], joints[..., 2]
    scene = np.empty_like(joints)
    # Facing the camera (yaw 0): the person's left is the image's right, forward is towards the camera.
    scene[..., 0] = x * np.cos(yaw) + f * np.sin(yaw) + position[:, None, 0]
    scene[..., 1] = y
    scene[..., 2] = x * np.sin(yaw) - f * np.cos(yaw) + position[:, None, 1]
    return scene
