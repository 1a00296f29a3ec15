"""What differs between two configurations (cache fingerprints, training and model configs), found and said one way."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

_MISSING = "<missing>"


def _comparable(value: Any) -> Any:
    """Tuples and lists, numpy scalars and numbers compare as they would after a JSON round trip."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Collection[str] = ()) -> list[str]:
    """Sorted keys whose values differ (a key present on one side only differs), except those in `ignore`."""
    return [
        key
        for key in sorted(set(a) | set(b))
        if key not in ignore and (key not in a or key not in b or _comparable(a[key]) != _comparable(b[key]))
    ]


def describe_differences(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    keys: Collection[str],
    *,
    names: tuple[str, str] = ("", ""),
    limit: int = 60,
) -> str:
    """ "key: <names[0]> A vs <names[1]> B; ..." for `keys`; values longer than `limit` are said to differ only."""
    parts = []
    for key in keys:
        shown = [repr(side[key]) if key in side else _MISSING for side in (a, b)]
        if max(map(len, shown)) > limit:  # class-name lists and the like: the key says enough
            parts.append(f"{key}: not the same")
        else:
            sides = (f"{name} {value}".strip() for name, value in zip(names, shown, strict=True))
            parts.append(f"{key}: " + " vs ".join(sides))
    return "; ".join(parts)
