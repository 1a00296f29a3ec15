"""The feature cache of `star extract`: one zarr v3 group per dataset and extraction config.

Stage 1 stores, per clip, the frozen MC3-18 layer3 ("local") and layer4 ("global") maps, the joint heatmaps and the
joints; stage 2 trains from it. Layout of the group (N = samples indexed, U = `unit_size`):

    local      (N, T, C', h', w')   float16 (uint8 in 8-bit mode)   chunk = 1 work unit
    global     (N, T, C, h, w)      float16 (uint8)                 idem
    heatmaps   (N, T, P*J, h', w')  float16 (uint8)                 idem
    joints     (N, T, P, J, 3)      float32, feature-map cell units idem
    *_scale    (N, T, channels)     float32, 8-bit mode only: value = uint8 * scale[sample, frame, channel]
    status     (N,) uint8           0 pending, 1 done, 2 failed;    chunk = 1 work unit
    failure    (N,) str             reason of a failed sample;      chunk = 1 work unit
    pose_coverage (N,) float32      share of the clip's visible joints whose heat-map peak lies on the local map
                                    (NaN: no visible joint, all heat maps empty); chunk = 1 work unit
    label (N,) int64, sample_id (N,) str, splits/<name> (N,) bool   written by the coordinating process only

Work unit k owns samples [k*U, (k+1)*U): exactly one chunk of every array but label, sample_id and splits, so
concurrent writers (threads, processes, Dask workers) never share a file; zarr silently loses data when two writers
rewrite one chunk. Readers take a unit's rows together (`read_rows`, in the training order of
`pipeline.training.sampling`): one chunk decode per array. Chunks of one unit beat one chunk per sample
(zarr spends Python time per chunk; figures in benchmarks/RESULTS.md); a lone row costs a whole unit's decode.

Crash safety. `write_unit` writes every data array of the unit in one call per array, then the failure reasons, then
`status` last. zarr's LocalStore writes each chunk to a `*.partial` file and renames it, so each file is replaced
whole: a process killed at any moment leaves the unit's status chunk either old or new, and the new one is only
written after all the data. A sample is therefore never marked done with partial data (it stays pending and is
redone); samples already done in the unit are read back and rewritten unchanged. Rows that are not done always hold
the fill value 0, so an interrupted-then-resumed run ends with the same arrays as an uninterrupted one. This holds for
SIGKILL; surviving a power cut additionally needs a file system that orders data before renames (ext4's default).
`file://` URLs use the same atomic LocalStore; for other fsspec URLs atomicity is the object store's (a PUT is whole).

Growth. New samples are appended (existing rows never move) by `create_or_open`, which must run in ONE coordinating
process before any unit is dispatched: zarr loses rows when two processes resize at once. The `n_samples` attribute
is the commit point of a growth, so a growth killed half-way is redone on the next run.

8-bit mode (`quantize=True`, opt-in): see `pipeline.extraction.quantize`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from pipeline.core.differences import describe_differences, differing_keys
from pipeline.core.errors import StarError
from pipeline.core.jsonable import json_roundtrip
from pipeline.extraction.cache_info import MOSTLY_EMPTY_COVERAGE, CacheInfo
from pipeline.extraction.cache_layout import CacheLayout, SampleStatus
from pipeline.extraction.quantize import dequantize_map, quantize_map
from pipeline.sources.datasets.records import pose_in_frame

FORMAT_VERSION = 2  # 2: pose_coverage
MAP_NAMES = ("local", "global", "heatmaps")  # float maps, quantized in 8-bit mode
FEATURE_NAMES = (*MAP_NAMES, "joints")  # the keys of one sample's result and of `read`
DEFAULT_UNIT_SIZE = (
    16  # samples per work unit = per chunk: 16 clips at T=16, 224x224 are ~175 MB of float16 maps in memory
)
_META_KEY = "star_cache"
_CREATING_KEY = "star_cache_creating"  # set while the arrays of a new store are being created
_METADATA_CHUNK = 8192  # label/sample_id/splits: coordinator-only, so any chunking is safe; few files
_CHUNK_KEYS = {"name": "default", "separator": "."}  # one directory per array instead of one per chunk index


class FeatureCache:
    """Handle on a feature cache. Holds only the path and options; zarr handles open lazily, so it pickles.

    Create or extend with `create_or_open` (coordinating process), open elsewhere with `open`.
    """

    def __init__(self, *, path: str, mode: str, storage_options: dict[str, Any] | None) -> None:
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self._path = _normalize_path(path)
        self._mode = mode
        self._storage_options = dict(storage_options) if storage_options else None
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._lock = threading.Lock()
        self._group: zarr.Group | None = None
        self._meta: dict[str, Any] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._labels: np.ndarray | None = None
        self._sample_ids: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # zarr handles, the lock and the cached metadata stay behind: each process reopens lazily.
        return {"path": self._path, "mode": self._mode, "storage_options": self._storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path, self._mode, self._storage_options = state["path"], state["mode"], state["storage_options"]
        self._reset_handles()

    def __repr__(self) -> str:
        return f"FeatureCache({self._path!r}, mode={self._mode!r})"

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], mode: str = "r", storage_options: dict[str, Any] | None = None
    ) -> FeatureCache:
        """Open an existing cache: mode "r" for readers (training), "r+" for unit writers."""
        cache = cls(path=os.fspath(path), mode=mode, storage_options=storage_options)
        for name in cache._row_array_names():  # fail now, with a clear message, if the store is damaged
            cache._array(name)
        return cache

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        *,
        fingerprint: Mapping[str, Any],
        layout: CacheLayout,
        sample_ids: Sequence[str] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        splits: Mapping[str, np.ndarray],
        unit_size: int = DEFAULT_UNIT_SIZE,
        quantize: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureCache:
        """Create the cache, or open it and append samples indexed since; run from ONE coordinating process.

        An existing store must have been built with the same fingerprint, layout and 8-bit mode, otherwise a
        StarError lists what differs. `unit_size` applies at creation; an existing store keeps its own. `splits`
        maps a name (e.g. "ntu60-xsub-train") to a bool membership mask over `sample_ids`.
        """
        ids = np.array([str(s) for s in sample_ids], dtype=str)
        label_values = np.asarray(labels, dtype=np.int64)
        masks = {str(name): np.asarray(mask, dtype=bool) for name, mask in splits.items()}
        _check_samples(ids, label_values, masks)
        if unit_size < 1:
            raise ValueError(f"unit_size must be >= 1, got {unit_size}")
        requested = json_roundtrip(dict(fingerprint))

        cache = cls(path=os.fspath(path), mode="r+", storage_options=storage_options)
        store = cache._store()
        group = _open_group_or_none(store, mode="r+", path=cache._path)
        if group is None or (_META_KEY not in group.attrs and group.attrs.get(_CREATING_KEY)):
            # A new store, or one whose creation was killed before it was committed (it holds no data).
            try:
                group = _create_group(
                    store, layout=layout, unit_size=unit_size, quantize=quantize, fingerprint=requested
                )
            except OSError as err:  # a file in the way, a missing parent on a read-only mount, no permission
                raise StarError(
                    f"Cannot create the feature cache at {cache._path}: {err}. Choose another --out"
                ) from err
        else:
            meta = _read_meta(group, cache._path)
            _check_fingerprint(meta, requested=requested, layout=layout, quantize=quantize, path=cache._path)
        cache._group, cache._meta = group, _read_meta(group, cache._path)
        cache._append_samples(ids, label_values, masks)
        return cache

    @classmethod
    def check_target(
        cls, path: str | os.PathLike[str], *, fingerprint: Mapping[str, Any], layout: CacheLayout, quantize: bool
    ) -> None:
        """Refuse an existing local `path` that `create_or_open` could not extend: not a folder, not a STAR cache,
        damaged, or built with another fingerprint. A missing path or an empty folder is fine. Reads only."""
        text = os.fspath(path)
        if "://" in _normalize_path(text):
            return  # remote stores are checked when opened
        local = _normalize_path(text)
        if not os.path.exists(local) or (os.path.isdir(local) and not os.listdir(local)):
            return
        if not os.path.isdir(local):
            raise StarError(f"{local} is a file, not a feature cache folder: choose another --out")
        meta = _read_meta(cls.open(local)._root(), local)
        _check_fingerprint(
            meta, requested=json_roundtrip(dict(fingerprint)), layout=layout, quantize=quantize, path=local
        )

    def _store(self) -> zarr.abc.store.Store:
        read_only = self._mode == "r"
        if "://" in self._path:
            return zarr.storage.FsspecStore.from_url(
                self._path, storage_options=self._storage_options, read_only=read_only
            )
        if self._storage_options:
            raise StarError(
                f"storage_options were given for the local path {self._path}; "
                "they only apply to fsspec URLs such as s3://bucket/cache.zarr"
            )
        return zarr.storage.LocalStore(self._path, read_only=read_only)

    def _root(self) -> zarr.Group:
        with self._lock:
            if self._group is None:
                # Checked first for local paths: opening "r+" would otherwise create an empty directory.
                missing = "://" not in self._path and not os.path.isdir(self._path)
                group = None if missing else _open_group_or_none(self._store(), mode=self._mode, path=self._path)
                if group is None:
                    raise StarError(
                        f"No feature cache at {self._path}: run `star extract --out {self._path}` "
                        "first, or check the path"
                    )
                self._meta = _read_meta(group, self._path)
                self._group = group
            return self._group

    def _array(self, name: str) -> zarr.Array:
        array = self._arrays.get(name)
        if array is None:
            group = self._root()
            try:
                array = group[name]
            except KeyError as err:
                raise StarError(
                    f"The feature cache at {self._path} is damaged: array '{name}' is missing. "
                    "Delete the store and run `star extract` again"
                ) from err
            self._arrays[name] = array
        return array

    # ------------------------------------------------------------------ configuration

    @property
    def path(self) -> str:
        return self._path

    @property
    def _metadata(self) -> dict[str, Any]:
        self._root()
        assert self._meta is not None
        return self._meta

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._metadata["fingerprint"])

    @property
    def layout(self) -> CacheLayout:
        return CacheLayout.from_json(self._metadata["layout"])

    @property
    def quantize(self) -> bool:
        return bool(self._metadata["quantize"])

    @property
    def unit_size(self) -> int:
        return int(self._metadata["unit_size"])

    @property
    def n_samples(self) -> int:
        return int(self._metadata["n_samples"])

    def __len__(self) -> int:
        return self.n_samples

    @property
    def n_units(self) -> int:
        return -(-self.n_samples // self.unit_size)

    def unit_samples(self, unit: int) -> range:
        """The sample rows that work unit `unit` owns."""
        if not 0 <= unit < self.n_units:
            raise IndexError(f"unit {unit} out of range: the cache has {self.n_units} units")
        return range(unit * self.unit_size, min((unit + 1) * self.unit_size, self.n_samples))

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self._metadata["splits"])

    def split(self, name: str) -> np.ndarray:
        """Bool membership mask (N,) of split `name`."""
        if name not in self.split_names:
            raise StarError(f"The feature cache has no split '{name}'; it has: {', '.join(self.split_names)}")
        return self._array(f"splits/{name}")[: self.n_samples]

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64, 0-based class labels; cached: the coordinator writes them before units run."""
        if self._labels is None:
            self._labels = self._array("label")[: self.n_samples]
        return self._labels

    @property
    def sample_ids(self) -> np.ndarray:
        """(N,) str; cache rows never move, so row i is always the same sample."""
        if self._sample_ids is None:
            self._sample_ids = np.array(self._array("sample_id")[: self.n_samples].tolist(), dtype=str)
        return self._sample_ids

    # ------------------------------------------------------------------ progress

    def status(self) -> np.ndarray:
        """(N,) uint8 SampleStatus values, read fresh from the store."""
        return self._array("status")[: self.n_samples]

    def done_mask(self) -> np.ndarray:
        return self.status() == SampleStatus.DONE

    def pending(self, *, retry_failed: bool = False) -> np.ndarray:
        """Rows still to extract: pending ones, plus failed ones when `retry_failed`."""
        status = self.status()
        todo = status == SampleStatus.PENDING
        if retry_failed:
            todo |= status == SampleStatus.FAILED
        return np.flatnonzero(todo)

    def pending_units(self, *, retry_failed: bool = False) -> list[int]:
        """Work units that hold at least one row of `pending(retry_failed=...)`."""
        return sorted({int(row) // self.unit_size for row in self.pending(retry_failed=retry_failed)})

    def failures(self) -> list[tuple[str, str]]:
        """(sample_id, reason) of every failed sample."""
        rows = np.flatnonzero(self.status() == SampleStatus.FAILED)
        reasons = self._array("failure")[: self.n_samples]
        return [(str(self.sample_ids[row]), str(reasons[row])) for row in rows]

    # ------------------------------------------------------------------ writing

    def write_unit(self, unit: int, results: Mapping[int, Mapping[str, Any] | str]) -> None:
        """Write the results of work unit `unit`: row -> {local, global, heatmaps, joints} arrays, or a failure reason.

        Rows must belong to the unit. Rows already done keep their data (a result for one is ignored); rows of the
        unit absent from `results` are left pending. Data first, one call per array, then `status`: see the module
        docstring for why this is crash-safe. Only the process that owns the unit may call this.
        """
        self._require_writable()
        rows = self.unit_samples(unit)
        start, stop = rows.start, rows.stop
        for row in results:
            if row not in rows:
                raise ValueError(f"row {row} is not in work unit {unit} (rows {start}..{stop - 1})")

        status = self._array("status")[start:stop]
        keep = status == SampleStatus.DONE  # rows whose stored data must survive the rewrite
        todo = {row: result for row, result in results.items() if not keep[row - start]}
        if not todo:
            return
        shapes = self.layout.sample_shapes()
        features = {
            row: _checked_features(row, result, shapes, quantize=self.quantize)
            for row, result in todo.items()
            if not isinstance(result, str)
        }
        failures = {row: _checked_reason(row, result) for row, result in todo.items() if isinstance(result, str)}

        for name in MAP_NAMES:
            values = self._unit_slab(name, start, stop, keep)
            scales = self._unit_slab(f"{name}_scale", start, stop, keep) if self.quantize else None
            for row, sample in features.items():
                if scales is not None:
                    values[row - start], scales[row - start] = quantize_map(sample[name])
                else:
                    values[row - start] = sample[name]  # cast to float16 on assignment
            self._array(name)[start:stop] = values
            if scales is not None:
                self._array(f"{name}_scale")[start:stop] = scales
        joints = self._unit_slab("joints", start, stop, keep)
        for row, sample in features.items():
            joints[row - start] = sample["joints"]
        self._array("joints")[start:stop] = joints

        coverage = self._array("pose_coverage")[start:stop]
        reasons = self._array("failure")[start:stop]
        for row, sample in features.items():
            status[row - start], reasons[row - start] = SampleStatus.DONE, ""
            # Visible joints inside the h' x w' local map: their Gaussian heat maps peak on it.
            _, map_h, map_w = self.layout.local_shape
            coverage[row - start] = pose_in_frame(sample["joints"], width=map_w, height=map_h)
        for row, reason in failures.items():
            status[row - start], reasons[row - start], coverage[row - start] = SampleStatus.FAILED, reason, np.nan
        self._array("pose_coverage")[start:stop] = coverage
        self._array("failure")[start:stop] = reasons
        self._array("status")[start:stop] = status  # the commit point of the unit: written last

    def _unit_slab(self, name: str, start: int, stop: int, keep: np.ndarray) -> np.ndarray:
        """The unit's rows of array `name`, ready to be filled: kept rows read back, all others zero."""
        array = self._array(name)
        if not keep.any():
            return np.zeros((stop - start, *array.shape[1:]), dtype=array.dtype)
        slab = array[start:stop]
        slab[~keep] = 0  # partial data of a killed run must not survive: resumed == uninterrupted
        return slab

    def _require_writable(self) -> None:
        if self._mode != "r+":
            raise ValueError(f"{self!r} is read-only; open it with mode='r+' to write")

    def remove_partial_files(self) -> int:
        """Delete `*.partial` leftovers of killed writes; only while no extraction runs on this store."""
        self._require_writable()
        return sync(_remove_partial_keys(self._root().store))

    # ------------------------------------------------------------------ reading

    def read(self, index: int) -> dict[str, Any]:
        """One sample as float32 arrays local/global/heatmaps/joints (dequantized in 8-bit mode) and its label."""
        block = self.read_rows([index])
        return {
            **{name: values[0] for name, values in block.items() if name != "label"},
            "label": int(block["label"][0]),
        }

    def read_rows(self, rows: Sequence[int] | np.ndarray, *, float32: bool = True) -> dict[str, np.ndarray]:
        """Samples `rows` stacked along a first axis: local, global, heatmaps, joints and label, in the order given.

        Every array is read over the span min(rows)..max(rows), all of them in one concurrent zarr request: a
        zarr call costs milliseconds of overhead whatever it reads, so the rows of one unit cost little more together
        than one of them alone (rows far apart read everything between them). `float32=False` keeps float16 maps
        as stored (half the memory; convert where the batch lands); 8-bit maps are always dequantized to
        float32. Every row must be done.
        """
        order = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not order.size:
            raise ValueError("read_rows needs at least one row")
        bad = order[(order < 0) | (order >= self.n_samples)]
        if bad.size:
            raise IndexError(f"sample {int(bad[0])} out of range: the cache has {self.n_samples} samples")
        start, stop = int(order.min()), int(order.max()) + 1
        names = ["status", *MAP_NAMES, "joints", *([f"{name}_scale" for name in MAP_NAMES] if self.quantize else [])]
        spans = sync(_gather([self._array(name).async_array.getitem(slice(start, stop)) for name in names]))
        at = order - start
        in_span_order = len(at) == stop - start and bool(np.all(at == np.arange(len(at))))
        read = {name: span if in_span_order else span[at] for name, span in zip(names, spans, strict=True)}
        not_done = np.flatnonzero(read["status"] != SampleStatus.DONE)
        if not_done.size:
            row = int(order[not_done[0]])
            raise StarError(
                f"Sample {self.sample_ids[row]} (row {row}) of {self._path} is "
                f"{SampleStatus(int(read['status'][not_done[0]])).name.lower()}, "
                "not extracted: run `star extract` to finish the cache, or read only done samples"
            )
        block: dict[str, np.ndarray] = {}
        for name in MAP_NAMES:
            if self.quantize:
                block[name] = dequantize_map(read[name], read[f"{name}_scale"])
            else:
                block[name] = read[name].astype(np.float32) if float32 else read[name]
        block["joints"] = read["joints"]
        block["label"] = self.labels[order]
        return block

    def pose_coverage(self) -> np.ndarray:
        """(N,) float32: share of each clip's visible joints on the local map; NaN when none (or not done)."""
        return self._array("pose_coverage")[: self.n_samples]

    def info(self) -> CacheInfo:
        """Counts, failures, configuration and bytes on disk (all files of the store, leftovers included)."""
        status = self.status()
        coverage = self.pose_coverage()[status == SampleStatus.DONE]
        total_bytes, partial_files = sync(_store_usage(self._root().store))
        return CacheInfo(
            path=self._path,
            samples=self.n_samples,
            done=int(np.sum(status == SampleStatus.DONE)),
            failed=int(np.sum(status == SampleStatus.FAILED)),
            pending=int(np.sum(status == SampleStatus.PENDING)),
            failures=tuple(self.failures()),
            fingerprint=self.fingerprint,
            layout=self.layout,
            quantize=self.quantize,
            unit_size=self.unit_size,
            bytes_on_disk=total_bytes,
            partial_files=partial_files,
            empty_heatmaps=int(np.sum(~(coverage > 0))),
            mostly_empty_heatmaps=int(np.sum((coverage > 0) & (coverage < MOSTLY_EMPTY_COVERAGE))),
        )

    # ------------------------------------------------------------------ growth (coordinating process only)

    def _append_samples(self, ids: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        """Append samples not in the cache yet, and refresh split membership; commit with `n_samples`."""
        old_n = self.n_samples
        stored_ids = self.sample_ids
        stored_labels = self.labels
        row_of = {sample_id: row for row, sample_id in enumerate(stored_ids.tolist())}
        known = np.array([sample_id in row_of for sample_id in ids.tolist()], dtype=bool)
        known_rows = np.array([row_of[sample_id] for sample_id in ids[known].tolist()], dtype=np.int64)
        changed = np.flatnonzero(stored_labels[known_rows] != labels[known])
        if changed.size:
            first = known_rows[changed[0]]
            raise StarError(
                f"{changed.size} sample(s) of {self._path} have a different label in the dataset index now "
                f"(e.g. {stored_ids[first]}: cached {stored_labels[first]}, index {labels[known][changed[0]]}); "
                "the annotations changed: choose another --out or delete the store to rebuild it"
            )
        new_n = old_n + int(np.sum(~known))
        # New rows go after the existing ones, in index order; `rows` maps the request onto cache rows.
        rows = np.empty(len(ids), dtype=np.int64)
        rows[known] = known_rows
        rows[~known] = np.arange(old_n, new_n)

        names = list(self.split_names) + [name for name in masks if name not in self.split_names]
        stored_masks = {name: self.split(name) for name in self.split_names}
        new_masks = {}
        for name in names:
            mask = np.zeros(new_n, dtype=bool)
            mask[:old_n] = stored_masks.get(name, False)
            if name in masks:
                mask[rows] = masks[name]
            new_masks[name] = mask
        if (
            new_n == old_n
            and names == list(self.split_names)
            and all(np.array_equal(new_masks[name], stored_masks[name]) for name in names)
        ):
            return  # nothing new: the common case of a re-run, and it writes nothing

        self._require_writable()
        group = self._root()
        for name in self._row_array_names():
            array = self._array(name)
            if array.shape[0] != new_n:  # may already differ after a growth killed before its commit
                array.resize((new_n, *array.shape[1:]))
        for name, mask in new_masks.items():
            key = f"splits/{name}"
            if name not in self.split_names:
                group.create_array(
                    key,
                    shape=(new_n,),
                    chunks=(_METADATA_CHUNK,),
                    dtype=bool,
                    fill_value=False,
                    compressors=ZstdCodec(),
                    chunk_key_encoding=_CHUNK_KEYS,
                    overwrite=True,
                )
                self._arrays.pop(key, None)
            elif self._array(key).shape[0] != new_n:
                self._array(key).resize((new_n,))
            self._array(key)[:] = mask
        if new_n > old_n:
            self._array("sample_id")[old_n:new_n] = ids[~known]
            self._array("label")[old_n:new_n] = labels[~known]
            # status/failure/data of the new rows are fill (pending): no writer ever touches rows >= n_samples.
        meta = dict(self._metadata, n_samples=new_n, splits=names)
        group.attrs.update({_META_KEY: meta})  # the commit point of the growth
        self._meta = meta
        self._labels = self._sample_ids = None

    def _row_array_names(self) -> list[str]:
        names = [*FEATURE_NAMES, "status", "failure", "pose_coverage", "label", "sample_id"]
        if self.quantize:
            names += [f"{name}_scale" for name in MAP_NAMES]
        return names + [f"splits/{name}" for name in self.split_names]


# ---------------------------------------------------------------------- store helpers


def _normalize_path(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]  # plain path: zarr's LocalStore writes atomically, fsspec's local fs does not
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))  # absolute: the handle may be unpickled in another cwd


def _open_group_or_none(store: zarr.abc.store.Store, *, mode: str, path: str) -> zarr.Group | None:
    """The root group; None when the store is empty or absent; StarError when it is there but unreadable."""
    try:
        return zarr.open_group(store=store, mode=mode, zarr_format=3, use_consolidated=False)
    except FileNotFoundError as err:
        if _store_is_empty(store):
            return None
        raise StarError(
            f"{path} holds files but no readable zarr root metadata (zarr.json): it is not a feature "
            "cache or it is damaged. Choose another --out, or delete it to rebuild the cache"
        ) from err
    except OSError as err:  # e.g. a file where the store's directory should be, no permission
        raise StarError(
            f"Cannot open {path} as a feature cache: {err}. Check the path or choose another --out"
        ) from err
    except (ValueError, KeyError, TypeError) as err:  # malformed JSON or metadata; ContainsArrayError is a ValueError
        raise StarError(
            f"The root metadata of {path} (zarr.json) is corrupt ({type(err).__name__}: {err}). "
            "Delete the store and run `star extract` again"
        ) from err


def _store_is_empty(store: zarr.abc.store.Store) -> bool:
    try:
        return sync(store.is_empty(""))
    except FileNotFoundError:
        return True


def _create_group(
    store: zarr.abc.store.Store, *, layout: CacheLayout, unit_size: int, quantize: bool, fingerprint: dict[str, Any]
) -> zarr.Group:
    """A new store with empty (0-row) arrays; `_append_samples` then grows them to the indexed samples."""
    group = zarr.open_group(store=store, mode="w", zarr_format=3, attributes={_CREATING_KEY: True})
    map_dtype = np.uint8 if quantize else np.float16
    dtypes = {"local": map_dtype, "global": map_dtype, "heatmaps": map_dtype, "joints": np.float32}
    for name, shape in layout.sample_shapes().items():
        group.create_array(
            name,
            shape=(0, *shape),
            chunks=(unit_size, *shape),
            dtype=dtypes[name],
            fill_value=0,
            compressors=ZstdCodec(),
            chunk_key_encoding=_CHUNK_KEYS,
        )
        if quantize and name in MAP_NAMES:
            scale_shape = shape[:2]  # (T, channels)
            group.create_array(
                f"{name}_scale",
                shape=(0, *scale_shape),
                chunks=(unit_size, *scale_shape),
                dtype=np.float32,
                fill_value=0,
                compressors=ZstdCodec(),
                chunk_key_encoding=_CHUNK_KEYS,
            )
    group.create_array(
        "status",
        shape=(0,),
        chunks=(unit_size,),
        dtype=np.uint8,
        fill_value=SampleStatus.PENDING,
        compressors=ZstdCodec(),
        chunk_key_encoding=_CHUNK_KEYS,
    )
    group.create_array(
        "failure", shape=(0,), chunks=(unit_size,), dtype=str, fill_value="", chunk_key_encoding=_CHUNK_KEYS
    )
    group.create_array(
        "pose_coverage",
        shape=(0,),
        chunks=(unit_size,),
        dtype=np.float32,
        fill_value=np.nan,
        compressors=ZstdCodec(),
        chunk_key_encoding=_CHUNK_KEYS,
    )
    group.create_array(
        "label",
        shape=(0,),
        chunks=(_METADATA_CHUNK,),
        dtype=np.int64,
        fill_value=-1,
        compressors=ZstdCodec(),
        chunk_key_encoding=_CHUNK_KEYS,
    )
    group.create_array(
        "sample_id", shape=(0,), chunks=(_METADATA_CHUNK,), dtype=str, fill_value="", chunk_key_encoding=_CHUNK_KEYS
    )
    group.require_group("splits")
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "layout": layout.to_json(),
        "quantize": bool(quantize),
        "unit_size": int(unit_size),
        "n_samples": 0,
        "splits": [],
    }
    group.attrs.put({_META_KEY: meta})  # replaces the "creating" marker: the store is now committed
    return group


