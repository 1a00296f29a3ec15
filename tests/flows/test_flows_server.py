"""Extraction against a real Prefect server on 127.0.0.1: on a real local Dask cluster (2 worker processes), and as a
scheduled deployment served by `star schedule extract` and triggered with `prefect deployment run`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.extraction.cache_layout import SampleStatus
from pipeline.extraction.store import FeatureCache
from pipeline.sources.synthetic import generate_ntu_dataset
from tests.fixtures.prefect_server import prefect_env

pytestmark = pytest.mark.slow

STAR = [sys.executable, "-m", "cli"]
COMMON = ["--dataset", "ntu120", "--frames", "4", "--size", "64", "--weights", "random", "--unit-size", "2"]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """The session's Prefect server (started by conftest.py), as the environment of the `star` subprocesses."""
    return prefect_env(Path(os.environ["PREFECT_HOME"]), os.environ["PREFECT_API_URL"])


def deployment_exists(api_url: str, name: str) -> bool:
    """Whether the server knows the deployment FLOW/NAME (its REST API answers 404 until it is registered)."""
    try:
        with urllib.request.urlopen(f"{api_url}/deployments/name/{name}", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise


def done_count(out: Path) -> int:
    return int(np.sum(FeatureCache.open(out).status() == SampleStatus.DONE))


def test_dask_local_cluster_extracts_everything(server_env, tmp_path):
    root = tmp_path / "ntu"
    generate_ntu_dataset(root, samples_per_class=2, actions=(23, 27), subjects=(1,), cameras=(1, 2))
    out = tmp_path / "cache.zarr"
    result = subprocess.run(
        [*STAR, "extract", *COMMON, "--root", str(root), "--out", str(out), "--dask-workers", "2"],
        env=server_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert done_count(out) == 4


def test_scheduled_deployment_extracts_new_samples(server_env, tmp_path):
    root = tmp_path / "ntu"
    generate_ntu_dataset(root, samples_per_class=1, actions=(23, 27), subjects=(1,), cameras=(1,))
    out = tmp_path / "cache.zarr"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (the serving process writes it until killed)
    serve = subprocess.Popen(
        [
            *STAR,
            "schedule",
            "extract",
            *COMMON,
            "--root",
            str(root),
            "--out",
            str(out),
            "--cron",
            "0 3 * * *",
            "--name",
            "nightly-test",
        ],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        run = [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "star-extract/nightly-test",
            "--watch",
            "--watch-timeout",
            "240",
        ]
        deadline = time.monotonic() + 90
        while not deployment_exists(server_env["PREFECT_API_URL"], "star-extract/nightly-test"):
            if time.monotonic() > deadline or serve.poll() is not None:  # registered by the serve process
                break
            time.sleep(0.5)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        first = subprocess.run(run, env=server_env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert done_count(out) == 2
        # New videos arrive; the next scheduled run extracts only them.
        generate_ntu_dataset(root, samples_per_class=2, actions=(23, 27, 80), subjects=(1, 3), cameras=(1,))
        before = FeatureCache.open(out).read(0)["local"]
        second = subprocess.run(run, env=server_env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert done_count(out) == 6
        assert np.array_equal(FeatureCache.open(out).read(0)["local"], before)
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
