"""`star watch`: windows of a real video file and of a real HTTP stream (OpenCV's network input, a server on
127.0.0.1), the real decoder and the real pose estimator; a window equals `star predict` on the same frames."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.inference.predict import predict
from pipeline.inference.timeline import EventMerger
from pipeline.inference.watch import WatchConfig, watch
from pipeline.sources.layouts import NTU25
from pipeline.sources.pose import estimate_pose
from pipeline.training.config import resolve_config
from pipeline.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
REAL_NTU_VIDEO = REPO / "tests" / "data" / "S001C001P001R001A001_rgb.avi"  # 1920x1080, 103 frames, 30 fps


@pytest.fixture(scope="module")
def real_video(tmp_path_factory) -> Path:
    """The real NTU clip at 480x270 (MJPG): its person, its motion, 103 frames at 30 fps, decoded faster."""
    path = tmp_path_factory.mktemp("real") / "drink.avi"
    capture = cv2.VideoCapture(str(REAL_NTU_VIDEO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (480, 270))
    while (frame := capture.read()[1]) is not None:
        writer.write(cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA))
    capture.release()
    writer.release()
    return path


@pytest.fixture(scope="module")
def checkpoints(video_cache, tmp_path_factory) -> dict[str, Path]:
    """Every kind `star train` writes, tiny, on NTU-25 joints: modality both, rgb, pose (the session's feature cache;
    T 4, 32 px) and a skeleton-cache model of the same videos."""
    folder = tmp_path_factory.mktemp("runs")
    root = Path(video_cache).parent / "ntu"
    skeletons = ExtractConfig(dataset="ntu120", root=root, out=str(folder / "skeletons.zarr"), frames=4, size=32,
                              modality="pose", unit_size=4, workers=1)  # fmt: skip
    assert extract(skeletons).exit_code == 0
    caches = {"maps": video_cache, "skeletons": skeletons.out}
    runs = {}
    for name, cache, model in (
        ("both", "maps", {}),
        ("rgb", "maps", {"modality": "rgb"}),
        ("pose", "maps", {"modality": "pose"}),
        ("skeleton", "skeletons", {}),
    ):
        cfg = resolve_config(
            overrides={
                "cache": caches[cache],
                "out": str(folder / name),
                "epochs": 1,
                "batch_size": 2,
                "workers": 0,
                "benchmark": "ntu120-xsub",
                "frames": 4,
                "model": {"dim": 32, "depth": 1, "heads": 2, **model},
            }
        )
        train(cfg, show_progress=False)
        runs[name] = folder / name / "last.pt"
    return runs


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]


def _frames_folder(video: Path, first: int, last: int, folder: Path) -> Path:
    """Frames first..last of `video` as lossless PNGs: a frame folder `star predict` reads."""
    folder.mkdir()
    capture = cv2.VideoCapture(str(video))
    for index in range(last + 1):
        frame = capture.read()[1]
        if index >= first:
            cv2.imwrite(str(folder / f"{index:06d}.png"), frame)
    capture.release()
    return folder


@pytest.mark.slow
def test_a_window_equals_predict_on_the_same_frames_and_pose(real_video, checkpoints, tmp_path):
    """Pose on every frame: the pose of a window is `estimate_pose`'s on the whole file (one person tracked)."""
    pose = estimate_pose(real_video, layout=NTU25, persons=1).keypoints  # (103, 1, 25, 3)
    assert (pose[..., 2] > 0).any(axis=(1, 2)).mean() > 0.9
    for kind in ("both", "skeleton"):
        out = tmp_path / kind
        summary = watch(
            WatchConfig(
                source=str(real_video),
                checkpoint=checkpoints[kind],
                out=out,
                window=1.0,
                stride=0.5,
                pose_every=1,
                top_k=5,
                device="cpu",
            )
        )
        rows = _rows(out)
        assert summary.ended == "end of the file" and summary.frames_processed == 103 and summary.frames_dropped == 0
        assert [row["frames"] for row in rows[:3]] == [[0, 29], [15, 44], [30, 59]]  # W 1 s, S 0.5 s at 30 fps
        assert rows[-1]["frames"][1] == 102 and {row["person"] for row in rows} == {1}
        for row in (rows[1], rows[-1]):
            first, last = row["frames"]
            np.savez(tmp_path / "pose.npz", keypoints=pose[first : last + 1])
            frames = _frames_folder(real_video, first, last, tmp_path / f"{kind}-{first}")
            offline = predict(
                video=tmp_path / "pose.npz" if kind == "skeleton" else frames,
                pose=tmp_path / "pose.npz",
                checkpoint=checkpoints[kind],
                top_k=5,
                device="cpu",
            )
            assert [score["class_id"] for score in row["top"]] == [score.class_id for score in offline.top]
            np.testing.assert_allclose([s["p"] for s in row["top"]], [s.probability for s in offline.top], atol=2e-6)
            if kind == "both":
                assert row["sampled"] == [first + i for i in offline.frame_indices]


