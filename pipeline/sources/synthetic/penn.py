"""The generated dataset in the Penn Action layout: JPEG frame folders and `.mat` label files with the real fields."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from pipeline.core.errors import StarError
from pipeline.sources.synthetic.motions import (
    PENN_MOTIONS,
)
from pipeline.sources.synthetic.render import (
    make_background,
    make_camera,
    render_sample,
)

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
