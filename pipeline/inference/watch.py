"""`star watch SOURCE --checkpoint CKPT`: actions on a video file, a camera or a network stream, as they happen.

decode → pose → window → classify, one frame at a time (`pipeline.sources.stream`): the built-in estimator
(BlazePose, `pipeline.sources.pose`) runs on every `pose_every`-th frame, its people tracked online
(`PersonTracker`) and their joints carried over to the frames in between; the frames and people of the last
`window` seconds are kept, and every `stride` seconds the window ending then is classified. The window is
sampled as `star predict` samples a video (T segment centres of its frames) and goes through the same
`Recogniser` (`pipeline.inference.predict`), so a window's probabilities are those of `star predict` on the same
frames and pose. Memory holds one window of frames whatever the length of the source.

Rows: one per window and tracked person (the `people` most confident in the window, each put in the model's first
person slot, the others after it), or one with no person when the model does not read the pose (an rgb model
with a full-frame crop). The estimator runs only when the model reads the pose or the overlay draws it.

Live sources (cameras, URLs) drop frames when processing falls behind (`pipeline.sources.stream`), so the time from
a frame's capture to its label stays bounded; a file is processed completely. SIGINT and SIGTERM stop the run
after the current step: the timeline keeps every window classified, `events.json` and the overlay are closed whole.
"""

from __future__ import annotations

import collections
import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import StarError
from pipeline.inference.overlay import OverlayWriter
from pipeline.inference.predict import Recogniser, load_recogniser
from pipeline.inference.timeline import Event, EventMerger, TimelineWriter, write_events
from pipeline.sources.clips import clip_indices, make_clip
from pipeline.sources.layouts import BLAZEPOSE33
from pipeline.sources.pose.mapping import convert_joints, joint_recipe
from pipeline.sources.pose.tracking import PersonTracker
from pipeline.sources.stream import StreamFrame, open_stream

EPS = 1e-6  # seconds: frame times i / fps and window bounds W + m S compared without rounding noise


@dataclass(frozen=True)
class WatchConfig:
    source: str  # a video file, a camera index ("0") or a URL (rtsp://, http://)
    checkpoint: Path
    out: Path | None = None  # folder of timeline.jsonl, events.json, overlay.avi [default: watch-<source name>]
    window: float = 2.0  # W: seconds of video per classification
    stride: float = 1.0  # S: seconds between classifications
    pose_every: int = 2  # k: estimate the pose on every k-th frame, carry it over in between
    top_k: int = 3
    threshold: float = 0.5  # the smoothed score an event needs
    smoothing: int = 3  # windows averaged per person before labelling (trailing)
    people: int = 1  # persons followed by the estimator (one row each per window)
    overlay: bool = False
    queue: int = 4  # live sources: frames that may wait; older ones are dropped
    reconnects: int = 5  # live sources: reopen attempts after a failure
    backoff: float = 0.5  # seconds before the first reopen; doubles per attempt
    weights: str = ""
    device: str = "auto"

    def check(self) -> None:
        if not self.window > 0 or not self.stride > 0:
            raise StarError(f"--window and --stride must be positive seconds, got {self.window} and {self.stride}")
        for name in ("pose_every", "top_k", "people", "smoothing", "queue"):
            if getattr(self, name) < 1:
                raise StarError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.reconnects < 0 or self.backoff < 0:
            raise StarError("--reconnects and the back-off must not be negative")

    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        if self.source.isdigit():
            name = f"camera{self.source}"
        elif "://" in self.source:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.source.split("://", 1)[1]).strip("_")
        else:
            name = Path(self.source).stem
        return Path(f"watch-{name or 'stream'}")


