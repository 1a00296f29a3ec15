"""How numbers and long values are written in one-line reports and plot labels."""

from __future__ import annotations


def human_bytes(size: float) -> str:
    """A byte count in decimal units: `512 B`, `3.42 MB`, `17.5 GB`."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}" if size < 10 * scale else f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
