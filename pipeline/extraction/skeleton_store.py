"""The skeleton cache of `star extract --modality pose`: every sample's full-rate skeleton in one zarr v3 group.

A pose-only model reads no frames and no backbone maps, so this cache holds the skeletons alone, at the rate
they were annotated: frame sampling, normalisation and augmentation happen at training time
(`pipeline.training.skeletons`). Layout (N samples, F frames over all of them):

    joints      (F, P, J, 3) float32   (x, y, confidence) in original-frame pixels, sample i at offsets[i]:offsets[i+1]
    offsets     (N + 1,) int64
    frame_size  (N, 2) int32           (width, height) of the sample's frames; 0 when unknown
    label (N,) int64, sample_id (N,) str, done (N,) bool, failure (N,) str, splits/<name> (N,) bool

A failed sample (its reason from the annotation index) has no frames and `done` False; it stays in the
cache so that `star evaluate` can say how many clips of a split it scored. The whole store is written by one
process into a temporary folder beside `path` and renamed into place, so a killed run leaves the previous
cache (or none), never half of one; all of Penn Action is a few megabytes. A re-run whose index
rows are unchanged writes nothing. Local paths only: the store is small, so remote training copies it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from pipeline.core.differences import describe_differences, differing_keys
from pipeline.core.errors import StarError
from pipeline.core.jsonable import json_roundtrip

KIND = "skeletons"
FORMAT_VERSION = 1
_META_KEY = "star_skeletons"
_FRAMES_CHUNK = 1 << 16  # skeleton frames per chunk (13 MB of float32 for NTU's 2 x 25 joints)


@dataclass(frozen=True)
class SkeletonSample:
    """One row of a skeleton cache: its skeleton when done, its reason when not."""

    sample_id: str
    label: int
    skeleton: np.ndarray | None  # (frames, P, J, 3) float32; None for a failed sample
    frame_size: tuple[int, int]  # (width, height), (0, 0) when unknown
    failure: str = ""


def is_skeleton_cache(path: str | os.PathLike) -> bool:
    """True when `path` is a local folder holding a STAR skeleton cache."""
    meta = Path(path) / "zarr.json"
    return meta.is_file() and _META_KEY in meta.read_text(errors="replace")


def content_digest(parts: Sequence[str]) -> str:
    """A digest of what the cache is built from (the index rows' fingerprints): equal digests, equal caches."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def write_skeleton_cache(
    path: str | os.PathLike,
    *,
    fingerprint: Mapping[str, Any],
    persons: int,
    num_joints: int,
    samples: Sequence[SkeletonSample],
    splits: Mapping[str, np.ndarray],
    digest: str,
) -> bool:
    """Write the cache at `path` (replacing one of the same fingerprint); False when it was up to date already.

    A store at `path` that is not a skeleton cache, or one built with another fingerprint, is refused.
    """
    target = Path(_local(path))
    check_skeleton_target(target, fingerprint=fingerprint)
    if is_skeleton_cache(target) and SkeletonCache.open(target).digest == digest:
        return False
    temporary = target.with_name(f".{target.name}.writing-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        _write(
            temporary,
            fingerprint=fingerprint,
            persons=persons,
            num_joints=num_joints,
            samples=samples,
            splits=splits,
            digest=digest,
        )
        previous = target.with_name(f".{target.name}.previous-{os.getpid()}")
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    except OSError as err:
        raise StarError(f"Cannot write the skeleton cache at {target}: {err}. Choose another --out") from err
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return True


