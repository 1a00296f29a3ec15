"""Write a small custom dataset in STAR's folder format, made from the real NTU RGB+D clip in tests/data.

    python examples/make_dataset.py mine [--clips-per-class 6] [--frames 40] [--seed 0]

Two classes from one recording of a person drinking water (1920x1080): `drink` plays a stretch of it
forwards, `reverse` plays it backwards (the cup goes down instead of up), so only the motion's direction tells
them apart, as with NTU's sitting down / standing up. Clips differ by their crop window around the person,
their start frame and a mirror flip; they are 320x180 MJPG at 15 frames/s. Written:

    mine/videos/drink_00.avi ...      the clips
    mine/manifest.csv                 video,label,split,pose (pose: poses/<clip>.json, made by `star pose`)
    mine/layout.json                  {"layout": "coco17", "persons": 1}
    mine/classes.txt                  drink, reverse

Per class the last clip is the test split, the one before it validation, the rest training. Nothing here
ships video in git: the clips are cut from the one real clip the tests already hold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

SOURCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "S001C001P001R001A001_rgb.avi"
PERSON = (960, 270, 1130, 760)  # x0, y0, x1, y1: where the person stands in the source frames
WINDOW = (960, 540)  # crop size in source pixels (16:9), resized to SIZE
SIZE = (320, 180)
CLASSES = ("drink", "reverse")


def read_source() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(SOURCE))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr)
    capture.release()
    if not frames:
        raise SystemExit(f"cannot decode {SOURCE}: run from a STAR checkout (tests/data holds the clip)")
    return frames


def make_clip(source: list[np.ndarray], *, reverse: bool, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`frames` frames at every second source frame, cropped around the person, maybe mirrored and reversed."""
    span = 2 * frames
    start = int(rng.integers(0, len(source) - span + 1))
    x0 = int(rng.integers(PERSON[2] - WINDOW[0], PERSON[0] + 1))  # the window always holds the whole person
    y0 = int(rng.integers(PERSON[3] - WINDOW[1], PERSON[1] + 1))
    mirror = bool(rng.integers(0, 2))
    clip = []
    for bgr in source[start : start + span : 2]:
        crop = cv2.resize(bgr[y0 : y0 + WINDOW[1], x0 : x0 + WINDOW[0]], SIZE, interpolation=cv2.INTER_AREA)
        clip.append(np.ascontiguousarray(crop[:, ::-1]) if mirror else crop)
    return clip[::-1] if reverse else clip


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, SIZE)
    for bgr in frames:
        writer.write(bgr)
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write")
    parser.add_argument("--clips-per-class", type=int, default=6, help="at least 3: train, val and test")
    parser.add_argument("--frames", type=int, default=40, help="frames per clip (at most 51)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clips_per_class < 3:
        parser.error("--clips-per-class must be at least 3 (train, val, test)")
    source = read_source()
    if not 8 <= 2 * args.frames <= len(source):
        parser.error(f"--frames must be between 4 and {len(source) // 2}")
    rng = np.random.default_rng(args.seed)
    (args.out / "videos").mkdir(parents=True, exist_ok=True)
    rows = ["video,label,split,pose"]
    for label in CLASSES:
        for i in range(args.clips_per_class):
            name = f"{label}_{i:02d}"
            write_video(
                args.out / "videos" / f"{name}.avi",
                make_clip(source, reverse=label == "reverse", frames=args.frames, rng=rng),
            )
            split = "test" if i == args.clips_per_class - 1 else "val" if i == args.clips_per_class - 2 else "train"
            rows.append(f"videos/{name}.avi,{label},{split},poses/{name}.json")
    (args.out / "manifest.csv").write_text("\n".join(rows) + "\n")
    (args.out / "layout.json").write_text(json.dumps({"layout": "coco17", "persons": 1}) + "\n")
    (args.out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    print(f"wrote {len(rows) - 1} clips of {len(CLASSES)} classes to {args.out}")


if __name__ == "__main__":
    main()
