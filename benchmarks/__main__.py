"""`python -m benchmarks` (also `star bench`): run every benchmark script here and rewrite benchmarks/RESULTS.md.

Each `benchmarks/<name>.py` runs in its own process (`python -m benchmarks.<name> ARGS`), its output streamed to the
console and kept. RESULTS.md then gets the machine (CPU model, cores, RAM, load average, torch version), the date,
the exact command of every benchmark, each headline figure beside its target, and the complete output.

    python -m benchmarks                       # the reported figures (tens of minutes on 2 CPU cores)
    python -m benchmarks --quick               # a smoke run at tiny sizes (minutes); RESULTS.md says so
    python -m benchmarks --only attention index --out /tmp/RESULTS.md

Figures are read from what each script prints: JSON where the script has `--json` (extract, train) or prints
one (pose), its text lines
otherwise (attention, index, cache_size). A figure that cannot be found is reported as such, with the output below
it, never guessed. A script added later without an entry in `BENCHMARKS` still runs (with no arguments) and its
output is kept; only the figure table misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.crossmodal import SECTION as CROSSMODAL_SECTION
from benchmarks.export import SECTION as EXPORT_SECTION
from benchmarks.learning import SECTION as LEARNING_SECTION
from benchmarks.penn import SECTION as PENN_SECTION
from benchmarks.watch import SECTION as WATCH_SECTION

HERE = Path(__file__).resolve().parent
# learning.py and crossmodal.py train tens of models (an hour, and half of one, on 2 CPU cores): they run on their
# own and write their own sections of RESULTS.md, which this runner keeps when it rewrites the file. penn.py needs
# the Penn Action labels: it runs when `--penn PATH` names them, after the others, and writes its own section too.
# export.py compares runtimes side by side and writes its own section (`python -m benchmarks.export`).
# watch.py (an hour of video through `star watch`, about 12 min) also writes its own section.
NOT_BENCHMARKS = {"__init__", "__main__", "learning", "crossmodal", "penn", "export", "watch"}
KEPT_SECTIONS = (LEARNING_SECTION, CROSSMODAL_SECTION, PENN_SECTION, EXPORT_SECTION, WATCH_SECTION)


@dataclass(frozen=True)
class Figure:
    """One headline number and what it is measured against; `met` is None where there is no target to check."""

    name: str
    value: str
    target: str = "(reported, no target)"
    met: bool | None = None


@dataclass(frozen=True)
class Benchmark:
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    figures: Callable[[str], list[Figure]]


def _within(value: float, limit: float, *, at_most: bool) -> bool:
    return value <= limit if at_most else value >= limit


# --------------------------------------------------------------------------------------------- output readers


def attention_figures(output: str) -> list[Figure]:
    """ZAttn/BAttn time over FAttn per scale, from the rows `name params GFLOP GFLOP fwd fwd/F fwdbwd fwdbwd/F`."""
    figures, scale = [], None
    for line in output.splitlines():
        header = re.match(r"\[(\w+)\]", line)
        if header:
            scale = header.group(1)
            continue
        cells = line.split()
        if scale and len(cells) == 8 and cells[0] in ("ZAttn", "BAttn", "ZB-prod"):
            limit, floor = (0.55, 0.563) if scale == "paper" else (0.75, 0.727)
            what = "ZAttn/BAttn attention product alone / FAttn's" if cells[0] == "ZB-prod" else f"{cells[0]} / FAttn"
            target = f"<= {limit}" if cells[0] == "ZB-prod" else f"<= {limit} (arithmetic floor {floor})"
            for column, mode in ((5, "forward"), (7, "forward + backward")):
                ratio = float(cells[column])
                figures.append(
                    Figure(
                        f"{what} {mode} time, {scale} scale",
                        f"{ratio:.3f}",
                        target,
                        _within(ratio, limit, at_most=True),
                    )
                )
    sweep = [
        [float(c) for c in line.split()[5:]]
        for line in output.split("[sweep]", 1)[-1].splitlines()
        if "[sweep]" in output and len(line.split()) == 9 and line.split()[0].isdigit()
    ]
    if sweep:
        worst = max(max(cells) for cells in sweep)
        figures.append(
            Figure(
                f"worst ZAttn or BAttn / FAttn time over the {len(sweep)} sweep cells",
                f"{worst:.3f}",
                "< 1 (never slower)",
                worst < 1.0,
            )
        )
    return figures


def index_figures(output: str) -> list[Figure]:
    figures = []
    parsed = re.search(r"skeleton parser: .*?: (\d+) files/s on one core", output)
    if parsed:
        rate = float(parsed.group(1))
        figures.append(
            Figure(
                "NTU .skeleton files parsed per second, one core",
                f"{rate:.0f}",
                ">= 300",
                _within(rate, 300, at_most=False),
            )
        )
    built = re.search(r"build_index first build: ([\d.]+) s for (\d+) samples", output)
    if built:
        figures.append(
            Figure(
                f"annotation index first build, {built.group(2)} generated samples", f"{float(built.group(1)):.2f} s"
            )
        )
    return figures


def cache_size_figures(output: str) -> list[Figure]:
    figures = []
    clips = re.search(r"clips: \d+ x T=(\d+) at (\d+)x\d+", output)
    where = f"T={clips.group(1)}, {clips.group(2)} px" if clips else "as run"
    paper_scale = clips is not None and clips.groups() == ("16", "224")
    for mode in ("float16", "8-bit"):
        row = re.search(rf"^{re.escape(mode)}\s+([\d.]+)\s", output, flags=re.MULTILINE)
        if row is None:
            continue
        megabytes = float(row.group(1))
        if mode == "8-bit" and paper_scale:
            figures.append(
                Figure(
                    f"cache MB per clip, 8-bit, {where}",
                    f"{megabytes:.2f}",
                    "<= 4",
                    _within(megabytes, 4.0, at_most=True),
                )
            )
        else:
            figures.append(
                Figure(
                    f"cache MB per clip, {mode}{' (lossless)' if mode == 'float16' else ''}, {where}",
                    f"{megabytes:.2f}",
                    "(reported)" if mode == "float16" else "<= 4 at T=16, 224 px",
                )
            )
    return figures


def _json_objects(output: str) -> list[dict]:
    """Every top-level JSON object printed (one per line, or one indented block)."""
    decoder, objects, position = json.JSONDecoder(), [], 0
    while (start := output.find("{", position)) != -1:
        try:
            value, end = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict):
            objects.append(value)
        position = end
    return objects


def extract_figures(output: str) -> list[Figure]:
    figures = []
    for result in _json_objects(output):
        for row in result.get("throughput", []):
            size = row["size"]
            figures.append(
                Figure(
                    f"extraction clips/s / bound (decode + backbone), {size} px, T={row['frames']}",
                    f"{row['ratio']:.2f}",
                    ">= 0.9",
                    _within(row["ratio"], 0.9, at_most=False),
                )
            )
            sizes = row.get("bytes_per_clip", {})
            if "float16" in sizes:
                figures.append(
                    Figure(f"cache MB per clip, float16 (lossless), {size} px", f"{sizes['float16'] / 1e6:.2f}")
                )
            if "8bit" in sizes:
                megabytes = sizes["8bit"] / 1e6
                if size == 224:
                    figures.append(
                        Figure(
                            f"cache MB per clip, 8-bit, {size} px",
                            f"{megabytes:.2f}",
                            "<= 4",
                            _within(megabytes, 4.0, at_most=True),
                        )
                    )
                else:
                    figures.append(
                        Figure(f"cache MB per clip, 8-bit, {size} px", f"{megabytes:.2f}", "(target is at 224 px)")
                    )
        rss = result.get("peak_rss_mib")
        if rss and len(rss) == 2:
            (small, small_mib), (large, large_mib) = sorted(rss.items(), key=lambda item: int(item[0]))
            growth = large_mib / small_mib
            figures.append(
                Figure(
                    f"peak RSS {large} clips / {small} clips ({large_mib:.0f} vs {small_mib:.0f} MiB)",
                    f"{growth:.2f}",
                    "<= 1.10 (must not grow)",
                    _within(growth, 1.10, at_most=True),
                )
            )
    return figures


def train_figures(output: str) -> list[Figure]:
    figures = []
    for result in _json_objects(output):
        if result.get("part") == "loader":
            figures.append(
                Figure(
                    f"training samples/s from the cache / in memory, {result['size']} px, T={result['frames']}, "
                    f"{result['workers']} workers",
                    f"{result['ratio']:.2f}",
                    ">= 0.9",
                    _within(result["ratio"], 0.9, at_most=False),
                )
            )
        elif result.get("part") == "step":
            where = f"T={result['frames']}, {result['size']} px, batch {result['batch']}"
            figures.append(Figure(f"training step, {where}", f"{result['seconds_per_step']:.2f} s"))
            model = "default model" if result["model"] == "ModelConfig defaults" else f"model {result['model']}"
            gib = result["peak_rss_mib"] / 1024
            figures.append(
                Figure(
                    f"peak RSS of the training step process, {where}, {model}",
                    f"{gib:.2f} GiB",
                    "<= 6 GB (default model)",
                    _within(gib * 1.073741824, 6.0, at_most=True),
                )
            )
    return figures


def pose_figures(output: str) -> list[Figure]:
    figures = []
    for result in _json_objects(output):
        if "pose_fps_1_person" not in result:
            continue
        where = f"{result['frame_size'][0]}x{result['frame_size'][1]}"
        figures += [
            Figure(f"pose estimation frames/s (decode + BlazePose + tracking), 1 person, {where}",
                   f"{result['pose_fps_1_person']:.1f}"),
            Figure(f"pose estimation frames/s, 2 person slots, {where}", f"{result['pose_fps_2_persons']:.1f}"),
            Figure("pose estimation of a whole clip / its MC3-18 extraction (T 16, 224 px)",
                   f"{result['pose_over_extract_224']:.2f}"),
        ]  # fmt: skip
        if result["keypoint_rcnn_fps"] is not None:  # --rcnn-frames 0 skips it
            figures.append(
                Figure(
                    f"Keypoint R-CNN frames/s (random weights, 2 boxes), {where}", f"{result['keypoint_rcnn_fps']:.2f}"
                )
            )
    return figures


# A small local table (rule 4): the arguments of the reported run, of the smoke run, and the reader of each output.
BENCHMARKS: dict[str, Benchmark] = {
    "attention": Benchmark(
        args=("--sweep", "--reps", "3"), quick_args=("--scale", "small", "--reps", "1"), figures=attention_figures
    ),
    "index": Benchmark(args=(), quick_args=("--files", "30", "--samples-per-class", "1"), figures=index_figures),
    "extract": Benchmark(
        args=("--json",),
        # --rss-clips 0 0: the RSS part's two fresh processes at 112 px are the slowest part of a smoke run
        quick_args=("--clips", "2", "--scales", "32:4:3", "--reps", "1", "--rss-clips", "0", "0", "--json"),
        figures=extract_figures,
    ),
    "cache_size": Benchmark(
        args=(), quick_args=("--clips", "1", "--frames", "4", "--size", "32"), figures=cache_size_figures
    ),
    "pose": Benchmark(
        args=(), quick_args=("--frames", "16", "--reps", "1", "--rcnn-frames", "0"), figures=pose_figures
    ),
    "train": Benchmark(
        args=("--json",),
        quick_args=("--part", "loader", "--scales", "32:4", "--steps", "2", "--reps", "1", "--json"),
        figures=train_figures,
    ),
}


# --------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Run:
    name: str
    command: str
    exit_code: int
    seconds: float
    output: str
    figures: list[Figure]


def discover() -> list[str]:
    """Every benchmark script in this folder, in name order."""
    return sorted(path.stem for path in HERE.glob("*.py") if path.stem not in NOT_BENCHMARKS)


def run_one(name: str, *, quick: bool, extra: tuple[str, ...] = ()) -> Run:
    spec = BENCHMARKS.get(name)
    args = ((spec.quick_args if quick else spec.args) if spec else ()) + extra
    command = [sys.executable, "-m", f"benchmarks.{name}", *args]
    shown = " ".join(["python", "-m", f"benchmarks.{name}", *args])
    print(f"\n=== {shown}", flush=True)
    started = time.perf_counter()
    lines = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE.parent
    ) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    output = "".join(lines)
    figures = spec.figures(output) if spec and process.returncode == 0 else []
    return Run(
        name=name,
        command=shown,
        exit_code=process.returncode,
        seconds=time.perf_counter() - started,
        output=output,
        figures=figures,
    )


def machine() -> dict[str, str]:
    """What the figures depend on: CPU model, cores, memory, load, library versions, GPU if any."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), flags=re.MULTILINE)
        memory = f"{int(total.group(1)) / 2**20:.1f} GiB" if total else memory
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process); torch threads {torch.get_num_threads()}",
        "RAM": memory,
        "load average at start (1, 5, 15 min)": load,
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "OS": platform.platform(),
    }


