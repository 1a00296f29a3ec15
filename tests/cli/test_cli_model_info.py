"""`star model-info`: parameter counts, token counts and attention FLOPs of a config."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app
from model.star import ModelConfig, build_model

SMALL = ["--dim", "32", "--heads", "2", "--depth", "2", "--frames", "4", "--size", "112", "--num-classes", "7"]


def run(*args: str):
    return CliRunner().invoke(app, ["model-info", *args])


def test_json_summary_matches_the_model():
    result = run(*SMALL, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    cfg = ModelConfig(num_classes=7, dim=32, heads=2, depth=2, frames=4)
    # 112 px: 14 x 14 local map, 7 x 7 global map -> P = 49; N = 2 persons x 25 joints; 3 class tokens.
    assert summary["input"] == {"frames": 4, "size": 112, "local_map": 14, "global_map": 7}
    assert summary["tokens"] == {
        "grid_per_frame": 49,
        "joints_per_frame": 50,
        "class_per_frame": 3,
        "per_frame": 102,
        "per_clip": 408,
    }
    assert summary["parameters"]["star_total"] == sum(p.numel() for p in build_model(cfg).parameters())
    assert summary["parameters"]["backbone_mc3_18"] == 11_695_440 - (512 * 400 + 400)  # torchvision's count minus fc
    full_core = 4 * 408**2 * 32  # QK^T and AV over all 408 tokens, 2 FLOPs per multiply-add
    gflops = summary["attention_gflops"]
    assert abs(gflops["encoder_core"] - 2 * (full_core + full_core / 2) / 1e9) < 1e-12  # 2 layers of F + Z
    assert abs(gflops["total_core_if_all_full"] - 4 * 2 * full_core / 1e9) < 1e-12


def test_text_output_and_single_class_ablation():
    result = run(*SMALL, "--set", "multi_class=false", "--persons", "1", "--joints", "13")
    assert result.exit_code == 0, result.output
    assert "per_frame                63" in result.stdout  # 49 + 13 + 1
    assert "star_total" in result.stdout and "total_core" in result.stdout


def test_model_options_one_line_each():
    default = run(*SMALL)
    literal = run(*SMALL, "--set", "norm=post", "--set", "init=vit", "--set", "token_norm=false", "--set",
                  "temporal_embedding=false")  # fmt: skip
    assert default.exit_code == 0 and literal.exit_code == 0, literal.output
    for name, value in (
        ("norm", "pre"),
        ("init", "fan_in"),
        ("token_norm", "True"),
        ("temporal_embedding", "True"),
        ("joint_position", "fourier"),
    ):
        assert f"  {name:<24} {value}" in default.stdout
    for name, value in (("norm", "post"), ("init", "vit"), ("token_norm", "False"), ("temporal_embedding", "False")):
        assert f"  {name:<24} {value}" in literal.stdout
    # The literal form has no final LayerNorm, token LayerNorms or temporal embedding: fewer parameters.
    counts = [int(r.stdout.split("star_total")[1].split()[0].replace(",", "")) for r in (default, literal)]
    assert counts[0] - counts[1] == 3 * 2 * 32 + 4 * 32


def test_bad_options_fail_with_the_reason():
    for args, reason in (
        (["--frames", "15"], "frames must be even"),
        (["--encoder", "FX"], "FX"),
        (["--set", "norm=mid"], "mid"),
    ):
        result = run(*args)
        assert result.exit_code == 1
        assert "per_frame" not in result.stdout
        assert reason in result.output  # the StarError's message, on one line
        assert "Traceback" not in result.output
