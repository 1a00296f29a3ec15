"""A generated action dataset in the real NTU RGB+D (and Penn Action) on-disk formats.

Tests, the demo and the benchmarks need data that no one has to download. `generate_ntu_dataset`
writes `root/nturgb+d_rgb/<id>_rgb.avi` (MJPG in AVI, OpenCV) and `root/nturgb+d_skeletons/<id>.skeleton`
(the official text format) under proper `SsssCcccPpppRrrrAaaa` names, so that
`build_index("ntu120", root, ...)` reads it exactly like the real dataset and the official
xsub/xview/xset lists apply.

What is rendered: an articulated 25-joint figure in the NTU joint layout, posed in 3D by joint angles
(forward kinematics, feet kept on the floor), seen by a pinhole camera and drawn as thick
anti-aliased limbs, a torso polygon and a round head, over a mildly textured room. Each class is a
real NTU action whose official name matches the motion (`SYNTHETIC_ACTIONS`). Variation:
- subject (`P`): body size and proportions, shirt / trousers / skin / hair colours, position in the room;
- camera (`C`): C001 frontal, C002 / C003 from +45 / -45 degrees (the NTU rig's angles), with focal
  length, principal point and distance varying per setup (`S`);
- sample: duration, speed, amplitude and phase of the motion, a slow sway, joint jitter and image noise.
NTU60 classes use setups S001/S002 and NTU120-only classes S018/S019, as in the real dataset, so the
ntu60 benchmarks see only A001-A060 and ntu120-xset has even (train) and odd (test) setups.

Skeleton files: x, y, z are the 3D joint positions in camera space (metres, z 2-4 m), depthX/depthY
their projection into a 512x424 depth image, colorX/colorY the pixel positions at which the joints
were drawn in the written video, expressed in the 1920x1080 Kinect colour frame as in the real files
(colorX = x * 1920 / W, colorY = y * 1080 / H for a W x H video), so that every reader of the
generated data goes through the same mapping as real NTU videos stored at a lower resolution. The
orientation is the
shortest-arc rotation from +y to the bone (zeros on leaf joints, as Kinect writes them),
trackingState 2, or 1 for a few extremities and for joints outside the image. bodyID is a large
64-bit integer. Everything is deterministic for a seed: each sample draws from its own generator
seeded with (seed, S, C, P, R, A), so a sample does not change when others are added.

`generate_penn_dataset` renders the same figure into the Penn Action layout (JPEG frames and `.mat`
labels with the fields and shapes of the real ones) for three Penn classes with matching motions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import scipy.io

from pipeline.datasets.ntu import NTU60_LAST_ACTION, NtuName
from pipeline.datasets.ntu_skeleton import KINECT_COLOR_SIZE
from pipeline.errors import StarError

FPS = 30.0
BASE_FRAMES = 64  # clip length at speed 1 (NTU clips average ~80 frames; shorter keeps generation fast)
NUM_JOINTS = 25
LEAF_JOINTS = (3, 15, 19, 21, 22, 23, 24)  # Kinect writes a zero orientation for these
EXTREMITIES = (7, 11, 15, 19, 21, 22, 23, 24)  # hands, feet, tips, thumbs: sometimes "inferred"
PARENT = (0, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11)  # 0-based
CAMERA_YAW_DEG = {1: 0.0, 2: 45.0, 3: -45.0}
SETUPS_NTU60 = (1, 2)  # an odd (xset test) and an even (xset train) setup per group
SETUPS_NTU120 = (18, 19)
DEPTH_FOCAL, DEPTH_CENTRE = 365.0, (256.0, 212.0)  # a Kinect v2-like 512x424 depth camera

# Default classes: real NTU actions whose official names describe what the figure does.
SYNTHETIC_ACTIONS = (10, 23, 24, 27, 35, 59, 80, 95, 97, 99)
# Classes drawn as exact time reverses of each other: a model blind to frame order cannot separate them.
TIME_REVERSED_PAIRS = ((8, 9),)  # sitting down / standing up (from sitting position)


# --------------------------------------------------------------------------------------------------
# Bodies, cameras and joint angles


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
    shirt = _hsv_to_bgr(hue, rng.uniform(120, 230), rng.uniform(120, 230))
    trousers = _hsv_to_bgr((hue + int(rng.integers(40, 140))) % 180, rng.uniform(40, 200), rng.uniform(40, 140))
    skin = _hsv_to_bgr(int(rng.integers(8, 20)), rng.uniform(60, 150), rng.uniform(110, 230))
    hair = _hsv_to_bgr(int(rng.integers(5, 25)), rng.uniform(40, 200), rng.uniform(20, 110))
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


def _hsv_to_bgr(hue: int, saturation: float, value: float) -> tuple[int, int, int]:
    hsv = np.array([[[hue, int(saturation), int(value)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


@dataclass(frozen=True)
class Camera:
    yaw: float  # radians the scene is rotated by, seen from this camera
    distance: float  # metres from the camera to the scene centre
    height: float  # camera height above the floor, metres
    lateral: float  # scene centre offset to the right, metres
    focal: float  # pixels
    centre: tuple[float, float]  # principal point, pixels


def make_camera(setup: int, camera: int, subject: int, *, seed: int, frame_size: tuple[int, int]) -> Camera:
    width, height = frame_size
    rig = np.random.default_rng([seed, 202, setup, camera])  # same for everyone filmed in this setup
    place = np.random.default_rng([seed, 303, setup, subject])  # where this performer stands
    return Camera(
        yaw=np.radians(CAMERA_YAW_DEG[camera] + rig.uniform(-6, 6)),
        distance=rig.uniform(2.9, 3.3) + place.uniform(-0.3, 0.3),
        height=rig.uniform(0.85, 1.05),
        lateral=place.uniform(-0.25, 0.25),
        focal=height * rig.uniform(1.15, 1.3),
        centre=(width / 2 + width * rig.uniform(-0.05, 0.05), height / 2 + height * rig.uniform(-0.03, 0.05)),
    )


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


def to_camera(scene: np.ndarray, camera: Camera) -> np.ndarray:
    """Scene frame -> camera space (metres; x right, y up, z depth), the `.skeleton` x, y, z."""
    out = np.empty_like(scene)
    c, s = np.cos(camera.yaw), np.sin(camera.yaw)
    out[..., 0] = scene[..., 0] * c - scene[..., 2] * s + camera.lateral
    out[..., 1] = scene[..., 1] - camera.height
    out[..., 2] = scene[..., 0] * s + scene[..., 2] * c + camera.distance
    return out


def project(points: np.ndarray, *, focal: float, centre: tuple[float, float]) -> np.ndarray:
    """(..., 3) camera-space metres -> (..., 2) pixels (u right, v down)."""
    z = points[..., 2]
    return np.stack([centre[0] + focal * points[..., 0] / z, centre[1] - focal * points[..., 1] / z], -1)


# --------------------------------------------------------------------------------------------------
# Motions. Each takes the frame times t (seconds, (T,)), the clip progress u in [0, 1], the speed and
# a per-sample generator, and returns the poses of one or two persons with their scene positions.


@dataclass
class Actor:
    pose: dict[str, np.ndarray]
    position: np.ndarray  # (T, 2) scene (X, Z) of the person's root
    body_offset: int = 0  # 0: the performer P; 1: the partner in two-person actions


def _smoothstep(u: np.ndarray, start: float, end: float) -> np.ndarray:
    x = np.clip((u - start) / (end - start), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _bump(u: np.ndarray, start: float, peak_start: float, peak_end: float, end: float) -> np.ndarray:
    """0 -> 1 over [start, peak_start], 1 until peak_end, back to 0 by end."""
    return _smoothstep(u, start, peak_start) * (1 - _smoothstep(u, peak_end, end))


def _still(frames: int) -> np.ndarray:
    return np.zeros((frames, 2))


def motion_clapping(t, u, speed, rng):
    pose = neutral_pose(len(t))
    raise_ = _smoothstep(u, 0.0, 0.15)
    clap = 0.5 + 0.5 * np.cos(2 * np.pi * 2.2 * speed * t + rng.uniform(0, 2 * np.pi))  # 1 = apart
    for side in "lr":
        pose[f"{side}_up_a"] = 8 + 10 * raise_
        pose[f"{side}_up_f"] = 40 * raise_
        pose[f"{side}_fo_a"] = 6 + (-58 + 42 * clap - 6) * raise_
        pose[f"{side}_fo_f"] = 12 + 68 * raise_
    return [Actor(pose, _still(len(t)))]


def motion_hand_waving(t, u, speed, rng):
    pose = neutral_pose(len(t))
    up = _bump(u, 0.0, 0.18, 0.88, 1.0)
    wave = np.sin(2 * np.pi * 1.8 * speed * t + rng.uniform(0, 2 * np.pi))
    pose["r_up_a"] = 8 + 100 * up
    pose["r_up_f"] = 15 * up
    pose["r_fo_a"] = 6 + (160 + 28 * wave) * up
    pose["r_fo_f"] = 12 + 8 * up
    return [Actor(pose, _still(len(t)))]


def motion_kicking(t, u, speed, rng):
    pose = neutral_pose(len(t))
    centre = rng.uniform(0.4, 0.6)
    lift = _bump(u, centre - 0.28, centre - 0.05, centre + 0.02, centre + 0.25)
    extend = _bump(u, centre - 0.1, centre - 0.02, centre + 0.02, centre + 0.12)
    pose["r_th_f"] = 75 * lift
    pose["r_sh_f"] = 75 * lift - 85 * lift * (1 - extend)
    pose["bend"] = -12 * lift
    for side in "lr":
        pose[f"{side}_up_a"] = 8 + 22 * lift
    return [Actor(pose, _still(len(t)))]


def motion_jump_up(t, u, speed, rng):
    pose = neutral_pose(len(t))
    phase = (1.6 * speed * t / (BASE_FRAMES / FPS) + rng.uniform(0.0, 0.2)) % 1.0  # ~1.6 jumps per clip
    crouch = _bump(phase, 0.05, 0.25, 0.3, 0.42) + _bump(phase, 0.7, 0.78, 0.8, 0.95)
    air = np.sin(np.pi * np.clip((phase - 0.38) / 0.34, 0, 1))  # airborne between 0.38 and 0.72
    pose["lift"] = 0.38 * air
    for side in "lr":
        pose[f"{side}_th_f"] = 60 * crouch
        pose[f"{side}_sh_f"] = -45 * crouch
        pose[f"{side}_up_f"] = -35 * crouch + 150 * air
        pose[f"{side}_fo_f"] = 12 - 20 * crouch + 150 * air
        pose[f"{side}_up_a"] = 8 + 10 * air
    pose["bend"] = 25 * crouch
    return [Actor(pose, _still(len(t)))]


def motion_bow(t, u, speed, rng):
    pose = neutral_pose(len(t))
    first = rng.uniform(0.05, 0.15)
    bow = _bump(u, first, first + 0.25 / speed, first + 0.4 / speed, first + 0.7 / speed)
    pose["bend"] = 55 * bow
    pose["nod"] = 25 * bow
    for side in "lr":  # arms hang towards the floor while the torso tilts
        pose[f"{side}_up_f"] = -50 * bow
        pose[f"{side}_fo_f"] = 12 - 45 * bow
    return [Actor(pose, _still(len(t)))]


def motion_walking_towards(t, u, speed, rng):
    frames = len(t)
    start, end = rng.uniform(1.1, 1.3), rng.uniform(0.35, 0.45)
    approach = start + (end - start) * _smoothstep(u, 0.05, 0.95)
    actors = []
    for offset, direction in ((0, -1.0), (1, 1.0)):  # performer on the left walking right, partner opposite
        pose = neutral_pose(frames)
        stride = np.sin(2 * np.pi * 1.7 * speed * t + rng.uniform(0, 2 * np.pi))
        walking = _bump(u, 0.0, 0.08, 0.9, 1.0)
        pose["l_th_f"] = 25 * stride * walking
        pose["r_th_f"] = -25 * stride * walking
        pose["l_sh_f"] = pose["l_th_f"] - 30 * np.clip(-stride, 0, 1) * walking
        pose["r_sh_f"] = pose["r_th_f"] - 30 * np.clip(stride, 0, 1) * walking
        pose["l_up_f"] = -20 * stride * walking
        pose["r_up_f"] = 20 * stride * walking
        pose["l_fo_f"] = pose["l_up_f"] + 20
        pose["r_fo_f"] = pose["r_up_f"] + 20
        pose["yaw"][:] = -90 * direction
        position = np.stack([direction * approach, np.full(frames, rng.uniform(-0.1, 0.1))], -1)
        actors.append(Actor(pose, position, body_offset=offset))
    return actors


def motion_squat_down(t, u, speed, rng):
    pose = neutral_pose(len(t))
    down_at = rng.uniform(0.1, 0.2)
    squat = _bump(u, down_at, down_at + 0.28 / speed, down_at + 0.5 / speed, down_at + 0.75 / speed)
    for side in "lr":
        pose[f"{side}_th_f"] = 95 * squat
        pose[f"{side}_th_a"] = 3 + 12 * squat
        pose[f"{side}_sh_f"] = -25 * squat
        pose[f"{side}_up_f"] = 80 * squat
        pose[f"{side}_fo_f"] = 12 + 70 * squat
    pose["bend"] = 30 * squat
    return [Actor(pose, _still(len(t)))]


def motion_hands_up(t, u, speed, rng):
    pose = neutral_pose(len(t))
    start = rng.uniform(0.05, 0.2)
    up = _smoothstep(u, start, start + 0.3 / speed)
    for side in "lr":
        pose[f"{side}_up_a"] = 8 + 165 * up
        pose[f"{side}_fo_a"] = 6 + 170 * up
        pose[f"{side}_up_f"] = 10 * up
        pose[f"{side}_fo_f"] = 12 - 2 * up
    return [Actor(pose, _still(len(t)))]


def motion_arm_circles(t, u, speed, rng):
    pose = neutral_pose(len(t))
    out = _smoothstep(u, 0.0, 0.15)
    angle = 2 * np.pi * 1.5 * speed * t + rng.uniform(0, 2 * np.pi)
    for side in "lr":
        pose[f"{side}_up_a"] = 8 + (82 + 28 * np.sin(angle)) * out
        pose[f"{side}_up_f"] = 30 * np.cos(angle) * out
        pose[f"{side}_fo_a"] = 6 + (84 + 30 * np.sin(angle)) * out
        pose[f"{side}_fo_f"] = 12 + (32 * np.cos(angle) - 12) * out
    return [Actor(pose, _still(len(t)))]


def motion_running_on_the_spot(t, u, speed, rng):
    pose = neutral_pose(len(t))
    step = np.sin(2 * np.pi * 2.4 * speed * t + rng.uniform(0, 2 * np.pi))
    run = _smoothstep(u, 0.0, 0.1)
    left, right = np.clip(step, 0, 1) * run, np.clip(-step, 0, 1) * run
    pose["l_th_f"], pose["r_th_f"] = 70 * left, 70 * right
    pose["l_sh_f"], pose["r_sh_f"] = -30 * left, -30 * right
    pose["l_up_f"], pose["r_up_f"] = -35 * step * run, 35 * step * run
    pose["l_fo_f"] = pose["l_up_f"] + 85 * run
    pose["r_fo_f"] = pose["r_up_f"] + 85 * run
    pose["lift"] = 0.04 * np.abs(step) * run
    return [Actor(pose, _still(len(t)))]


def motion_jumping_jacks(t, u, speed, rng):
    pose = neutral_pose(len(t))
    open_ = 0.5 - 0.5 * np.cos(2 * np.pi * 1.3 * speed * t + rng.uniform(0, 1))
    for side in "lr":
        pose[f"{side}_up_a"] = 8 + 160 * open_
        pose[f"{side}_fo_a"] = 6 + 170 * open_
        pose[f"{side}_th_a"] = 3 + 14 * open_
        pose[f"{side}_sh_a"] = 3 + 14 * open_
    pose["lift"] = 0.08 * np.abs(np.sin(2 * np.pi * 1.3 * speed * t))
    return [Actor(pose, _still(len(t)))]


def motion_jump_rope(t, u, speed, rng):
    pose = neutral_pose(len(t))
    angle = 2 * np.pi * 2.0 * speed * t + rng.uniform(0, 2 * np.pi)
    pose["lift"] = 0.1 * np.clip(np.sin(angle), 0, 1)
    for side in "lr":
        pose[f"{side}_up_a"] = 20.0 + 0 * t
        pose[f"{side}_fo_a"] = 40 + 15 * np.cos(angle)
        pose[f"{side}_fo_f"] = 30 + 25 * np.sin(angle)
        pose[f"{side}_th_f"] = 10 * np.clip(np.sin(angle), 0, 1)
    return [Actor(pose, _still(len(t)))]


def motion_sitting_down(t, u, speed, rng):
    pose = neutral_pose(len(t))
    start = rng.uniform(0.1, 0.25)
    seated = _smoothstep(u, start, start + 0.45 / speed)  # 0 standing -> 1 seated on an (invisible) chair
    lean = np.sin(np.pi * seated)  # the torso leans forward while the weight moves, upright at both ends
    for side in "lr":
        pose[f"{side}_th_f"] = 88 * seated
        pose[f"{side}_th_a"] = 3 + 7 * seated
        pose[f"{side}_sh_f"] = -4 * seated
        pose[f"{side}_up_f"] = 15 * seated + 30 * lean
        pose[f"{side}_fo_f"] = 12 + 45 * seated + 20 * lean  # hands come to rest on the thighs
    pose["bend"] = 8 * seated + 32 * lean
    return [Actor(pose, _still(len(t)))]


def time_reversed(motion: Motion) -> Motion:
    """The exact reverse of `motion` (same draws, frames in the opposite order): e.g. standing up from sitting down."""

    def reversed_motion(t, u, speed, rng):
        actors = motion(t, u, speed, rng)
        return [Actor({name: angles[::-1].copy() for name, angles in actor.pose.items()}, actor.position[::-1].copy(),
                      body_offset=actor.body_offset) for actor in actors]

    return reversed_motion


Motion = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], list[Actor]]
NTU_MOTIONS: dict[int, Motion] = {
    8: motion_sitting_down,  # sitting down
    9: time_reversed(motion_sitting_down),  # standing up (from sitting position)
    10: motion_clapping,  # clapping
    23: motion_hand_waving,  # hand waving
    24: motion_kicking,  # kicking something
    27: motion_jump_up,  # jump up
    35: motion_bow,  # nod head/bow
    59: motion_walking_towards,  # walking towards each other
    80: motion_squat_down,  # squat down
    95: motion_hands_up,  # hands up (both hands)
    97: motion_arm_circles,  # arm circles
    99: motion_running_on_the_spot,  # running on the spot
}
PENN_MOTIONS: dict[str, Motion] = {
    "jumping_jacks": motion_jumping_jacks,
    "jump_rope": motion_jump_rope,
    "squat": motion_squat_down,
}


# --------------------------------------------------------------------------------------------------
# Rendering


def make_background(setup: int, camera: int, *, seed: int, frame_size: tuple[int, int]) -> np.ndarray:
    """A room: a wall with a gentle gradient and blotchy texture, a darker floor, a few furniture blocks."""
    width, height = frame_size
    rng = np.random.default_rng([seed, 404, setup, camera])
    wall = np.array(_hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(20, 70), rng.uniform(150, 210)), np.float32)
    floor = np.array(_hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(30, 90), rng.uniform(70, 120)), np.float32)
    rows = np.linspace(0.9, 1.1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(wall * rows, (height, width, 3)).copy()
    horizon = int(height * rng.uniform(0.62, 0.72))
    image[horizon:] = floor * np.linspace(0.9, 1.15, height - horizon, dtype=np.float32)[:, None, None]
    for _ in range(int(rng.integers(2, 4))):
        x0, w = int(rng.integers(0, width)), int(width * rng.uniform(0.08, 0.2))
        top = int(horizon - height * rng.uniform(0.1, 0.35))
        shade = np.array(_hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(30, 120), rng.uniform(60, 160)))
        image[top:horizon, x0 : x0 + w] = shade
    texture = cv2.resize(rng.normal(0, 1, (height // 8 + 1, width // 8 + 1)).astype(np.float32), (width, height))
    image += 9 * texture[..., None] + rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _limb_list(body: Body) -> list[tuple[int, int, float, tuple[int, int, int]]]:
    s = body.scale
    return [
        (20, 2, 0.09 * s, body.skin),
        (4, 5, 0.10 * s, body.shirt), (5, 6, 0.075 * s, body.skin), (6, 7, 0.07 * s, body.skin),
        (7, 21, 0.05 * s, body.skin),
        (8, 9, 0.10 * s, body.shirt), (9, 10, 0.075 * s, body.skin), (10, 11, 0.07 * s, body.skin),
        (11, 23, 0.05 * s, body.skin),
        (12, 13, 0.15 * s, body.trousers), (13, 14, 0.11 * s, body.trousers), (14, 15, 0.08 * s, body.shoes),
        (16, 17, 0.15 * s, body.trousers), (17, 18, 0.11 * s, body.trousers), (18, 19, 0.08 * s, body.shoes),
    ]  # fmt: skip


SHIFT = 4  # cv2 drawing with 4 fractional bits: joints are drawn at their exact sub-pixel positions


def draw_people(image: np.ndarray, people: list[tuple[Body, np.ndarray, np.ndarray]], *, focal: float) -> None:
    """Draw each (body, camera-space joints (25, 3), pixels (25, 2)), far parts first."""
    items = []  # (depth, kind, data)
    for body, points, pixels in people:
        depth = points[:, 2]
        fixed = np.round(pixels * (1 << SHIFT)).astype(np.int32).tolist()
        torso = [fixed[j] for j in (4, 8, 16, 12)]  # shoulders and hips
        items.append((float(depth[[4, 8, 16, 12]].mean()) + 0.02, "poly", (torso, body.shirt)))
        limbs = _limb_list(body)
        ends = np.array([(a, b) for a, b, _, _ in limbs])  # (limbs, 2)
        limb_depth = depth[ends].mean(1)  # (limbs,)
        widths = np.array([w for _, _, w, _ in limbs])
        thickness = np.maximum(1, np.round(widths * focal / limb_depth)).astype(int).tolist()
        for (a, b, _, colour), z, px in zip(limbs, limb_depth.tolist(), thickness):
            items.append((z, "line", (fixed[a], fixed[b], px, colour)))
        radius = int(round(0.11 * body.scale * focal / depth[3] * (1 << SHIFT)))
        items.append((float(depth[3]), "head", (fixed[3], radius, body.skin, body.hair)))
    for _, kind, data in sorted(items, key=lambda item: -item[0]):
        if kind == "poly":
            cv2.fillConvexPoly(image, np.array(data[0], np.int32), data[1], cv2.LINE_AA, SHIFT)
        elif kind == "line":
            a, b, thickness, colour = data
            cv2.line(image, tuple(a), tuple(b), colour, thickness, cv2.LINE_AA, SHIFT)
        else:
            centre, radius, skin, hair = data
            centre = tuple(centre)
            cv2.circle(image, centre, radius, skin, -1, cv2.LINE_AA, SHIFT)
            cv2.ellipse(image, centre, (radius, radius), 0, 180, 360, hair, -1, cv2.LINE_AA, SHIFT)


# --------------------------------------------------------------------------------------------------
# One sample


@dataclass
class RenderedSample:
    frames: np.ndarray  # (T, H, W, 3) uint8 BGR
    camera_points: np.ndarray  # (T, persons, 25, 3) metres
    pixels: np.ndarray  # (T, persons, 25, 2) colorX, colorY as drawn
    tracking: np.ndarray  # (T, persons, 25) int 0/1/2


def render_sample(
    motion: Motion,
    *,
    subject: int,
    camera: Camera,
    background: np.ndarray,
    rng: np.random.Generator,
    seed: int,
) -> RenderedSample:
    height, width = background.shape[:2]
    speed = rng.uniform(0.8, 1.25)
    frames = int(round(BASE_FRAMES * rng.uniform(0.9, 1.2) / speed ** 0.5))
    t = np.arange(frames) / FPS
    u = np.linspace(0.0, 1.0, frames)
    actors = motion(t, u, speed, rng)
    sway = rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6.3))
    points, bodies = [], []
    for actor in actors:
        body = make_body(subject + 1000 * actor.body_offset, seed=seed)
        actor.pose["shift_x"] = actor.pose["shift_x"] + sway
        local = body_joints(body, actor.pose)
        local += rng.normal(0, 0.006, local.shape)  # tremor / tracking jitter, metres
        yaw = actor.pose["yaw"] + rng.uniform(-12, 12)
        scene = place_in_scene(local, yaw_deg=yaw, position=actor.position)
        points.append(to_camera(scene, camera))
        bodies.append(body)
    camera_points = np.stack(points, axis=1)  # (T, persons, 25, 3)
    pixels = project(camera_points, focal=camera.focal, centre=camera.centre)  # (T, persons, 25, 2)
    # Quantise to the drawing grid so colorX/colorY are exactly where cv2 drew the joint.
    pixels = np.round(pixels * (1 << SHIFT)) / (1 << SHIFT)
    tracking = np.full(pixels.shape[:3], 2, np.int64)
    flaky = np.zeros(pixels.shape[:3], bool)
    flaky[..., list(EXTREMITIES)] = rng.random((*pixels.shape[:2], len(EXTREMITIES))) < 0.03
    outside = (pixels[..., 0] < 0) | (pixels[..., 0] >= width) | (pixels[..., 1] < 0) | (pixels[..., 1] >= height)
    tracking[flaky | outside] = 1
    noise_bank = rng.integers(0, 7, (4, height, width, 3), dtype=np.uint8)
    video = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        image = background.copy()
        draw_people(
            image,
            [(bodies[p], camera_points[i, p], pixels[i, p]) for p in range(len(bodies))],
            focal=camera.focal,
        )
        image = cv2.add(image, noise_bank[i % 4])
        video[i] = cv2.subtract(image, noise_bank[(i + 2) % 4])
    return RenderedSample(frames=video, camera_points=camera_points, pixels=pixels, tracking=tracking)


def _quaternions(points: np.ndarray) -> np.ndarray:
    """(T, 25, 4) (w, x, y, z): shortest-arc rotation from +y to each bone; zeros on leaf joints."""
    bone = points - points[:, list(PARENT)]
    bone[:, 0] = points[:, 1] - points[:, 0]  # the root takes the spine's direction
    bone /= np.linalg.norm(bone, axis=-1, keepdims=True) + 1e-9
    quat = np.stack([1.0 + bone[..., 1] + 1e-6, bone[..., 2], np.zeros(bone.shape[:2]), -bone[..., 0]], -1)
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    quat[:, list(LEAF_JOINTS)] = 0.0
    return quat


def skeleton_text(sample: RenderedSample, *, body_ids: Sequence[int], rng: np.random.Generator) -> str:
    """The `.skeleton` file for a rendered sample, in the official format (colorX/colorY in 1920x1080)."""
    frames, persons = sample.pixels.shape[:2]
    depth_xy = project(sample.camera_points, focal=DEPTH_FOCAL, centre=DEPTH_CENTRE)
    height, width = sample.frames.shape[1:3]
    color_xy = sample.pixels * np.array([KINECT_COLOR_SIZE[0] / width, KINECT_COLOR_SIZE[1] / height])
    quats = [_quaternions(sample.camera_points[:, p]) for p in range(persons)]
    lines = [str(frames)]
    joint_format = " ".join(["%.7g"] * 11) + " %d"
    hand_states = rng.integers(1, 4, (persons, 2))
    for i in range(frames):
        lines.append(str(persons))
        for p in range(persons):
            lean = sample.camera_points[i, p, 20, [0, 2]] - sample.camera_points[i, p, 0, [0, 2]]
            lines.append(
                f"{body_ids[p]} 0 1 {hand_states[p, 0]} 1 {hand_states[p, 1]} 0 "
                f"{lean[0]:.7g} {lean[1]:.7g} 2"
            )
            lines.append(str(NUM_JOINTS))
            for j in range(NUM_JOINTS):
                x, y, z = sample.camera_points[i, p, j]
                lines.append(
                    joint_format
                    % (x, y, z, *depth_xy[i, p, j], *color_xy[i, p, j], *quats[p][i, j], sample.tracking[i, p, j])
                )
    return "\n".join(lines) + "\n"


def write_video(path: Path, frames: np.ndarray) -> None:
    """Write BGR frames as MJPG in AVI (always available in opencv-python-headless)."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    if not writer.isOpened():
        raise StarError(f"OpenCV cannot write the MJPG video {path}; check the folder is writable.")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


