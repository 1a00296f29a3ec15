"""Exported STAR under onnxruntime vs the same model in PyTorch eager, per clip, at batch 1 and 16.

    python -m benchmarks.export              # the reported figures (a few minutes on 2 CPU cores)
    python -m benchmarks.export --quick      # a smoke run: 3 repetitions

Two models, random weights (latency does not depend on them), exported by `star export` (`export_checkpoint`):
- pose: the `penn-skeleton` recipe's model (dim 64, 1 layer per stage, T = 16, 13 joints, 4 feature streams), the
  skeleton graph of a checkpoint trained on a skeleton cache;
- rgb+pose: the `star demo` model (dim 64, 1 layer per stage, T = 8, 64 px, 2 x 25 NTU joints) on cached maps, the
  aggregator and transformer that `star export` exports by default (the MC3-18 in front is not timed).
Both sides run in this process with the same number of threads; every repetition times PyTorch and onnxruntime
back to back on the same inputs (so load changes on a shared machine hit both alike); latencies are medians over the
repetitions, the ratio the median of the per-repetition ratios. A call shorter than 0.2 s is repeated within a
repetition. Then the exported file's size and the peak RSS of a bare process (python, numpy and onnxruntime only)
that loads the model and scores one batch. Target: onnxruntime >= 1.5x faster than PyTorch at batch 1.
The figures replace the "Export" section of benchmarks/RESULTS.md (the `python -m benchmarks` runner keeps it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.learning import _quoted, finish

HERE = Path(__file__).resolve().parent
SECTION = "## Export"
BATCHES = (1, 16)
TARGET = 1.5  # onnxruntime speed-up over PyTorch eager at batch 1

BARE_PROCESS = """
import sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
example = np.load(sys.argv[2])
feed = {i.name: np.repeat(example[i.name], int(sys.argv[3]), axis=0) for i in session.get_inputs()}
session.run(None, feed)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def checkpoint_of(kind: str, folder: Path) -> Path:
    """A `star train`-format checkpoint of the benchmark's model of `kind`, random weights (seed 0)."""
    import torch

    from model.star import ModelConfig, build_model
    from pipeline.training.checkpoints import CHECKPOINT_FORMAT, save_checkpoint

    torch.manual_seed(0)
    if kind == "pose":
        streams = ["joint", "bone", "joint_motion", "bone_motion"]
        cfg = ModelConfig(num_classes=15, persons=1, num_joints=13, dim=64, depth=1, heads=4, frames=16,
                          modality="pose", joint_channels=2 * len(streams) + 1)  # fmt: skip
        fingerprint = {"kind": "skeletons", "dataset": "penn", "class_names": [], "layout": "penn13"}
        config = {"frames": 16, "streams": streams, "test_clips": 10}
    else:
        cfg = ModelConfig(num_classes=10, dim=64, depth=1, heads=4, frames=8, modality="both")
        fingerprint = {"frames": 8, "input_size": 64, "crop": "person", "layout": "ntu25", "weights": "random:seed0"}
        config = {"frames": 8}
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": build_model(cfg).state_dict(),
        "model_config": cfg.__dict__.copy(),
        "fingerprint": fingerprint,
        "class_names": [f"class {c}" for c in range(cfg.num_classes)],
        "config": config,
    }
    return save_checkpoint(state, folder / f"{kind}.pt")


