"""Feature cache: creation, growth, fingerprints, unit writes, crash safety (real SIGKILL), 8-bit mode, reading."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from pipeline.core.errors import StarError
from pipeline.extraction.cache_layout import SampleStatus
from pipeline.extraction.quantize import dequantize_map, quantize_map
from pipeline.extraction.store import FeatureCache
from tests.fixtures.cache_samples import FINGERPRINT, LAYOUT, sample_result
from tests.fixtures.data_files import REPO_ROOT


def _ids(n):
    return [f"S001C001P{row:03d}R001A001" for row in range(n)]


def _create(path, n=10, *, unit_size=4, quantize=False, fingerprint=FINGERPRINT, splits=None):
    ids = _ids(n)
    labels = np.arange(n) % 3
    if splits is None:
        splits = {"xsub-train": np.arange(n) % 2 == 0, "xsub-test": np.arange(n) % 2 == 1}
    return FeatureCache.create_or_open(
        path,
        fingerprint=fingerprint,
        layout=LAYOUT,
        sample_ids=ids,
        labels=labels,
        splits=splits,
        unit_size=unit_size,
        quantize=quantize,
    )


def _run_all(cache):
    for unit in cache.pending_units():
        cache.write_unit(unit, {row: sample_result(row) for row in cache.unit_samples(unit)})


def _assert_sample_equals(cache, row):
    expected, got = sample_result(row), cache.read(row)
    for name in ("local", "global", "heatmaps"):
        np.testing.assert_array_equal(got[name], expected[name].astype(np.float16).astype(np.float32))
        assert got[name].dtype == np.float32
    np.testing.assert_array_equal(got["joints"], expected["joints"])
    assert got["label"] == row % 3


def _store_arrays(path):
    """Every array of the store as numpy (strings as lists), keyed by its path in the group."""
    group = zarr.open_group(str(path), mode="r")
    out = {}
    for name, array in group.arrays():
        out[name] = array[:].tolist() if array.dtype.kind == "T" else array[:]
    for name, array in group["splits"].arrays():
        out[f"splits/{name}"] = array[:]
    return out


def _assert_same_store(path_a, path_b):
    a, b = _store_arrays(path_a), _store_arrays(path_b)
    assert sorted(a) == sorted(b)
    for name in a:
        if isinstance(a[name], list):
            assert a[name] == b[name], name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_create_then_open_has_the_layout(tmp_path):
    cache = _create(tmp_path / "c.zarr", n=10)
    assert (cache.n_samples, cache.n_units, cache.unit_size) == (10, 3, 4)
    assert list(cache.unit_samples(2)) == [8, 9]
    assert cache.pending_units() == [0, 1, 2] and cache.pending().tolist() == list(range(10))
    reader = FeatureCache.open(tmp_path / "c.zarr")
    assert reader.layout == LAYOUT and reader.fingerprint == FINGERPRINT and not reader.quantize
    assert reader.sample_ids.tolist() == _ids(10) and reader.labels.tolist() == (np.arange(10) % 3).tolist()
    assert reader.split_names == ("xsub-train", "xsub-test")
    assert reader.split("xsub-test").tolist() == (np.arange(10) % 2 == 1).tolist()
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert group["local"].shape == (10, 4, 256, 14, 14) and group["local"].dtype == np.float16
    assert group["global"].shape == (10, 4, 512, 7, 7)
    assert group["heatmaps"].shape == (10, 4, 10, 14, 14) and group["joints"].shape == (10, 4, 2, 5, 3)
    assert group["local"].chunks == (4, 4, 256, 14, 14) and group["local"].shards is None  # one chunk per work unit
    with pytest.raises(StarError, match="no split 'xview'"):
        reader.split("xview")


def test_reopen_with_the_same_config_writes_nothing(tmp_path):
    path = tmp_path / "c.zarr"
    _create(path)
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    time.sleep(0.01)
    _create(path)
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before


def test_fingerprint_mismatch_lists_every_differing_key(tmp_path):
    path = tmp_path / "c.zarr"
    _create(path)
    changed = {**FINGERPRINT, "crop": "person", "frames": 8, "decoder": "pyav"}
    del changed["code"]
    with pytest.raises(StarError) as err:
        _create(path, fingerprint=changed, quantize=True)
    message = str(err.value)
    for part in (
        "crop: stored 'full' vs requested 'person'",
        "frames: stored 4 vs requested 8",
        "decoder: stored <missing> vs requested 'pyav'",
        "code: stored 'test' vs requested <missing>",
        "cache 8-bit: stored False vs requested True",
        "--out",
    ):
        assert part in message
    assert "weights" not in message and "\n" not in message


def test_write_unit_then_read_back_with_failures_recorded(tmp_path):
    cache = _create(tmp_path / "c.zarr", n=10)
    cache.write_unit(0, {row: sample_result(row) for row in (0, 1, 3)})  # row 2 left pending, row 3 fails
    assert cache.status().tolist()[:4] == [
        SampleStatus.DONE,
        SampleStatus.DONE,
        SampleStatus.PENDING,
        SampleStatus.FAILED,
    ]
    assert cache.failures() == [(_ids(10)[3], "corrupt video 3")]
    for row in (0, 1):
        _assert_sample_equals(cache, row)
    with pytest.raises(StarError, match="pending"):
        cache.read(2)
    with pytest.raises(StarError, match="failed"):
        cache.read(3)
    assert cache.pending().tolist() == [2, *range(4, 10)]
    assert cache.pending(retry_failed=True).tolist() == [2, 3, *range(4, 10)]
    assert cache.pending_units() == [0, 1, 2]
    with pytest.raises(ValueError, match="not in work unit 1"):
        cache.write_unit(1, {0: sample_result(0)})
    with pytest.raises(ValueError, match="shape"):
        cache.write_unit(1, {4: {**sample_result(4), "local": np.zeros((4, 256, 7, 7))}})

    # Finishing the unit keeps the done rows' data; a result for a done row is ignored, never rewritten.
    cache.write_unit(0, {0: sample_result(5), 2: sample_result(2)})
    for row in (0, 1, 2):
        _assert_sample_equals(cache, row)
    assert cache.pending_units() == [1, 2]


def test_info_counts_and_text(tmp_path):
    cache = _create(tmp_path / "c.zarr", n=10)
    cache.write_unit(0, {row: sample_result(row) for row in range(4)})
    info = cache.info()
    assert (info.samples, info.done, info.failed, info.pending) == (10, 3, 1, 6)
    assert info.failures == ((_ids(10)[3], "corrupt video 3"),)
    assert info.fingerprint == FINGERPRINT and info.layout == LAYOUT and info.partial_files == 0
    on_disk = sum(p.stat().st_size for p in (tmp_path / "c.zarr").rglob("*") if p.is_file())
    assert info.bytes_on_disk == on_disk and info.bytes_per_done_clip == pytest.approx(on_disk / 3)
    text = str(info)
    for part in ("done: 3", "failed: 1", "pending: 6", "corrupt video 3", "crop: 'full'", "per done clip"):
        assert part in text


def test_growth_appends_samples_and_keeps_data(tmp_path):
    path = tmp_path / "c.zarr"
    cache = _create(path, n=6)  # the last unit (rows 4, 5) is partial
    _run_all(cache)
    grown = FeatureCache.create_or_open(
        path,
        fingerprint=FINGERPRINT,
        layout=LAYOUT,
        sample_ids=["NEW0", *_ids(6)[::-1], "NEW1", "NEW2"],
        labels=[0, *(np.arange(6) % 3)[::-1], 1, 2],
        splits={"xsub-train": np.ones(9, bool), "xview-train": np.zeros(9, bool)},
        unit_size=99,
    )
    assert grown.unit_size == 4 and grown.n_samples == 9
    assert grown.sample_ids.tolist() == [*_ids(6), "NEW0", "NEW1", "NEW2"]  # existing rows never move
    assert grown.labels.tolist()[6:] == [0, 1, 2]
    assert grown.split_names == ("xsub-train", "xsub-test", "xview-train")
    assert grown.split("xsub-train").all() and not grown.split("xview-train").any()
    assert grown.split("xsub-test").tolist() == [False, True, False, True, False, True, False, False, False]
    assert grown.pending().tolist() == [6, 7, 8] and grown.pending_units() == [1, 2]
    for row in (0, 1, 2, 4, 5):
        _assert_sample_equals(grown, row)
    # Unit 1 now mixes done rows (4, 5) and new ones (6, 7): writing it must keep rows 4 and 5.
    grown.write_unit(1, {6: sample_result(6), 7: sample_result(7)})
    for row in (4, 5, 6, 7):
        _assert_sample_equals(grown, row)
    with pytest.raises(StarError, match="different label"):
        FeatureCache.create_or_open(
            path, fingerprint=FINGERPRINT, layout=LAYOUT, sample_ids=_ids(6), labels=np.arange(6) % 3 + 1, splits={}
        )


def test_growth_killed_before_its_commit_is_redone(tmp_path):
    path = tmp_path / "c.zarr"
    _run_all(_create(path, n=6))
    group = zarr.open_group(str(path), mode="r+")
    for name in ("local", "status", "sample_id"):  # a growth to 10 rows killed half-way: no n_samples commit
        group[name].resize((10, *group[name].shape[1:]))
    group["sample_id"][6:10] = np.array(["X0", "X1", "X2", "X3"])
    assert FeatureCache.open(path).n_samples == 6  # readers still see the committed rows only
    grown = _create(path, n=8)
    assert grown.n_samples == 8 and grown.sample_ids.tolist() == _ids(8)
    assert grown.pending().tolist() == [6, 7]
    assert zarr.open_group(str(path), mode="r")["local"].shape[0] == 8
    for row in (0, 1, 2, 4, 5):
        _assert_sample_equals(grown, row)


def test_duplicate_sample_ids_are_refused(tmp_path):
    with pytest.raises(StarError, match="more than once"):
        FeatureCache.create_or_open(
            tmp_path / "c.zarr", fingerprint={}, layout=LAYOUT, sample_ids=["a", "a"], labels=[0, 0], splits={}
        )


def test_data_without_status_is_pending_and_redone(tmp_path):
    """A unit killed after its data but before its status: rows pending, redone, same store as a clean run."""
    clean, crashed = tmp_path / "clean.zarr", tmp_path / "crashed.zarr"
    _run_all(_create(clean, n=8))
    cache = _create(crashed, n=8)
    cache.write_unit(0, {row: sample_result(row) for row in range(4)})
    group = zarr.open_group(str(crashed), mode="r+")
    for name in ("local", "global", "heatmaps", "joints"):  # unit 1's data arrives, its status never does
        group[name][4:8] = np.full(group[name].shape[1:], 7, dtype=group[name].dtype)[None].repeat(4, axis=0)
    group["local"][5] = 0  # and one row only half-written
    reopened = FeatureCache.open(crashed, mode="r+")
    assert reopened.pending().tolist() == [4, 5, 6, 7] and reopened.pending_units() == [1]
    _run_all(reopened)
    _assert_same_store(clean, crashed)


WRITER = """
import sys
sys.path.insert(0, {repo!r})
from tests.fixtures.cache_samples import sample_result
from pipeline.extraction.store import FeatureCache
cache = FeatureCache.open({path!r}, mode="r+")
for unit in [unit for unit in cache.pending_units() if unit % {step} == {first}]:
    results = {{row: sample_result(row) for row in cache.unit_samples(unit)}}
    print("start", unit, flush=True)
    cache.write_unit(unit, results)
    print("done", unit, flush=True)