def test_every_checkpoint_kind_through_the_cli(real_video, checkpoints, tmp_path):
    for kind in ("rgb", "pose"):
        out = tmp_path / kind
        result = CliRunner().invoke(
            app,
            [
                "watch",
                str(real_video),
                "--checkpoint",
                str(checkpoints[kind]),
                "--out",
                str(out),
                "--window",
                "1.5",
                "--stride",
                "1",
                "--pose-every",
                "4",
                "--top",
                "2",
                "--threshold",
                "0",
                "--device",
                "cpu",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        rows = _rows(out)
        assert summary["rows"] == len(rows) == 3 and summary["frames_processed"] == 103
        assert [row["frames"] for row in rows] == [[0, 44], [30, 74], [58, 102]]  # the last: the tail's 1.5 s
        assert all(len(row["top"]) == 2 and row["top"][0]["p"] >= row["top"][1]["p"] for row in rows)
        # rgb with a full-frame crop ignores the pose: no estimator, one row per window without a person
        assert summary["poses_estimated"] == (0 if kind == "rgb" else 26)
        assert {row["person"] for row in rows} == ({None} if kind == "rgb" else {1})
        events = json.loads((out / "events.json").read_text())
        assert events["summary"]["rows"] == 3 and events["events"], "threshold 0: every window belongs to an event"
        assert events["events"][0]["start"] == 0.0 and events["events"][-1]["end"] == pytest.approx(103 / 30, abs=1e-3)


@pytest.mark.slow
def test_several_people_get_a_row_each_and_the_overlay_plays(real_video, checkpoints, tmp_path):
    """Two people: the real clip beside its mirror image (the person of each half cropped, as the pose tests do);
    --people 2 tracks both."""
    two = tmp_path / "two.avi"
    capture = cv2.VideoCapture(str(REAL_NTU_VIDEO))
    writer = cv2.VideoWriter(str(two), cv2.VideoWriter_fourcc(*"MJPG"), 30, (800, 540))
    for _ in range(45):
        frame = cv2.resize(capture.read()[1], (960, 540), interpolation=cv2.INTER_AREA)
        writer.write(np.ascontiguousarray(np.hstack([frame[:, 300:700], frame[:, ::-1][:, 260:660]])))
    capture.release()
    writer.release()
    summary = watch(
        WatchConfig(
            source=str(two),
            checkpoint=checkpoints["both"],
            out=tmp_path / "out",
            window=1.0,
            stride=0.5,
            people=2,
            overlay=True,
            device="cpu",
        )
    )
    rows = _rows(tmp_path / "out")
    by_window: dict[int, set] = {}
    for row in rows:
        by_window.setdefault(row["window"], set()).add(row["person"])
    assert len(by_window) == summary.windows == 2, by_window
    assert all(len(people) == 2 for people in by_window.values()), by_window
    overlay = cv2.VideoCapture(summary.files["overlay"])
    decoded = 0
    while (frame := overlay.read()[1]) is not None:
        decoded += 1
        assert frame.shape == (540, 800, 3)
    assert decoded == 45


# ------------------------------------------------------------------------------------------ a live HTTP stream


class _MJPEGServer:
    """multipart/x-mixed-replace JPEG frames on 127.0.0.1 at `fps`, `frames` per connection (None: endless), for
    `connections` connections; later ones get 404."""

    def __init__(self, video: Path, *, fps: float, frames: int | None, connections: int = 1) -> None:
        capture = cv2.VideoCapture(str(video))
        self.jpegs = []
        while (frame := capture.read()[1]) is not None:
            self.jpegs.append(cv2.imencode(".jpg", cv2.resize(frame, (320, 180)))[1].tobytes())
        capture.release()
        self.fps, self.frames, self.connections, self.served = fps, frames, connections, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.served += 1
                if server.served > server.connections:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                started, sent = time.monotonic(), 0
                while server.frames is None or sent < server.frames:
                    jpeg = server.jpegs[sent % len(server.jpegs)]
                    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    try:
                        self.wfile.write(part + jpeg + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    sent += 1
                    time.sleep(max(0.0, started + sent / server.fps - time.monotonic()))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> _MJPEGServer:
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_stream_that_drops_is_reopened_then_the_run_ends_cleanly(real_video, checkpoints, tmp_path):
    with _MJPEGServer(real_video, fps=25, frames=40, connections=2) as server:
        summary = watch(
            WatchConfig(
                source=server.url,
                checkpoint=checkpoints["rgb"],
                out=tmp_path,
                window=0.8,
                stride=0.4,
                reconnects=2,
                backoff=0.05,
                device="cpu",
            )
        )
    assert summary.live and summary.reconnects == 1 and server.served == 4  # 2 streams, then 2 refused reopenings
    assert summary.ended == "the source failed and did not come back after 2 reconnection attempts"
    assert summary.frames_read == 80 and summary.frames_processed + summary.frames_dropped == 80
    rows = _rows(tmp_path)
    assert len(rows) >= 4 and rows[-1]["end"] > 1.6  # windows from both connections
    assert all(row["latency"] >= 0 for row in rows) and summary.latency_p95 < 1.0
    assert json.loads((tmp_path / "events.json").read_text())["summary"]["ended"] == summary.ended


def test_a_live_source_faster_than_processing_drops_frames_and_keeps_latency_bounded(real_video, checkpoints, tmp_path):
    with _MJPEGServer(real_video, fps=250, frames=300) as server:
        summary = watch(
            WatchConfig(
                source=server.url,
                checkpoint=checkpoints["pose"],
                out=tmp_path,
                window=0.2,
                stride=0.1,
                pose_every=1,
                reconnects=0,
                device="cpu",
            )
        )
    assert summary.frames_read == 300 and summary.frames_dropped > 0
    assert summary.frames_processed + summary.frames_dropped == 300
    assert summary.latency_p95 is not None and summary.latency_p95 < 1.0
    assert _rows(tmp_path)[-1]["dropped"] <= summary.frames_dropped


@pytest.mark.slow
def test_sigterm_leaves_a_complete_timeline_and_a_playable_overlay(real_video, checkpoints, tmp_path):
    with _MJPEGServer(real_video, fps=25, frames=None) as server:
        out = tmp_path / "out"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "watch",
                server.url,
                "--checkpoint",
                str(checkpoints["pose"]),
                "--out",
                str(out),
                "--window",
                "0.6",
                "--stride",
                "0.3",
                "--overlay",
                "--no-live",
                "--device",
                "cpu",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            timeline = out / "timeline.jsonl"
            if timeline.is_file() and len(timeline.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopped by SIGTERM" in stdout
    rows = _rows(out)  # every line a whole row
    assert len(rows) >= 3 and [row["window"] for row in rows] == list(range(len(rows)))
    assert json.loads((out / "events.json").read_text())["summary"]["ended"] == "stopped by SIGTERM"
    overlay = cv2.VideoCapture(str(out / "overlay.avi"))
    # a live source drops what it cannot process in time: the overlay holds the processed frames, whole
    assert overlay.isOpened() and overlay.get(cv2.CAP_PROP_FRAME_COUNT) > 0
    decoded = 0
    while overlay.read()[1] is not None:
        decoded += 1
    assert decoded == int(overlay.get(cv2.CAP_PROP_FRAME_COUNT))


# ------------------------------------------------------------------------------------------ errors, events


def test_unusable_sources_and_checkpoints_are_one_line_errors(real_video, checkpoints, tmp_path):
    def star(*args):
        result = CliRunner().invoke(app, ["watch", *map(str, args), "--device", "cpu"])
        return result.exit_code, result.output.strip()

    ckpt = checkpoints["rgb"]
    code, output = star("http://127.0.0.1:9/nothing.mjpg", "--checkpoint", ckpt, "--out", tmp_path / "a")
    assert code == 1 and output.startswith("Error: Cannot open the stream http://127.0.0.1:9/nothing.mjpg")
    assert "\n" not in output and "Traceback" not in output
    code, output = star(tmp_path / "missing.mp4", "--checkpoint", ckpt, "--out", tmp_path / "b")
    assert code == 1 and output.startswith("Error: Video not found")
    (tmp_path / "notes.mp4").write_text("not a video")
    code, output = star(tmp_path / "notes.mp4", "--checkpoint", ckpt, "--out", tmp_path / "c")
    assert code == 1 and "OpenCV cannot open the video" in output
    code, output = star(real_video, "--checkpoint", ckpt, "--window", "0", "--out", tmp_path / "d")
    assert code == 1 and "--window and --stride must be positive" in output

    # a layout the estimator's BlazePose-33 joints cannot make: refused before the source is opened
    state = torch.load(checkpoints["pose"], weights_only=True)
    state["fingerprint"]["layout"] = {"name": "lidar25", "joint_names": [f"point{j}" for j in range(25)]}
    torch.save(state, tmp_path / "lidar.pt")
    code, output = star(real_video, "--checkpoint", tmp_path / "lidar.pt", "--out", tmp_path / "e")
    assert code == 1 and "cannot make joint 'point0' of the layout 'lidar25'" in output
    assert not (tmp_path / "e").exists()


def test_events_are_smoothed_thresholded_runs_per_person():
    def row(start, person, **scores):
        return {
            "start": start,
            "end": start + 2,
            "person": person,
            "top": [{"class": name, "p": p} for name, p in scores.items()],
        }

    merger = EventMerger(threshold=0.5, smoothing=2)
    for start, scores in enumerate(
        [dict(wave=0.9), dict(wave=0.8), dict(wave=0.1, sit=0.9), dict(sit=0.9), dict(sit=0.2), dict(sit=0.1)]
    ):
        merger.add(row(float(start), 1, **scores))
    merger.add(row(0.0, 2, sit=0.95))
    events = merger.finish()
    assert [(e.person, e.action, e.start, e.end, e.windows) for e in events] == [
        (1, "wave", 0.0, 3.0, 2),  # window 2 averages wave (0.8 + 0.1) / 2 and sit 0.9 / 2: both under 0.5
        (2, "sit", 0.0, 2.0, 1),  # each person is smoothed on their own
        (1, "sit", 3.0, 6.0, 2),  # window 5: (0.2 + 0.1) / 2 ends it
    ]
    assert events[0].score == pytest.approx((0.9 + 0.85) / 2, abs=1e-4)
    with pytest.raises(StarError, match="--threshold"):
        EventMerger(threshold=1.5)