# --------------------------------------------------------------------------------------------------
# Datasets


def synthetic_sample_names(
    *, actions: Sequence[int], samples_per_class: int, subjects: Sequence[int], cameras: Sequence[int]
) -> list[NtuName]:
    """Spread each class's samples evenly over subjects, cameras, two setups and two replications."""
    names = []
    for action in actions:
        setups = SETUPS_NTU60 if action <= NTU60_LAST_ACTION else SETUPS_NTU120
        combos = len(subjects) * len(cameras) * len(setups) * 2
        if samples_per_class > combos:
            raise StarError(
                f"{samples_per_class} samples per class need more than {len(subjects)} subjects x "
                f"{len(cameras)} cameras x 2 setups x 2 replications; add subjects or cameras."
            )
        chosen: dict[tuple, None] = {}
        k = 0
        while len(chosen) < samples_per_class:
            subject = subjects[k % len(subjects)]
            camera = cameras[(k + k // len(subjects)) % len(cameras)]
            setup = setups[(k // 2 + k // (len(subjects) * len(cameras))) % 2]
            replication = 1 + (k // (len(subjects) * len(cameras) * 2)) % 2
            chosen.setdefault((setup, camera, subject, replication), None)
            k += 1
        names.extend(NtuName(s, c, p, r, action) for s, c, p, r in chosen)
    return names


def generate_ntu_dataset(
    root: Path,
    *,
    samples_per_class: int = 10,
    actions: Sequence[int] = SYNTHETIC_ACTIONS,
    subjects: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
    cameras: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    frame_size: tuple[int, int] = (320, 180),
) -> list[str]:
    """Write a generated dataset in the NTU RGB+D layout under `root`; returns the sample ids.

    Defaults: 10 classes x 10 samples; subjects 1-8 (ntu60/ntu120 xsub: 1, 2, 4, 5, 8 train; 3, 6, 7
    test), cameras 1-3 (xview: C001 test), setups S001/S002 or S018/S019 (xset: even train).
    frame_size is (width, height).
    """
    unknown = [a for a in actions if a not in NTU_MOTIONS]
    if unknown:
        raise StarError(f"No synthetic motion for actions {unknown}; available: {sorted(NTU_MOTIONS)}.")
    bad_cameras = [c for c in cameras if c not in CAMERA_YAW_DEG]
    if bad_cameras or not subjects or samples_per_class < 1:
        raise StarError("Cameras must be 1-3, subjects non-empty and samples_per_class >= 1.")
    root = Path(root)
    video_dir, skeleton_dir = root / "nturgb+d_rgb", root / "nturgb+d_skeletons"
    video_dir.mkdir(parents=True, exist_ok=True)
    skeleton_dir.mkdir(parents=True, exist_ok=True)
    backgrounds: dict[tuple[int, int], np.ndarray] = {}
    ids = []
    names = synthetic_sample_names(
        actions=actions, samples_per_class=samples_per_class, subjects=subjects, cameras=cameras
    )
    for name in names:
        rng = np.random.default_rng([seed, name.setup, name.camera, name.subject, name.replication, name.action])
        key = (name.setup, name.camera)
        if key not in backgrounds:
            backgrounds[key] = make_background(name.setup, name.camera, seed=seed, frame_size=frame_size)
        camera = make_camera(name.setup, name.camera, name.subject, seed=seed, frame_size=frame_size)
        sample = render_sample(
            NTU_MOTIONS[name.action], subject=name.subject, camera=camera, background=backgrounds[key],
            rng=rng, seed=seed,
        )  # fmt: skip
        body_ids = [72057594037927936 + int(rng.integers(1_000, 1_000_000)) for _ in range(sample.pixels.shape[1])]
        text = skeleton_text(sample, body_ids=body_ids, rng=rng)
        write_video(video_dir / f"{name.sample_id}_rgb.avi", sample.frames)
        (skeleton_dir / f"{name.sample_id}.skeleton").write_text(text, encoding="ascii")
        ids.append(name.sample_id)
    return ids


PENN_FROM_NTU = (3, 4, 8, 5, 9, 6, 10, 12, 16, 13, 17, 14, 18)  # Penn joint j = NTU joint PENN_FROM_NTU[j]


def generate_penn_dataset(
    root: Path,
    *,
    videos_per_class: int = 2,
    classes: Sequence[str] = tuple(PENN_MOTIONS),
    seed: int = 0,
    frame_size: tuple[int, int] = (160, 120),
) -> list[str]:
    """Write a generated dataset in the Penn Action layout under `root`; returns the video ids.

    Videos alternate train (1) / test (-1), starting with train, within each class.
    """
    unknown = [c for c in classes if c not in PENN_MOTIONS]
    if unknown:
        raise StarError(f"No synthetic motion for Penn classes {unknown}; available: {sorted(PENN_MOTIONS)}.")
    root = Path(root)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    ids = []
    number = 0
    for action in classes:
        for k in range(videos_per_class):
            number += 1
            video_id = f"{number:04d}"
            subject = 1 + k
            camera_number = 1 + k % 3
            rng = np.random.default_rng([seed, 505, number])
            background = make_background(number, camera_number, seed=seed, frame_size=frame_size)
            camera = make_camera(number, camera_number, subject, seed=seed, frame_size=frame_size)
            sample = render_sample(
                PENN_MOTIONS[action], subject=subject, camera=camera, background=background, rng=rng, seed=seed
            )
            frame_dir = root / "frames" / video_id
            frame_dir.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(sample.frames, start=1):
                if not cv2.imwrite(str(frame_dir / f"{i:06d}.jpg"), frame):
                    raise StarError(f"OpenCV cannot write {frame_dir / f'{i:06d}.jpg'}; check the folder is writable.")
            pixels = sample.pixels[:, 0, list(PENN_FROM_NTU)]  # (T, 13, 2)
            width, height = frame_size
            inside = (pixels >= 0).all(-1) & (pixels[..., 0] < width) & (pixels[..., 1] < height)
            visible = inside & (rng.random(inside.shape) > 0.05)
            frames = len(pixels)
            scipy.io.savemat(
                root / "labels" / f"{video_id}.mat",
                {
                    "action": action,
                    "pose": "front",
                    "x": pixels[..., 0].astype(np.float64),
                    "y": pixels[..., 1].astype(np.float64),
                    "visibility": visible,
                    "train": np.array([[1 if k % 2 == 0 else -1]]),
                    "bbox": np.stack(
                        [pixels[..., 0].min(1), pixels[..., 1].min(1), pixels[..., 0].max(1), pixels[..., 1].max(1)],
                        -1,
                    ),
                    "dimensions": np.array([[height, width, frames]]),
                    "nframes": np.array([[frames]]),
                },
            )
            ids.append(video_id)
    return ids
