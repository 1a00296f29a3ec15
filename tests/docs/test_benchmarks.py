"""Every benchmark's quick mode runs to the end and yields its figures (a smoke test: no figure is judged here).

`star bench` runs its benchmarks as subprocesses, as a user does; the benchmarks that write their own section run
in this process through their `main(argv)`, which is what `python -m benchmarks.NAME ARGS` calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import crossmodal, learning, penn
from benchmarks.__main__ import BENCHMARKS, discover, machine, write_results
from tests.fixtures.data_files import REPO_ROOT

pytestmark = pytest.mark.slow

REPO = REPO_ROOT


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_star_bench_quick_runs_every_benchmark_and_finds_every_figure(tmp_path):
    out = tmp_path / "RESULTS.md"
    result = _run("-m", "cli", "bench", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert "QUICK SMOKE RUN" in text
    assert set(discover()) == set(BENCHMARKS)  # a new script needs an entry that reads its figures
    for name in BENCHMARKS:
        assert f"### {name}" in text and f"python -m benchmarks.{name} " in text
        assert f"| {name} | no figure found" not in text and f"| {name} | **the benchmark failed" not in text
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() != text  # the reported figures were not overwritten


def test_learning_benchmark_quick_mode_writes_its_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# earlier results\n\nkept as they are\n")
    work, runs_json = tmp_path / "work", tmp_path / "runs.json"
    assert learning.main(["--quick", "--workdir", str(work), "--out", str(out), "--json", str(runs_json)]) == 0
    text = out.read_text()
    assert text.startswith("# earlier results") and learning.SECTION in text
    runs = json.loads(runs_json.read_text())["results"]
    assert {run["variant"] for run in runs} == {"default", "no temporal embedding"}
    assert all(0.0 <= run["top1"] <= 1.0 and run["clips"] > 0 for run in runs)


def test_crossmodal_benchmark_quick_mode_writes_its_section_and_the_runner_keeps_it(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# earlier results\n\n{learning.SECTION}\n\nkept\n")
    work, runs_json = tmp_path / "work", tmp_path / "runs.json"
    assert crossmodal.main(["--quick", "--workdir", str(work), "--out", str(out), "--json", str(runs_json)]) == 0
    text = out.read_text()
    assert text.startswith("# earlier results") and learning.SECTION in text and crossmodal.SECTION in text
    assert "`star explain` on the held-out clip" in text and "A001_rgb.avi (drink water)" in text
    runs = json.loads(runs_json.read_text())["results"]
    assert sorted(run["modality"] for run in runs) == ["both", "pose", "rgb"]
    classes = {name for run in runs for name in run["per_class"]}
    assert {"drink water", "eat meal/snack", "brushing teeth", "clapping"} <= classes
    sections = text[text.find(learning.SECTION) :]
    write_results([], out=out, quick=True, machine_info=machine(), started="now", partial=True)  # the runner's rewrite
    rewritten = out.read_text()
    assert not rewritten.startswith("# earlier results") and rewritten.endswith(sections)  # both sections kept


def test_penn_benchmark_quick_mode_on_the_real_test_files_writes_its_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# earlier results\n")
    common = ["--root", str(REPO / "tests" / "data" / "penn_action"), "--quick", "--workdir", str(tmp_path / "work")]
    assert penn.main([*common, "--out", str(out), "--json", str(tmp_path / "penn.json")]) == 0
    figures = json.loads((tmp_path / "penn.json").read_text())
    assert 0.0 <= figures["runs"][0]["top1"] <= 1.0 and set(figures["baselines"]) == {
        "logistic regression",
        "1-nearest neighbour",
    }
    assert all(speed["loader"] > 0 and speed["in_memory"] > 0 for speed in figures["speed"].values())
    text = out.read_text()
    assert penn.SECTION in text and "| logistic regression on normalised joint trajectories |" in text
    assert penn.main([*common, "--ablations", "--out", str(out)]) == 0
    text = out.read_text()
    assert penn.SECTION in text and penn.ABLATION_SECTION in text and "| no augmentation |" in text
