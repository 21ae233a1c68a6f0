"""Offline, quiet Prefect defaults for the flows in :mod:`pipelines`.

Prefect reads its settings when it is first imported, so each flow module calls
:func:`apply_defaults` before ``import prefect``. Only variables the user has not set are
filled in; an exported ``PREFECT_HOME`` or ``PREFECT_API_URL`` always wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

#: Repository root: the folder holding ``pipelines/`` (and dvc.yaml, prefect.yaml).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_env(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment defaults: local state under ``<root>/.cache/prefect``, no telemetry,
    a headless temporary server given time to create its database, and the project's
    loggers shown in the Prefect run log (no warning when they log outside a run)."""
    return {
        "PREFECT_HOME": str(root / ".cache" / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # the first start creates the database: about 14 s on an idle 2-core machine
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "m3sa,pipelines",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }


def apply_defaults(environ: MutableMapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Set each default of :func:`default_env` that ``environ`` (default ``os.environ``) lacks.

    Returns the variables that were set. Call it before the first ``import prefect``.
    The default ``PREFECT_HOME`` folder is created (Prefect itself creates one level only).
    """
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in default_env(root).items():
        if key not in env:
            env[key] = value
            applied[key] = value
    if "PREFECT_HOME" in applied:
        Path(applied["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return applied
