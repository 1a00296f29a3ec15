"""Values as JSON will hold them, so what was stored and what is asked for compare equal."""

from __future__ import annotations

import json
from typing import Any


def json_roundtrip(value: Any) -> Any:
    """Exactly what the attributes will hold (tuples become lists), so stored and requested compare equal."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as err:
        raise ValueError(f"the cache fingerprint must be JSON-serializable: {err}") from err
