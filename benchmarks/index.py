"""Benchmark: NTU `.skeleton` files parsed per second on one core, and the annotation index
build time for a generated 100-sample NTU-format dataset (first build, no-op rebuild, one added sample).

Target: >= 300 typical files (~100 frames, 1 body) per second per core, so NTU120's 114,480 files
index in minutes. Run: `python -m benchmarks.index` (options: --files, --frames, --samples-per-class).
Parse timings are best-of-3 passes over files already in the page cache (disk reads not measured).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.sources.datasets.ntu_skeleton import KINECT_COLOR_SIZE, read_ntu_skeleton
from pipeline.sources.index import build_index
from pipeline.sources.synthetic import generate_ntu_dataset


def typical_skeleton_text(rng: np.random.Generator, *, frames: int, bodies: int = 1) -> str:
    """A file shaped like a real NTU one: %.7g numbers in realistic ranges, trackingState mostly 2."""
    lines = [str(frames)]
    scale = np.array([0.3, 0.4, 0.3, 40, 40, 150, 150, 0.3, 0.3, 0.3, 0.3])
    offset = np.array([0.0, 0.1, 3.2, 256, 212, 960, 540, 0.0, 0.0, 0.9, 0.0])
    for _ in range(frames):
        lines.append(str(bodies))
        for body in range(bodies):
            lean = rng.normal(0, 0.05, 2)
            lines.append(f"{72057594037931101 + body} 0 1 1 1 1 0 {lean[0]:.7g} {lean[1]:.7g} 2")
            lines.append("25")
            values = offset + scale * rng.standard_normal((25, 11))
            states = np.where(rng.random(25) < 0.05, 1, 2)
            lines.extend(" ".join(f"{v:.7g}" for v in row) + f" {s}" for row, s in zip(values, states, strict=True))
    return "\r\n".join(lines) + "\r\n"


def bench_parser(folder: Path, *, files: int, frames: int) -> float:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        path = folder / f"S001C001P001R001A{i % 60 + 1:03d}_{i}.skeleton"
        path.write_text(typical_skeleton_text(rng, frames=frames), newline="")
        paths.append(path)
    size = sum(p.stat().st_size for p in paths) / files
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for path in paths:
            read_ntu_skeleton(path, frame_size=KINECT_COLOR_SIZE)
        best = min(best, time.perf_counter() - started)
    rate = files / best
    print(
        f"skeleton parser: {files} files x {frames} frames x 1 body ({size / 1024:.0f} KB each): "
        f"{rate:.0f} files/s on one core ({1000 * best / files:.2f} ms/file, best of 3)"
    )
    print(f"  -> NTU120's 114,480 skeleton files: about {114_480 / rate / 60:.1f} min of parsing on one core")
    return rate


def bench_index(folder: Path, *, samples_per_class: int) -> None:
    root, out = folder / "ntu", folder / "ntu120.h5"
    started = time.perf_counter()
    ids = generate_ntu_dataset(root, samples_per_class=samples_per_class)
    print(f"generate_ntu_dataset: {len(ids)} samples (320x180) in {time.perf_counter() - started:.1f} s")
    first = build_index("ntu120", root, out)
    print(
        f"build_index first build: {first.seconds:.2f} s for {first.total} samples "
        f"({first.total / first.seconds:.0f} samples/s; status {first.status_counts})"
    )
    again = build_index("ntu120", root, out)
    print(f"build_index no-op rebuild: {again.seconds:.3f} s (written={again.written}, unchanged={again.unchanged})")
    new_id = "S002C003P008R002A010"
    shutil.copy(root / "nturgb+d_rgb" / f"{ids[0]}_rgb.avi", root / "nturgb+d_rgb" / f"{new_id}_rgb.avi")
    shutil.copy(root / "nturgb+d_skeletons" / f"{ids[0]}.skeleton", root / "nturgb+d_skeletons" / f"{new_id}.skeleton")
    added = build_index("ntu120", root, out)
    print(f"build_index one sample added: {added.seconds:.3f} s (added={added.added}, unchanged={added.unchanged})")
    print(f"  index file: {out.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="skeleton files to parse")
    parser.add_argument("--frames", type=int, default=100, help="frames per skeleton file")
    parser.add_argument("--samples-per-class", type=int, default=10, help="generated samples per class (10 classes)")
    args = parser.parse_args()
    print(f"benchmarks/index.py on {os.cpu_count()} CPU(s), single process")
    with tempfile.TemporaryDirectory(prefix="star_bench_index_") as tmp:
        folder = Path(tmp)
        (folder / "skeletons").mkdir()
        bench_parser(folder / "skeletons", files=args.files, frames=args.frames)
        bench_index(folder, samples_per_class=args.samples_per_class)


if __name__ == "__main__":
    main()