def _per_call(run, *, min_seconds: float = 0.2) -> float:
    """Seconds per call of `run`, repeated until the repetition lasts `min_seconds`."""
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def measure(kind: str, folder: Path, *, reps: int, threads: int) -> dict:
    import numpy as np
    import torch

    from pipeline.inference.export import build_graph, example_inputs, export_checkpoint, joint_extent
    from pipeline.inference.runtime import ExportedModel
    from pipeline.training.checkpoints import read_checkpoint

    checkpoint = checkpoint_of(kind, folder)
    result = export_checkpoint(checkpoint, out=folder / kind, format="onnx")
    state = read_checkpoint(checkpoint)
    graph = build_graph(state, kind=result.sidecar["kind"])
    exported = ExportedModel(folder / kind, threads=threads)
    torch.set_num_threads(threads)
    rows = []
    for batch in BATCHES:
        extent = joint_extent(state, kind=result.sidecar["kind"])
        inputs = example_inputs(result.sidecar["inputs"], joint_extent=extent, batch=batch, seed=batch)
        tensors = tuple(torch.from_numpy(inputs[name]) for name in exported.input_names)

        def eager(tensors=tensors):
            with torch.no_grad():
                graph(*tensors)

        def runtime(inputs=inputs):
            exported.logits(inputs)

        eager(), runtime()  # warm-up: first-call allocations and onnxruntime's lazy initialisation
        times = {"torch": [], "onnxruntime": []}
        for _ in range(reps):
            times["torch"].append(_per_call(eager) / batch)
            times["onnxruntime"].append(_per_call(runtime) / batch)
        ratio = statistics.median(t / o for t, o in zip(times["torch"], times["onnxruntime"], strict=True))
        rows.append({
            "batch": batch,
            "torch_ms_per_clip": 1e3 * statistics.median(times["torch"]),
            "onnxruntime_ms_per_clip": 1e3 * statistics.median(times["onnxruntime"]),
            "speedup": ratio,
        })  # fmt: skip
    np.savez(folder / kind / "batch.npz", **example_inputs(result.sidecar["inputs"], joint_extent=extent, batch=1))
    rss = {
        batch: bare_peak_rss_mib(result.model, folder / kind / "batch.npz", batch=batch) for batch in BATCHES
    }  # fmt: skip
    return {
        "model": kind,
        "kind": result.sidecar["kind"],
        "inputs": {spec["name"]: spec["shape"] for spec in result.sidecar["inputs"]},
        "file_mb": result.model.stat().st_size / 1e6,
        "bare_onnxruntime_peak_rss_mib": rss,
        "max_abs_diff": result.parity.max_abs_diff,
        "rows": rows,
    }


def bare_peak_rss_mib(model: Path, example: Path, *, batch: int) -> float:
    """Peak RSS of a fresh process importing only numpy and onnxruntime, loading `model` and scoring one batch."""
    output = subprocess.run(
        [sys.executable, "-c", BARE_PROCESS, str(model), str(example), str(batch)],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout  # fmt: skip
    # VmHWM (KiB), not ru_maxrss: Linux carries ru_maxrss over exec, so a child of this torch process would report
    # this process's size.
    return int(output.split()[-1]) / 1024


def machine() -> tuple[str, str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} logical cores", "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    import onnxruntime
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions after a warm-up (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of both runtimes")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="RESULTS.md whose Export section")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 repetitions")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.reps
    started, clock = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    cpu, load_before = machine()
    with tempfile.TemporaryDirectory(prefix="star-export-bench-") as scratch:
        results = [measure(kind, Path(scratch), reps=reps, threads=args.threads) for kind in ("pose", "rgb+pose")]
    _, load_after = machine()
    table = [
        "| model | batch | PyTorch eager, ms per clip | onnxruntime, ms per clip | speed-up (PyTorch / onnxruntime) |",
        "|---|---|---|---|---|",
    ]
    checks = []
    for result in results:
        for row in result["rows"]:
            table.append(
                f"| {result['model']} | {row['batch']} | {row['torch_ms_per_clip']:.3f} | "
                f"{row['onnxruntime_ms_per_clip']:.3f} | {row['speedup']:.2f}x |"
            )
            if row["batch"] == 1:
                met = row["speedup"] >= TARGET
                checks.append(
                    f"- {result['model']}, batch 1: onnxruntime {row['speedup']:.2f}x faster than PyTorch eager "
                    f"(target >= {TARGET}x): {'met' if met else 'NOT met'}"
                )
        rss = ", ".join(f"batch {b}: {mib:.0f} MiB" for b, mib in result["bare_onnxruntime_peak_rss_mib"].items())
        checks.append(
            f"- {result['model']} ({result['kind']} inputs {result['inputs']}): model.onnx {result['file_mb']:.2f} MB; "
            f"peak RSS of a bare onnxruntime process scoring one batch: {rss}; export parity "
            f"{result['max_abs_diff']:.1e}"
        )
    print("\n".join(table + checks), flush=True)
    command = "python -m benchmarks.export " + " ".join(map(_quoted, sys.argv[1:] if argv is None else argv))
    section = [
        SECTION,
        "",
        f"`{command.strip()}` on {started}{' (QUICK SMOKE RUN: not the reported figures)' if args.quick else ''}; "
        f"{time.perf_counter() - clock:.0f} s.",
        "",
        f"Machine: {cpu}; load average (1, 5, 15 min) {load_before} before, {load_after} after (the cores are shared: "
        f"a load above {os.cpu_count()} means other work ran alongside); torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, {args.threads} threads each, median of {reps} repetitions.",
        "",
        *table,
        "",
        *checks,
        "",
    ]
    finish(
        section, out=args.out, section=SECTION, json_path=args.json, payload={"command": command, "results": results}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
