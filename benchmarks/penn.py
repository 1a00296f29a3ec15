"""STAR's pose stream on Penn Action's real skeletons: validation top-1 over seeds beside simple baselines, and speed.

    python -m benchmarks.penn --root path/to/Penn_Action          # the reported figures (about half an hour)
    python -m benchmarks.penn --root path/to/Penn_Action --ablations --seeds 0   # each choice undone alone
    python -m benchmarks.penn --root tests/data/penn_action --quick

Every figure comes from the training split only: the validation part is the one `star train` carves (the
config's `val_fraction` of each class, a fixed function of the sample ids), so the official test split is never
looked at. Per seed the recipe (`configs/penn-skeleton.toml`) trains on the rest and its last model is scored on
the validation part with the recipe's test samplings. In the same run, on the same split, two baselines see the
normalised joint trajectories (the recipe's T frames at the segment centres, every joint's x, y and confidence):
multinomial logistic regression (L2, L-BFGS) and 1-nearest-neighbour.

Speed: pose-only training steps per second for a given model, fed by the skeleton loader and, side by side in the
same run, from batches already in memory; and the whole recipe's train + validation time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.learning import finish, machine_line

HERE = Path(__file__).resolve().parent
SECTION = "## Penn Action skeletons"
RECIPE = HERE.parent / "configs" / "penn-skeleton.toml"
# The model of the first pose-only measurement on Penn (from a feature cache; its speed is the target's reference).
REFERENCE_MODEL = {"dim": 128, "depth": 2, "heads": 4}
NO_AUGMENTATION = {"hflip": 0.0, "rotate": 0.0, "scale": 0.0, "shift": 0.0, "joint_dropout": 0.0}
# name -> overrides of the recipe: one of its choices undone each.
ABLATIONS: dict[str, dict[str, Any]] = {
    "joint stream only": {"streams": ["joint"]},
    "joint + bone streams": {"streams": ["joint", "bone"]},
    "no augmentation": NO_AUGMENTATION,
    "linear joint position (no Fourier features)": {"model": {"joint_position": "linear"}},
}


def prepare(root: Path, workdir: Path) -> str:
    """The skeleton cache of the Penn Action folder `root` (no Prefect, no frames read)."""
    from pipeline.extraction.extract import ExtractConfig, extract

    out = workdir / "penn-skeletons.zarr"
    summary = extract(ExtractConfig(dataset="penn", root=root, out=str(out), modality="pose"))
    print(summary.format(), flush=True)
    return str(out)


def validation_split(cache_path: str, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of the cache, carved exactly as `star train` carves them."""
    from pipeline.extraction.skeleton_store import SkeletonCache
    from pipeline.training.splits import carve_validation

    cache = SkeletonCache.open(cache_path)
    rows = np.flatnonzero(cache.split("penn-train") & cache.done)
    train_ids, val_ids = carve_validation(cache.sample_ids[rows], fraction=cfg.val_fraction, labels=cache.labels[rows])
    return (np.flatnonzero(np.isin(cache.sample_ids, train_ids)), np.flatnonzero(np.isin(cache.sample_ids, val_ids)))


def score(checkpoint: Path, cache_path: str, rows: np.ndarray, *, test_clips: int) -> float:
    """Top-1 of a checkpoint on cache rows, averaging `test_clips` samplings per clip."""
    import torch
    from torch.utils.data import DataLoader

    from pipeline.extraction.skeleton_store import SkeletonCache
    from pipeline.training.checkpoints import load_trained_model, read_checkpoint
    from pipeline.training.metrics import evaluate_model
    from pipeline.training.skeletons import skeleton_dataset
    from pipeline.training.splits import read_cache_meta

    state = read_checkpoint(checkpoint)
    dataset = skeleton_dataset(
        cache=SkeletonCache.open(cache_path),
        rows=rows,
        cfg=state["config"],
        layout=read_cache_meta(cache_path).layout,
        train=False,
        test_clips=test_clips,
    )
    counter = evaluate_model(
        model=load_trained_model(state, video=False),
        batches=DataLoader(dataset, batch_size=32),
        num_classes=len(state["class_names"]),
        device=torch.device("cpu"),
    )
    return counter.summary()["top1"]


