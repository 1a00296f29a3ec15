"""`star export`: ONNX and TorchScript exports of real checkpoints, their parity with PyTorch on clips of real caches,
the checks that refuse damaged exports, and `star predict` on an export."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from model.star import ModelConfig, build_model
from pipeline.core.errors import StarError
from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.extraction.skeleton_store import SkeletonCache
from pipeline.inference.export import export_checkpoint, verify_export
from pipeline.inference.runtime import SIDECAR_NAME, ExportedModel, file_sha256
from pipeline.sources.layouts import layout_from_spec
from pipeline.training.config import resolve_config
from pipeline.training.data import CachedClips
from pipeline.training.loop import train
from pipeline.training.skeletons import SkeletonTransform, skeleton_spec
from tests.fixtures.data_files import real_penn_copy

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = "S001C002P003R001A023"  # subject 3: xsub test


def _star(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _train(overrides: dict, *, preset: str | None = None) -> None:
    train(resolve_config(overrides={"epochs": 1, "workers": 0, **overrides}, preset=preset), show_progress=False)


@pytest.fixture(scope="module")
def skeleton_run(tmp_path_factory):
    """A skeleton cache of the real Penn Action labels and a tiny checkpoint trained on it."""
    folder = tmp_path_factory.mktemp("skeletons")
    penn = real_penn_copy(folder, test_ids=("0002", "0174", "0345"))
    (penn / "labels" / "1516.mat").unlink()  # no joint visible: its failure is another test's subject
    extract(ExtractConfig(dataset="penn", root=penn, out=str(folder / "skeletons.zarr"), modality="pose"))
    overrides = {"cache": str(folder / "skeletons.zarr"), "out": str(folder / "run"), "val_split": "", "test_clips": 3}
    _train({**overrides, "model": {"dim": 16, "depth": 1, "heads": 2}}, preset="penn-skeleton")
    return penn, folder / "skeletons.zarr", folder / "run" / "last.pt"


@pytest.fixture(scope="module")
def maps_export(video_run, tmp_path_factory):
    return export_checkpoint(video_run[2], out=tmp_path_factory.mktemp("maps-export"), format="onnx")


@pytest.fixture(scope="module")
def video_export(video_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("video-export")
    result = _star("export", video_run[2], "--format", "onnx", "--out", out, "--backbone")
    assert result.exit_code == 0, result.output
    assert "checked against PyTorch: 4 clips" in result.output and "same top-1 on 4/4" in result.output
    return out


def cached_maps(cache: str, names: list[str]) -> dict[str, np.ndarray]:
    """Every test clip of the cache as one batch of the named inputs (float32)."""
    clips = CachedClips(path=cache, split_name="ntu120-xsub-test")
    items = [clips[i] for i in range(len(clips))]
    return {name: np.stack([item[name].float().numpy() for item in items]) for name in names}


def variant_checkpoint(checkpoint, out, **model) -> str:
    """The checkpoint with another model config and fresh weights of that config (seeded)."""
    state = torch.load(checkpoint, weights_only=True)
    state["model_config"] = {**state["model_config"], **model}
    torch.manual_seed(0)
    state["model"] = build_model(ModelConfig(**state["model_config"])).state_dict()
    torch.save(state, out)
    return out


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.slow
def test_onnx_export_matches_pytorch_on_real_cached_clips_at_any_batch(video_run, maps_export):
    _, cache, checkpoint = video_run
    sidecar = maps_export.sidecar
    assert sidecar["kind"] == "maps" and sidecar["modality"] == "both" and sidecar["frames"] == 4
    assert [spec["shape"] for spec in sidecar["inputs"]][0] == ["batch", 4, 256, 4, 4]
    assert sidecar["sha256"] == file_sha256(maps_export.model) and sidecar["verification"]["same_top1"] == 4
    assert sidecar["checkpoint"]["sha256"] == file_sha256(checkpoint)
    assert sidecar["class_names"] == torch.load(checkpoint, weights_only=True)["class_names"]
    inputs = cached_maps(cache, [spec["name"] for spec in sidecar["inputs"]])
    for batch in (1, 3):
        parity = verify_export(maps_export.model.parent, checkpoint, {k: v[:batch] for k, v in inputs.items()})
        assert parity.ok and parity.clips == batch and parity.max_abs_diff <= 1e-4, parity.format()


def test_one_changed_weight_fails_the_check_and_an_edited_file_is_refused(video_run, maps_export, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, cache, checkpoint = video_run
    edited = shutil.copytree(maps_export.model.parent, tmp_path / "edited")
    model = onnx.load(edited / "model.onnx")
    weight = max(model.graph.initializer, key=lambda tensor: int(np.prod(tensor.dims)))  # the largest weight matrix
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, edited / "model.onnx")
    with pytest.raises(StarError, match="was edited or the sidecar belongs to another export"):
        ExportedModel(edited)
    # Signed again, the file passes the checksum: parity against the checkpoint is what catches the change.
    sidecar = json.loads((edited / SIDECAR_NAME).read_text())
    sidecar |= {"sha256": file_sha256(edited / "model.onnx"), "bytes": (edited / "model.onnx").stat().st_size}
    (edited / SIDECAR_NAME).write_text(json.dumps(sidecar))
    inputs = cached_maps(cache, [spec["name"] for spec in sidecar["inputs"]])
    parity = verify_export(edited, checkpoint, inputs)
    assert not parity.ok and parity.max_abs_diff > 1e-4
    assert verify_export(maps_export.model.parent, checkpoint, inputs).ok


@pytest.mark.slow
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    ("modality", "encoder", "decoder"),
    [("both", "FF", "FF"), ("both", "FB", "FZ"), ("rgb", "FZ", "FB"), ("pose", "FZ", "FB"), ("pose", "FF", "FB")],
)
def test_every_modality_and_attention_variant_exports_with_parity(video_run, tmp_path, format, modality, encoder,
                                                                 decoder):  # fmt: skip
    _, cache, checkpoint = video_run
    variant = variant_checkpoint(
        checkpoint, tmp_path / "variant.pt", modality=modality, encoder=encoder, decoder=decoder
    )
    result = export_checkpoint(variant, out=tmp_path / "export", format=format)
    names = [spec["name"] for spec in result.sidecar["inputs"]]
    assert names == {"both": ["local", "global", "heatmaps", "joints"], "rgb": ["global"], "pose": ["joints"]}[modality]
    inputs = cached_maps(cache, names)
    for batch in (1, 3):
        parity = verify_export(tmp_path / "export", variant, {k: v[:batch] for k, v in inputs.items()})
        assert parity.ok, parity.format()


def test_torchscript_export_has_a_dynamic_batch_and_parity(video_run, tmp_path):
    _, cache, checkpoint = video_run
    result = export_checkpoint(checkpoint, out=tmp_path, format="torchscript")
    assert result.model.name == "model.pt" and result.sidecar["runtime"] == "torchscript"
    inputs = cached_maps(cache, [spec["name"] for spec in result.sidecar["inputs"]])
    for batch in (1, 3):
        assert verify_export(tmp_path / "model.pt", checkpoint, {k: v[:batch] for k, v in inputs.items()}).ok


@pytest.mark.slow
def test_skeleton_checkpoint_exports_and_predicts_like_pytorch(skeleton_run, tmp_path):
    penn, cache, checkpoint = skeleton_run
    result = export_checkpoint(checkpoint, out=tmp_path / "export", format="onnx")
    sidecar = result.sidecar
    assert sidecar["kind"] == "skeleton" and sidecar["preprocessing"]["test_clips"] == 3
    state = torch.load(checkpoint, weights_only=True)
    skeletons = SkeletonCache.open(cache)
    transform = SkeletonTransform(
        spec=skeleton_spec(state["config"]), layout=layout_from_spec(state["fingerprint"]["layout"], where="test")
    )
    rows = np.flatnonzero(skeletons.done)[:5]
    clips = np.concatenate([transform.test_clips(skeletons.skeleton(row), clips=3) for row in rows])  # (15, T, N, C)
    parity = verify_export(tmp_path / "export", checkpoint, {"joints": clips})
    assert parity.ok and parity.clips == 15, parity.format()
    label = penn / "labels" / "0002.mat"
    torch_json = json.loads(_star("predict", label, "--checkpoint", checkpoint, "--json", "--device", "cpu").output)
    export_json = json.loads(_star("predict", label, "--checkpoint", tmp_path / "export", "--json").output)
    _assert_same_prediction(torch_json, export_json)


# ------------------------------------------------------------------------------------------ star predict


def _assert_same_prediction(torch_json: dict, export_json: dict) -> None:
    assert [s["class_name"] for s in export_json["top"]] == [s["class_name"] for s in torch_json["top"]]
    assert export_json["frame_indices"] == torch_json["frame_indices"]
    np.testing.assert_allclose(
        [s["probability"] for s in export_json["top"]], [s["probability"] for s in torch_json["top"]], atol=1e-5
    )
    assert {k: v for k, v in export_json.items() if k not in ("top", "checkpoint")} == {
        k: v for k, v in torch_json.items() if k not in ("top", "checkpoint")
    }


@pytest.mark.slow
def test_predict_on_the_export_folder_or_file_gives_the_checkpoints_json(video_run, video_export):
    root, _, checkpoint = video_run
    video = root / "nturgb+d_rgb" / f"{SAMPLE}_rgb.avi"
    pose = root / "nturgb+d_skeletons" / f"{SAMPLE}.skeleton"
    by_torch = _star("predict", video, "--pose", pose, "--checkpoint", checkpoint, "--json", "--device", "cpu")
    assert by_torch.exit_code == 0, by_torch.output
    for exported in (video_export, video_export / "model.onnx"):
        by_export = _star("predict", video, "--pose", pose, "--checkpoint", exported, "--json")
        assert by_export.exit_code == 0, by_export.output
        _assert_same_prediction(json.loads(by_torch.output), json.loads(by_export.output))
    sidecar = json.loads((video_export / SIDECAR_NAME).read_text())
    assert sidecar["kind"] == "video" and sidecar["inputs"][0] == {
        "name": "video",
        "shape": ["batch", 4, 3, 32, 32],
        "dtype": "uint8",
    }
    assert "Kinetics-400 mean" in sidecar["preprocessing"]["normalisation"]


def test_predict_refuses_a_maps_export_and_explain_stays_on_pytorch(video_run, maps_export):
    root, _, _ = video_run
    video = root / "nturgb+d_rgb" / f"{SAMPLE}_rgb.avi"
    result = _star("predict", video, "--checkpoint", maps_export.model.parent)
    assert result.exit_code == 1 and "export the checkpoint with --backbone" in result.output
    result = _star("explain", video, "--checkpoint", maps_export.model.parent)
    assert result.exit_code == 1 and "explain stays on PyTorch" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "stays on PyTorch" in " ".join(_star("explain", "--help").output.split())


# ----------------------------------------------------------------------------------------------- refusals


def test_a_truncated_file_or_a_sidecar_of_another_model_is_refused_before_inference(maps_export, tmp_path):
    folder = maps_export.model.parent
    truncated = shutil.copytree(folder, tmp_path / "truncated")
    data = (truncated / "model.onnx").read_bytes()
    (truncated / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(StarError, match="is truncated"):
        ExportedModel(truncated)

    sidecar = json.loads((folder / SIDECAR_NAME).read_text())
    cases = {
        "belongs to another export": {"inputs": [{**sidecar["inputs"][0], "name": "frames"}, *sidecar["inputs"][1:]]},
        "names 3 classes": {"class_names": ["a", "b", "c"]},
        "'kind' is missing": {"kind": None},
        "SHA-256": {"sha256": "0" * 64},
    }
    for reason, change in cases.items():
        case = shutil.copytree(folder, tmp_path / f"case{len(reason)}")
        (case / SIDECAR_NAME).write_text(json.dumps({**sidecar, **change}))
        with pytest.raises(StarError, match=reason):
            ExportedModel(case).logits(np.load(case / "example.npz"))
    (case / SIDECAR_NAME).write_text("{not json")
    result = _star("predict", "clip.avi", "--checkpoint", case)
    assert result.exit_code == 1 and "is not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_export_extra_not_a_checkpoint_and_an_unwritable_folder_get_one_line(
    video_run, maps_export, tmp_path, monkeypatch
):
    checkpoint = video_run[2]
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    result = _star("export", not_a_checkpoint, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "cannot be read" in result.output and len(result.output.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _star("export", checkpoint, "--out", blocker / "export")
    assert result.exit_code == 1 and "is not writable" in result.output and len(result.output.splitlines()) == 1
    result = _star("export", checkpoint, "--out", tmp_path / "y", "--format", "tflite")
    assert result.exit_code == 1 and "unknown export format 'tflite'" in result.output

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    result = _star("export", checkpoint, "--out", tmp_path / "z")
    assert result.exit_code == 1 and "pip install 'star-action[export]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(StarError, match=r"needs onnxruntime: pip install 'star-action\[export\]'"):
        ExportedModel(maps_export.model.parent)
