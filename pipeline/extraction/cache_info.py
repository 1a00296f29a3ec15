"""What `star cache info` reports about a feature cache, as text and as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core.jsonable import json_roundtrip
from pipeline.core.text import human_bytes, shorten
from pipeline.extraction.cache_layout import CacheLayout

MOSTLY_EMPTY_COVERAGE = 0.5  # a done clip whose pose_coverage is below this has mostly empty joint heat maps


@dataclass(frozen=True)
class CacheInfo:
    """What `star cache info` prints: progress, failures, configuration and size on disk."""

    path: str
    samples: int
    done: int
    failed: int
    pending: int
    failures: tuple[tuple[str, str], ...]  # (sample_id, reason)
    fingerprint: dict[str, Any]
    layout: CacheLayout
    quantize: bool
    unit_size: int
    bytes_on_disk: int
    partial_files: int  # *.partial leftovers of killed writes
    empty_heatmaps: int = 0  # done clips without any joint on the local map (pose_coverage 0 or NaN)
    mostly_empty_heatmaps: int = 0  # done clips with 0 < pose_coverage < MOSTLY_EMPTY_COVERAGE

    @property
    def bytes_per_done_clip(self) -> float | None:
        return self.bytes_on_disk / self.done if self.done else None

    def format(self, *, max_failures: int = 20) -> str:
        per_clip = self.bytes_per_done_clip
        lines = [
            f"Feature cache {self.path}",
            f"  samples: {self.samples}  done: {self.done}  failed: {self.failed}  pending: {self.pending}",
            f"  storage: {'uint8 + per-(sample, frame, channel) scales' if self.quantize else 'float16'}, zstd;"
            f" work unit {self.unit_size} samples",
            f"  layout: T={self.layout.frames} local={self.layout.local_shape} global={self.layout.global_shape}"
            f" persons={self.layout.persons} joints per person={self.layout.num_joints}",
            f"  size on disk: {human_bytes(self.bytes_on_disk)}"
            + (f" ({human_bytes(per_clip)} per done clip)" if per_clip is not None else ""),
        ]
        lines.append(f"  joint heat maps: {heatmap_report(self.empty_heatmaps, self.mostly_empty_heatmaps)}")
        if self.partial_files:
            lines.append(
                f"  {self.partial_files} *.partial file(s) left by interrupted writes: harmless; "
                "`FeatureCache.remove_partial_files()` deletes them when no extraction is running"
            )
        lines.append("  fingerprint:")
        lines += [f"    {key}: {shorten(repr(value), 100)}" for key, value in sorted(self.fingerprint.items())]
        if self.failures:
            lines.append(f"  failures ({len(self.failures)}):")
            lines += [f"    {sample_id}: {reason}" for sample_id, reason in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                lines.append(f"    ... and {len(self.failures) - max_failures} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_json(self) -> dict[str, Any]:
        """The same facts as plain JSON types, for `star cache info --json`."""
        return json_roundtrip(
            {
                **asdict(self),
                "failures": [list(item) for item in self.failures],
                "bytes_per_done_clip": self.bytes_per_done_clip,
            }
        )


def heatmap_report(empty: int, mostly_empty: int) -> str:
    """One phrase for the extraction summary and `star cache info`."""
    if not empty and not mostly_empty:
        return "every done clip has its visible joints on the map"
    return (
        f"{empty} done clip(s) empty, {mostly_empty} mostly empty (under {MOSTLY_EMPTY_COVERAGE:.0%} of the "
        "visible joints on the map): check that the poses are in the videos' pixel space"
    )
