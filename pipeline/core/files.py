"""Reading the files a user names (configs, manifests, layouts, class lists, checkpoints) with one-line errors, and
writing results so that a crash never leaves half a file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pipeline.core.errors import StarError


def read_text_file(path: str | os.PathLike, *, what: str) -> str:
    """The UTF-8 text of `path` (a leading BOM dropped); StarError naming the file and `what` it should be
    when it is missing, a folder, unreadable, empty or not text (an image, a binary, random bytes)."""
    path = Path(path)
    if path.is_dir():
        raise StarError(f"{what} {path} is a folder, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StarError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise StarError(f"cannot read the {what} {path}: {err.strerror}") from err
    if not data.strip():
        raise StarError(f"{what} {path} is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise StarError(f"{what} {path} is not UTF-8 text (byte {err.start}): is it the right file?") from None
    if "\x00" in text:
        raise StarError(f"{what} {path} holds NUL bytes, not text: is it the right file?")
    return text


def load_torch_file(path: str | os.PathLike, *, what: str, hint: str) -> object:
    """`torch.load(path, weights_only=True)` on the CPU; StarError naming the file, `what` it should be and `hint`
    when it is not a complete PyTorch file (empty, truncated, random bytes, an image, an unsafe pickle)."""
    import torch  # here, so that text-only callers do not import torch

    path = Path(path)
    if path.is_dir():
        raise StarError(f"{what} {path} is a folder, not a file: {hint}")
    if not path.is_file():
        raise StarError(f"{what} {path} does not exist: {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler fails on foreign bytes with many exception types
        if path.stat().st_size == 0:
            problem = "it is empty"
        elif isinstance(err, EOFError) or "central directory" in str(err):
            problem = "it ends early (truncated?)"
        else:
            problem = f"its bytes are not a PyTorch file of tensors ({type(err).__name__})"
        raise StarError(f"{what} {path} cannot be read: {problem}; {hint}") from err


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(handle)` on a temporary file beside `path`, sync it and rename it over `path`: readers and a
    killed process see the old file or the whole new one, never a part. The temporary file goes on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