def write_results(
    runs: list[Run], *, out: Path, quick: bool, machine_info: dict[str, str], started: str, partial: bool
) -> Path:
    kind = "QUICK SMOKE RUN (`--quick`): tiny sizes, NOT the reported figures" if quick else "full run"
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks{' --quick' if quick else ''}` (same as `star bench`) on {started}; {kind}."
        + (" Only some benchmarks were run (`--only`)." if partial else ""),
        "Do not edit by hand: the next run rewrites this file.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in machine_info.items()],
        "",
        "The machine may be shared: the load average above says how busy it was when the run started. Ratios are "
        "measured side by side within one run, so they suffer less from load than absolute times.",
        "",
        "## Figures and targets",
        "",
        "| benchmark | figure | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        if run.exit_code != 0:
            lines.append(
                f"| {run.name} | **the benchmark failed (exit {run.exit_code})**: see its output below | | | |"
            )
        elif not run.figures:
            lines.append(f"| {run.name} | no figure found in the output (see below) | | | |")
        for figure in run.figures:
            met = {True: "yes", False: "**no**", None: ""}[figure.met]
            lines.append(f"| {run.name} | {figure.name} | {figure.value} | {figure.target} | {met} |")
    lines += ["", "## Commands and output", ""]
    for run in runs:
        lines += [
            f"### {run.name}",
            "",
            f"`{run.command}` (from the repository root; exit {run.exit_code}, {run.seconds:.0f} s)",
            "",
            "```text",
            run.output.rstrip(),
            "```",
            "",
        ]
    previous = out.read_text() if out.is_file() else ""
    starts = [previous.find(section) for section in KEPT_SECTIONS if section in previous]
    kept = previous[min(starts) :] if starts else ""
    out.write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run in minutes, not the reported figures"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these benchmarks (names of benchmarks/*.py)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the results")
    parser.add_argument(
        "--penn",
        type=Path,
        metavar="PENN_ACTION",
        help="also run the Penn Action skeleton benchmark on this folder (its labels/ suffice)",
    )
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"no benchmark {', '.join(unknown)}; there are: {', '.join(names)}")
        names = [name for name in names if name in args.only]
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine_info = machine()
    runs = [run_one(name, quick=args.quick) for name in names]
    path = write_results(
        runs, out=args.out, quick=args.quick, machine_info=machine_info, started=started, partial=bool(args.only)
    )
    if args.penn is not None:  # writes its own section of the file just written
        runs.append(
            run_one(
                "penn",
                quick=False,
                extra=("--root", str(args.penn), "--out", str(args.out), *(("--quick",) if args.quick else ())),
            )
        )
    print(f"\n{len(runs)} benchmark(s), {sum(run.exit_code != 0 for run in runs)} failed; results: {path}")
    for run in runs:
        for figure in run.figures:
            verdict = {True: "met", False: "NOT met", None: ""}[figure.met]
            print(f"  {run.name:<10} {figure.name}: {figure.value}  target {figure.target} {verdict}".rstrip())
    return 0 if all(run.exit_code == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
