"""Benchmark: bytes per clip of the feature cache, float16 (lossless zstd) vs. opt-in 8-bit.

Feeds real MC3-18 maps (torchvision architecture, random weights, eval mode) of synthetic-looking clips (a textured
background, two moving stick figures, sensor noise; rendered at 320x240 and resized to S x S by
`pipeline.sources.geometry`) plus their joint heatmaps into a real `FeatureCache` twice, and reports bytes per clip on
disk, the 8-bit relative error ||x - deq(q(x))|| / ||x|| per array, and write/read milliseconds per clip.

Caveat: Kinetics-400 weights give sparser layer3/layer4 maps than random weights (more exact zeros after ReLU), so
real caches compress better than measured here; these are upper bounds for the same shapes.

    python -m benchmarks.cache_size [--clips 4] [--frames 16] [--size 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import zarr

from model.backbone import MC3_18Backbone
from model.tokens import joint_heatmaps, joints_to_cells
from pipeline.extraction.cache_layout import CacheLayout
from pipeline.extraction.store import MAP_NAMES, FeatureCache
from pipeline.sources.geometry import clip_geometry

PERSONS, JOINTS = 2, 25
# NTU parent of each joint (1-based, official MATLAB demo), to draw the limbs.
NTU_PARENTS = [2, 1, 21, 3, 21, 5, 6, 7, 21, 9, 10, 11, 1, 13, 14, 15, 1, 17, 18, 19, 2, 8, 8, 12, 12]
# A standing pose in body units (x right, y down, origin at the spine base), NTU joint order.
REST_POSE = np.array(
    [
        [0, 0],
        [0, -1.2],
        [0, -2.4],
        [0, -3.0],
        [-0.7, -2.2],
        [-0.9, -1.2],
        [-1.0, -0.3],
        [-1.0, -0.1],
        [0.7, -2.2],
        [0.9, -1.2],
        [1.0, -0.3],
        [1.0, -0.1],
        [-0.4, 0.1],
        [-0.45, 1.5],
        [-0.5, 2.8],
        [-0.6, 3.0],
        [0.4, 0.1],
        [0.45, 1.5],
        [0.5, 2.8],
        [0.6, 3.0],
        [0, -2.2],
        [-1.05, 0.1],
        [-0.9, 0.0],
        [1.05, 0.1],
        [0.9, 0.0],
    ],
    dtype=np.float64,
)  # (25, 2)


def render_clip(
    *, rng: np.random.Generator, frames: int, width: int = 320, height: int = 240
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and skeleton (T, persons, joints, 3) in original pixel indices."""
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    colour_a, colour_b = rng.uniform(40, 200, size=(2, 3))
    background = colour_a * (1 - xx[..., None]) + colour_b * yy[..., None]  # (H, W, 3) gradient
    texture = cv2.resize(
        rng.normal(0, 25, size=(height // 16, width // 16, 3)), (width, height), interpolation=cv2.INTER_CUBIC
    )  # low-frequency "scene" texture
    background = background + texture
    centres = np.array([[width * 0.33, height * 0.62], [width * 0.68, height * 0.6]])
    scales = rng.uniform(17, 24, size=PERSONS)
    clothes = rng.uniform(0, 255, size=(PERSONS, 3))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    skeleton = np.zeros((frames, PERSONS, JOINTS, 3), dtype=np.float32)
    for t in range(frames):
        canvas = background.copy()
        for p in range(PERSONS):
            pose = REST_POSE.copy()
            wave = np.sin(2 * np.pi * (t / frames + p * 0.3))
            pose[5:8] += [-0.3 * wave, -0.9 - 0.6 * wave]  # left arm waves
            pose[21:23] += [-0.3 * wave, -0.9 - 0.6 * wave]
            centre = centres[p] + [4.0 * t * (1 if p == 0 else -1), 0]  # the two walk towards each other
            points = pose * scales[p] + centre  # (25, 2) pixels
            for joint, parent in enumerate(NTU_PARENTS):
                a, b = points[joint], points[parent - 1]
                cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), clothes[p].tolist(), 5)
            cv2.circle(canvas, (int(points[3, 0]), int(points[3, 1])), int(scales[p] * 0.45), (90, 140, 200), -1)
            skeleton[t, p, :, :2] = points
            skeleton[t, p, :, 2] = 1.0
        canvas += rng.normal(0, 4, size=canvas.shape)  # sensor noise
        video[t] = np.clip(canvas, 0, 255).astype(np.uint8)
    return video, skeleton


def clip_features(
    *, backbone: MC3_18Backbone, rng: np.random.Generator, frames: int, size: int
) -> dict[str, np.ndarray]:
    """One sample as the extractor produces it: float32 local/global/heatmaps and joints in local-map cells."""
    video, skeleton = render_clip(rng=rng, frames=frames)
    geometry = clip_geometry(frame_size=(video.shape[2], video.shape[1]), skeleton=skeleton, size=size)
    inputs = torch.from_numpy(geometry.frames_to_input(video)).permute(0, 3, 1, 2)[None]  # (1, T, 3, S, S)
    with torch.inference_mode():
        local, global_ = backbone(inputs)  # (1, T, 256, S/8, S/8), (1, T, 512, S/16, S/16)
    map_hw = tuple(local.shape[-2:])
    joints = joints_to_cells(
        torch.from_numpy(geometry.joints_to_input(skeleton))[None], input_hw=(size, size), map_hw=map_hw
    )  # (1, T, P, J, 3)
    heatmaps = joint_heatmaps(joints.flatten(2, 3), size=map_hw, sigma=1.0)  # (1, T, P*J, h', w')
    return {
        "local": local[0].numpy(),
        "global": global_[0].numpy(),
        "heatmaps": heatmaps[0].numpy(),
        "joints": joints[0].numpy(),
    }