print("finished", flush=True)
"""


def _kill_writer_mid_run(path, *, after_starts, delay):
    """Start a writer process, SIGKILL it `delay` s after it starts its `after_starts`-th unit. Returns units begun."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=str(REPO_ROOT), path=str(path), first=0, step=1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    begun = []
    for line in process.stdout:
        if line.startswith("start"):
            begun.append(int(line.split()[1]))
            if len(begun) == after_starts:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
    process.wait(timeout=30)
    begun += [int(line.split()[1]) for line in process.stdout.read().splitlines() if line.startswith("start")]
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL, "the writer finished before it was killed: raise n"
    return begun


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    clean, killed = tmp_path / "clean.zarr", tmp_path / "killed.zarr"
    n = 48  # 12 units of 4
    _run_all(_create(clean, n=n))
    _create(killed, n=n)
    begun_rows, interrupted = set(), 0
    for after_starts, delay in ((2, 0.0), (2, 0.02), (3, 0.03), (2, 0.04)):  # unit writes take ~40 ms here
        begun = _kill_writer_mid_run(killed, after_starts=after_starts, delay=delay)
        cache = FeatureCache.open(killed)
        begun_rows |= {row for unit in begun for row in cache.unit_samples(unit)}
        status = cache.status()
        for row in np.flatnonzero(status != SampleStatus.PENDING):
            assert row in begun_rows
            if status[row] == SampleStatus.DONE:
                _assert_sample_equals(cache, row)  # never done with partial data
            else:
                assert row % 7 == 3
        later = [row for row in range(n) if row // 4 > max(begun)]
        assert (status[later] == SampleStatus.PENDING).all()
        interrupted += bool((status[list(begun_rows)] == SampleStatus.PENDING).any())
    assert interrupted, "no kill landed inside a unit write"
    resumed = FeatureCache.open(killed, mode="r+")
    _run_all(resumed)
    assert resumed.pending().size == 0
    _assert_same_store(clean, killed)
    assert resumed.info().failed == len([row for row in range(n) if row % 7 == 3])


def test_concurrent_writers_of_different_units_lose_nothing(tmp_path):
    clean, shared = tmp_path / "clean.zarr", tmp_path / "shared.zarr"
    _run_all(_create(clean, n=40))
    _create(shared, n=40)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(repo=str(REPO_ROOT), path=str(shared), first=first, step=2)],
            stdout=subprocess.DEVNULL,
        )
        for first in (0, 1)
    ]  # even units and odd units
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    _assert_same_store(clean, shared)


