"""Prefect flows wrapping the plain functions of `pipeline/`."""
