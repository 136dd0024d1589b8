"""Airflow plugin of gradesync: a template macro for OneRoster filters and a run-outcome listener.

A thin wrapper over ``gradesync.macros``: importing it does nothing but define the plugin.

- ``{{ macros.gradesync.gradesync_filter(since, until) }}`` in any templated field;
- one scheduler log line per finished ``grade_sync_*`` run (logger ``gradesync.runs``).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from gradesync.macros import gradesync_filter, run_outcome_line

log = logging.getLogger("gradesync.runs")


class RunOutcomeListener:
    """Logs how each grade sync run ended; other DAGs are ignored."""

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        if line := run_outcome_line(dag_run, "success"):
            log.info("%s", line)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        if line := run_outcome_line(dag_run, "failed"):
            log.warning("%s", line)


class GradesyncPlugin(AirflowPlugin):
    name = "gradesync"
    macros = [gradesync_filter]
    listeners = [RunOutcomeListener()]
