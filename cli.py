"""`star`: the command-line interface. A thin Typer layer: parse, build a config, call one function, print."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from pipeline.core.errors import StarError
from pipeline.extraction.store import DEFAULT_UNIT_SIZE


class _StarGroup(TyperGroup):
    """Turns a `StarError` from any command into a one-line message on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StarError as err:
            _echo_error(str(err))
            raise typer.Exit(1) from err


def _echo_error(message: str) -> None:
    typer.echo(f"Error: {' '.join(message.split())}", err=True)  # one line, whatever the message holds


app = typer.Typer(
    cls=_StarGroup,
    help="STAR: action recognition from RGB video and skeletons (STAR-Transformer, WACV 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Model options shared by `star model-info` and `star train` (None: the ModelConfig default, or the config file's).
_DimOpt = Annotated[int | None, typer.Option(help="Transformer width D (model default: 256).")]
_DepthOpt = Annotated[int | None, typer.Option(help="Layers per encoder/decoder stage (model default: 3).")]
_HeadsOpt = Annotated[int | None, typer.Option(help="Attention heads (model default: 4).")]
_EncoderOpt = Annotated[str | None, typer.Option(help="Encoder layer kind FF, FZ or FB, Table 4 (model default: FZ).")]
_DecoderOpt = Annotated[str | None, typer.Option(help="Decoder layer kind FF, FZ or FB, Table 4 (model default: FB).")]
_SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any other option, KEY=VALUE (repeatable), e.g. --set norm=post, --set model.dropout=0: the fields of "
        "TrainConfig and, as model.KEY, of ModelConfig.",
    ),
]


