"""Which of the paper's choices help on the demo data: ablations of STAR, 3 training seeds each.

    python -m benchmarks.learning                      # every variant, seeds 0 1 2 (about an hour on 2 CPU cores)
    python -m benchmarks.learning --jobs 4             # 4 runs at a time (a GPU machine, or many cores)
    python -m benchmarks.learning --only default "FF/FF" --seeds 0
    python -m benchmarks.learning --quick              # a smoke run: 2 variants, 1 seed, tiny data

Data: the demo's generated dataset (`pipeline.demo.DemoConfig`: 12 NTU120 classes, including sitting down /
standing up, which are exact time reverses of each other; 20 subjects, official cross-subject split), extracted
once without Prefect (`pipeline.extraction.extract.extract`, random-weight MC3-18) into a float16 cache and an 8-bit
cache.
Every run trains with the demo's recipe (`small` preset, the demo's epochs, batch, lr and model size) and changes
one thing; the data stays fixed (dataset seed 0) and the training seed varies. Figures: held-out top-1 of the
final epoch (last.pt) on the test subjects, which take no part in training or model selection; the same on the two
time-reversed classes alone; seconds per run. Mean and standard deviation over the seeds.

The results replace the "Learning ablations" section of benchmarks/RESULTS.md (the `python -m benchmarks` runner
keeps that section; it does not run this benchmark itself, which takes far longer than the others).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import tomllib
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTION = "## Learning ablations"

_LITERAL_MODEL = tomllib.loads((HERE.parent / "configs" / "literal.toml").read_text())["model"]

# name -> (model overrides, training overrides, cache): one change each against the default.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "default": ({}, {}, "float16"),
    # Table 4: encoder / decoder attention
    "FF/FF": ({"encoder": "FF", "decoder": "FF"}, {}, "float16"),
    "FB/FB": ({"encoder": "FB", "decoder": "FB"}, {}, "float16"),
    "FB/FZ": ({"encoder": "FB", "decoder": "FZ"}, {}, "float16"),
    # Table 3: one class token instead of three
    "single class token": ({"multi_class": False}, {}, "float16"),
    # Fig. 5: layers per stage
    "depth 2": ({"depth": 2}, {}, "float16"),
    "depth 3": ({"depth": 3}, {}, "float16"),
    "depth 4": ({"depth": 4}, {}, "float16"),
    # The choices that make STAR learn, each reverted alone, and all of them together (the paper-literal model)
    "post-LN (eq. 11-14)": ({"norm": "post"}, {}, "float16"),
    "no temporal embedding": ({"temporal_embedding": False}, {}, "float16"),
    "no token LayerNorm": ({"token_norm": False}, {}, "float16"),
    "linear joint position": ({"joint_position": "linear"}, {}, "float16"),
    "ViT init (trunc-normal 0.02)": ({"init": "vit"}, {}, "float16"),
    "paper-literal (all five reverted)": (_LITERAL_MODEL, {}, "float16"),
    # The cache: 8-bit maps with per-channel scales instead of float16
    "8-bit cache": ({}, {}, "8bit"),
    # Dropout (the demo trains without): the model's default 0.1 on the residual branches only, and 0.1 on the
    # attention probabilities as well, which is what `dropout` meant before attention_dropout existed
    "dropout 0.1 (model default)": ({"dropout": 0.1}, {}, "float16"),
    "dropout 0.1 + attention dropout 0.1": ({"dropout": 0.1, "attention_dropout": 0.1}, {}, "float16"),
}
TIME_REVERSED = ("sitting down", "standing up (from sitting position)")


def prepare_data(
    workdir: Path, *, quick: bool, device: str, kinds: tuple[str, ...] = ("float16", "8bit")
) -> tuple[Any, dict[str, str]]:
    """The demo's dataset and its caches of `kinds` (float16 and/or 8-bit); reused when already complete."""
    from pipeline.demo import BENCHMARK, DATASET, demo_config
    from pipeline.extraction.extract import ExtractConfig, extract
    from pipeline.sources.synthetic import generate_ntu_dataset

    smoke = {"samples_per_class": 4, "epochs": 2, "size": 32, "frames": 4, "frame_width": 96}  # seconds, not figures
    cfg = demo_config(workdir=workdir, **(smoke if quick else {}))
    marker = cfg.dataset_dir / "benchmark-dataset.json"
    if not marker.is_file():
        generate_ntu_dataset(
            cfg.dataset_dir,
            samples_per_class=cfg.samples_per_class,
            actions=cfg.actions,
            subjects=cfg.subjects,
            frame_size=cfg.frame_size,
            seed=cfg.seed,
        )
        marker.write_text(json.dumps({"complete": True}) + "\n")
    caches = {}
    for kind in kinds:
        out = cfg.features_dir / f"cache-{kind}.zarr"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MC3_18Backbone uses RANDOM weights")
            summary = extract(
                ExtractConfig(
                    dataset=DATASET,
                    root=cfg.dataset_dir,
                    out=str(out),
                    benchmark=BENCHMARK,
                    frames=cfg.frames,
                    size=cfg.size,
                    crop=cfg.crop,
                    weights="random",
                    quantize=kind == "8bit",
                    batch_size=8,
                    workers=2,
                    device=device,
                )
            )
        if summary.failed or summary.pending:
            raise SystemExit(f"extraction into {out} left {summary.failed} failed / {summary.pending} pending samples")
        caches[kind] = str(out)
    return cfg, caches


