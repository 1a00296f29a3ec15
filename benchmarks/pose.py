"""Pose estimation speed on the real NTU clip (1920x1080, 103 frames), measured side by side in one run.

(a) decode only: every frame through OpenCV, frames/s;
(b) `estimate_pose` (decode + BlazePose + tracking) with 1 and 2 person slots, frames/s;
(c) MC3-18 extraction of the same clip (the T frames decoded, cropped and resized, then the backbone; random
    weights cost what Kinetics weights cost) at 112 and 224 px, seconds per clip, and how many times longer
    estimating the whole clip's pose takes;
(d) torchvision's Keypoint R-CNN (the alternative that needs no extra package but a 226 MB weights download) on
    a few full-HD frames with random weights, its box score threshold at 0 so the keypoint head runs on two boxes
    as it would on two people, frames/s.
Each timing is the median of `--reps` alternating repetitions, after one warm-up. `--frames N` measures the
first N frames only, re-encoded into a temporary MJPG copy (the quick smoke run's way to keep this part short).

    python -m benchmarks.pose [--video PATH] [--frames N] [--reps 3] [--rcnn-frames 3 (0: skip)] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.sources.clips import ClipSpec, load_clip, usable_frames
from pipeline.sources.layouts import NTU25
from pipeline.sources.pose import estimate_pose
from pipeline.sources.video import iter_frames, probe_video

REAL_CLIP = Path(__file__).resolve().parents[1] / "tests" / "data" / "S001C001P001R001A001_rgb.avi"


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def decode_all(video: Path) -> int:
    return sum(1 for _ in iter_frames(video))


def first_frames_copy(video: Path, count: int, folder: Path) -> Path:
    """The first `count` frames of `video` as an MJPG AVI in `folder`, at the source's size and frame rate."""
    info = probe_video(video)
    out = folder / f"{video.stem}-first{count}.avi"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), info.fps, (info.width, info.height))
    for _, frame in zip(range(count), iter_frames(video), strict=False):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def extraction_seconds(video: Path, skeleton: np.ndarray, *, size: int, frames: int, backbone) -> float:
    info = probe_video(video)

    def run() -> None:
        clip = load_clip(
            video=video,
            skeleton=skeleton,
            usable_frames=usable_frames(info.frames, skeleton.shape[0]),
            frame_size=(info.width, info.height),
            spec=ClipSpec(frames=frames, size=size, crop="person"),
        )
        with torch.inference_mode():
            backbone(torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None])

    return _timed(run)


def keypoint_rcnn_fps(video: Path, count: int) -> float:
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    model = keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=2
    ).eval()
    frames = [
        torch.from_numpy(f).permute(2, 0, 1).float() / 255
        for _, f in zip(range(count + 1), iter_frames(video), strict=False)
    ]
    with torch.inference_mode():
        model([frames[0]])  # warm-up
        seconds = _timed(lambda: [model([frame]) for frame in frames[1:]])
    return count / seconds


def measure(video: Path, *, reps: int, rcnn_frames: int) -> dict:
    """Times every part on `video`, prints them, and returns the figures (also printed as one JSON line)."""
    warnings.filterwarnings("ignore", message="MC3_18Backbone uses RANDOM weights")
    from pipeline.extraction.weights import load_backbone

    backbone = load_backbone("random")
    frames = decode_all(video)
    skeleton = estimate_pose(video, layout=NTU25, persons=2).keypoints  # warm-up, and the crop's skeleton
    times: dict[str, list[float]] = {k: [] for k in ("decode", "pose1", "pose2", "extract112", "extract224")}
    for _ in range(reps):
        times["decode"].append(_timed(lambda: decode_all(video)))
        times["pose1"].append(estimate_pose(video, persons=1).seconds)
        times["pose2"].append(estimate_pose(video, persons=2).seconds)
        times["extract112"].append(extraction_seconds(video, skeleton, size=112, frames=16, backbone=backbone))
        times["extract224"].append(extraction_seconds(video, skeleton, size=224, frames=16, backbone=backbone))
    median = {k: statistics.median(v) for k, v in times.items()}
    info = probe_video(video)
    result = {
        "video": str(video), "frames": frames, "frame_size": [info.width, info.height],
        "torch_threads": torch.get_num_threads(),
        "decode_fps": frames / median["decode"],
        "pose_fps_1_person": frames / median["pose1"],
        "pose_fps_2_persons": frames / median["pose2"],
        "extract_seconds_112": median["extract112"],
        "extract_seconds_224": median["extract224"],
        "pose_over_extract_112": median["pose1"] / median["extract112"],
        "pose_over_extract_224": median["pose1"] / median["extract224"],
        "keypoint_rcnn_fps": keypoint_rcnn_fps(video, rcnn_frames) if rcnn_frames > 0 else None,
    }  # fmt: skip
    print(f"clip: {video.name}, {frames} frames at {info.width}x{info.height}; median of {reps} reps")
    print(f"decode only:                    {result['decode_fps']:7.1f} frames/s")
    print(
        f"BlazePose, 1 person (+decode):  {result['pose_fps_1_person']:7.1f} frames/s "
        f"({median['pose1']:.2f} s for the clip)"
    )
    print(f"BlazePose, 2 persons (+decode): {result['pose_fps_2_persons']:7.1f} frames/s")
    for size in (112, 224):
        print(
            f"MC3-18 extraction, T 16, {size} px: {median[f'extract{size}']:.2f} s per clip; estimating the clip's "
            f"pose takes {result[f'pose_over_extract_{size}']:.1f}x that"
        )
    if result["keypoint_rcnn_fps"] is not None:
        print(f"Keypoint R-CNN (random weights, 1080p, 2 boxes): {result['keypoint_rcnn_fps']:.2f} frames/s")
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=REAL_CLIP)
    parser.add_argument("--frames", type=int, help="measure only the first N frames (at least 16, the clip length)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rcnn-frames", type=int, default=3, help="0 skips the Keypoint R-CNN part")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.frames is not None and args.frames < 16:
        parser.error("--frames must be at least 16: the extraction part reads a 16-frame clip")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video if args.frames is None else first_frames_copy(args.video, args.frames, Path(tmp))
        result = measure(video, reps=args.reps, rcnn_frames=args.rcnn_frames)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