def test_a_file_in_the_way_is_a_star_error(tmp_path):
    (tmp_path / "file").write_text("not a store")
    with pytest.raises(StarError, match="Cannot open"):
        _create(tmp_path / "file")
    with pytest.raises(StarError, match="Not a directory"):
        _create(tmp_path / "file" / "below.zarr")


def test_partial_files_and_damaged_roots(tmp_path):
    path = tmp_path / "c.zarr"
    cache = _create(path, n=8)
    cache.write_unit(0, {row: sample_result(row) for row in range(4)})
    (path / "local" / "c.1.0.0.0.0.3f2a.partial").write_bytes(os.urandom(5000))  # a killed rename's leftover
    (path / "status" / "c.1.77aa.partial").write_bytes(b"\x01\x01")
    reopened = FeatureCache.open(path, mode="r+")
    assert reopened.pending().tolist() == [4, 5, 6, 7]
    assert reopened.info().partial_files == 2 and "*.partial" in str(reopened.info())
    _assert_sample_equals(reopened, 0)
    _run_all(reopened)
    assert reopened.remove_partial_files() == 2 and reopened.info().partial_files == 0

    root = json.loads((path / "zarr.json").read_text())
    (path / "zarr.json").write_text("{ not json")
    with pytest.raises(StarError, match="corrupt"):
        FeatureCache.open(path)
    (path / "zarr.json").unlink()
    with pytest.raises(StarError, match="no readable zarr root metadata"):
        FeatureCache.open(path)
    with pytest.raises(StarError, match="no readable zarr root metadata"):
        _create(path, n=8)  # never created over leftovers
    del root["attributes"]["star_cache"]
    (path / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(StarError, match="not a STAR feature cache"):
        _create(path, n=8)
    for mode in ("r", "r+"):
        with pytest.raises(StarError, match="No feature cache"):
            FeatureCache.open(tmp_path / "absent.zarr", mode=mode)
    assert not (tmp_path / "absent.zarr").exists()


def test_interrupted_creation_is_redone(tmp_path):
    path = tmp_path / "c.zarr"
    group = zarr.open_group(str(path), mode="w", attributes={"star_cache_creating": True})
    group.create_array("local", shape=(3,), dtype="f4")  # creation killed half-way
    cache = _create(path, n=5)
    assert cache.n_samples == 5 and cache.pending().size == 5


def test_missing_array_is_a_clear_error(tmp_path):
    path = tmp_path / "c.zarr"
    _create(path, n=4)
    (path / "global" / "zarr.json").unlink()
    with pytest.raises(StarError, match="'global' is missing"):
        FeatureCache.open(path)
    _create(tmp_path / "other.zarr", n=4)
    writer = pickle.loads(pickle.dumps(FeatureCache.open(tmp_path / "other.zarr", mode="r+")))  # opens lazily
    (tmp_path / "other.zarr" / "global" / "zarr.json").unlink()  # damaged after the writer got its handle
    with pytest.raises(StarError, match="'global' is missing"):
        writer.write_unit(0, {0: sample_result(0)})


def test_quantize_error_bound():
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(size=(4, 64, 14, 14)) * rng.uniform(0.1, 20, size=(4, 64, 1, 1)), 0)
    maps[0, 3] = 0  # an all-zero channel
    maps = maps.astype(np.float32)
    codes, scale = quantize_map(maps)
    assert codes.dtype == np.uint8 and scale.shape == (4, 64) and scale.dtype == np.float32
    restored = dequantize_map(codes, scale)
    assert (np.abs(restored - maps) <= scale[:, :, None, None] * (0.5 + 1e-4) + 1e-7).all()
    assert np.linalg.norm(restored - maps) / np.linalg.norm(maps) < 0.01
    assert (restored[0, 3] == 0).all() and codes.max() == 255
    half = maps.astype(np.float16)  # what the extractor hands over
    codes, scale = quantize_map(half)
    assert scale.dtype == np.float32
    error = np.abs(dequantize_map(codes, scale) - half.astype(np.float32))
    assert (error <= scale[:, :, None, None] * (0.5 + 1e-4) + 1e-7).all()


