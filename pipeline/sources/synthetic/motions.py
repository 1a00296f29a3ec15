"""The generated actions: one motion per class, as per-frame joint angles and scene positions of one or two persons.

Each motion takes the frame times t (seconds, (T,)), the clip progress u in [0, 1], the speed and a per-sample
generator, and returns the actors. Every class is a real NTU action whose official name matches the motion.

Classes that only the image can tell apart (`APPEARANCE_GROUPS`): drink water, eat meal/snack and brushing teeth
share one motion, the right hand raised to the mouth a few times, drawn from the same distribution; they differ
only in the object held in that hand (a red box, a yellow wedge, a cyan stick: `HeldObject`). The objects are drawn
larger than life (a 30 cm cup) so that in the demo's 64 px person crop they cover about one local-map cell (8 px);
in the frame they stay small (under 1 % of it). A skeleton-only model cannot separate these classes; features
pooled at the hand joint can, far better than the global average of the layer4 map (a linear probe: docs/design.md,
"What each input brings"). These are the classes skeleton-based models confuse most on the real NTU RGB+D.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.sources.synthetic.body import (
    neutral_pose,
)

FPS = 30.0


BASE_FRAMES = 64  # clip length at speed 1 (NTU clips average ~80 frames; shorter keeps generation fast)


# Default classes: real NTU actions whose official names describe what the figure does.
SYNTHETIC_ACTIONS = (10, 23, 24, 27, 35, 59, 80, 95, 97, 99)


# Classes drawn as exact time reverses of each other: a model blind to frame order cannot separate them.
TIME_REVERSED_PAIRS = ((8, 9),)  # sitting down / standing up (from sitting position)


# Classes with one motion and different held objects: only the RGB frames tell them apart.
APPEARANCE_GROUPS = ((1, 2, 3),)  # drink water / eat meal/snack / brushing teeth


@dataclass(frozen=True)
class HeldObject:
    """An object in the right hand, drawn over it: a box, a wedge or a stick, sized in metres (larger than life)."""

    shape: str  # "box" (upright, centred on the hand), "wedge" (a triangle), "stick" (along the hand, past its tip)
    colour: tuple[int, int, int]  # BGR
    length: float  # metres along its main axis
    width: float  # metres across


CUP = HeldObject(shape="box", colour=(40, 40, 215), length=0.30, width=0.24)
SANDWICH = HeldObject(shape="wedge", colour=(70, 200, 235), length=0.34, width=0.26)
TOOTHBRUSH = HeldObject(shape="stick", colour=(225, 205, 30), length=0.42, width=0.09)


@dataclass
class Actor:
    pose: dict[str, np.ndarray]
    position: np.ndarray  # (T, 2) scene (X, Z) of the person's root
    body_offset: int = 0  # 0: the performer P; 1: the partner in two-person actions
    held: HeldObject | None = None  # in the right hand


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


def motion_hand_to_mouth(t, u, speed, rng):
    """The right hand swings across the body and up to the mouth, and bobs there two or three times."""
    pose = neutral_pose(len(t))
    start = rng.uniform(0.0, 0.1)
    up = _bump(u, start, start + 0.22, rng.uniform(0.78, 0.88), 1.0)
    bob = 0.5 + 0.5 * np.cos(
        2 * np.pi * rng.uniform(0.7, 1.0) * speed * t + rng.uniform(0, 2 * np.pi)
    )  # 1 = at the mouth
    lift = up * (0.8 + 0.2 * bob)
    pose["r_up_a"] = 8 + 12 * up
    pose["r_up_f"] = 35 * up
    pose["r_fo_a"] = 6 - 151 * lift  # through "across the chest" (-90) to "up and in" (-145)
    pose["r_fo_f"] = 12 - 17 * lift
    pose["nod"] = -6 * up
    return [Actor(pose, _still(len(t)))]


def holding(motion: Motion, held: HeldObject) -> Motion:
    """`motion` with `held` in the performer's right hand."""

    def motion_holding(t, u, speed, rng):
        return [
            Actor(
                actor.pose, actor.position, body_offset=actor.body_offset, held=held if actor.body_offset == 0 else None
            )
            for actor in motion(t, u, speed, rng)
        ]

    return motion_holding


def time_reversed(motion: Motion) -> Motion:
    """The exact reverse of `motion` (same draws, frames in the opposite order): e.g. standing up from sitting down."""

    def reversed_motion(t, u, speed, rng):
        actors = motion(t, u, speed, rng)
        return [
            Actor(
                {name: angles[::-1].copy() for name, angles in actor.pose.items()},
                actor.position[::-1].copy(),
                body_offset=actor.body_offset,
                held=actor.held,
            )
            for actor in actors
        ]

    return reversed_motion


Motion = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], list[Actor]]


NTU_MOTIONS: dict[int, Motion] = {
    1: holding(motion_hand_to_mouth, CUP),  # drink water
    2: holding(motion_hand_to_mouth, SANDWICH),  # eat meal/snack
    3: holding(motion_hand_to_mouth, TOOTHBRUSH),  # brushing teeth
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