def run_variant(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (variant, seed) and evaluate last.pt on the test split; runs in its own process."""
    import torch

    torch.set_num_threads(task["threads"])
    from pipeline.inference.evaluate import evaluate_checkpoint
    from pipeline.training.config import resolve_config
    from pipeline.training.loop import train

    overrides = {
        **task["base"],
        **task["train"],
        "cache": task["cache"],
        "seed": task["seed"],
        "out": task["out"],
        "device": task["device"],
        "model": {**task["base"]["model"], **task["model"]},
    }
    started = time.perf_counter()
    train(resolve_config(overrides=overrides, preset="small"), show_progress=False)
    seconds = time.perf_counter() - started
    result = evaluate_checkpoint(
        checkpoint=Path(task["out"]) / "last.pt",
        cache=task["cache"],
        split="test",
        benchmark=task["base"]["benchmark"],
        workers=0,
        device=task["device"],
    )
    report = result.report
    pair = [row for row in report.per_class if row.class_name in TIME_REVERSED]
    pair_top1 = sum(row.correct for row in pair) / max(sum(row.support for row in pair), 1) if pair else float("nan")
    return {
        "variant": task["variant"],
        "seed": task["seed"],
        "top1": report.top1,
        "pair_top1": pair_top1,
        "seconds": seconds,
        "clips": report.num_samples,
    }


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(results: list[dict[str, Any]], variants: list[str]) -> list[str]:
    lines = [
        "| variant | held-out top-1 % | sitting down / standing up top-1 % | seconds per run | seeds |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        rows = [r for r in results if r["variant"] == name]
        if rows:
            lines.append(
                f"| {name} | {_mean_std([r['top1'] for r in rows])} | {_mean_std([r['pair_top1'] for r in rows])} "
                f"| {_mean_std([r['seconds'] for r in rows], scale=1.0, digits=0)} | {len(rows)} |"
            )
    return lines


def machine_line(device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else "no GPU used"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {gpu}, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def write_section(lines: list[str], *, out: Path, section: str = SECTION) -> None:
    """Replace (or append) `section` of RESULTS.md (its first line is the heading), leaving the rest as it is."""
    text = out.read_text() if out.is_file() else "# Benchmark results\n"
    start = text.find(section)
    if start >= 0:
        end = text.find("\n## ", start + len(section))
        text = text[:start].rstrip("\n") + ("\n\n" + text[end + 1 :] if end >= 0 else "")
    out.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


def finish(lines: list[str], *, out: Path, section: str, json_path: Path | None, payload: dict[str, Any]) -> None:
    """Write a benchmark's section of RESULTS.md, and its runs as JSON when asked."""
    write_section(lines, out=out, section=section)
    if json_path:
        json_path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"written: {out} ({section[3:]})")