@app.command("model-info")
def model_info(
    num_classes: int = typer.Option(60, help="Action classes (NTU-60: 60, NTU-120: 120, Penn Action: 15)."),
    persons: int | None = typer.Option(None, help="Persons per frame (model default: 2)."),
    joints: int | None = typer.Option(None, help="Joints per person (model default: 25)."),
    dim: _DimOpt = None,
    depth: _DepthOpt = None,
    heads: _HeadsOpt = None,
    encoder: _EncoderOpt = None,
    decoder: _DecoderOpt = None,
    settings: _SetOpt = None,
    frames: int = typer.Option(16, help="Frames per clip."),
    size: int = typer.Option(224, help="Input height = width in pixels (a multiple of 16)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print parameter counts, token counts and attention FLOPs of a STAR model config."""
    from model.star import format_summary  # imports torch: only when needed
    from pipeline.training.config import describe_model, parse_settings

    given = dict(
        persons=persons, num_joints=joints, dim=dim, depth=depth, heads=heads, encoder=encoder, decoder=decoder
    )
    overrides = {name: value for name, value in given.items() if value is not None}
    settings_ = parse_settings(settings or [])
    overrides |= {**settings_.pop("model", {}), **settings_}  # here every option is the model's
    summary = describe_model(size=size, num_classes=num_classes, frames=frames, **overrides)
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


# ---------------------------------------------------------------------------------------------------- extraction
_DatasetOpt = Annotated[str, typer.Option("--dataset", help="ntu60, ntu120, penn or folder.")]
_RootOpt = Annotated[Path, typer.Option("--root", help="Dataset root (folder: the manifest CSV or its folder).")]
_OutOpt = Annotated[str, typer.Option("--out", help="Feature cache: a zarr store path or fsspec URL.")]
_IndexOpt = Annotated[
    Path | None, typer.Option(help="HDF5 annotation index [default: <out folder>/<dataset>-index.h5].")
]
_BenchOpt = Annotated[str | None, typer.Option(help="Only this benchmark's samples, e.g. ntu120-xsub.")]
_FramesOpt = Annotated[int, typer.Option(help="Frames per clip (T), even.")]
_SizeOpt = Annotated[int, typer.Option(help="Backbone input size S (S x S).")]
_CropOpt = Annotated[str, typer.Option(help="full: resize the whole frame; person: square crop around the skeletons.")]
_WeightsOpt = Annotated[str, typer.Option(help="kinetics400 (from the torch hub cache), random, or a state-dict path.")]
_BatchOpt = Annotated[int, typer.Option(help="Clips per backbone call.")]
_WorkersOpt = Annotated[int, typer.Option(help="Decode threads per unit runner.")]
_UnitOpt = Annotated[
    int, typer.Option(help="Samples per work unit (= per zarr chunk); fixed when the store is created.")
]
_LimitOpt = Annotated[int | None, typer.Option(help="Only the first N samples.")]
_QuantOpt = Annotated[bool, typer.Option("--8bit/--float16", help="Store maps as 8-bit with per-channel scales.")]
_RetryOpt = Annotated[bool, typer.Option(help="Try failed samples again.")]
_DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")]
_ModalityOpt = Annotated[
    str,
    typer.Option(
        help="both or rgb: backbone features (decodes the videos); pose: the full-rate skeletons only "
        "(no video, no backbone: seconds)."
    ),
]


def _extract_config(
    dataset,
    root,
    out,
    index,
    benchmark,
    frames,
    size,
    crop,
    weights,
    batch_size,
    workers,
    unit_size,
    limit,
    quantize,
    retry_failed,
    device,
    modality,
):
    from pipeline.extraction.extract import ExtractConfig

    config = ExtractConfig(
        dataset=dataset,
        root=root,
        out=out,
        index=index,
        benchmark=benchmark,
        frames=frames,
        size=size,
        crop=crop,
        weights=weights,
        batch_size=batch_size,
        workers=workers,
        unit_size=unit_size,
        limit=limit,
        quantize=quantize,
        retry_failed=retry_failed,
        device=device,
        modality=modality,
    )
    config.check()
    return config


def _prefect_logs(verbose: bool) -> None:
    """`--verbose` shows Prefect's INFO logs; `flows` sets quiet defaults for everything else when imported."""
    if verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info")


@app.command()
def extract(
    dataset: _DatasetOpt,
    root: _RootOpt,
    out: _OutOpt,
    index: _IndexOpt = None,
    benchmark: _BenchOpt = None,
    frames: _FramesOpt = 16,
    size: _SizeOpt = 224,
    crop: _CropOpt = "full",
    weights: _WeightsOpt = "kinetics400",
    batch_size: _BatchOpt = 4,
    workers: _WorkersOpt = 2,
    unit_size: _UnitOpt = DEFAULT_UNIT_SIZE,
    limit: _LimitOpt = None,
    quantize: _QuantOpt = False,
    retry_failed: _RetryOpt = False,
    device: _DeviceOpt = "auto",
    modality: _ModalityOpt = "both",
    dask_address: Annotated[
        str | None, typer.Option(help="Run units on this Dask scheduler (tcp://HOST:PORT).")
    ] = None,
    dask_workers: Annotated[int | None, typer.Option(help="Run units on a local Dask cluster of N processes.")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Prefect's and Dask's logs.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar of the clips done on stderr.")] = True,
) -> None:
    """Stage 1: index a dataset and cache MC3-18 features (or, with --modality pose, its skeletons) in zarr.
    Exit 0: all done; 3: some samples failed."""
    config = _extract_config(
        dataset,
        root,
        out,
        index,
        benchmark,
        frames,
        size,
        crop,
        weights,
        batch_size,
        workers,
        unit_size,
        limit,
        quantize,
        retry_failed,
        device,
        modality,
    )
    if dask_address is not None and dask_workers is not None:
        raise StarError("Give either --dask-address or --dask-workers, not both")
    _prefect_logs(verbose)
    from contextlib import nullcontext

    from flows.extract import run_extract
    from pipeline.extraction.cache_progress import CacheProgress

    quiet = config.skeletons_only or not progress  # skeletons take seconds
    with nullcontext() if quiet else CacheProgress(config.out):
        summary = run_extract(config, dask_address=dask_address, dask_workers=dask_workers)
    typer.echo(summary.format())
    raise typer.Exit(summary.exit_code)


cache_app = typer.Typer(help="Inspect a feature cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(
    path: Annotated[str, typer.Argument(help="The zarr store.")],
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also draw the cache statistics into this PNG.")] = None,
) -> None:
    """Samples done/failed/pending, the fingerprint, size on disk and bytes per clip
    (skeleton caches: counts and splits)."""
    from pipeline.extraction.skeleton_store import SkeletonCache, is_skeleton_cache
    from pipeline.extraction.store import FeatureCache

    if is_skeleton_cache(path):
        skeletons = SkeletonCache.open(path)
        typer.echo(json.dumps(skeletons.info(), indent=2) if json_output else skeletons.format_info())
        return
    info = FeatureCache.open(path).info()
    typer.echo(json.dumps(info.to_json(), indent=2) if json_output else info.format())
    if plot is not None:
        from pipeline.inference.plots import cache_statistics, plot_cache_statistics

        typer.echo(f"plot: {plot_cache_statistics(stats=cache_statistics(path), out=plot)}", err=json_output)


schedule_app = typer.Typer(help="Serve scheduled runs on a Prefect server (PREFECT_API_URL).", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("extract")
def schedule_extract(
    dataset: _DatasetOpt,
    root: _RootOpt,
    out: _OutOpt,
    cron: Annotated[str, typer.Option(help='Cron schedule, e.g. "0 3 * * *".')],
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
    index: _IndexOpt = None,
    benchmark: _BenchOpt = None,
    frames: _FramesOpt = 16,
    size: _SizeOpt = 224,
    crop: _CropOpt = "full",
    weights: _WeightsOpt = "kinetics400",
    batch_size: _BatchOpt = 4,
    workers: _WorkersOpt = 2,
    unit_size: _UnitOpt = DEFAULT_UNIT_SIZE,
    limit: _LimitOpt = None,
    quantize: _QuantOpt = False,
    retry_failed: _RetryOpt = False,
    device: _DeviceOpt = "auto",
    modality: _ModalityOpt = "both",
) -> None:
    """Serve the extract flow as a deployment with a cron schedule; each run extracts only what is new."""
    config = _extract_config(
        dataset,
        root,
        out,
        index,
        benchmark,
        frames,
        size,
        crop,
        weights,
        batch_size,
        workers,
        unit_size,
        limit,
        quantize,
        retry_failed,
        device,
        modality,
    )
    if not os.environ.get("PREFECT_API_URL"):
        raise StarError(
            "Scheduled runs need a Prefect server: start one with `prefect server start` and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    from flows.extract import serve_extract

    serve_extract(config, cron=cron, name=name)


# ---------------------------------------------------------------------------------------------------- training
_Opt = typer.Option


@app.command()
def train(
    from_cache: Annotated[
        str | None, _Opt("--from-cache", "--cache", help="Feature or skeleton cache written by `star extract`.")
    ] = None,
    out: Annotated[
        str | None, _Opt(help="Run directory: config.json, metrics.jsonl, tensorboard/, last.pt, best.pt.")
    ] = None,
    config: Annotated[
        str | None,
        _Opt(
            help="A recipe of configs/ by name (paper, small, literal, penn-skeleton) or a TOML/JSON file of "
            "TrainConfig fields and a [model] table; options override it. Default: paper (section 4.1)."
        ),
    ] = None,
    resume: Annotated[bool, _Opt(help="Continue the run in --out from its last.pt, bit for bit on CPU.")] = False,
    epochs: Annotated[int | None, _Opt(help="Epochs (paper: 300).")] = None,
    batch_size: Annotated[int | None, _Opt(help="Global batch, split over torchrun processes (paper: 4).")] = None,
    lr: Annotated[float | None, _Opt(help="Learning rate (paper: 2e-4).")] = None,
    seed: Annotated[int | None, _Opt(help="Seed of initialisation, shuffling and augmentation.")] = None,
    workers: Annotated[int | None, _Opt(help="DataLoader worker processes.")] = None,
    device: Annotated[str | None, _Opt(help="auto, cpu or cuda.")] = None,
    benchmark: Annotated[
        str | None, _Opt(help="Split scheme in the cache, e.g. ntu120-xsub (default: the only one).")
    ] = None,
    val_split: Annotated[
        str | None,
        _Opt(
            help="Validation for best.pt: auto (carved from the training performers), a split of the cache, "
            "or '' for none (default: auto)."
        ),
    ] = None,
    modality: Annotated[
        str | None,
        _Opt(help="Inputs the model sees: both (STAR, default), rgb (frames only) or pose (skeleton only)."),
    ] = None,
    dim: _DimOpt = None,
    depth: _DepthOpt = None,
    heads: _HeadsOpt = None,
    encoder: _EncoderOpt = None,
    decoder: _DecoderOpt = None,
    end_to_end: Annotated[
        bool | None, _Opt("--end-to-end/--cached", help="Fine-tune MC3-18 too, decoding video.")
    ] = None,
    index: Annotated[str | None, _Opt(help="End-to-end: annotation index (default: next to the cache).")] = None,
    init: Annotated[str | None, _Opt(help="End-to-end: cache-stage checkpoint to start from.")] = None,
    settings: _SetOpt = None,
    progress: Annotated[bool, _Opt(help="Progress bar and a line per epoch on stderr.")] = True,
) -> None:
    """Stage 2: train STAR from the cache (or end to end from video); one line per epoch, then a summary."""
    from pipeline.training.config import parse_settings
    from pipeline.training.loop import format_result, run_training

    given = dict(
        cache=from_cache, out=out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, workers=workers,
        device=device, benchmark=benchmark, val_split=val_split, end_to_end=end_to_end, index=index, init=init,
    )  # fmt: skip
    model = dict(modality=modality, dim=dim, depth=depth, heads=heads, encoder=encoder, decoder=decoder)
    overrides = parse_settings(settings or [])
    overrides |= {key: value for key, value in given.items() if value is not None}
    overrides["model"] = {**overrides.get("model", {}), **{k: v for k, v in model.items() if v is not None}}
    result = run_training(overrides=overrides, config_file=config, resume=resume, show_progress=progress)
    if result.is_main:
        typer.echo(format_result(result))


@app.command()
def evaluate(
    checkpoint: Annotated[Path, _Opt(help="A checkpoint of `star train` (best.pt or last.pt).")],
    cache: Annotated[str, _Opt(help="The feature cache to evaluate on (same fingerprint as the checkpoint's).")],
    split: Annotated[str, _Opt(help="Split to evaluate.")] = "test",
    benchmark: Annotated[str | None, _Opt(help="Split scheme (default: the checkpoint's).")] = None,
    out: Annotated[Path | None, _Opt(help="Report folder (default: <checkpoint folder>/eval-<split>).")] = None,
    batch_size: Annotated[int, _Opt(help="Clips per forward pass.")] = 8,
    workers: Annotated[int, _Opt(help="DataLoader worker processes.")] = 2,
    index: Annotated[
        str | None, _Opt(help="End-to-end checkpoints: annotation index (default: next to the cache).")
    ] = None,
    weights: Annotated[str, _Opt(help="End-to-end checkpoints from a state-dict backbone: that file.")] = "",
    device: Annotated[str, _Opt(help="auto, cpu or cuda[:N].")] = "auto",
    json_output: Annotated[bool, _Opt("--json", help="Print the JSON report only.")] = False,
) -> None:
    """Top-1, top-5, mean per-class accuracy, confusion matrix (CSV, PNG), per-class table and a JSON report."""
    from pipeline.inference.evaluate import evaluate_checkpoint, format_evaluation

    result = evaluate_checkpoint(
        checkpoint=checkpoint,
        cache=cache,
        split=split,
        benchmark=benchmark,
        out_dir=out,
        batch_size=batch_size,
        workers=workers,
        index=index,
        weights=weights,
        device=device,
    )
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_output else format_evaluation(result))


_PoseOpt = Annotated[
    Path | None,
    _Opt(
        help="Its pose: NTU .skeleton, Penn Action .mat, or .npz/.json (original-frame pixels) "
        "[default: estimated from the video, as `star pose` does]."
    ),
]


@app.command()
def pose(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of frames.", show_default=False)],
    out: Annotated[
        Path | None,
        _Opt("--out", "-o", help="Pose file for one video, .json or .npz (default: <video>.pose.json beside it)."),
    ] = None,
    out_dir: Annotated[Path | None, _Opt(help="Write each video's pose to DIR/<video name>.json.")] = None,
    layout: Annotated[
        str, _Opt(help="Joint layout to write: blazepose33 (the estimator's own), coco17, ntu25 or penn13.")
    ] = "blazepose33",
    persons: Annotated[int, _Opt(help="Person tracks to keep, most confident first.")] = 1,
    progress: Annotated[bool, _Opt(help="Progress bar on stderr.")] = True,
) -> None:
    """Detect and track people (BlazePose) and write their joints as a pose file for folders and `star predict`.

    Several videos run in one process: a video that fails is reported, the others are written, the exit code is 1.
    """
    from pipeline.sources.layouts import builtin_layout
    from pipeline.sources.pose import estimate_to_files

    results = estimate_to_files(
        videos, out=out, out_dir=out_dir, layout=builtin_layout(layout), persons=persons, show_progress=progress
    )
    failed = 0
    for result in results:
        if result.path is None:
            failed += 1
            _echo_error(result.message)
        else:
            typer.echo(f"wrote {result.path}: {result.message}")
    if failed and len(videos) > 1:
        typer.echo(f"{failed} of {len(videos)} videos failed; the poses of the others are written.", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def predict(
    video: Annotated[
        Path,
        typer.Argument(
            help="A video file or a folder of frames (for a checkpoint trained on a skeleton cache, "
            "the pose file alone will do)."
        ),
    ],
    checkpoint: Annotated[
        Path, _Opt(help="A checkpoint of `star train`, or an export of `star export --backbone` (its folder or file).")
    ],
    pose: _PoseOpt = None,
    top: Annotated[int, _Opt(help="How many classes to print.")] = 5,
    weights: Annotated[str, _Opt(help="Backbone state-dict file, when the cache was extracted from one.")] = "",
    device: Annotated[str, _Opt(help="auto, cpu or cuda[:N].")] = "auto",
    json_output: Annotated[bool, _Opt("--json", help="Print JSON only.")] = False,
) -> None:
    """Decode one video, extract its features and print the top classes with probabilities."""
    from pipeline.inference.predict import predict as predict_video

    prediction = predict_video(video=video, pose=pose, checkpoint=checkpoint, top_k=top, weights=weights, device=device)
    typer.echo(json.dumps(prediction.to_dict(), indent=2) if json_output else prediction.format())


# ------------------------------------------------------------------------------------------ explain, demo, bench


@app.command()
def explain(
    video: Annotated[Path, typer.Argument(help="A video file or a folder of frames.")],
    checkpoint: Annotated[Path, _Opt(help="A checkpoint of `star train` (the model to explain).")],
    pose: _PoseOpt = None,
    compare: Annotated[
        Path | None, _Opt(help="A second checkpoint drawn beside it, e.g. the FAttn-only (FF/FF) model of Fig. 6.")
    ] = None,
    out: Annotated[Path | None, _Opt(help="Output folder [default: <checkpoint folder>/explain-<video name>].")] = None,
    weights: Annotated[str, _Opt(help="Backbone state-dict file, when the cache was extracted from one.")] = "",
    device: Annotated[str, _Opt(help="auto, cpu or cuda[:N].")] = "auto",
    json_output: Annotated[bool, _Opt("--json", help="Print the JSON only.")] = False,
) -> None:
    """Attention rollout per frame (paper Fig. 6): frame_importance.png (frames, skeletons, bars) and explain.json.
    For models trained on frames and maps (not on a skeleton cache).

    Explain stays on PyTorch: the rollout needs the attention weights, which an export of `star export` does not give,
    so --checkpoint must be the checkpoint itself."""
    from pipeline.inference.explain import explain as explain_video

    explanation = explain_video(
        video=video, pose=pose, checkpoint=checkpoint, compare=compare, out_dir=out, weights=weights, device=device
    )
    typer.echo(json.dumps(explanation.to_dict(), indent=2) if json_output else explanation.format())


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint of `star train` (best.pt or last.pt).")],
    out: Annotated[Path, _Opt(help="Folder for the model file, model.json (its sidecar) and example.npz.")],
    format: Annotated[str, _Opt("--format", help="onnx (run by onnxruntime) or torchscript.")] = "onnx",
    backbone: Annotated[
        bool, _Opt(help="Put the MC3-18 in front, so raw uint8 frames and pixel joints go in (what predict needs).")
    ] = False,
    weights: Annotated[str, _Opt(help="With --backbone: the state-dict file the cache was extracted with.")] = "",
) -> None:
    """Export STAR (and with --backbone its MC3-18) to ONNX or TorchScript with a dynamic batch, checked against
    PyTorch; `star predict --checkpoint DIR` runs it."""
    from pipeline.inference.export import export_checkpoint

    typer.echo(export_checkpoint(checkpoint, out=out, format=format, backbone=backbone, weights=weights).format())


@app.command()
def watch(
    source: Annotated[str, typer.Argument(help="A video file, a camera index (0) or a stream URL (rtsp://, http://).")],
    checkpoint: Annotated[Path, _Opt(help="A checkpoint of `star train`, or an export of `star export`.")],
    out: Annotated[Path | None, _Opt(help="Output folder (default: watch-<source name>).")] = None,
    window: Annotated[float, _Opt(help="Seconds of video per classification (W).")] = 2.0,
    stride: Annotated[float, _Opt(help="Seconds between classifications (S).")] = 1.0,
    pose_every: Annotated[int, _Opt(help="Estimate the pose on every k-th frame (k), carried over between.")] = 2,
    top: Annotated[int, _Opt(help="Classes per timeline row.")] = 3,
    threshold: Annotated[float, _Opt(help="Smoothed score a window needs to count towards an event.")] = 0.5,
    people: Annotated[int, _Opt(help="Persons to track; one timeline row each per window.")] = 1,
    overlay: Annotated[bool, _Opt(help="Also write overlay.avi: skeletons, person ids, labels.")] = False,
    reconnects: Annotated[int, _Opt(help="Live sources: reopen attempts (with back-off) after the stream fails.")] = 5,
    live: Annotated[bool, _Opt(help="A live line of the latest label on stderr.")] = True,
    device: Annotated[str, _Opt(help="auto, cpu or cuda[:N].")] = "auto",
    json_output: Annotated[bool, _Opt("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Recognise actions on a video file, a camera or a stream as they happen: timeline.jsonl, events.json, overlay."""
    from pipeline.inference.watch import WatchConfig
    from pipeline.inference.watch import watch as watch_source

    config = WatchConfig(
        source=source, checkpoint=checkpoint, out=out, window=window, stride=stride, pose_every=pose_every,
        top_k=top, threshold=threshold, people=people, overlay=overlay, reconnects=reconnects, device=device,
    )  # fmt: skip
    summary = watch_source(config, live_line=live and not json_output)
    typer.echo(json.dumps(summary.to_dict(), indent=2) if json_output else summary.format())


@app.command()
def demo(
    workdir: Annotated[Path, _Opt(help="Where the dataset, cache, runs and report go; reused by the next run.")] = Path(
        "star-demo"
    ),
    compare_fattn: Annotated[
        bool, _Opt("--compare-fattn", help="Also train the FAttn-only model (FF/FF) and draw both, as in Fig. 6.")
    ] = False,
    samples_per_class: Annotated[int | None, _Opt(hidden=True)] = None,
    classes: Annotated[int | None, _Opt(hidden=True, help="Use the first N demo classes.")] = None,
    epochs: Annotated[int | None, _Opt(hidden=True)] = None,
    size: Annotated[int | None, _Opt(hidden=True)] = None,
    frames: Annotated[int | None, _Opt(hidden=True)] = None,
    frame_width: Annotated[
        int | None, _Opt(hidden=True, help="Width of the generated videos (height: 9/16 of it).")
    ] = None,
    device: Annotated[str, _Opt(help="auto, cpu or cuda[:N].")] = "auto",
    seed: Annotated[int | None, _Opt(help="Seeds the generated dataset and the training run [default: 0].")] = None,
) -> None:
    """Generate a dataset, extract (Prefect), train, evaluate and explain; write a report. README command #1."""
    from rich.console import Console

    from flows.demo import run_demo, summary_table
    from pipeline.demo import demo_config

    config = demo_config(
        workdir=workdir,
        compare_fattn=compare_fattn,
        device=device,
        samples_per_class=samples_per_class,
        classes=classes,
        epochs=epochs,
        size=size,
        frames=frames,
        frame_width=frame_width,
        seed=seed,
    )
    console = Console()
    result = run_demo(config, console=console)
    console.print(summary_table(result))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    quick: Annotated[
        bool, _Opt("--quick", help="A short smoke run of every benchmark (minutes, not the reported figures).")
    ] = False,
) -> None:
    """Run every benchmark in benchmarks/ and rewrite benchmarks/RESULTS.md (same as `python -m benchmarks`)."""
    from benchmarks.__main__ import main as run_benchmarks

    raise typer.Exit(run_benchmarks([*(["--quick"] if quick else []), *ctx.args]))


if __name__ == "__main__":
    app()
