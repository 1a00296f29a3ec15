"""The `star extract` Prefect flow: index (with pose estimation for videos that lack a pose) -> plan -> work
units -> summary, wrapping `pipeline/extraction/extract.py`.

The flow adds what Prefect is for: retries on the I/O steps (index build, unit writes to a possibly remote store),
logging, concurrent units on a task runner, and observability in the Prefect UI. The per-sample logic, the crash
safety and the resumability live in `pipeline/` and hold without Prefect.

Runners: Prefect's thread pool by default (two units at a time: one decodes while the other is on the backbone), or
Dask through prefect-dask, either an existing cluster (`dask_address`) or a local cluster of processes
(`dask_workers`). With Dask, run a Prefect server and export PREFECT_API_URL (README): otherwise every worker process
starts its own temporary Prefect server.
"""

import json
import time
from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.extraction import extract as stage
from pipeline.extraction.extract import ExtractConfig, ExtractSummary, Plan, UnitReport
from pipeline.sources.index import IndexReport

FLOW_NAME = "star-extract"


@task(name="index", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def index_task(config: ExtractConfig) -> IndexReport:
    report = stage.refresh_index(config)
    get_run_logger().info(report.summary())
    return report


@task(name="plan", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan_task(config: ExtractConfig) -> Plan:
    return stage.plan(config)


@task(name="extract-unit", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def unit_task(config: ExtractConfig, unit: int) -> UnitReport:
    report = stage.run_unit(config, unit)
    logger = get_run_logger()
    logger.info("unit %d: %d done, %d failed in %.1f s", unit, report.done, len(report.failed), report.seconds)
    for sample_id, reason in report.failed:
        logger.warning("%s failed: %s", sample_id, reason)
    return report


@task(name="skeletons", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def skeletons_task(config: ExtractConfig, seconds_before: float) -> ExtractSummary:
    return stage.extract_skeletons(config, seconds_before=seconds_before)


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=stage.UNITS_IN_FLIGHT), log_prints=False)
def extract_flow(config: ExtractConfig) -> dict:
    """Refresh the index, extract every pending sample into the cache (or write the skeleton cache), and return
    the summary as JSON."""
    started = time.perf_counter()
    index_task(config)  # the plan reads the index this task refreshes
    if config.skeletons_only:
        summary = skeletons_task(config, time.perf_counter() - started)
        get_run_logger().info(summary.format())
        return summary.to_json()
    plan = plan_task(config)
    get_run_logger().info("%d pending samples in %d units", plan.pending, len(plan.units))
    futures = [unit_task.submit(config, unit) for unit in plan.units]
    reports = [future.result() for future in futures]
    summary = stage.summarize(config, plan, reports, time.perf_counter() - started)
    get_run_logger().info(summary.format())
    return summary.to_json()


def task_runner(*, dask_address: str | None = None, dask_workers: int | None = None):
    """The task runner for the chosen scale-out: thread pool (default) or Dask (existing or local cluster)."""
    if dask_address is None and dask_workers is None:
        return ThreadPoolTaskRunner(max_workers=stage.UNITS_IN_FLIGHT)
    from prefect_dask import DaskTaskRunner

    if dask_address is not None:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def run_extract(
    config: ExtractConfig, *, dask_address: str | None = None, dask_workers: int | None = None
) -> ExtractSummary:
    """Run the flow in this process (embedded temporary Prefect server unless PREFECT_API_URL is set)."""
    stage.preflight(config)  # broken inputs fail here in one line, before a server starts
    runner = task_runner(dask_address=dask_address, dask_workers=dask_workers)
    result = extract_flow.with_options(task_runner=runner)(config)
    failures = [tuple(item) for item in result.pop("failures")]
    warnings = [tuple(item) for item in result.pop("pose_warnings")]
    result.pop("exit_code")
    return ExtractSummary(**{**result, "failures": failures, "pose_warnings": warnings})


def serve_extract(config: ExtractConfig, *, cron: str, name: str) -> None:
    """Register the flow as a deployment with a cron schedule on the server at PREFECT_API_URL and serve its runs.

    Blocks until interrupted. The configuration is stored as the deployment's default parameters; every run
    refreshes the index and extracts only the samples that are not in the cache yet.
    """
    from prefect.deployments.runner import EntrypointType

    stage.preflight(config)
    parameters = {"config": json.loads(json.dumps(asdict(config), default=str))}
    extract_flow.serve(
        name=name,
        cron=cron,
        parameters=parameters,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=True,
    )
