"""Benchmark (not a timed test): training throughput from the zarr cache, and the paper-scale step on CPU.

    python -m benchmarks.train                                   # both parts
    python -m benchmarks.train --part loader --scales 64:8 112:16 --workers 0 --reps 5
    python -m benchmarks.train --part loader --dim 256 --depth 3   # the loader feeding the paper-width model
    python -m benchmarks.train --part step --size 224 --steps 3

Part "loader": samples/s of training steps fed by `CachedClips` through a DataLoader with worker processes,
divided by samples/s of the same steps on the same batches already in memory (same model, batch, optimizer).
A real float16 zarr cache of `batch * steps` clips with ReLU-like maps is written first (its write time is
not measured). The two runs alternate `reps` times so load changes on a shared machine hit both alike; the
ratio is the median of the per-repetition ratios. Steady state: the clock starts once the first batch has
arrived (worker start-up, paid once per epoch, is reported apart). Target: ratio >= 0.9. The loader is the one
training builds (`pipeline.training.loop.make_loader`: shuffled windows of work units, float16 maps up to the model), so
the in-memory batches are the same float16 batches and both sides pay the conversion to float32. The default model
is a narrow one without dropout (dim 64, depth 1): the faster the step, the harder for the loader to keep up; the paper
width takes tens of seconds per step on CPU, where any loader looks perfect.

Part "step": one training step (forward, backward, SGD update) of the paper-scale model (ModelConfig
defaults: dim 256, depth 3, 2 persons x 25 joints; T = 16, 224 x 224 input, batch 4) on random cached-map
inputs, median over `steps` after one warm-up step; run in a fresh process so that its peak RSS
(`ru_maxrss`) belongs to this measurement alone. The model is `ModelConfig`'s default, dropout 0.1 included:
it acts after the attention projections and in the MLPs, not on the attention probabilities
(`attention_dropout` 0). Dropout on the probabilities makes PyTorch's CPU attention fall back from its fused
kernel to the math path, which keeps every L x L attention matrix (L = 3984 tokens) for backward
(`--attention-dropout 0.1 --batch 1` measures that for one clip; figures in docs/design.md).
Target: <= 6 GB peak RSS at batch 4.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from model.star import ModelConfig, build_model
from pipeline.extraction.cache_layout import CacheLayout
from pipeline.extraction.store import DEFAULT_UNIT_SIZE, FeatureCache
from pipeline.training.classifier import ClipClassifier
from pipeline.training.data import CachedClips
from pipeline.training.distributed import DistContext
from pipeline.training.setup import make_loader

PERSONS, JOINTS, CLASSES = 2, 25, 60


def write_cache(path: Path, *, samples: int, frames: int, size: int) -> str:
    """A float16 cache of `samples` clips with ReLU-like maps (about half zeros, like MC3-18 outputs)."""
    layout = CacheLayout.for_mc3_18(frames=frames, input_size=size, persons=PERSONS, num_joints=JOINTS)
    cache = FeatureCache.create_or_open(
        path,
        fingerprint={"benchmark": "train", "frames": frames, "input_size": size},
        layout=layout,
        sample_ids=[f"S001C001P{i:03d}R001A001" for i in range(samples)],
        labels=np.arange(samples) % CLASSES,
        splits={"bench-train": np.ones(samples, dtype=bool)},
        unit_size=DEFAULT_UNIT_SIZE,
    )
    rng = np.random.default_rng(0)
    shapes = layout.sample_shapes()
    for unit in range(cache.n_units):
        results = {}
        for row in cache.unit_samples(unit):
            sample = {
                name: np.maximum(rng.standard_normal(shape, dtype=np.float32), 0)
                for name, shape in shapes.items()
                if name != "joints"
            }
            sample["heatmaps"] = np.minimum(sample["heatmaps"], 1)
            joints = rng.uniform(0, size // 8, size=shapes["joints"]).astype(np.float32)
            joints[..., 2] = 1.0
            results[row] = {**sample, "joints": joints}
        cache.write_unit(unit, results)
    return cache.path


def _model(**model: float) -> tuple[ClipClassifier, torch.optim.Optimizer]:
    torch.manual_seed(0)
    classifier = ClipClassifier(
        star=build_model(ModelConfig(num_classes=CLASSES, persons=PERSONS, num_joints=JOINTS, **model))
    )
    classifier.train()
    return classifier, torch.optim.SGD(classifier.parameters(), lr=2e-4, momentum=0.9)


def _steps(model: ClipClassifier, optimizer: torch.optim.Optimizer, batches) -> tuple[float, float]:
    """(seconds to the first batch, samples/s from the first batch on) of one pass of training steps."""
    start = time.perf_counter()
    first_batch_at, samples = None, 0
    for batch in batches:
        if first_batch_at is None:
            first_batch_at = time.perf_counter()
        loss = F.cross_entropy(model(batch), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples += batch["label"].shape[0]
    return first_batch_at - start, samples / (time.perf_counter() - first_batch_at)


def loader_ratio(*, size: int, frames: int, batch: int, steps: int, workers: int, reps: int, model: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        written = time.perf_counter()
        path = write_cache(Path(folder) / "bench.zarr", samples=batch * steps, frames=frames, size=size)
        write_seconds = time.perf_counter() - written
        process = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))

        def training_loader(workers: int) -> DataLoader:  # a fresh dataset: nothing read by an earlier pass is kept
            return make_loader(
                CachedClips(path=path, split_name="bench-train"),
                batch_size=batch,
                seed=0,
                workers=workers,
                ctx=process,
                shuffle=True,
            )

        in_memory = list(training_loader(0))  # the very same batches, as the loader delivers them
        classifier, optimizer = _model(frames=frames, **model)
        ratios, memory_rates, cache_rates, startups = [], [], [], []
        for _ in range(reps):
            _, memory_rate = _steps(classifier, optimizer, in_memory)
            startup, cache_rate = _steps(classifier, optimizer, training_loader(workers))
            ratios.append(cache_rate / memory_rate)
            memory_rates.append(memory_rate)
            cache_rates.append(cache_rate)
            startups.append(startup)
        raw_bytes = sum(v.nbytes for k, v in in_memory[0].items() if k != "label") // batch
    return {
        "part": "loader",
        "size": size,
        "frames": frames,
        "batch": batch,
        "steps": steps,
        "workers": workers,
        "load_average": os.getloadavg()[0],
        "model": model or "ModelConfig defaults",
        "samples_per_s_in_memory": statistics.median(memory_rates),
        "samples_per_s_from_cache": statistics.median(cache_rates),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "seconds_to_first_batch": statistics.median(startups),
        "raw_float16_mb_per_clip": raw_bytes / 1e6,
        "cache_write_seconds": write_seconds,
    }


def paper_step(*, size: int, frames: int, batch: int, steps: int, model: dict) -> dict:
    """Time and peak RSS of one training step on in-memory inputs; run in its own process."""
    classifier, optimizer = _model(frames=frames, **model)
    local_side, global_side = size // 8, size // 16
    generator = torch.Generator().manual_seed(0)
    data = {
        "local": torch.rand(batch, frames, 256, local_side, local_side, generator=generator),
        "global": torch.rand(batch, frames, 512, global_side, global_side, generator=generator),
        "heatmaps": torch.rand(batch, frames, PERSONS * JOINTS, local_side, local_side, generator=generator),
        "joints": torch.rand(batch, frames, PERSONS * JOINTS, 3, generator=generator) * local_side,
        "label": torch.randint(0, CLASSES, (batch,), generator=generator),
    }
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        _steps(classifier, optimizer, [data])
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = frames * (global_side**2 + PERSONS * JOINTS + 3)
    return {
        "part": "step",
        "size": size,
        "frames": frames,
        "batch": batch,
        "tokens_per_clip": tokens,
        "model": model or "ModelConfig defaults",
        "threads": torch.get_num_threads(),
        "seconds_per_step": statistics.median(times[1:]),
        "step_seconds": times,
        "peak_rss_mib": peak,
        "rss_before_steps_mib": rss_before,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("loader", "step", "both"), default="both")
    parser.add_argument(
        "--scales",
        nargs="+",
        default=None,
        metavar="SIZE:FRAMES",
        help="loader scales (default 64:8, the demo's, and 112:16)",
    )
    parser.add_argument(
        "--size", type=int, default=None, help="input size of the step (default 224), or of one loader scale"
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="steps per pass (loader default 48, step default 2)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the loader part")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=None, help="model dropout (residual branches; default 0.1)")
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="dropout on the attention probabilities (default 0; on CPU it forces the L x L math path)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per part")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the step part's own process
    args = parser.parse_args(argv)
    given = (
        ("dim", args.dim),
        ("depth", args.depth),
        ("dropout", args.dropout),
        ("attention_dropout", args.attention_dropout),
    )
    model = {k: v for k, v in given if v is not None}
    results = []
    if args.part in ("loader", "both"):
        loader_model = model or {"dim": 64, "depth": 1, "dropout": 0.0}
        scales = (
            [tuple(int(x) for x in scale.split(":")) for scale in args.scales]
            if args.scales
            else [(args.size, args.frames)]
            if args.size
            else [(64, 8), (112, 16)]
        )
        for size, frames in scales:
            results.append(
                loader_ratio(
                    size=size,
                    frames=frames,
                    batch=args.batch,
                    steps=args.steps or 48,
                    workers=args.workers,
                    reps=args.reps,
                    model=loader_model,
                )
            )
    step_model = model  # the default config unless options say otherwise
    if args.part == "step" and args.in_process:
        print(
            json.dumps(
                paper_step(
                    size=args.size or 224, frames=args.frames, batch=args.batch, steps=args.steps or 2, model=step_model
                )
            )
        )
        return
    if args.part in ("step", "both"):
        command = [
            sys.executable,
            "-m",
            "benchmarks.train",
            "--part",
            "step",
            "--in-process",
            "--frames",
            str(args.frames),
            "--batch",
            str(args.batch),
            "--size",
            str(args.size if args.part == "step" and args.size else 224),
            "--steps",
            str(args.steps if args.part == "step" and args.steps else 2),
        ]
        command += [flag for key, value in step_model.items() for flag in (f"--{key.replace('_', '-')}", str(value))]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for result in results:
        print(json.dumps(result) if args.json else _format(result))


def _format(result: dict) -> str:
    if result["part"] == "loader":
        return (
            f"loader  T={result['frames']} {result['size']}px batch {result['batch']}, {result['workers']} workers, "
            f"model {result['model']}: {result['samples_per_s_from_cache']:.2f} samples/s from the cache vs "
            f"{result['samples_per_s_in_memory']:.2f} in memory -> ratio {result['ratio']:.3f} (target >= 0.9; "
            f"per rep {', '.join(f'{r:.3f}' for r in result['ratios'])}); first batch after "
            f"{result['seconds_to_first_batch']:.2f} s; {result['raw_float16_mb_per_clip']:.1f} MB float16 per clip"
        )
    return (
        f"step    T={result['frames']} {result['size']}px batch {result['batch']} "
        f"({result['tokens_per_clip']} tokens/clip), model {result['model']}, {result['threads']} threads: "
        f"{result['seconds_per_step']:.2f} s per training step, peak RSS {result['peak_rss_mib']:.0f} MiB "
        f"({result['rss_before_steps_mib']:.0f} MiB before the first step)"
    )


if __name__ == "__main__":
    main()
