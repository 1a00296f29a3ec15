"""Shared fixtures: small generated datasets in the real NTU and Penn Action layouts, an extracted video cache and
a model trained on it.

Session-scoped originals are generated once per session (per xdist worker); tests that modify files take a copy.
Builders that tests call themselves live in tests/fixtures/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

# Each test session keeps Prefect's database in a folder of its own, away from the user's.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="star-tests-prefect-"))
import flows  # noqa: E402, F401 (sets Prefect's quiet, offline defaults before any test imports Prefect)
from pipeline.sources.synthetic import generate_ntu_dataset, generate_penn_dataset
from tests.fixtures.data_files import REAL_PENN_LABELS, real_penn_copy
from tests.fixtures.feature_caches import extract_video_cache, train_tiny
from tests.fixtures.prefect_server import PrefectServer, wait_until_healthy

PREFECT_SERVER = pytest.StashKey[PrefectServer]()


def pytest_configure(config: pytest.Config) -> None:
    """One real Prefect server on 127.0.0.1 for the whole session, started before any worker: every flow run of the
    tests (in process, in `star` subprocesses, on every xdist worker, which inherit PREFECT_API_URL) reports to it
    instead of starting Prefect's embedded temporary server, about 10 s of CPU each time. The one test of the
    embedded default removes PREFECT_API_URL from its subprocess. It migrates its new database while the workers
    start and collect; `prefect_server` waits for it before the first test."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller's server is already in its environment
        return
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1:
        # The cores shared out among the workers, inherited by them and their subprocesses: more threads than cores
        # only wait for each other.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    server = PrefectServer(Path(os.environ["PREFECT_HOME"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    config.stash[PREFECT_SERVER] = server


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(PREFECT_SERVER, None)
    if server is not None:
        server.stop()
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> None:
    """The session's Prefect server answers before any test runs (in each xdist worker, or the one process)."""
    wait_until_healthy(os.environ["PREFECT_API_URL"], Path(os.environ["PREFECT_HOME"]))


@pytest.fixture(scope="session")
def synthetic_ntu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes x 6 samples, subjects 1-6 (xsub test: 3, 6), cameras 1-3, 160x90 frames. Do not modify."""
    root = tmp_path_factory.mktemp("synthetic_ntu")
    generate_ntu_dataset(root, samples_per_class=6, subjects=(1, 2, 3, 4, 5, 6), frame_size=(160, 90), seed=0)
    return root


@pytest.fixture
def synthetic_ntu_copy(synthetic_ntu_root: Path, tmp_path: Path) -> Path:
    """A private copy of `synthetic_ntu_root` that a test may change."""
    return Path(shutil.copytree(synthetic_ntu_root, tmp_path / "ntu", copy_function=shutil.copy2))


@pytest.fixture(scope="session")
def synthetic_penn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 Penn Action classes x 2 videos (train, test) in the Penn_Action layout. Do not modify."""
    root = tmp_path_factory.mktemp("synthetic_penn") / "Penn_Action"
    generate_penn_dataset(root, videos_per_class=2, frame_size=(96, 72), seed=0)
    return root


@pytest.fixture
def synthetic_penn_copy(synthetic_penn_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_penn_root, tmp_path / "Penn_Action", copy_function=shutil.copy2))


@contextmanager
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny shapes gain nothing from threads, and on a shared CPU extra threads only wait; one thread also fixes the
    summation order, so in-process runs compare bit for bit with OMP_NUM_THREADS=1 subprocesses. Modules that train
    or run models use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def video_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`extract_video_cache` once per session (per xdist worker): its folder holds ntu/ (2 classes x 4 generated
    videos and skeletons), cache.zarr and ntu120-index.h5. Do not modify; tests write in their own folders."""
    with single_thread():  # session fixtures start before the module's `one_thread`
        return extract_video_cache(tmp_path_factory.mktemp("video_cache"))


@pytest.fixture(scope="session")
def video_checkpoint(video_cache: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train_tiny` on `video_cache` (benchmark ntu120-xsub) once per session: its last.pt. Do not modify."""
    with single_thread():
        return train_tiny(video_cache, tmp_path_factory.mktemp("video_run") / "run", benchmark="ntu120-xsub")


@pytest.fixture(scope="session")
def video_run(video_cache: str, video_checkpoint: Path) -> tuple[Path, str, Path]:
    """(the generated NTU root, `video_cache`, `video_checkpoint`): where predict and export tests start."""
    return Path(video_cache).parent / "ntu", video_cache, video_checkpoint


@pytest.fixture
def real_penn(tmp_path: Path) -> Path:
    """A labels-only copy of the real Penn Action files, one of each class's three made a test video."""
    import scipy.io

    by_class: dict[str, list[str]] = {}
    for path in sorted(REAL_PENN_LABELS.glob("*.mat")):
        if path.stem not in ("1024", "1516"):
            by_class.setdefault(str(scipy.io.loadmat(path)["action"][0]), []).append(path.stem)
    return real_penn_copy(tmp_path, test_ids=tuple(ids[-1] for ids in by_class.values()))