def array_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk per top-level node of a local zarr store (root metadata under "zarr.json")."""
    sizes: dict[str, int] = {}
    for file in path.rglob("*"):
        if file.is_file():
            key = file.relative_to(path).parts[0]
            sizes[key] = sizes.get(key, 0) + file.stat().st_size
    return sizes


def measure(
    *, samples: list[dict[str, np.ndarray]], layout: CacheLayout, quantize: bool, out: Path, unit_size: int
) -> dict:
    cache = FeatureCache.create_or_open(
        out,
        fingerprint={"benchmark": "cache_size"},
        layout=layout,
        sample_ids=[f"clip{i}" for i in range(len(samples))],
        labels=np.zeros(len(samples), dtype=np.int64),
        splits={},
        unit_size=unit_size,
        quantize=quantize,
    )
    started = time.perf_counter()
    for unit in cache.pending_units():
        cache.write_unit(unit, {row: samples[row] for row in cache.unit_samples(unit)})
    write_s = time.perf_counter() - started
    reader = FeatureCache.open(out)
    reader.read(0)  # opens the handles: steady-state reads, as in a DataLoader worker
    started = time.perf_counter()
    restored = [reader.read(row) for row in range(len(samples))]
    read_s = time.perf_counter() - started
    errors = {}
    for name in MAP_NAMES:
        x = np.stack([s[name] for s in samples]).astype(np.float64)
        y = np.stack([r[name] for r in restored]).astype(np.float64)
        errors[name] = float(np.linalg.norm(x - y) / np.linalg.norm(x))
    info = reader.info()
    return {
        "bytes_per_clip": info.bytes_on_disk / len(samples),
        "per_array": array_bytes(out),
        "write_ms": 1000 * write_s / len(samples),
        "read_ms": 1000 * read_s / len(samples),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = MC3_18Backbone(weights=None).eval()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    samples = [clip_features(backbone=backbone, rng=rng, frames=args.frames, size=args.size) for _ in range(args.clips)]
    backbone_s = (time.perf_counter() - started) / args.clips
    layout = CacheLayout.for_mc3_18(frames=args.frames, input_size=args.size, persons=PERSONS, num_joints=JOINTS)
    raw16 = sum(s[name].size * 2 for s in samples[:1] for name in MAP_NAMES) + samples[0]["joints"].nbytes

    workdir = Path(tempfile.mkdtemp(prefix="star-cache-bench-"))
    try:
        results = {
            mode: measure(
                samples=samples,
                layout=layout,
                quantize=mode == "8-bit",
                out=workdir / f"{mode}.zarr",
                unit_size=args.clips,
            )
            for mode in ("float16", "8-bit")
        }
    finally:
        shutil.rmtree(workdir)

    print(f"command: python -m benchmarks.cache_size {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(
        f"clips: {args.clips} x T={args.frames} at {args.size}x{args.size}; mc3_18 random weights, eval mode; "
        f"{args.threads} torch threads; zarr {zarr.__version__}, zstd default level, chunk = 1 clip, "
        f"shard = {args.clips} clips"
    )
    print(f"backbone + heatmaps: {backbone_s:.2f} s per clip (for scale)")
    zeros = {name: float(np.mean([np.mean(s[name] == 0) for s in samples])) for name in MAP_NAMES}
    print("exact zeros in the maps: " + ", ".join(f"{name} {100 * z:.0f}%" for name, z in zeros.items()))
    print(f"raw float16 per clip: {raw16 / 1e6:.2f} MB")
    print(
        f"{'mode':8} {'MB/clip':>8} {'ratio':>6} {'write ms':>9} {'read ms':>8}  rel. error local/global/heatmaps"
        "   MB/clip per array"
    )
    for mode, r in results.items():
        per_array = ", ".join(
            f"{key} {size / args.clips / 1e6:.2f}"
            for key, size in sorted(r["per_array"].items())
            if size / args.clips >= 5e3
        )
        errors = "/".join(f"{r['errors'][name]:.2e}" for name in MAP_NAMES)
        print(
            f"{mode:8} {r['bytes_per_clip'] / 1e6:8.2f} {raw16 / r['bytes_per_clip']:6.2f} {r['write_ms']:9.1f}"
            f" {r['read_ms']:8.1f}  {errors}   {per_array}"
        )
    target = results["8-bit"]["bytes_per_clip"] <= 4e6
    print(
        f"target <= 4 MB per clip in 8-bit mode: {'met' if target else 'NOT met'} "
        f"({results['8-bit']['bytes_per_clip'] / 1e6:.2f} MB)"
    )
    print("note: Kinetics-400 weights give sparser maps than random weights, so real caches are smaller.")


if __name__ == "__main__":
    main()