def _quoted(arg: str) -> str:
    return f'"{arg}"' if " " in arg or "/" in arg and not arg.startswith(("/", ".")) else arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help=f"variants to run: {', '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (each in its own process)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=Path("runs/learning-benchmark"))
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="RESULTS.md whose learning section is replaced"
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures to this JSON file")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="--json files of earlier runs on the same data to include in the table (e.g. more variants)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 variants, 1 seed, tiny data and 2 epochs")
    args = parser.parse_args(argv)
    variants = args.only or (["default", "no temporal embedding"] if args.quick else list(VARIANTS))
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(map(repr, unknown))}; there are: {', '.join(VARIANTS)}")
    seeds = [0] if args.quick else args.seeds

    started, clock = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    kinds = tuple(dict.fromkeys(VARIANTS[name][2] for name in variants))  # only the caches the variants read
    cfg, caches = prepare_data(args.workdir, quick=args.quick, device=args.device, kinds=kinds)
    print(f"data ready in {time.perf_counter() - clock:.0f} s: {caches}", flush=True)
    base = cfg.train_overrides(attention=("FZ", "FB"))
    base["workers"] = 0
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [
        {
            "variant": name,
            "seed": seed,
            "base": base,
            "model": VARIANTS[name][0],
            "train": VARIANTS[name][1],
            "cache": caches[VARIANTS[name][2]],
            "device": args.device,
            "threads": threads,
            "out": str(args.workdir / "runs" / f"{name.replace('/', '-').replace(' ', '_')}-seed{seed}"),
        }
        for name in variants
        for seed in seeds
    ]
    results = []
    # spawn: CUDA cannot be used in forked children, and every run starts from a clean interpreter.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(run_variant, tasks):
            results.append(result)
            print(
                f"{result['variant']:<36} seed {result['seed']}: held-out top-1 {result['top1']:.1%}, "
                f"time-reversed pair {result['pair_top1']:.1%}, {result['seconds']:.0f} s",
                flush=True,
            )
    command = "python -m benchmarks.learning " + " ".join(map(_quoted, sys.argv[1:] if argv is None else argv))
    commands = [command]
    for path in args.merge:
        earlier = json.loads(path.read_text())
        commands.insert(-1, earlier["command"])
        results = earlier["results"] + results
        variants = [
            name for name in dict.fromkeys(r["variant"] for r in earlier["results"]) if name not in variants
        ] + variants
    table = summary_table(results, [name for name in VARIANTS if name in variants])
    print("\n".join(table))
    clips = results[0]["clips"] if results else 0
    section = [
        SECTION,
        "",
        "; ".join(f"`{c.strip()}`" for c in commands)
        + f" (the last on {started}){' (QUICK SMOKE RUN: not the reported figures)' if args.quick else ''}; "
        f"{time.perf_counter() - clock:.0f} s for the last, {args.jobs} run(s) at a time, so seconds per run include "
        "waiting for the other runs' share of the CPU.",
        "",
        f"Machine: {machine_line(args.device)}.",
        "",
        f"Data: the demo's dataset ({len(cfg.actions)} classes, {cfg.samples_per_class} clips per class, "
        f"{len(cfg.subjects)} subjects, T = {cfg.frames}, {cfg.size} px person crop, random-weight MC3-18); "
        f"held-out = the {clips} test-subject clips, final epoch. Training: `small` preset, {base['epochs']} epochs, "
        f"batch {base['batch_size']}, lr {base['lr']:g}, dim {base['model']['dim']}, depth {base['model']['depth']}, "
        f"heads {base['model']['heads']}; "
        f"training seeds {', '.join(map(str, sorted({r['seed'] for r in results})))} (the data is fixed; "
        "the last column says how many seeds each row has). Mean ± standard deviation over the seeds.",
        "",
        *table,
        "",
    ]
    finish(
        section,
        out=args.out,
        section=SECTION,
        json_path=args.json,
        payload={"command": command, "started": started, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
