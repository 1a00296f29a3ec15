"""Seeing the generated scene: NTU-like cameras (three views per setup), the room, the figure drawn with
anti-aliased limbs at exact sub-pixel joint positions, one sample rendered to frames, and MJPG video files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.synthetic.body import (
    EXTREMITIES,
    Body,
    body_joints,
    hsv_to_bgr,
    make_body,
    place_in_scene,
)
from pipeline.sources.synthetic.motions import (
    BASE_FRAMES,
    FPS,
    HeldObject,
    Motion,
)

CAMERA_YAW_DEG = {1: 0.0, 2: 45.0, 3: -45.0}


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


def make_background(setup: int, camera: int, *, seed: int, frame_size: tuple[int, int]) -> np.ndarray:
    """A room: a wall with a gentle gradient and blotchy texture, a darker floor, a few furniture blocks."""
    width, height = frame_size
    rng = np.random.default_rng([seed, 404, setup, camera])
    wall = np.array(hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(20, 70), rng.uniform(150, 210)), np.float32)
    floor = np.array(hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(30, 90), rng.uniform(70, 120)), np.float32)
    rows = np.linspace(0.9, 1.1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(wall * rows, (height, width, 3)).copy()
    horizon = int(height * rng.uniform(0.62, 0.72))
    image[horizon:] = floor * np.linspace(0.9, 1.15, height - horizon, dtype=np.float32)[:, None, None]
    for _ in range(int(rng.integers(2, 4))):
        x0, w = int(rng.integers(0, width)), int(width * rng.uniform(0.08, 0.2))
        top = int(horizon - height * rng.uniform(0.1, 0.35))
        shade = np.array(hsv_to_bgr(int(rng.integers(0, 180)), rng.uniform(30, 120), rng.uniform(60, 160)))
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
        for (a, b, _, colour), z, px in zip(limbs, limb_depth.tolist(), thickness, strict=True):
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


def draw_held(image: np.ndarray, held: HeldObject, points: np.ndarray, pixels: np.ndarray, *, focal: float) -> None:
    """Draw `held` over the right hand of one person: camera-space joints (25, 3) and their pixels (25, 2)."""
    hand, tip = pixels[11], pixels[23]
    scale = focal / points[11, 2]  # pixels per metre at the hand's depth
    axis = tip - hand
    axis = axis / max(float(np.linalg.norm(axis)), 1e-6)  # along the fingers
    across = np.array([-axis[1], axis[0]])
    length, width = held.length * scale, held.width * scale
    if held.shape == "box":  # upright, centred on the hand
        up, side = np.array([0.0, -1.0]), np.array([1.0, 0.0])
        corners = [
            hand + a * 0.5 * length * up + b * 0.5 * width * side for a, b in ((-1, -1), (-1, 1), (1, 1), (1, -1))
        ]
    elif held.shape == "wedge":  # a triangle from the hand past the fingertips
        corners = [hand - 0.5 * width * across, hand + 0.5 * width * across, hand + length * axis]
    else:  # stick: from behind the hand past the tip
        start, end = hand - 0.2 * length * axis, hand + 0.8 * length * axis
        corners = [
            start - 0.5 * width * across,
            start + 0.5 * width * across,
            end + 0.5 * width * across,
            end - 0.5 * width * across,
        ]
    polygon = np.round(np.array(corners) * (1 << SHIFT)).astype(np.int32)
    cv2.fillConvexPoly(image, polygon, held.colour, cv2.LINE_AA, SHIFT)


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
    frames = int(round(BASE_FRAMES * rng.uniform(0.9, 1.2) / speed**0.5))
    t = np.arange(frames) / FPS
    u = np.linspace(0.0, 1.0, frames)
    actors = motion(t, u, speed, rng)
    sway = rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6.3))
    points, bodies, held = [], [], []
    for actor in actors:
        body = make_body(subject + 1000 * actor.body_offset, seed=seed)
        actor.pose["shift_x"] = actor.pose["shift_x"] + sway
        local = body_joints(body, actor.pose)
        local += rng.normal(0, 0.006, local.shape)  # tremor / tracking jitter, metres
        yaw = actor.pose["yaw"] + rng.uniform(-12, 12)
        scene = place_in_scene(local, yaw_deg=yaw, position=actor.position)
        points.append(to_camera(scene, camera))
        bodies.append(body)
        held.append(actor.held)
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
        for p, thing in enumerate(held):
            if thing is not None:
                draw_held(image, thing, camera_points[i, p], pixels[i, p], focal=camera.focal)
        image = cv2.add(image, noise_bank[i % 4])
        video[i] = cv2.subtract(image, noise_bank[(i + 2) % 4])
    return RenderedSample(frames=video, camera_points=camera_points, pixels=pixels, tracking=tracking)


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