def test_quantized_cache_reads_dequantized(tmp_path):
    cache = _create(tmp_path / "q.zarr", n=4, quantize=True)
    cache.write_unit(0, {row: sample_result(row) for row in range(3)})
    group = zarr.open_group(str(tmp_path / "q.zarr"), mode="r")
    assert group["local"].dtype == np.uint8 and group["local_scale"].shape == (4, 4, 256)
    assert group["joints"].dtype == np.float32
    for row in range(3):
        expected, got = sample_result(row), cache.read(row)
        for name in ("local", "global", "heatmaps"):
            bound = expected[name].max(axis=(2, 3), keepdims=True) / 255 * (0.5 + 1e-4) + 1e-7
            assert (np.abs(got[name] - expected[name]) <= bound).all(), name
        np.testing.assert_array_equal(got["joints"], expected["joints"])
    negative = sample_result(3 + 1)
    negative["local"] = negative["local"] - 1
    with pytest.raises(ValueError, match="negative"):
        cache.write_unit(0, {3: negative})


def test_float16_overflow_and_nan_are_refused(tmp_path):
    cache = _create(tmp_path / "c.zarr", n=4)
    big = sample_result(0)
    big["global"] = big["global"] * 1e6
    with pytest.raises(ValueError, match="float16 range"):
        cache.write_unit(0, {0: big})
    nan = sample_result(1)
    nan["heatmaps"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.write_unit(0, {1: nan})
    assert cache.pending().size == 4  # nothing was written


def test_pickled_cache_reads_in_another_process(tmp_path):
    path = tmp_path / "c.zarr"
    cache = _create(path, n=4)
    cache.write_unit(0, {row: sample_result(row) for row in range(3)})
    reader = FeatureCache.open(path)
    reader.read(0)  # handles are open in this process; they must not travel
    payload = pickle.dumps(reader)
    assert pickle.loads(payload).read(1)["label"] == 1
    child = (
        "import pickle, sys; cache = pickle.loads(sys.stdin.buffer.read()); s = cache.read(2); "
        "print(s['label'], float(s['local'].sum()), cache.done_mask().tolist())"
    )
    out = subprocess.run([sys.executable, "-c", child], input=payload, capture_output=True, check=True).stdout
    label, total, done = out.decode().split(" ", 2)
    assert int(label) == 2 and float(total) == pytest.approx(float(reader.read(2)["local"].sum()))
    assert done.strip() == "[True, True, True, False]"


def test_fsspec_url_store(tmp_path):
    cache = FeatureCache.create_or_open(
        "memory://star-test/c.zarr",
        fingerprint=FINGERPRINT,
        layout=LAYOUT,
        sample_ids=_ids(4),
        labels=[0, 1, 2, 0],
        splits={},
        unit_size=2,
    )
    cache.write_unit(1, {2: sample_result(2), 3: sample_result(3)})
    reopened = FeatureCache.open("memory://star-test/c.zarr")
    _assert_sample_equals(reopened, 2)
    assert reopened.info().failed == 1 and reopened.pending_units() == [0]
    with pytest.raises(StarError, match="storage_options"):
        FeatureCache.open(tmp_path, storage_options={"anon": True})
