"""Prefect flows wrapping the plain functions of `pipeline/`.

Importing this package sets Prefect's defaults for a quiet, offline run before Prefect itself is imported
(each only where the environment does not set it already): no analytics calls from an offline machine,
Prefect's and Dask's logs at warnings (`star extract --verbose` asks for INFO), and 120 s for Prefect's
embedded temporary server to start (its 20 s are too short on a busy 2-core machine).
"""

import os

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DASK_LOGGING__DISTRIBUTED": "warning",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
