"""What `star watch` writes: the timeline of classified windows as it goes, and the events merged from it.

`timeline.jsonl` holds one JSON object per window and person, written whole and flushed at once, so a run that
is stopped (Ctrl-C, SIGTERM, a lost stream) leaves every window classified so far and no partial line:

    {"window": 3, "start": 3.0, "end": 5.0, "frames": [75, 124], "sampled": [78, 84, ...], "person": 1,
     "top": [{"class": "drink water", "class_id": 0, "p": 0.912}, ...], "latency": 0.31, "dropped": 0}

`person` is the tracker's id (null when nobody was tracked or the model ignores the pose); `top` is empty when the
model reads the pose and nobody was tracked; `latency` (live sources) is the seconds from the capture of the
window's last frame to its label.

Events: per person, each class's probability is smoothed over the last `smoothing` windows (a trailing mean,
so it works live too); a window's label is its best smoothed class when that reaches `threshold`; consecutive
windows with one label make an event (action, start, end, mean smoothed score).
"""

from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.core.errors import StarError


class TimelineWriter:
    """Appends rows to a JSON Lines file, each flushed to the OS before the next window (readers see it at once)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as err:
            raise StarError(f"Cannot write the timeline {self.path} ({err.strerror}); choose another --out.") from err
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, separators=(", ", ": ")) + "\n")
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Event:
    person: int | None
    action: str
    start: float
    end: float
    score: float  # mean smoothed probability of `action` over the event's windows
    windows: int


@dataclass
class _Open:
    action: str
    start: float
    end: float
    scores: list[float]


class EventMerger:
    """Windows in, events out: per-person trailing smoothing, a threshold, and runs of one label merged."""

    def __init__(self, *, threshold: float = 0.5, smoothing: int = 3) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise StarError(f"--threshold must be a probability in [0, 1], got {threshold}")
        if smoothing < 1:
            raise StarError(f"smoothing must be at least 1 window, got {smoothing}")
        self.threshold, self.smoothing = threshold, smoothing
        self._recent: dict[int | None, collections.deque[dict[str, float]]] = {}
        self._open: dict[int | None, _Open] = {}
        self.events: list[Event] = []

    def add(self, row: dict[str, Any]) -> None:
        person = row["person"]
        recent = self._recent.setdefault(person, collections.deque(maxlen=self.smoothing))
        recent.append({score["class"]: score["p"] for score in row["top"]})  # classes outside the top-k count as 0
        smoothed: dict[str, float] = collections.defaultdict(float)
        for scores in recent:
            for name, p in scores.items():
                smoothed[name] += p / len(recent)
        best = max(smoothed, key=smoothed.get, default=None)
        label = best if best is not None and smoothed[best] >= self.threshold else None
        current = self._open.get(person)
        if current is not None and current.action == label and row["start"] <= current.end:
            current.end = row["end"]
            current.scores.append(smoothed[label])
            return
        self._close(person)
        if label is not None:
            self._open[person] = _Open(action=label, start=row["start"], end=row["end"], scores=[smoothed[label]])

    def finish(self) -> list[Event]:
        """Close the open events; all events, by start time."""
        for person in list(self._open):
            self._close(person)
        return sorted(self.events, key=lambda event: (event.start, str(event.person)))

    def _close(self, person: int | None) -> None:
        current = self._open.pop(person, None)
        if current is not None:
            score = sum(current.scores) / len(current.scores)
            self.events.append(
                Event(person, current.action, current.start, current.end, round(score, 4), len(current.scores))
            )


def write_events(path: Path, *, events: list[Event], summary: dict[str, Any]) -> Path:
    """`events.json`: the run's summary and its events."""
    text = json.dumps({"summary": summary, "events": [asdict(event) for event in events]}, indent=2)
    Path(path).write_text(text + "\n", encoding="utf-8")
    return Path(path)
