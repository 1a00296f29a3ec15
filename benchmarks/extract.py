"""Extraction benchmark, measured side by side in one run on the same generated clips.

(a) pipeline clips/s (a whole `extract` call: index check, store creation, units, summary) divided by the bound
    1 / (decode-only + backbone-only seconds per clip), at the demo's 64 px (T 8), 112 and 224 px (T 16); bound
    and pipeline alternate `--reps` times and the ratio is the median of the
    per-repetition ratios. The process's backbone is built once before (a warm-up extraction, reported), as in
    a long run. The pipeline can beat the bound: it decodes while the backbone runs;
(b) bytes per clip on disk, float16 (lossless zstd) and 8-bit;
(c) peak RSS of an extraction of 10 vs. 100 clips (a fresh process each).

    python -m benchmarks.extract [--clips 12] [--reps 3] [--scales 64:8:48 112:16:16 224:16] [--rss-clips 10 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.extraction.store import FeatureCache
from pipeline.sources.clips import ClipSpec, load_clip
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.synthetic import generate_ntu_dataset

BATCH = 4


def make_dataset(root: Path, clips: int) -> Path:
    per_class = max(1, -(-clips // 10))
    generate_ntu_dataset(root, samples_per_class=per_class, subjects=tuple(range(1, 9)), cameras=(1, 2, 3))
    return root


def decode_only(index: AnnotationIndex, rows: list[int], spec: ClipSpec) -> tuple[float, list]:
    started = time.perf_counter()
    clips = [
        load_clip(
            video=Path(index.video_paths[i]),
            skeleton=index.skeleton(i),
            usable_frames=int(index.usable_frames[i]),
            frame_size=(int(index.width[i]), int(index.height[i])),
            spec=spec,
        )
        for i in rows
    ]
    return time.perf_counter() - started, clips


def backbone_only(clips: list, backbone) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(clips), BATCH):
            video = torch.from_numpy(np.stack([c.frames for c in clips[start : start + BATCH]]))
            backbone(video.permute(0, 1, 4, 2, 3))
    return time.perf_counter() - started


def throughput(root: Path, work: Path, clips: int, size: int, frames: int, reps: int) -> dict:
    from model.backbone import MC3_18Backbone

    index_path = work / "ntu120-index.h5"
    build_index("ntu120", root, index_path)
    index = AnnotationIndex(index_path)
    rows = list(range(clips))
    spec = ClipSpec(frames=frames, size=size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = MC3_18Backbone(weights=None)

    def run(count: int, *, quantize: bool = False, name: str) -> tuple[float, str]:
        out = work / f"cache-{size}-{frames}-{name}.zarr"
        cfg = ExtractConfig(
            dataset="ntu120",
            root=root,
            out=str(out),
            index=index_path,
            size=size,
            frames=frames,
            weights="random",
            limit=count,
            batch_size=BATCH,
            quantize=quantize,
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = extract(cfg)
        assert summary.done == count, summary.format()
        return time.perf_counter() - started, str(out)

    first_s, _ = run(BATCH, name="warm-up")  # builds the process's extractor (backbone) once, as a long run does
    backbone_only([clip for clip in decode_only(index, rows[:BATCH], spec)[1]], backbone)  # first-call allocations
    ratios, bounds, rates = [], [], []
    for rep in range(reps):  # bound and pipeline side by side, so that load changes hit both
        decode_s, decoded = decode_only(index, rows, spec)
        backbone_s = backbone_only(decoded, backbone)
        pipeline_s, _ = run(clips, name=f"rep{rep}")
        bounds.append(clips / (decode_s + backbone_s))
        rates.append(clips / pipeline_s)
        ratios.append(rates[-1] / bounds[-1])
    sizes = {
        "float16": FeatureCache.open(work / f"cache-{size}-{frames}-rep0.zarr").info().bytes_per_done_clip,
        "8bit": FeatureCache.open(run(clips, quantize=True, name="8bit")[1]).info().bytes_per_done_clip,
    }
    return {
        "size": size,
        "frames": frames,
        "clips": clips,
        "decode_s_per_clip": decode_s / clips,
        "backbone_s_per_clip": backbone_s / clips,
        "bound_clips_per_s": statistics.median(bounds),
        "pipeline_clips_per_s": statistics.median(rates),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "first_run_s": first_s,
        "bytes_per_clip": sizes,
    }


RSS_SCRIPT = """
import resource, sys, warnings
from pathlib import Path
from pipeline.extraction.extract import ExtractConfig, extract
warnings.simplefilter("ignore")
root, out, index, limit = sys.argv[1:5]
summary = extract(ExtractConfig(dataset="ntu120", root=Path(root), out=out, index=Path(index), size=112,
                                weights="random", limit=int(limit)))
assert summary.done == int(limit), summary.format()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(root: Path, work: Path, clips: int) -> float:
    out = work / f"rss-{clips}.zarr"
    result = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(root), str(out), str(work / "ntu120-index.h5"), str(clips)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12, help="clips per throughput measurement")
    parser.add_argument(
        "--scales",
        nargs="+",
        default=["64:8:48", "112:16:16", "224:16"],
        metavar="SIZE:FRAMES[:CLIPS]",
        help="input size, frames per clip and clips (default --clips) of each throughput measurement; "
        "64:8 is the demo's",
    )
    parser.add_argument("--reps", type=int, default=3, help="side-by-side repetitions of bound and pipeline")
    parser.add_argument("--rss-clips", type=int, nargs=2, default=[10, 100], help="0 0 skips the RSS part")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scales = [(*map(int, scale.split(":")), args.clips)[:3] for scale in args.scales]  # (size, frames, clips)
        root = make_dataset(work / "ntu", max(args.clips, *args.rss_clips, *(clips for _, _, clips in scales)))
        results = {
            "throughput": [throughput(root, work, clips, size, frames, args.reps) for size, frames, clips in scales],
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0],
        }
        results["peak_rss_mib"] = {str(n): peak_rss(root, work, n) for n in args.rss_clips if n > 0}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for row in results["throughput"]:
        print(
            f"size {row['size']}, T {row['frames']}, {row['clips']} clips: "
            f"decode {row['decode_s_per_clip'] * 1e3:.0f} ms/clip, "
            f"backbone {row['backbone_s_per_clip'] * 1e3:.0f} ms/clip -> bound {row['bound_clips_per_s']:.2f} clips/s; "
            f"pipeline {row['pipeline_clips_per_s']:.2f} clips/s; ratio {row['ratio']:.2f} (target >= 0.9; per rep "
            f"{', '.join(f'{r:.2f}' for r in row['ratios'])}); "
            f"warm-up extraction of {BATCH} clips {row['first_run_s']:.1f} s"
        )
        sizes = row["bytes_per_clip"]
        print(
            f"size {row['size']}: {sizes['float16'] / 1e6:.2f} MB/clip float16 (lossless), "
            f"{sizes['8bit'] / 1e6:.2f} MB/clip 8-bit (target <= 4 MB at 224)"
        )
    rss = results["peak_rss_mib"]
    print(f"load average {results['load_average']:.2f} at the start")
    if rss:
        print(
            "peak RSS: "
            + ", ".join(f"{n} clips {mib:.0f} MiB" for n, mib in rss.items())
            + " (must not grow with the number of clips)"
        )


if __name__ == "__main__":
    main()
