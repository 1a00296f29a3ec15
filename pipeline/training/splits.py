"""What a cache says about its data (`CacheMeta`), its named splits, and the validation carved from training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import StarError
from pipeline.extraction.skeleton_store import SkeletonCache, is_skeleton_cache
from pipeline.extraction.store import FeatureCache
from pipeline.sources.clips import ClipSpec
from pipeline.sources.datasets.ntu import SAMPLE_NAME
from pipeline.sources.layouts import JointLayout, layout_from_spec


@dataclass(frozen=True)
class CacheMeta:
    """What a feature or skeleton cache says about the data: its fingerprint, class names and joint layout."""

    path: str
    fingerprint: dict[str, Any]
    class_names: list[str]
    layout: JointLayout
    persons: int
    num_joints: int  # per person
    skeletons: bool = False  # a skeleton cache (`star extract --modality pose`): no maps, full-rate skeletons

    def open(self) -> FeatureCache | SkeletonCache:
        return SkeletonCache.open(self.path) if self.skeletons else FeatureCache.open(self.path, mode="r")

    @property
    def clip_spec(self) -> ClipSpec:
        """The clip geometry the cache was extracted with (frames, input size, crop)."""
        return ClipSpec(
            frames=int(self.fingerprint["frames"]),
            size=int(self.fingerprint["input_size"]),
            crop=str(self.fingerprint["crop"]),
        )


def read_cache_meta(path: str | os.PathLike) -> CacheMeta:
    """Open a cache (one-line StarError when absent or damaged) and read what training needs from it."""
    if not str(path):
        raise StarError("no feature cache given: pass --from-cache CACHE (the --out of `star extract`)")
    if is_skeleton_cache(path):
        skeletons = SkeletonCache.open(path)
        fingerprint = skeletons.fingerprint
        return CacheMeta(
            path=skeletons.path,
            fingerprint=fingerprint,
            class_names=list(fingerprint["class_names"]),
            layout=layout_from_spec(fingerprint["layout"], where=f"joint layout of {skeletons.path}"),
            persons=skeletons.persons,
            num_joints=skeletons.num_joints,
            skeletons=True,
        )
    cache = FeatureCache.open(path, mode="r")
    fingerprint = cache.fingerprint
    missing = [
        key for key in ("class_names", "layout", "frames", "input_size", "crop", "weights") if key not in fingerprint
    ]
    if missing:
        raise StarError(
            f"the cache {cache.path} lacks {', '.join(missing)} in its fingerprint: "
            "it was written by an older STAR; extract it again"
        )
    layout = layout_from_spec(fingerprint["layout"], where=f"joint layout of {cache.path}")
    return CacheMeta(
        path=cache.path,
        fingerprint=fingerprint,
        class_names=list(fingerprint["class_names"]),
        layout=layout,
        persons=cache.layout.persons,
        num_joints=cache.layout.num_joints,
    )


def cache_split_name(cache: FeatureCache | SkeletonCache, *, benchmark: str, split: str) -> str:
    """The cache's name for (benchmark, split): "<benchmark>-<split>"; without a benchmark, the only match."""
    names = cache.split_names
    if benchmark:
        candidates = [f"{benchmark}-{split}"] if f"{benchmark}-{split}" in names else []
    else:
        candidates = [split] if split in names else [name for name in names if name.endswith(f"-{split}")]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        where = f" for benchmark {benchmark!r}" if benchmark else ""
        raise StarError(f"the cache {cache.path} has no split {split!r}{where}; it has: {', '.join(names) or 'none'}")
    benchmarks = ", ".join(name.removesuffix(f"-{split}") for name in candidates)
    raise StarError(f"split {split!r} exists for several benchmarks in {cache.path} ({benchmarks}): pass --benchmark")


def done_rows(cache: FeatureCache | SkeletonCache, *, split_name: str) -> np.ndarray:
    """Cache rows of `split_name` whose extraction is done (pending and failed samples are never read)."""
    return np.flatnonzero(cache.split(split_name) & cache.done_mask())


def carve_validation(
    sample_ids: np.ndarray | list[str], *, fraction: float, labels: np.ndarray | list[int] | None = None
) -> tuple[list[str], list[str]]:
    """(train, validation) sample ids: `fraction` of the performers held out, so no person is in both.

    Performers are read from NTU names (SsssCcccPpppRrrrAaaa); other datasets, and training sets of one performer,
    carve whole samples, stratified by class when `labels` are given (each class keeps about `fraction` of its
    samples in validation, at least one, never all). The choice is a fixed function of the ids (not of the
    training seed), so runs with different seeds see the same data.
    """
    ids = [str(sample_id) for sample_id in sample_ids]
    names = [SAMPLE_NAME.fullmatch(sample_id) for sample_id in ids]
    groups = [f"P{int(name.group(3))}" for name in names] if all(names) else ids
    if len(set(groups)) < 2:
        groups = ids
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise StarError(
            f"cannot carve a validation split from {len(unique)} training sample(s): pass --val-split with "
            "a split of the cache, or --val-split '' to train without validation"
        )
    rng = np.random.default_rng(0)
    if groups is ids and labels is not None:
        by_class: dict[int, list[str]] = {}
        for sample_id, label in sorted(zip(ids, np.asarray(labels).tolist(), strict=True)):
            by_class.setdefault(int(label), []).append(sample_id)
        held = set()
        for members in by_class.values():
            count = min(max(1, round(fraction * len(members))), len(members) - 1)
            held.update(rng.permutation(members)[:count].tolist())
    else:
        count = min(max(1, round(fraction * len(unique))), len(unique) - 1)
        held = set(rng.permutation(unique)[:count].tolist())
    return (
        [i for i, g in zip(ids, groups, strict=True) if g not in held],
        [i for i, g in zip(ids, groups, strict=True) if g in held],
    )
