"""Prefect flows wrapping the plain functions of `pipeline/`.

Set before Prefect is imported: offline machines cannot reach Prefect's analytics endpoint, and every run would log
an error about it.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