def run_seed(cache_path: str, *, seed: int, workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from pipeline.training.config import resolve_config
    from pipeline.training.loop import train

    cfg = resolve_config(
        config_file=RECIPE,
        overrides={"cache": cache_path, "out": str(workdir / f"seed{seed}"), "seed": seed, **overrides},
    )  # a [model] override is merged
    started = time.perf_counter()
    result = train(cfg, show_progress=False)
    trained = time.perf_counter() - started
    _, val_rows = validation_split(cache_path, cfg)
    started = time.perf_counter()
    top1 = score(Path(result.last_checkpoint), cache_path, val_rows, test_clips=cfg.test_clips)
    scored = time.perf_counter() - started
    single = score(Path(result.last_checkpoint), cache_path, val_rows, test_clips=1)
    return {
        "seed": seed,
        "top1": top1,
        "top1_one_clip": single,
        "best_epoch_top1": result.best_top1,
        "train_seconds": trained,
        "score_seconds": scored,
        "val_clips": len(val_rows),
        "samples_per_s": result.last_metrics.get("train.samples_per_s"),
    }


def trajectories(cache_path: str, rows: np.ndarray, *, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(clips, T * joints * 3) normalised joint trajectories at the segment centres, and the labels."""
    from pipeline.extraction.skeleton_store import SkeletonCache
    from pipeline.training.skeletons import SkeletonSpec, SkeletonTransform
    from pipeline.training.splits import read_cache_meta

    cache = SkeletonCache.open(cache_path)
    transform = SkeletonTransform(
        spec=SkeletonSpec(frames=frames, streams=("joint",)), layout=read_cache_meta(cache_path).layout
    )
    features = np.stack([transform(cache.skeleton(int(row)), rng=None).reshape(-1) for row in rows])
    return features, cache.labels[rows]


def logistic_regression(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, l2: float = 1e-3
) -> np.ndarray:
    """Predicted classes of multinomial logistic regression (standardised inputs, L2 penalty, full-batch L-BFGS)."""
    import torch

    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    y = torch.from_numpy(train_y)
    classes = int(max(train_y.max(), 0)) + 1
    weights = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y) + l2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    test = torch.from_numpy((test_x - mean) / std).double()
    return (test @ weights + bias).argmax(dim=1).numpy()


def nearest_neighbour(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    distances = ((test_x[:, None, :] - train_x[None, :, :]) ** 2).sum(axis=-1)  # (test, train)
    return train_y[distances.argmin(axis=1)]


def baselines(cache_path: str, cfg: Any) -> dict[str, float]:
    train_rows, val_rows = validation_split(cache_path, cfg)
    train_x, train_y = trajectories(cache_path, train_rows, frames=cfg.frames)
    val_x, val_y = trajectories(cache_path, val_rows, frames=cfg.frames)
    return {
        "logistic regression": float(np.mean(logistic_regression(train_x, train_y, val_x) == val_y)),
        "1-nearest neighbour": float(np.mean(nearest_neighbour(train_x, train_y, val_x) == val_y)),
    }


def training_speed(
    cache_path: str, *, model: dict[str, Any], streams: tuple[str, ...], steps: int, batch_size: int = 32, reps: int = 3
) -> dict[str, float]:
    """Training samples/s of a pose-only model fed by the skeleton loader vs from batches in memory, interleaved."""
    import torch
    from torch.utils.data import DataLoader

    from model.star import ModelConfig, build_model
    from pipeline.extraction.skeleton_store import SkeletonCache
    from pipeline.training.classifier import ClipClassifier
    from pipeline.training.skeletons import SkeletonAugment, SkeletonClips, SkeletonSpec, SkeletonTransform
    from pipeline.training.splits import read_cache_meta

    cache = SkeletonCache.open(cache_path)
    spec = SkeletonSpec(frames=16, streams=streams)
    dataset = SkeletonClips(
        cache=cache,
        rows=np.flatnonzero(cache.done),
        seed=0,
        train=True,
        transform=SkeletonTransform(spec=spec, layout=read_cache_meta(cache_path).layout),
        augment=SkeletonAugment(hflip=0.5, rotate=15, scale=0.1, shift=0.1, joint_dropout=0.05),
    )
    star = build_model(
        ModelConfig(
            num_classes=len(cache.fingerprint["class_names"]),
            persons=cache.persons,
            num_joints=cache.num_joints,
            modality="pose",
            frames=spec.frames,
            joint_channels=spec.channels,
            **model,
        )
    )
    classifier = ClipClassifier(star=star).train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = torch.nn.functional.cross_entropy(classifier(batch), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    in_memory = [next(iter(loader)) for _ in range(2)]
    step(in_memory[0])  # warm-up
    rates: dict[str, list[float]] = {"loader": [], "in_memory": []}
    for _ in range(reps):
        started = time.perf_counter()
        for count, batch in enumerate(loader, start=1):
            step(batch)
            if count == steps:
                break
        rates["loader"].append(steps * batch_size / (time.perf_counter() - started))
        started = time.perf_counter()
        for count in range(steps):
            step(in_memory[count % 2])
        rates["in_memory"].append(steps * batch_size / (time.perf_counter() - started))
    loader_rate, memory_rate = statistics.median(rates["loader"]), statistics.median(rates["in_memory"])
    return {"loader": loader_rate, "in_memory": memory_rate, "ratio": loader_rate / memory_rate}


ABLATION_SECTION = "## Penn Action ablations"


def ablations(cache_path: str, *, seeds: list[int], workdir: Path, quick: dict[str, Any], args: Any, cfg: Any) -> int:
    """The recipe with one choice undone, on the same validation part; a section of its own in RESULTS.md."""
    results: dict[str, list[dict[str, Any]]] = {}
    for name, overrides in ABLATIONS.items():
        for seed in seeds:
            run = run_seed(
                cache_path,
                seed=seed,
                workdir=workdir / name.split(" (")[0].replace(" ", "-"),
                overrides={**overrides, **quick},
            )
            results.setdefault(name, []).append(run)
            print(json.dumps({"ablation": name, **run}), flush=True)
    command = f"python -m benchmarks.penn --root {args.root} --ablations --seeds {' '.join(map(str, seeds))}"
    lines = [
        ABLATION_SECTION,
        "",
        f"`{command}`{' --quick (smoke run)' if args.quick else ''}; {machine_line('cpu')}; "
        f"the recipe `configs/penn-skeleton.toml` with one choice undone, validation as in the section above "
        f"({cfg.test_clips} samplings per clip, last epoch).",
        "",
        "| recipe with | validation top-1 % | 1 sampling % | seconds per run | seeds |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {_mean_std([r['top1'] for r in runs])} | {_mean_std([r['top1_one_clip'] for r in runs])} | "
            f"{statistics.fmean([r['train_seconds'] for r in runs]):.0f} | {len(runs)} |"
            for name, runs in results.items()
        ),
    ]
    finish(lines, out=args.out, section=ABLATION_SECTION, json_path=args.json, payload={"ablations": results})
    return 0


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values) * 100
    return f"{mean:.1f} ± {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else f"{mean:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.penn", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the Penn_Action folder (labels/ suffices)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("runs/penn-benchmark"))
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="RESULTS.md whose Penn section is replaced"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs, a few speed steps")
    parser.add_argument(
        "--ablations",
        action="store_true",
        help=f"instead: the recipe with one choice undone, per seed ({'; '.join(ABLATIONS)})",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from pipeline.training.config import resolve_config

    args.workdir.mkdir(parents=True, exist_ok=True)
    cache_path = prepare(args.root, args.workdir)
    quick = {"epochs": 2, "val_fraction": 0.3, "test_clips": 2} if args.quick else {}
    cfg = resolve_config(config_file=RECIPE, overrides={"cache": cache_path, **quick})
    seeds = args.seeds[:1] if args.quick else args.seeds
    if args.ablations:
        return ablations(cache_path, seeds=seeds, workdir=args.workdir, quick=quick, args=args, cfg=cfg)
    runs = []
    for seed in seeds:
        runs.append(run_seed(cache_path, seed=seed, workdir=args.workdir, overrides=quick))
        print(json.dumps(runs[-1]), flush=True)
    simple = baselines(cache_path, cfg)
    print(json.dumps(simple), flush=True)
    # quick: one repetition of 2 steps at a batch that the few test files fill twice
    timing = {"steps": 2, "batch_size": 8, "reps": 1} if args.quick else {"steps": 20}
    speed = {
        "reference model": training_speed(cache_path, model=REFERENCE_MODEL, streams=("joint",), **timing),
        "recipe model": training_speed(cache_path, model=dict(cfg.model), streams=cfg.streams, **timing),
    }
    print(json.dumps(speed), flush=True)

    command = "python -m benchmarks.penn --root " + str(args.root) + (" --quick" if args.quick else "")
    recipe_minutes = statistics.fmean([r["train_seconds"] + r["score_seconds"] for r in runs]) / 60
    lines = [
        SECTION,
        "",
        f"`{command}`{' (smoke run: not the reported figures)' if args.quick else ''}; "
        f"{machine_line('cpu')}; recipe `configs/penn-skeleton.toml`; validation: {runs[0]['val_clips']} clips "
        f"carved from the {cfg.val_fraction:g} of each class of Penn Action's training split (the test split is "
        "not read).",
        "",
        "| model | validation top-1 % | seeds |",
        "|---|---|---|",
        f"| STAR pose stream, {cfg.test_clips} samplings per clip (last epoch) "
        f"| {_mean_std([r['top1'] for r in runs])} | {len(runs)} |",
        f"| STAR pose stream, 1 sampling (segment centres) "
        f"| {_mean_std([r['top1_one_clip'] for r in runs])} | {len(runs)} |",
        *(
            f"| {name} on normalised joint trajectories | {value * 100:.1f} | deterministic |"
            for name, value in simple.items()
        ),
        "",
        f"Recipe time per seed (train + validation scoring): {recipe_minutes:.1f} min; training "
        f"{statistics.fmean([r['samples_per_s'] for r in runs]):.0f} samples/s.",
        "",
        "| training speed (samples/s, batch 32, median of 3) | skeleton loader | in memory | loader / in memory |",
        "|---|---|---|---|",
        *(
            f"| {name} {json.dumps(model)} | {s['loader']:.0f} | {s['in_memory']:.0f} | {s['ratio']:.2f} |"
            for (name, s), model in zip(speed.items(), (REFERENCE_MODEL, dict(cfg.model)), strict=True)
        ),
    ]
    finish(
        lines,
        out=args.out,
        section=SECTION,
        json_path=args.json,
        payload={"runs": runs, "baselines": simple, "speed": speed, "command": command},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
