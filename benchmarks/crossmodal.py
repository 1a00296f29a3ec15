"""Does STAR's fusion of frames and skeleton beat either alone? rgb vs pose vs both, 3 training seeds each.

    python -m benchmarks.crossmodal --jobs 2           # seeds 0 1 2 (about half an hour on 2 CPU cores)
    python -m benchmarks.crossmodal --quick            # a smoke run: tiny data, 2 epochs, one seed

Data: the demo's recipe (`pipeline.demo.DemoConfig`: 20 subjects, official cross-subject split, 64 px person crop,
T = 8, random-weight MC3-18) with two kinds of classes, generated together:
- motion-only classes (`MOTION_CLASSES`): the figure looks the same in all of them, only its movement differs;
- appearance-only classes (`pipeline.sources.synthetic.motions.APPEARANCE_GROUPS`): drink water / eat meal/snack /
  brushing teeth share one motion and differ only in the few-pixel object in the right hand.
One model per (modality, seed) learns all classes with the demo's training recipe but 150 epochs instead of 40: `rgb`
(GG and class tokens: the frames only), `pose` (JM tokens from joint positions only: the skeleton only) and `both`
(STAR). The object evidence is learned late: on the three appearance classes alone, `both` stays at chance for
about 50 epochs and then climbs (docs/design.md, "What each input brings"). Figures:
held-out top-1 of the final epoch on the test subjects' clips of (a) the motion-only classes, (b) the
appearance-only classes, (c) all classes; mean ± standard deviation over the seeds. Then `star explain` on a
held-out drink-water clip with the seed-0 `both` model: the rollout's share on the grid vs the joint tokens, and
the joints it draws on most.

Targets: on (c) `both` beats the better single modality by >= 10 points; on (a) and (b) it loses <= 2 points to
the modality that suffices there. The results replace the "Cross-modal" section of benchmarks/RESULTS.md (the
`python -m benchmarks` runner keeps it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.learning import _mean_std, _quoted, finish, machine_line

HERE = Path(__file__).resolve().parent
SECTION = "## Cross-modal: frames, skeleton, both"
MOTION_CLASSES = (10, 23, 24, 80, 95)  # clapping, hand waving, kicking something, squat down, hands up
MODALITIES = ("rgb", "pose", "both")
SUBSETS = {"a": "motion-only classes", "b": "appearance-only classes", "c": "all classes"}


def appearance_classes() -> tuple[int, ...]:
    from pipeline.sources.synthetic.motions import APPEARANCE_GROUPS

    return tuple(action for group in APPEARANCE_GROUPS for action in group)


def prepare_data(workdir: Path, *, quick: bool, device: str) -> tuple[Any, str]:
    """The dataset of both kinds of classes and its float16 cache; reused when already complete."""
    from pipeline.demo import BENCHMARK, DATASET, DemoConfig
    from pipeline.extraction.extract import ExtractConfig, extract
    from pipeline.sources.synthetic import generate_ntu_dataset

    smoke = {"samples_per_class": 4, "epochs": 2, "size": 32, "frames": 4, "frame_size": (96, 54)} if quick else {}
    cfg = DemoConfig(workdir=workdir, actions=MOTION_CLASSES + appearance_classes(), **smoke)
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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MC3_18Backbone uses RANDOM weights")
        summary = extract(
            ExtractConfig(
                dataset=DATASET,
                root=cfg.dataset_dir,
                out=str(cfg.cache_path),
                benchmark=BENCHMARK,
                frames=cfg.frames,
                size=cfg.size,
                crop=cfg.crop,
                weights="random",
                batch_size=8,
                workers=2,
                device=device,
            )
        )
    if summary.failed or summary.pending:
        raise SystemExit(
            f"extraction into {cfg.cache_path} left {summary.failed} failed / {summary.pending} pending samples"
        )
    return cfg, str(cfg.cache_path)


def run_modality(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (modality, seed), evaluate last.pt on the test split; per-class correct/support. Own process."""
    import torch

    torch.set_num_threads(task["threads"])
    from pipeline.inference.evaluate import evaluate_checkpoint
    from pipeline.training.config import resolve_config
    from pipeline.training.loop import train

    overrides = {
        **task["base"],
        "cache": task["cache"],
        "seed": task["seed"],
        "out": task["out"],
        "device": task["device"],
        "model": {**task["base"]["model"], "modality": task["modality"]},
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
    per_class = {row.class_name: (row.correct, row.support) for row in result.report.per_class}
    return {
        "modality": task["modality"],
        "seed": task["seed"],
        "per_class": per_class,
        "seconds": seconds,
        "checkpoint": str(Path(task["out"]) / "last.pt"),
    }


def subset_top1(result: dict[str, Any], names: list[str]) -> float:
    correct = sum(result["per_class"][name][0] for name in names if name in result["per_class"])
    support = sum(result["per_class"][name][1] for name in names if name in result["per_class"])
    return correct / support if support else float("nan")


def figures(results: list[dict[str, Any]], subsets: dict[str, list[str]]) -> dict[str, dict[str, list[float]]]:
    """modality -> subset -> top-1 per seed."""
    return {
        modality: {
            key: [subset_top1(r, names) for r in results if r["modality"] == modality] for key, names in subsets.items()
        }
        for modality in MODALITIES
    }


def verdicts(values: dict[str, dict[str, list[float]]]) -> list[str]:
    mean = {m: {k: statistics.fmean(v) * 100 for k, v in subsets.items()} for m, subsets in values.items()}
    best_single = max(mean["rgb"]["c"], mean["pose"]["c"])
    gain = mean["both"]["c"] - best_single
    lines = [
        f"- (c) all classes: both {mean['both']['c']:.1f} % vs the better single modality {best_single:.1f} %: "
        f"{gain:+.1f} points (target >= +10): {'met' if gain >= 10 else '**not met**'}."
    ]
    for key, sufficient in (("a", "pose"), ("b", "rgb")):
        gap = mean["both"][key] - mean[sufficient][key]
        lines.append(
            f"- ({key}) {SUBSETS[key]}: both {mean['both'][key]:.1f} % vs {sufficient} {mean[sufficient][key]:.1f} %: "
            f"{gap:+.1f} points (target >= -2): {'met' if gap >= -2 else '**not met**'}."
        )
    return lines


def explain_clip(cfg: Any, checkpoint: str, workdir: Path) -> str:
    """`star explain` on the first held-out drink-water clip: where the seed-0 `both` model's evidence lies."""
    from pipeline.demo import split_subjects
    from pipeline.inference.explain import explain

    videos = sorted((cfg.dataset_dir / "nturgb+d_rgb").glob("*A001_rgb.avi"))
    _, held_out = split_subjects([path.name[:20] for path in videos])
    video = next(path for path in videos if int(path.name[9:12]) in held_out)
    skeleton = cfg.dataset_dir / "nturgb+d_skeletons" / f"{video.name[:20]}.skeleton"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MC3_18Backbone uses RANDOM weights")
        result = explain(video=video, pose=skeleton, checkpoint=checkpoint, out_dir=workdir / "explain")
    (model,) = result.models
    joints = ", ".join(f"{name} {share:.0%}" for name, share in model.top_joints)
    return (
        f"`star explain` on the held-out clip {video.name} (drink water) with the seed-0 `both` model: predicts "
        f"{model.top[0].class_name} ({model.top[0].probability:.0%}); rollout evidence on the grid tokens "
        f"{model.grid_share:.0%}, on the joint tokens {model.joint_share:.0%} (most: {joints})."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crossmodal", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (each in its own process)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=Path("runs/crossmodal-benchmark"))
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="RESULTS.md whose cross-modal section is replaced"
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures to this JSON file")
    parser.add_argument(
        "--epochs", type=int, default=150, help="training epochs (the demo trains 40; see the docstring)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs, one seed")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else args.seeds

    started, clock = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    cfg, cache = prepare_data(args.workdir, quick=args.quick, device=args.device)
    print(f"data ready in {time.perf_counter() - clock:.0f} s: {cache}", flush=True)
    from pipeline.sources.datasets.ntu import NTU_CLASS_NAMES

    subsets = {
        "a": [NTU_CLASS_NAMES[a - 1] for a in MOTION_CLASSES],
        "b": [NTU_CLASS_NAMES[a - 1] for a in appearance_classes()],
    }
    subsets["c"] = subsets["a"] + subsets["b"]
    base = cfg.train_overrides(attention=("FZ", "FB"))
    base["epochs"] = cfg.epochs if args.quick else args.epochs
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [
        {
            "modality": modality,
            "seed": seed,
            "base": base,
            "cache": cache,
            "device": args.device,
            "threads": threads,
            "out": str(args.workdir / "runs" / f"{modality}-seed{seed}"),
        }
        for seed in seeds
        for modality in MODALITIES
    ]
    results = []
    # spawn: CUDA cannot be used in forked children, and every run starts from a clean interpreter.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(run_modality, tasks):
            results.append(result)
            print(
                f"{result['modality']:<5} seed {result['seed']}: "
                + ", ".join(f"({key}) {subset_top1(result, names):.1%}" for key, names in subsets.items())
                + f", {result['seconds']:.0f} s",
                flush=True,
            )
    values = figures(results, subsets)
    table = [
        "| model inputs | (a) motion-only classes, top-1 % | (b) appearance-only classes, top-1 % "
        "| (c) all classes, top-1 % | seconds per run |",
        "|---|---|---|---|---|",
    ]
    for modality in MODALITIES:
        seconds = [r["seconds"] for r in results if r["modality"] == modality]
        table.append(
            f"| {modality} | "
            + " | ".join(_mean_std(values[modality][key]) for key in SUBSETS)
            + f" | {_mean_std(seconds, scale=1.0, digits=0)} |"
        )
    checks = verdicts(values)
    both_seed0 = next(r["checkpoint"] for r in results if r["modality"] == "both" and r["seed"] == seeds[0])
    evidence = explain_clip(cfg, both_seed0, args.workdir)
    print("\n".join(table + checks + [evidence]))
    command = "python -m benchmarks.crossmodal " + " ".join(map(_quoted, sys.argv[1:] if argv is None else argv))
    section = [
        SECTION,
        "",
        f"`{command.strip()}` on {started}{' (QUICK SMOKE RUN: not the reported figures)' if args.quick else ''}; "
        f"{time.perf_counter() - clock:.0f} s, {args.jobs} run(s) at a time.",
        "",
        f"Machine: {machine_line(args.device)}.",
        "",
        f"Data: {len(cfg.actions)} generated classes, {cfg.samples_per_class} clips per class, "
        f"{len(cfg.subjects)} subjects, T = {cfg.frames}, {cfg.size} px person crop, random-weight MC3-18; "
        f"(a) {', '.join(subsets['a'])}; (b) {', '.join(subsets['b'])} (one motion, a different object in the hand). "
        f"One model per modality and seed learns all classes (the demo's recipe: `small` preset, {base['epochs']} "
        f"epochs, batch {base['batch_size']}, lr {base['lr']:g}, dim {base['model']['dim']}, depth "
        f"{base['model']['depth']}); held-out = the test subjects' clips, final epoch; "
        f"seeds {', '.join(map(str, seeds))}; mean ± standard deviation.",
        "",
        *table,
        "",
        *checks,
        "",
        evidence,
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
