"""Integration configs: one YAML file per integration, parsed and validated in one place.

A config names its IC credentials and its warehouse only by Airflow connection id; secrets never
live in YAML. Every validation error names the file, the field and the fix, so a data engineer can
repair a broken integration without reading code, and a broken file never hides the others.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradesync.entities import ENTITIES, entities_for
from gradesync.merge.rules import MergeRules

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
INTEGRATIONS_DIR_ENV = "GRADESYNC_INTEGRATIONS_DIR"
STAGING_URL_ENV = "GRADESYNC_STAGING_URL"
DEFAULT_INTEGRATIONS_DIR = Path(__file__).resolve().parent.parent / "integrations"
DEFAULT_WAREHOUSE_CONNECTION_ID = "gradesync_warehouse"
DEFAULT_SCHEDULE = "0 2 * * *"  # nightly, off-peak for US districts

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ConfigError(ValueError):
    """A config file is unusable; the message names the file, the field and the fix."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeakWindow(_Model):
    """Hours during which IC allows serial requests only (its peak-hours rule)."""

    start: time = time(7, 0)
    end: time = time(16, 0)
    timezone: str = "UTC"
    weekdays: list[str] = list(_WEEKDAYS[:5])

    @field_validator("weekdays")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        bad = [d for d in days if d not in _WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekday(s) {bad}; use {', '.join(_WEEKDAYS)}")
        return days

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name such as America/Chicago") from None
        return name


class ExtractionSettings(_Model):
    max_concurrent_requests: int = Field(5, ge=1, le=50)
    page_size: int = Field(1000, ge=1, le=50_000)
    chunk_rows: int = Field(100_000, ge=1_000)
    peak_window: PeakWindow | None = None


class StagingSettings(_Model):
    url: str | None = None  # any fsspec URL; default: $GRADESYNC_STAGING_URL or a local folder
    retention_days: int = Field(7, ge=0)

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        env = os.environ.get(STAGING_URL_ENV)
        if env:
            return env
        import tempfile

        return f"file://{Path(tempfile.gettempdir()) / 'gradesync-staging'}"


class VendorSource(_Model):
    """Where the vendor app's side of the gradebook comes from (see the master-fields docs)."""

    kind: Literal["warehouse_tables", "oneroster"] = "warehouse_tables"
    table_prefix: str = "vendor_"  # warehouse_tables: vendor_line_items, vendor_results, ...
    connection_id: str | None = None  # oneroster: a second IC-style connection
    api_version: Literal["1.1", "1.2"] = "1.2"

    @model_validator(mode="after")
    def _check(self) -> VendorSource:
        if self.kind == "oneroster" and not self.connection_id:
            raise ValueError("vendor_source.kind 'oneroster' needs connection_id")
        if not _IDENTIFIER_RE.match(self.table_prefix):
            raise ValueError("table_prefix must be letters, digits and underscores")
        return self


class Alerts(_Model):
    """Notifications; all optional. Secrets (webhook tokens, SMTP passwords) live in connections."""

    email: list[str] = []
    smtp_connection_id: str | None = None
    webhook_connection_id: str | None = None
    slack_connection_id: str | None = None
    finish_by: time | None = None  # deadline for a nightly run, in the schedule's time zone
    credentials_expire_on: date | None = None
    warn_days_before_expiry: int = Field(30, ge=0)


class IntegrationConfig(_Model):
    name: str
    api_version: Literal["1.1", "1.2"]
    connection_id: str
    warehouse_connection_id: str = DEFAULT_WAREHOUSE_CONNECTION_ID
    warehouse_schema: str = "gradesync"
    schedule: str | None = DEFAULT_SCHEDULE
    full_sync_weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] | None = "sun"
    start_date: date = date(2026, 1, 1)
    timezone: str = "UTC"
    entities: list[str] | None = None  # default: all the version supports
    extraction: ExtractionSettings = ExtractionSettings()
    staging: StagingSettings = StagingSettings()
    vendor_source: VendorSource | None = None
    # a scheduled full sync that would mark more than this share of live records deleted is held back
    max_vanished_share: float = Field(0.5, ge=0, le=1)
    merge_rules: MergeRules = MergeRules()  # master fields, match keys, mappings, reject threshold
    alerts: Alerts = Alerts()
    tags: list[str] = []
    owner: str = "gradesync"
    retries: int = Field(2, ge=0, le=10)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(
                "must start with a lowercase letter and hold only lowercase letters, digits and "
                "underscores (it becomes the DAG id grade_sync_<name>)"
            )
        return name

    @field_validator("warehouse_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not _IDENTIFIER_RE.match(value):
            raise ValueError("must be a plain SQL identifier (letters, digits, underscores)")
        return value

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # YAML reads 1.1 and 1.2 as floats; accept them, since that is how people write versions.
        if isinstance(value, float):
            return f"{value:.1f}"
        return value

    @model_validator(mode="after")
    def _entities_fit_version(self) -> IntegrationConfig:
        if self.entities is None:
            return self
        supported = entities_for(self.api_version)
        unknown = [e for e in self.entities if e not in ENTITIES]
        if unknown:
            raise ValueError(f"entities: unknown {unknown}; choose from {', '.join(ENTITIES)}")
        unsupported = [e for e in self.entities if e not in supported]
        if unsupported:
            raise ValueError(
                f"entities: {unsupported} are not served by OneRoster {self.api_version} "
                f"(IC answers 404); remove them or set api_version: '1.2'"
            )
        if not self.entities:
            raise ValueError("entities: list at least one entity, or remove the field to sync all")
        return self

    @property
    def dag_id(self) -> str:
        return f"grade_sync_{self.name}"

    @property
    def pool(self) -> str:
        return f"gradesync_{self.name}"

    @property
    def selected_entities(self) -> list[str]:
        """Entities to sync, in load order (parents first)."""
        wanted = self.entities or entities_for(self.api_version)
        return [e for e in entities_for(self.api_version) if e in wanted]


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or check its spelling",
    "literal_error": "use one of the allowed values",
}


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(error["type"])
    return f"field '{location}': {message}" + (f" (fix: {fix})" if fix else "")


def parse_config(data: Any, path: str | Path = "<config>") -> IntegrationConfig:
    if not isinstance(data, dict):
        raise ConfigError(path, ["the file must hold a YAML mapping of fields (name: ..., api_version: ...)"])
    try:
        config = IntegrationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(e) for e in exc.errors()]) from None
    return config


def load_config(path: str | Path) -> IntegrationConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader, C-accelerated when available
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"invalid YAML{where}: {problem}"]) from None
    return parse_config(data, path)


def integrations_dir() -> Path:
    return Path(os.environ.get(INTEGRATIONS_DIR_ENV) or DEFAULT_INTEGRATIONS_DIR)


@dataclass
class Discovery:
    configs: list[tuple[Path, IntegrationConfig]]
    errors: list[ConfigError]


def discover(directory: str | Path | None = None) -> Discovery:
    """Load every ``*.yaml``/``*.yml`` file; bad files become errors, never exceptions."""
    folder = Path(directory) if directory is not None else integrations_dir()
    configs: list[tuple[Path, IntegrationConfig]] = []
    errors: list[ConfigError] = []
    seen: dict[str, Path] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            config = load_config(path)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if config.name in seen:
            errors.append(
                ConfigError(path, [f"field 'name': {config.name!r} is already used by {seen[config.name].name} "
                                   "(fix: give each integration a unique name)"])
            )
            continue
        seen[config.name] = path
        configs.append((path, config))
    return Discovery(configs, errors)