def _read_meta(group: zarr.Group, path: str) -> dict[str, Any]:
    meta = group.attrs.get(_META_KEY)
    if not isinstance(meta, dict):
        raise StarError(
            f"{path} is a zarr store but not a STAR feature cache (no '{_META_KEY}' attribute). Choose another --out"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise StarError(
            f"{path} is a STAR feature cache of format {meta.get('format_version')}, this STAR reads "
            f"format {FORMAT_VERSION}: choose another --out or delete it to rebuild it"
        )
    missing = {"fingerprint", "layout", "quantize", "unit_size", "n_samples", "splits"} - set(meta)
    if missing:
        raise StarError(
            f"The root metadata of {path} lacks {sorted(missing)}: the store is damaged. "
            "Delete it and run `star extract` again"
        )
    return meta


def _check_fingerprint(
    meta: Mapping[str, Any], *, requested: dict[str, Any], layout: CacheLayout, quantize: bool, path: str
) -> None:
    stored = {**meta["fingerprint"], "cache layout": meta["layout"], "cache 8-bit": meta["quantize"]}
    wanted = {**requested, "cache layout": layout.to_json(), "cache 8-bit": bool(quantize)}
    differing = differing_keys(stored, wanted)
    if differing:
        raise StarError(
            f"The feature cache at {path} was built with a different configuration: "
            f"{describe_differences(stored, wanted, differing, names=('stored', 'requested'), limit=100)}. "
            f"Choose another --out, or delete {path} to rebuild it"
        )


def _check_samples(ids: np.ndarray, labels: np.ndarray, masks: Mapping[str, np.ndarray]) -> None:
    if ids.ndim != 1 or labels.shape != ids.shape:
        raise ValueError(f"sample_ids and labels must be 1-D of equal length, got {ids.shape} and {labels.shape}")
    unique, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise StarError(
            f"The dataset index lists sample ids more than once (e.g. {unique[counts > 1][0]}); rebuild the index"
        )
    for name, mask in masks.items():
        if not name or "/" in name or name.startswith("__"):
            raise ValueError(f"split name {name!r} must be non-empty, without '/' and not start with '__'")
        if mask.shape != ids.shape:
            raise ValueError(f"split '{name}' mask has shape {mask.shape}, expected {ids.shape}")


def _checked_features(
    row: int, result: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], *, quantize: bool
) -> dict[str, np.ndarray]:
    """One sample's arrays as float numpy, with shapes and value ranges checked before anything is written."""
    if set(result) != set(FEATURE_NAMES):
        raise ValueError(f"row {row}: expected the keys {FEATURE_NAMES}, got {tuple(result)}")
    sample = {}
    for name in FEATURE_NAMES:
        values = np.asarray(result[name])
        if values.dtype.kind != "f" or name == "joints":  # float16 maps stay float16: no copy in the common case
            values = values.astype(np.float32)
        if values.shape != shapes[name]:
            raise ValueError(f"row {row}: '{name}' has shape {values.shape}, the cache layout needs {shapes[name]}")
        if not np.isfinite(values).all():
            raise ValueError(f"row {row}: '{name}' holds NaN or infinite values")
        if name in MAP_NAMES:
            if quantize and values.min() < 0:
                raise ValueError(
                    f"row {row}: '{name}' has negative values; 8-bit mode stores maps >= 0 (ReLU outputs, heatmaps)"
                )
            if not quantize and np.abs(values).max() > np.finfo(np.float16).max:
                raise ValueError(f"row {row}: '{name}' exceeds the float16 range")
        sample[name] = values
    return sample


def _checked_reason(row: int, reason: str) -> str:
    if not reason.strip():
        raise ValueError(f"row {row}: a failure needs a non-empty reason")
    return reason


async def _gather(awaitables: list[Any]) -> list[Any]:
    return await asyncio.gather(*awaitables)  # inside zarr's event loop, where `sync` runs it


async def _store_usage(store: zarr.abc.store.Store) -> tuple[int, int]:
    total = partial = 0
    async for key in store.list():
        total += await store.getsize(key)
        partial += key.endswith(".partial")
    return total, partial


async def _remove_partial_keys(store: zarr.abc.store.Store) -> int:
    keys = [key async for key in store.list() if key.endswith(".partial")]
    for key in keys:
        await store.delete(key)
    return len(keys)