def check_skeleton_target(path: str | os.PathLike, *, fingerprint: Mapping[str, Any]) -> None:
    """Refuse a `path` that holds something other than a skeleton cache of this fingerprint. Reads only."""
    target = Path(_local(path))
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not target.is_dir():
        raise StarError(f"{target} is a file, not a cache folder: choose another --out")
    if not is_skeleton_cache(target):
        raise StarError(
            f"{target} holds something other than a skeleton cache (a feature cache of `star extract` "
            "without --modality pose?): choose another --out"
        )
    stored, wanted = SkeletonCache.open(target).fingerprint, json_roundtrip(dict(fingerprint))
    differing = differing_keys(stored, wanted)
    if differing:
        raise StarError(
            f"The skeleton cache at {target} was built with a different configuration: "
            f"{describe_differences(stored, wanted, differing, names=('stored', 'requested'), limit=100)}. "
            f"Choose another --out, or delete {target} to rebuild it"
        )


def _write(
    folder: Path,
    *,
    fingerprint: Mapping[str, Any],
    persons: int,
    num_joints: int,
    samples: Sequence[SkeletonSample],
    splits: Mapping[str, np.ndarray],
    digest: str,
) -> None:
    lengths = np.array([0 if s.skeleton is None else len(s.skeleton) for s in samples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    joints = np.zeros((int(offsets[-1]), persons, num_joints, 3), np.float32)
    for sample, start, stop in zip(samples, offsets[:-1], offsets[1:], strict=True):
        if sample.skeleton is not None:
            joints[start:stop] = sample.skeleton
    group = zarr.open_group(store=zarr.storage.LocalStore(str(folder)), mode="w", zarr_format=3)
    arrays = {
        "joints": joints,
        "offsets": offsets,
        "frame_size": np.array([s.frame_size for s in samples], dtype=np.int32).reshape(len(samples), 2),
        "label": np.array([s.label for s in samples], dtype=np.int64),
        "sample_id": np.array([s.sample_id for s in samples], dtype=str),
        "done": np.array([s.skeleton is not None for s in samples], dtype=bool),
        "failure": np.array([s.failure for s in samples], dtype=str),
        **{f"splits/{name}": np.asarray(mask, dtype=bool) for name, mask in splits.items()},
    }
    for name, values in arrays.items():
        chunks = (min(max(len(values), 1), _FRAMES_CHUNK), *values.shape[1:])
        text = values.dtype.kind == "U"
        array = group.create_array(
            name,
            shape=values.shape,
            chunks=chunks,
            dtype=str if text else values.dtype,
            **({} if text else {"compressors": ZstdCodec()}),
        )
        if values.size:
            array[...] = values
    group.attrs.put(
        {
            _META_KEY: {
                "kind": KIND,
                "format_version": FORMAT_VERSION,
                "fingerprint": json_roundtrip(dict(fingerprint)),
                "persons": persons,
                "num_joints": num_joints,
                "splits": sorted(splits),
                "digest": digest,
            }
        }
    )


class SkeletonCache:
    """A skeleton cache read whole into memory (small: Penn Action is 14 MB, NTU-120 about 7 GB of float32)."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = str(path)
        self._meta = meta
        self.joints = arrays["joints"]
        self.offsets = arrays["offsets"]
        self.frame_sizes = arrays["frame_size"]
        self.labels = arrays["label"]
        self.sample_ids = arrays["sample_id"]
        self.done = arrays["done"]
        self.failures = arrays["failure"]
        self._splits = {name: arrays[f"splits/{name}"] for name in meta["splits"]}

    @classmethod
    def open(cls, path: str | os.PathLike) -> SkeletonCache:
        folder = Path(_local(path))
        if not folder.is_dir():
            raise StarError(
                f"No cache at {folder}: run `star extract --modality pose --out {folder}` first, or check the path"
            )
        try:
            group = zarr.open_group(store=zarr.storage.LocalStore(str(folder), read_only=True), mode="r", zarr_format=3)
            meta = group.attrs.get(_META_KEY)
            if not isinstance(meta, dict) or meta.get("kind") != KIND:
                raise StarError(f"{folder} is not a STAR skeleton cache")
            if meta.get("format_version") != FORMAT_VERSION:
                raise StarError(
                    f"{folder} is a skeleton cache of format {meta.get('format_version')}, this STAR reads "
                    f"format {FORMAT_VERSION}: delete it and run `star extract --modality pose` again"
                )
            names = [
                "joints",
                "offsets",
                "frame_size",
                "label",
                "sample_id",
                "done",
                "failure",
                *(f"splits/{name}" for name in meta["splits"]),
            ]
            arrays = {name: group[name][...] for name in names}
        except StarError:
            raise
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise StarError(
                f"The skeleton cache at {folder} is damaged ({type(err).__name__}: {err}): delete it and "
                "run `star extract --modality pose` again"
            ) from err
        arrays["sample_id"] = np.array(arrays["sample_id"].tolist(), dtype=str)
        arrays["failure"] = np.array(arrays["failure"].tolist(), dtype=str)
        if len(arrays["offsets"]) != len(arrays["label"]) + 1 or arrays["offsets"][-1] != len(arrays["joints"]):
            raise StarError(
                f"The skeleton cache at {folder} is damaged (offsets and joints disagree): delete it and "
                "run `star extract --modality pose` again"
            )
        return cls(folder, meta, arrays)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._meta["fingerprint"])

    @property
    def digest(self) -> str:
        return str(self._meta["digest"])

    @property
    def persons(self) -> int:
        return int(self._meta["persons"])

    @property
    def num_joints(self) -> int:
        return int(self._meta["num_joints"])

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self._meta["splits"])

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> np.ndarray:
        """Bool membership mask (N,) of split `name`."""
        if name not in self._splits:
            raise StarError(f"The skeleton cache has no split '{name}'; it has: {', '.join(self.split_names)}")
        return self._splits[name]

    def done_mask(self) -> np.ndarray:
        """Rows with a usable skeleton."""
        return self.done

    def skeleton(self, row: int) -> np.ndarray:
        """(frames, P, J, 3) float32 skeleton of cache row `row` (a view into the cache)."""
        return self.joints[self.offsets[row] : self.offsets[row + 1]]

    def info(self) -> dict[str, Any]:
        """What `star cache info` reports: counts, frames, splits, the fingerprint and the failures."""
        return {
            "path": self.path,
            "kind": KIND,
            "samples": len(self),
            "done": int(self.done.sum()),
            "failed": int((~self.done).sum()),
            "frames": int(self.offsets[-1]),
            "persons": self.persons,
            "num_joints": self.num_joints,
            "splits": {name: int(self.split(name).sum()) for name in self.split_names},
            "fingerprint": self.fingerprint,
            "failures": [list(item) for item in self.failed()],
        }

    def format_info(self, *, max_failures: int = 20) -> str:
        info = self.info()
        splits = ", ".join(f"{name} {count}" for name, count in info["splits"].items())
        lines = [
            f"Skeleton cache {self.path}",
            f"  samples: {info['samples']}  done: {info['done']}  failed: {info['failed']}",
            f"  full-rate skeletons: {info['frames']} frames of {info['persons']} x {info['num_joints']} joints",
            f"  splits: {splits or 'none'}",
            f"  dataset {self.fingerprint.get('dataset')}, layout {self.fingerprint['layout']['name']}, "
            f"{len(self.fingerprint['class_names'])} classes",
        ]
        if info["failures"]:
            lines.append(f"  failures ({len(info['failures'])}):")
            lines += [f"    {sample_id}: {reason}" for sample_id, reason in info["failures"][:max_failures]]
        return "\n".join(lines)

    def failed(self) -> list[tuple[str, str]]:
        """(sample_id, reason) of every sample without a usable skeleton."""
        return [(str(self.sample_ids[row]), str(self.failures[row])) for row in np.flatnonzero(~self.done)]


def _local(path: str | os.PathLike) -> str:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        raise StarError(
            f"skeleton caches are local folders (a few MB to GB); {text} is a URL: write it locally "
            "and copy it where training runs"
        )
    return os.path.abspath(os.path.expanduser(text))
