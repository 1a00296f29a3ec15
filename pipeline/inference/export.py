"""Exporting a trained STAR (`star export CKPT --format onnx|torchscript --out DIR`) and checking the export.

What is exported is the token aggregator, the STAR transformer and the head, with a dynamic batch axis, as one of
three graphs (the "kind", recorded in the sidecar):
- "maps": cached backbone maps in, as `STAR.forward` takes them (local, global, heatmaps, joints in map cells);
- "video" (`backbone=True`): the frozen (or fine-tuned) MC3-18 in front, so a clip of uint8 frames and the joints in
  input pixels go in, as `STAR.forward_video` takes them; the heat maps are built inside the graph;
- "skeleton": skeleton features, as `STAR.forward_skeleton` takes them (checkpoints trained on a skeleton cache).
Each modality takes only the inputs it uses (rgb: frames or global maps; pose: joints). The model file goes beside a
JSON sidecar (`pipeline.inference.runtime`) and `example.npz`, a batch of one valid input the export was checked on.

Every export is checked before it is published: the exported file, run by its own runtime, must give the PyTorch
logits within `TOLERANCE` and the same top-1 at batch 1 and at batch 3 (the dynamic batch). `verify_export` runs the
same check on any inputs, clips of a real cache for instance. Exporter choices and pitfalls: docs/design.md, "Export".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.backbone import MC3_18Backbone, kinetics_weights
from model.tokens import joint_heatmaps, joints_to_cells
from pipeline.core.errors import StarError
from pipeline.core.files import write_atomically
from pipeline.core.jsonable import json_roundtrip
from pipeline.inference.runtime import EXPORT_FORMAT, SIDECAR_NAME, ExportedModel, file_sha256
from pipeline.training.checkpoints import is_skeleton_checkpoint, load_trained_model, read_checkpoint
from pipeline.training.skeletons import skeleton_spec

FORMATS = {"onnx": ("model.onnx", "onnxruntime"), "torchscript": ("model.pt", "torchscript")}
TOLERANCE = 1e-4  # largest |logit difference| to PyTorch allowed (float32)
OPSET = 18  # LayerNormalization needs 17; 18 is the dynamo exporter's native opset and runs on onnxruntime >= 1.14
CHECK_BATCHES = (1, 3)
# The inputs each modality reads, per kind (the others are left out of the graph).
USED_INPUTS = {
    "maps": {"both": ("local", "global", "heatmaps", "joints"), "rgb": ("global",), "pose": ("joints",)},
    "video": {"both": ("video", "joints"), "rgb": ("video",), "pose": ("joints",)},
}


@dataclass(frozen=True)
class Parity:
    """The exported model against PyTorch on the same clips."""

    clips: int
    max_abs_diff: float
    same_top1: int  # clips whose top-1 class agrees
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.same_top1 == self.clips

    def format(self) -> str:
        return (
            f"{self.clips} clips: max |logit difference| {self.max_abs_diff:.2e} (allowed {self.tolerance:g}), "
            f"same top-1 on {self.same_top1}/{self.clips}"
        )


@dataclass(frozen=True)
class ExportResult:
    model: Path
    sidecar: dict[str, Any]
    parity: Parity

    def format(self) -> str:
        inputs = ", ".join(f"{spec['name']} {spec['shape']} {spec['dtype']}" for spec in self.sidecar["inputs"])
        return (
            f"wrote {self.model} ({self.model.stat().st_size / 1e6:.1f} MB, {self.sidecar['kind']} inputs: {inputs}) "
            f"and {self.model.parent / SIDECAR_NAME}\nchecked against PyTorch: {self.parity.format()}"
        )


def _zeros(like: Tensor, *shape: int) -> Tensor:
    return like.new_zeros(like.shape[0], *shape, dtype=torch.float32)  # (B, *shape)


class MapsGraph(nn.Module):
    """Named cached maps -> logits (B, classes); the inputs a modality does not read are zeros, cut from the graph."""

    def __init__(self, star: nn.Module, *, names: tuple[str, ...], frames: int, size: int) -> None:
        super().__init__()
        self.star, self.names, self.frames = star, names, frames
        self.local_side, self.global_side = size // MC3_18Backbone.local_stride, size // MC3_18Backbone.global_stride

    def forward(self, *tensors: Tensor) -> Tensor:
        given = dict(zip(self.names, tensors, strict=True))
        like, frames, local, grid, n = (
            tensors[0],
            self.frames,
            self.local_side,
            self.global_side,
            self.star.joint_tokens,
        )
        local_ = given["local"] if "local" in given else _zeros(like, frames, self.star.local_channels, local, local)
        global_ = given["global"] if "global" in given else _zeros(like, frames, self.star.global_channels, grid, grid)
        heatmaps = given["heatmaps"] if "heatmaps" in given else _zeros(like, frames, n, local, local)
        joints = given["joints"] if "joints" in given else _zeros(like, frames, n, 3)
        return self.star(local_, global_, heatmaps, joints)  # (B, classes)


class VideoGraph(nn.Module):
    """uint8 frames (B, T, 3, S, S) and pixel joints (B, T, N, 3) -> logits, through MC3-18 (`STAR.forward_video`)."""

    def __init__(self, star: nn.Module, backbone: nn.Module | None, *, names: tuple[str, ...], frames: int, size: int):
        super().__init__()
        self.star, self.backbone, self.names, self.frames, self.size = star, backbone, names, frames, size
        self.maps = MapsGraph(star, names=("joints",), frames=frames, size=size)

    def forward(self, *tensors: Tensor) -> Tensor:
        given = dict(zip(self.names, tensors, strict=True))
        if "video" not in given:  # pose: the frames are not read, only their size maps the joints to cells
            side = self.maps.local_side
            return self.maps(joints_to_cells(given["joints"], input_hw=(self.size,) * 2, map_hw=(side, side)))
        joints = given["joints"] if "joints" in given else _zeros(tensors[0], self.frames, self.star.joint_tokens, 3)
        return self.star.forward_video(given["video"], joints, backbone=self.backbone)


class SkeletonGraph(nn.Module):
    """Skeleton features (B, T, N, C) -> logits (`STAR.forward_skeleton`)."""

    def __init__(self, star: nn.Module) -> None:
        super().__init__()
        self.star = star

    def forward(self, *tensors: Tensor) -> Tensor:
        (joints,) = tensors  # (B, T, N, C)
        return self.star.forward_skeleton(joints)


def export_kind(state: dict[str, Any], *, backbone: bool) -> str:
    if is_skeleton_checkpoint(state):
        if backbone:
            raise StarError("a checkpoint trained on a skeleton cache has no backbone: export it without --backbone")
        return "skeleton"
    return "video" if backbone else "maps"


def input_specs(state: dict[str, Any], *, kind: str) -> list[dict[str, Any]]:
    """Name, shape (batch first, symbolic) and dtype of every input of the exported graph."""
    cfg = state["model_config"]
    joints = cfg["persons"] * cfg["num_joints"]
    if kind == "skeleton":
        frames = skeleton_spec(state["config"]).frames
        return [{"name": "joints", "shape": ["batch", frames, joints, cfg["joint_channels"]], "dtype": "float32"}]
    frames, size = int(state["fingerprint"]["frames"]), int(state["fingerprint"]["input_size"])
    local, grid = size // MC3_18Backbone.local_stride, size // MC3_18Backbone.global_stride
    shapes = {
        "local": ([frames, cfg["local_channels"], local, local], "float32"),
        "global": ([frames, cfg["global_channels"], grid, grid], "float32"),
        "heatmaps": ([frames, joints, local, local], "float32"),
        "joints": ([frames, joints, 3], "float32"),
        "video": ([frames, 3, size, size], "uint8"),
    }
    return [
        {"name": name, "shape": ["batch", *shapes[name][0]], "dtype": shapes[name][1]}
        for name in USED_INPUTS[kind][cfg["modality"]]
    ]


def build_graph(state: dict[str, Any], *, kind: str, weights: str = "") -> nn.Module:
    """The PyTorch module that is exported, in eval mode: also the reference its export is checked against."""
    classifier = load_trained_model(state, video=kind == "video" and state["model_config"]["modality"] != "pose",
                                    weights=weights)  # fmt: skip
    if kind == "skeleton":
        return SkeletonGraph(classifier.star).eval()
    names = tuple(spec["name"] for spec in input_specs(state, kind=kind))
    geometry = {"frames": int(state["fingerprint"]["frames"]), "size": int(state["fingerprint"]["input_size"])}
    if kind == "video":
        return VideoGraph(classifier.star, classifier.backbone, names=names, **geometry).eval()
    return MapsGraph(classifier.star, names=names, **geometry).eval()


def joint_extent(state: dict[str, Any], *, kind: str) -> float | None:
    """The range [0, extent) of the joint coordinates a graph takes: input pixels, map cells, or None (skeleton
    features, normalised)."""
    if kind == "skeleton":
        return None
    size = int(state["fingerprint"]["input_size"])
    return float(size if kind == "video" else size // MC3_18Backbone.local_stride)


def example_inputs(
    specs: list[dict[str, Any]], *, joint_extent: float | None, batch: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Valid seeded inputs: non-negative maps, joints inside the frame with confidence 1, heat maps built from them."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, shape = spec["name"], [batch, *spec["shape"][1:]]
        if name == "video":
            inputs[name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif name in ("local", "global", "heatmaps"):
            inputs[name] = np.abs(rng.standard_normal(shape, dtype=np.float32))
        elif joint_extent is None:
            inputs[name] = rng.standard_normal(shape, dtype=np.float32)
        else:
            inputs[name] = rng.uniform(0, joint_extent, size=shape).astype(np.float32)
        if name == "joints":
            inputs[name][..., -1] = 1.0  # every joint visible
    if "heatmaps" in inputs:  # the maps of those joints, as extraction builds them
        side = inputs["heatmaps"].shape[-1]
        inputs["heatmaps"] = joint_heatmaps(torch.from_numpy(inputs["joints"]), size=(side, side), sigma=1.0).numpy()
    return inputs


def check_parity(exported: ExportedModel, reference: nn.Module, inputs: dict[str, np.ndarray]) -> Parity:
    """Logits of the exported model and of its PyTorch graph on the same batch of named inputs."""
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(inputs[name]) for name in exported.input_names)).numpy()
    got = exported.logits(inputs)
    return Parity(
        clips=len(expected),
        max_abs_diff=float(np.abs(got - expected).max()),
        same_top1=int((got.argmax(1) == expected.argmax(1)).sum()),
    )


def verify_export(
    export: str | os.PathLike, checkpoint: str | os.PathLike, inputs: dict[str, np.ndarray], *, weights: str = ""
) -> Parity:
    """`check_parity` of an export folder (or model file) against the checkpoint it came from."""
    exported = ExportedModel(export)
    state = read_checkpoint(checkpoint)
    if file_sha256(Path(checkpoint)) != exported.sidecar["checkpoint"]["sha256"]:
        raise StarError(f"{export} was not exported from {checkpoint} (the checkpoint's SHA-256 differs)")
    return check_parity(exported, build_graph(state, kind=exported.kind, weights=weights), inputs)


def export_checkpoint(
    checkpoint: str | os.PathLike, *, out: str | os.PathLike, format: str = "onnx", backbone: bool = False,
    weights: str = "",
) -> ExportResult:  # fmt: skip
    """Export, check against PyTorch at batch 1 and 3, then publish the model file, `model.json` and `example.npz`."""
    if format not in FORMATS:
        raise StarError(f"unknown export format {format!r}: use onnx or torchscript")
    _require_tools(format)
    state = read_checkpoint(checkpoint)
    kind = export_kind(state, backbone=backbone)
    out = _writable_folder(Path(out))
    specs = input_specs(state, kind=kind)
    extent = joint_extent(state, kind=kind)
    graph = build_graph(state, kind=kind, weights=weights)
    filename, runtime = FORMATS[format]
    sidecar = _sidecar(state, checkpoint=Path(checkpoint), kind=kind, specs=specs, filename=filename, runtime=runtime)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        model = Path(scratch) / filename
        metadata = {"classes": "\n".join(state["class_names"]), "star_kind": kind, "star_sidecar": SIDECAR_NAME}
        _EXPORTERS[format](graph, example_inputs(specs, joint_extent=extent, batch=2, seed=1), model, metadata=metadata)
        sidecar |= {"sha256": file_sha256(model), "bytes": model.stat().st_size}
        (Path(scratch) / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=2))
        exported = ExportedModel(scratch)
        checks = [
            check_parity(exported, graph, example_inputs(specs, joint_extent=extent, batch=batch, seed=batch))
            for batch in CHECK_BATCHES
        ]
        parity = Parity(
            clips=sum(c.clips for c in checks),
            max_abs_diff=max(c.max_abs_diff for c in checks),
            same_top1=sum(c.same_top1 for c in checks),
        )
        if not parity.ok:
            raise StarError(
                f"the {format} export of {checkpoint} differs from PyTorch ({parity.format()}): not written"
            )
        sidecar["verification"] = {**asdict(parity), "batches": list(CHECK_BATCHES), "inputs": "example_inputs, seeded"}
        os.replace(model, out / filename)
    example = example_inputs(specs, joint_extent=extent, batch=1, seed=0)
    write_atomically(out / "example.npz", lambda handle: np.savez(handle, **example))
    write_atomically(out / SIDECAR_NAME, lambda handle: handle.write(json.dumps(sidecar, indent=2).encode()))
    return ExportResult(model=out / filename, sidecar=sidecar, parity=parity)


def _sidecar(
    state: dict[str, Any], *, checkpoint: Path, kind: str, specs: list[dict[str, Any]], filename: str, runtime: str
) -> dict[str, Any]:
    cfg, fingerprint = state["model_config"], state["fingerprint"]
    return json_roundtrip({
        "format": EXPORT_FORMAT,
        "model_file": filename,
        "runtime": runtime,
        "kind": kind,
        "inputs": specs,
        "outputs": [{"name": "logits", "shape": ["batch", cfg["num_classes"]], "dtype": "float32"}],
        "class_names": list(state["class_names"]),
        "modality": cfg["modality"],
        "attention": {"encoder": cfg["encoder"], "decoder": cfg["decoder"]},
        "frames": specs[0]["shape"][1],
        "input_size": fingerprint.get("input_size"),
        "layout": fingerprint["layout"],
        "persons": cfg["persons"],
        "preprocessing": _preprocessing(state, kind=kind),
        "checkpoint": {"file": checkpoint.name, "sha256": file_sha256(checkpoint)},
        "fingerprint": fingerprint,
        "model_config": cfg,
        "config": state["config"],
        "stage": state.get("stage"),
        "exporter": {"torch": torch.__version__, "opset": OPSET if runtime == "onnxruntime" else None},
    })  # fmt: skip


def _preprocessing(state: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """What a caller does before the model, in words and figures (`star predict` does exactly this)."""
    sampling = "T frames at the centres of T equal segments of the clip (pipeline.sources.clips.clip_indices)"
    if kind == "skeleton":
        spec = skeleton_spec(state["config"])
        return {
            "sampling": sampling,
            "normalisation": "per clip: centred and scaled by the person's joint box (pipeline.training.skeletons)",
            "streams": list(spec.streams),
            "test_clips": int(state["config"].get("test_clips", 1)),
            "scores": "the mean of the softmax over the test_clips samplings (the first: segment centres)",
        }
    fingerprint = state["fingerprint"]
    steps = {
        "sampling": sampling,
        "crop": f"{fingerprint['crop']}, resized to {fingerprint['input_size']} x {fingerprint['input_size']}",
        "joints": "(x, y, confidence), mapped through the same crop and resize; confidence 0 = missing",
    }
    if kind == "video":
        transforms = kinetics_weights().transforms()
        steps["normalisation"] = (
            f"inside the model: RGB uint8 / 255, then Kinetics-400 mean {list(transforms.mean)} and std "
            f"{list(transforms.std)}; joints in input pixels"
        )
    else:
        steps["normalisation"] = "none: MC3-18 layer3/layer4 maps as cached by `star extract`; joints in map cells"
    return steps


def _require_tools(format: str) -> None:
    needed = ("onnx", "onnxscript", "onnxruntime") if format == "onnx" else ()
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            raise StarError(
                f"`star export --format onnx` needs {name} (with onnx, onnxscript and onnxruntime): "
                "pip install 'star-action[export]'"
            ) from None


def _writable_folder(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise StarError(f"output folder {out} is not writable ({reason}): choose another --out") from None
    return out


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters' progress lines and deprecation notes are not the user's concern."""
    logger = logging.getLogger("onnxscript")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_onnx(graph: nn.Module, example: dict[str, np.ndarray], path: Path, *, metadata: dict[str, str]) -> None:
    # The dynamo exporter specialises every size it sees unless told otherwise: the batch axis is declared dynamic,
    # one spec per tensor of the graphs' single *tensors argument.
    batch = torch.export.Dim("batch", min=1)
    args = tuple(torch.from_numpy(array) for array in example.values())
    with _quiet_exporter():
        try:
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                input_names=list(example),
                output_names=["logits"],
                dynamic_shapes=(tuple({0: batch} for _ in args),),
                opset_version=OPSET,
                optimize=True,
            )
        except Exception as err:  # the exporter fails with many types; one line, then its own message
            raise StarError(f"the ONNX exporter failed on this model: {type(err).__name__}: {err}") from err
        program.model.metadata_props.update(metadata)
        program.save(str(path))


def _export_torchscript(
    graph: nn.Module, example: dict[str, np.ndarray], path: Path, *, metadata: dict[str, str]
) -> None:
    args = tuple(torch.from_numpy(array) for array in example.values())
    with _quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(graph, args, check_trace=False)  # the batch-1 and batch-3 checks run on the file
        torch.jit.save(traced, str(path), _extra_files={name: value.encode() for name, value in metadata.items()})


_EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript}
