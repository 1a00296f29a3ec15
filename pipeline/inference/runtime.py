"""Running an exported STAR (`star export`) without the training stack: onnxruntime for `model.onnx`, TorchScript for
`model.pt`, each checked against its JSON sidecar before the first inference.

An export is a folder holding the model file and `model.json` (`pipeline.inference.export` writes both). The sidecar
names the model file and its SHA-256 and size, and says what a caller needs: the inputs (names, shapes with a symbolic
batch, dtypes), the class names, the checkpoint's feature fingerprint, model config and training config (frames,
input size, joint layout, skeleton streams), so `star predict` prepares the same inputs as for the checkpoint.
A model file that is truncated, edited or not the one the sidecar describes is refused with a one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import StarError

SIDECAR_NAME = "model.json"
EXPORT_FORMAT = "star-export/1"
MODEL_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript"}
_SIDECAR_KEYS = {
    "format": str,
    "model_file": str,
    "runtime": str,
    "sha256": str,
    "bytes": int,
    "kind": str,
    "inputs": list,
    "class_names": list,
    "fingerprint": dict,
    "model_config": dict,
    "config": dict,
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path | None:
    """The sidecar of an export folder or exported model file; None when `path` is neither (a checkpoint, say)."""
    path = Path(path)
    if path.is_dir():
        exported = any((path / name).is_file() for name in (SIDECAR_NAME, "model.onnx", "model.pt"))
        return path / SIDECAR_NAME if exported else None
    if path.suffix.lower() == ".onnx" or path.name == SIDECAR_NAME:
        return path.parent / SIDECAR_NAME
    if path.suffix.lower() == ".pt" and (path.parent / SIDECAR_NAME).is_file():
        sidecar = read_sidecar(path.parent / SIDECAR_NAME)
        return path.parent / SIDECAR_NAME if sidecar["model_file"] == path.name else None
    return None


def is_export(path: str | os.PathLike) -> bool:
    return sidecar_path(path) is not None


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar's JSON, with every key a caller reads present and of the right type."""
    if not path.is_file():
        raise StarError(f"{path.parent} has no {SIDECAR_NAME}: use the folder `star export` wrote, sidecar included")
    try:
        sidecar = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StarError(f"export sidecar {path} is not valid JSON ({err}): export the model again") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != EXPORT_FORMAT:
        raise StarError(f"{path} is not the sidecar of a `star export` model (format {EXPORT_FORMAT})")
    for key, kind in _SIDECAR_KEYS.items():
        if not isinstance(sidecar.get(key), kind):
            raise StarError(f"export sidecar {path} is damaged: '{key}' is missing or not a {kind.__name__}")
    return sidecar


def check_model_file(model: Path, sidecar: dict[str, Any]) -> None:
    """Refuse a model file that is not, byte for byte, the one the sidecar describes."""
    if not model.is_file():
        raise StarError(f"exported model {model} does not exist: its sidecar names it; export the model again")
    size = model.stat().st_size
    if size != sidecar["bytes"]:
        raise StarError(
            f"exported model {model} is {size} bytes but its sidecar says {sidecar['bytes']}: the file is truncated "
            "or is not the one exported with this sidecar; export the model again"
        )
    if file_sha256(model) != sidecar["sha256"]:
        raise StarError(
            f"exported model {model} does not match the SHA-256 in its sidecar: the file was edited or the sidecar "
            "belongs to another export; export the model again"
        )


class ExportedModel:
    """An exported STAR, checked and loaded: `logits(inputs)` on named numpy arrays with a leading batch axis.

    `state` holds the checkpoint facts the sidecar carries under the checkpoint's own keys (class_names, fingerprint,
    model_config, config), so callers prepare inputs exactly as for the checkpoint.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        sidecar_file = sidecar_path(path)
        if sidecar_file is None:
            raise StarError(f"{path} is not a `star export` model: give its folder or the model file in it")
        self.sidecar = read_sidecar(sidecar_file)
        self.path = sidecar_file.parent / self.sidecar["model_file"]
        if Path(path).is_file() and Path(path).name != SIDECAR_NAME and Path(path).name != self.path.name:
            raise StarError(f"{path} is not the model file its sidecar names ({self.sidecar['model_file']})")
        check_model_file(self.path, self.sidecar)
        self.kind = self.sidecar["kind"]
        self.input_names = [spec["name"] for spec in self.sidecar["inputs"]]
        self.state = {key: self.sidecar[key] for key in ("class_names", "fingerprint", "model_config", "config")}
        self.state["stage"] = self.sidecar.get("stage")
        runners = {"onnxruntime": _OnnxRunner, "torchscript": _TorchScriptRunner}
        if self.sidecar["runtime"] not in runners:
            raise StarError(f"export sidecar {sidecar_file}: unknown runtime {self.sidecar['runtime']!r}")
        self._runner = runners[self.sidecar["runtime"]](self.path, threads=threads)
        self._check_signature()

    def _check_signature(self) -> None:
        declared = self._runner.input_names()
        if declared is not None and declared != self.input_names:
            raise StarError(
                f"the sidecar of {self.path} lists the inputs {self.input_names}, the model file takes {declared}: "
                "the sidecar belongs to another export; export the model again"
            )

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, classes) float32 logits; `inputs` may hold more arrays than the model takes (those it ignores)."""
        feed = {}
        for spec in self.sidecar["inputs"]:
            if spec["name"] not in inputs:
                raise StarError(f"exported model {self.path} needs the input {spec['name']!r}")
            array = np.ascontiguousarray(inputs[spec["name"]], dtype=spec["dtype"])
            expected = [array.shape[0], *spec["shape"][1:]]
            if list(array.shape) != expected:
                raise StarError(
                    f"input {spec['name']!r} has shape {list(array.shape)}, exported model {self.path} takes "
                    f"{['batch', *spec['shape'][1:]]}"
                )
            feed[spec["name"]] = array
        logits = self._runner.run(feed)
        if logits.shape[-1] != len(self.sidecar["class_names"]):
            raise StarError(
                f"exported model {self.path} gives {logits.shape[-1]} scores per clip but its sidecar names "
                f"{len(self.sidecar['class_names'])} classes: the sidecar belongs to another export"
            )
        return logits


class _OnnxRunner:
    def __init__(self, path: Path, *, threads: int | None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise StarError(
                "running an exported ONNX model needs onnxruntime: pip install 'star-action[export]'"
            ) from None
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types for unreadable or invalid graphs
            raise StarError(f"onnxruntime cannot load {path} ({type(err).__name__}): export the model again") from err

    def input_names(self) -> list[str]:
        return [node.name for node in self.session.get_inputs()]

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class _TorchScriptRunner:
    def __init__(self, path: Path, *, threads: int | None) -> None:
        import warnings

        import torch

        if threads:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export (docs/design.md, "Export")
            warnings.simplefilter("ignore", FutureWarning)
            try:
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as err:  # a damaged archive fails in the zip reader or the TorchScript parser
                raise StarError(f"cannot load the TorchScript model {path} ({type(err).__name__})") from err

    def input_names(self) -> None:
        return None  # a traced module's argument names are its own, not the sidecar's

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(*(torch.from_numpy(array) for array in feed.values())).numpy()
