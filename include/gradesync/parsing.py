"""Parse only what is needed: one DAG when a task runs, every DAG when the DAG processor asks.

A worker re-parses the DAG file before it runs each task, and Airflow tells it which DAG it is after
(``get_parsing_context()``). With 500 integrations, building all 500 DAGs for each of a night's
thousands of task runs is hours of CPU for nothing; ``discover_for_parsing`` reads only the YAML of
the task's own integration, and ``dag_ids_to_build`` says which configs deserve a DAG.

When no DAG is named (the DAG processor, ``airflow dags list``, tests) everything is discovered and
built as before, and a broken file is still reported and skipped without hiding the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradesync.config import (
    ConfigError,
    Discovery,
    IntegrationConfig,
    discover,
    integrations_dir,
    load_config,
)

DAG_ID_PREFIX = "grade_sync_"


def parsing_dag_id() -> str | None:
    """The DAG a worker is parsing for (Airflow's parsing context), or ``None`` when all are wanted."""
    try:
        from airflow.sdk import get_parsing_context
    except ImportError:  # pragma: no cover - outside Airflow everything is wanted
        return None
    return get_parsing_context().dag_id or None


def _as_config(item: Any) -> IntegrationConfig:
    return item[1] if isinstance(item, tuple) else item


def dag_ids_to_build(configs: Iterable[IntegrationConfig | tuple[Path, IntegrationConfig]]) -> set[str] | None:
    """``None`` to build every DAG; otherwise the ids to build (empty when the DAG is not one of ours)."""
    wanted = parsing_dag_id()
    if wanted is None:
        return None
    return {c.dag_id for c in map(_as_config, configs) if c.dag_id == wanted}


def discover_for_parsing(directory: str | Path | None = None) -> Discovery:
    """``config.discover`` that, while a task runs, loads only the file of the task's integration.

    The shortcut applies when the file is named after the integration (``<name>.yaml``, the
    documented convention) and no other file claims the same name; otherwise this falls back to
    discovering the whole folder and keeping the one config, so the answer never differs from what
    the DAG processor saw.
    """
    folder = Path(directory) if directory is not None else integrations_dir()
    wanted = parsing_dag_id()
    if wanted is None:
        return discover(folder)
    if wanted.startswith(DAG_ID_PREFIX):
        found = _load_by_file_name(folder, wanted[len(DAG_ID_PREFIX):])
        if found is not None:
            return found
    full = discover(folder)
    keep = dag_ids_to_build(full.configs)
    return Discovery([(p, c) for p, c in full.configs if keep is None or c.dag_id in keep], [])


def _load_by_file_name(folder: Path, name: str) -> Discovery | None:
    candidates = [folder / f"{name}.yaml", folder / f"{name}.yml"]
    existing = [p for p in candidates if p.is_file()]
    if len(existing) != 1:
        return None
    path = existing[0]
    try:
        config = load_config(path)
    except ConfigError:
        return None  # let the full discovery report it the usual way
    if config.name != name or _claimed_elsewhere(folder, name, path):
        return None
    return Discovery([(path, config)], [])


def _claimed_elsewhere(folder: Path, name: str, own: Path) -> bool:
    """Whether another file *might* declare the same name (a cheap text scan, no YAML parsing).

    ``discover`` keeps the first of two files with one name (sorted by path) and rejects the other; a
    possible twin sends us back to full discovery so the task gets the same config as the scheduler.
    """
    pattern = re.compile(rf"""^\s*name\s*:\s*['"]?{re.escape(name)}['"]?\s*(?:#.*)?$""", re.MULTILINE)
    for path in [*folder.glob("*.yaml"), *folder.glob("*.yml")]:
        if path == own:
            continue
        try:
            if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                return True
        except OSError:
            continue
    return False