@dataclass
class WatchSummary:
    source: str
    live: bool
    out: str
    ended: str = ""
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    poses_estimated: int = 0
    reconnects: int = 0
    windows: int = 0
    rows: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    latency_p50: float | None = None  # live sources: seconds from a window's last capture to its label
    latency_p95: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        return self.video_seconds / max(self.wall_seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "real_time_factor": round(self.real_time_factor, 3), "events": len(self.events)}

    def format(self) -> str:
        lines = [
            f"{self.source}: {self.ended}; {self.video_seconds:.1f} s of video in {self.wall_seconds:.1f} s "
            f"(real-time factor {self.real_time_factor:.2f}), {self.windows} windows, {self.rows} timeline rows",
            f"  frames: {self.frames_read} decoded, {self.frames_processed} processed, {self.frames_dropped} dropped; "
            f"pose estimated on {self.poses_estimated}; {self.reconnects} reconnections",
        ]
        if self.latency_p50 is not None:
            lines.append(f"  latency capture -> label: p50 {self.latency_p50:.2f} s, p95 {self.latency_p95:.2f} s")
        lines += [
            f"  {event.start:8.1f}-{event.end:<8.1f} {_who(event.person)}{event.action} ({event.score:.0%})"
            for event in self.events
        ]
        lines += [f"  {kind}: {path}" for kind, path in self.files.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Seen:
    frame: StreamFrame
    people: dict[int, np.ndarray]  # track id -> (J, 3) joints in the model's layout, frame pixels


def watch(config: WatchConfig, *, live_line: bool = False) -> WatchSummary:
    """Run until the source ends, fails for good, or SIGINT/SIGTERM; write the timeline, events and overlay."""
    config.check()
    recogniser = load_recogniser(config.checkpoint, weights=config.weights, device=config.device)
    if recogniser.reads_pose or config.overlay:
        joint_recipe(source=BLAZEPOSE33, target=recogniser.layout)  # a layout the estimator cannot make: fail now
    out = config.out_dir()
    stream = open_stream(config.source, queue=config.queue, reconnects=config.reconnects, backoff_s=config.backoff)
    summary = WatchSummary(source=config.source, live=stream.live, out=str(out))
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.callback(stream.close)
        stack.enter_context(_stopped_by_signals(stop, summary, on_signal=getattr(stream, "stop", None)))
        timeline = TimelineWriter(out / "timeline.jsonl")
        stack.callback(timeline.close)
        summary.files["timeline"] = str(timeline.path)
        estimator = None
        if recogniser.reads_pose or config.overlay:
            from pipeline.sources.pose.blazepose import BlazePose

            estimator = stack.enter_context(BlazePose(persons=config.people))
        show = stack.enter_context(_live_line(enabled=live_line))
        run = _Run(config=config, recogniser=recogniser, timeline=timeline, summary=summary, show=show, stream=stream)
        started = time.perf_counter()
        try:
            _process(stream, run, estimator=estimator, stop=stop, stack=stack)
        finally:
            summary.wall_seconds = time.perf_counter() - started
            stream.close()  # a live source's thread stops: its counts are final
            summary.frames_read, summary.frames_dropped = stream.read, stream.dropped
            summary.reconnects = stream.reconnects
            summary.ended = summary.ended or stream.ended or "the source ended"
            if run.latencies:
                summary.latency_p50, summary.latency_p95 = (float(v) for v in np.percentile(run.latencies, [50, 95]))
            summary.events = run.events.finish()
            summary.files["events"] = str(out / "events.json")
            write_events(out / "events.json", events=summary.events, summary=summary.to_dict())
    return summary


@dataclass
class _Run:
    """The state of one run that windows need: where rows go, and what was measured."""

    config: WatchConfig
    recogniser: Recogniser
    timeline: TimelineWriter
    summary: WatchSummary
    show: Any
    stream: Any
    events: EventMerger = field(init=False)
    latencies: list[float] = field(default_factory=list)
    labels: dict[int | None, str] = field(default_factory=dict)  # the current label of each person, for the overlay

    def __post_init__(self) -> None:
        self.events = EventMerger(threshold=self.config.threshold, smoothing=self.config.smoothing)


def _process(stream, run: _Run, *, estimator, stop: threading.Event, stack: contextlib.ExitStack) -> None:
    """The frame loop; after it, a last window over the tail when the source ended half a stride past a window."""
    config, layout = run.config, run.recogniser.layout
    tracker = PersonTracker()
    window: collections.deque[_Seen] = collections.deque()
    people: dict[int, np.ndarray] = {}
    overlay = None
    ends = lambda m: config.window + m * config.stride  # noqa: E731 (window m ends here; no drift from sums)
    m, classified_to, last = 0, 0.0, None
    for frame in stream:
        if stop.is_set():
            return
        while frame.time >= ends(m) - EPS:  # every window that ended before this frame (several after a stall)
            inside = [seen for seen in window if seen.frame.time >= ends(m) - config.window - EPS]
            if inside:
                _classify(run, inside, start=ends(m) - config.window, end=ends(m))
                classified_to = ends(m)
            m += 1
        if estimator is not None and run.summary.frames_processed % config.pose_every == 0:
            detections = estimator(frame.rgb)
            ids = tracker.update(run.summary.frames_processed, detections)
            joints = (
                convert_joints(np.stack([d.keypoints for d in detections]), source=BLAZEPOSE33, target=layout)
                if detections
                else []
            )
            people = dict(zip(ids, joints, strict=True))
            run.summary.poses_estimated += 1
        window.append(_Seen(frame, people))
        keep = min(ends(m), frame.time + 1 / stream.fps) - config.window  # the next window's, or the tail's
        while window[0].frame.time < keep - EPS:
            window.popleft()
        if config.overlay:
            if overlay is None:
                height, width = frame.rgb.shape[:2]
                overlay = OverlayWriter(
                    Path(run.summary.out) / "overlay.avi", fps=stream.fps, frame_size=(width, height), layout=layout
                )
                stack.callback(overlay.close)
                run.summary.files["overlay"] = str(overlay.path)
            overlay.write(frame.rgb, people=people, labels=run.labels, time=frame.time)
        run.summary.frames_processed += 1
        run.summary.video_seconds = frame.time + 1 / stream.fps
        last = frame
    end = last.time + 1 / stream.fps if last is not None else 0.0
    if last is not None and not stop.is_set() and (not classified_to or end - classified_to >= config.stride / 2):
        _classify(
            run,
            [s for s in window if s.frame.time >= end - config.window - EPS],
            start=max(end - config.window, 0),
            end=end,
        )


def _classify(run: _Run, seen: list[_Seen], *, start: float, end: float) -> None:
    """Classify one window (its frames in order) for each of its most confident people; write and show the rows."""
    recogniser, config = run.recogniser, run.config
    totals: dict[int, float] = collections.defaultdict(float)
    for item in seen:
        for person, joints in item.people.items():
            totals[person] += float(joints[:, 2].sum())
    ranked = sorted(totals, key=lambda person: (-totals[person], person))
    persons: list[int | None] = ranked[: config.people] if recogniser.reads_pose and ranked else [None]
    indices = [item.frame.index for item in seen]
    sampled = clip_indices(len(seen), recogniser.frames)  # (T,) positions in the window
    for person in persons:
        row: dict[str, Any] = {
            "window": run.summary.windows,
            "start": round(start, 3),
            "end": round(end, 3),
            "frames": [indices[0], indices[-1]],
            "sampled": [indices[i] for i in sampled],
            "person": person,
            "top": [],
        }
        if person is not None or not recogniser.reads_pose:
            skeleton = window_skeleton(seen, person=person, others=ranked, recogniser=recogniser)
            probabilities = window_probabilities(recogniser, seen, skeleton, sampled=sampled)
            row["top"] = [
                {"class": s.class_name, "class_id": s.class_id, "p": round(s.probability, 6)}
                for s in recogniser.top(probabilities, config.top_k)
            ]
        if run.summary.live:
            latency = time.monotonic() - seen[-1].frame.captured
            run.latencies.append(latency)
            row |= {"latency": round(latency, 3), "dropped": run.stream.dropped}
        run.timeline.write(row)
        run.events.add(row)
        run.summary.rows += 1
        best = row["top"][0] if row["top"] else None
        run.labels[person] = f"{best['class']} {best['p']:.0%}" if best else "nobody tracked"
        run.show(row)
    run.summary.windows += 1


def window_skeleton(seen: list[_Seen], *, person: int | None, others: list[int], recogniser: Recogniser) -> np.ndarray:
    """(frames, persons, J, 3) of a window: `person` in the first slot, the window's other people after it."""
    slots = ([person] + [p for p in others if p != person])[: recogniser.persons] if person is not None else []
    skeleton = np.zeros((len(seen), recogniser.persons, recogniser.layout.num_joints, 3), np.float32)
    for t, item in enumerate(seen):
        for slot, track in enumerate(slots):
            if track in item.people:
                skeleton[t, slot] = item.people[track]
    return skeleton


def window_probabilities(recogniser: Recogniser, seen: list[_Seen], skeleton: np.ndarray, *, sampled: np.ndarray):
    """The class probabilities of a window, through `star predict`'s steps."""
    if recogniser.clip_spec is None:
        return recogniser.skeleton_probabilities(skeleton)
    height, width = seen[0].frame.rgb.shape[:2]
    clip = make_clip(
        frames=np.stack([seen[i].frame.rgb for i in sampled]),  # (T, H, W, 3)
        joints=skeleton[sampled],
        frame_indices=np.asarray([seen[i].frame.index for i in sampled]),
        frame_size=(width, height),
        spec=recogniser.clip_spec,
    )
    return recogniser.clip_probabilities(clip)


def _who(person: int | None) -> str:
    return "" if person is None else f"person {person}: "


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event, summary: WatchSummary, *, on_signal=None) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (the run ends after its current step); a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        summary.ended = f"stopped by {signal.Signals(signum).name}"
        stop.set()
        if on_signal is not None:
            on_signal()

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _live_line(*, enabled: bool) -> Iterator[Any]:
    """A callable showing each row as one line that rewrites itself on stderr (nothing when disabled)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda row: None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    with Live(Text(""), console=Console(stderr=True), refresh_per_second=8, transient=True) as live:

        def show(row: dict[str, Any]) -> None:
            best = row["top"][0] if row["top"] else None
            label = f"{best['class']} {best['p']:.0%}" if best else "nobody tracked"
            extra = f"  latency {row['latency']:.2f} s, {row['dropped']} dropped" if "latency" in row else ""
            live.update(Text(f"{row['start']:8.1f}-{row['end']:<8.1f} {_who(row['person'])}{label}{extra}"))

        yield show
