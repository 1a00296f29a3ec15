"""The one progress bar of every long command: a label, the bar, done/total, a unit, a free note, and the time.

Extraction (polling the cache), training (per epoch), pose estimation (per frame) and the demo (per stage) all
draw it, on stderr unless told another console, so stdout stays the command's result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(
    label: str,
    *,
    total: float | None = None,
    unit: str = "",
    console: Console | None = None,
    enabled: bool = True,
    transient: bool = False,
    elapsed: bool = False,
) -> Iterator[Callable[..., None]]:
    """Show a bar while the block runs; yields `update(completed=, total=, advance=, note=)`.

    `elapsed` shows the time spent instead of the time remaining; `transient` removes the bar when done.
    """
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(unit)] if unit else []
    columns += [TextColumn("{task.fields[note]}"), TimeElapsedColumn() if elapsed else TimeRemainingColumn()]
    progress = Progress(*columns, console=console or Console(stderr=True), disable=not enabled, transient=transient)
    task = progress.add_task(label, total=total, note="")

    def update(**fields: Any) -> None:
        progress.update(task, **fields)

    with progress:
        yield update
