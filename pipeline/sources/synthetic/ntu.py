"""The generated dataset in the NTU RGB+D layout: `<id>_rgb.avi` videos and `.skeleton` files in the official
text format (colorX/colorY in the 1920x1080 Kinect colour frame, like the real files), under proper sample names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.datasets.ntu import NTU60_LAST_ACTION, NtuName
from pipeline.sources.datasets.ntu_skeleton import KINECT_COLOR_SIZE
from pipeline.sources.synthetic.body import (
    LEAF_JOINTS,
    NUM_JOINTS,
    PARENT,
)
from pipeline.sources.synthetic.motions import (
    NTU_MOTIONS,
    SYNTHETIC_ACTIONS,
)
from pipeline.sources.synthetic.render import (
    CAMERA_YAW_DEG,
    RenderedSample,
    make_background,
    make_camera,
    project,
    render_sample,
    write_video,
)

DEPTH_FOCAL, DEPTH_CENTRE = 365.0, (256.0, 212.0)  # a Kinect v2-like 512x424 depth camera

SETUPS_NTU60 = (1, 2)  # an odd (xset test) and an even (xset train) setup per group


SETUPS_NTU120 = (18, 19)


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
            lines.append(f"{body_ids[p]} 0 1 {hand_states[p, 0]} 1 {hand_states[p, 1]} 0 {lean[0]:.7g} {lean[1]:.7g} 2")
            lines.append(str(NUM_JOINTS))
            for j in range(NUM_JOINTS):
                x, y, z = sample.camera_points[i, p, j]
                lines.append(
                    joint_format
                    % (x, y, z, *depth_xy[i, p, j], *color_xy[i, p, j], *quats[p][i, j], sample.tracking[i, p, j])
                )
    return "\n".join(lines) + "\n"


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
