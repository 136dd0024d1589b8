"""Column types that behave the same on Postgres and SQLite.

Kept in their own module because migrations import them: changing them changes old migrations too.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


class UTCDateTime(sa.types.TypeDecorator):
    """``timestamptz`` on Postgres; ISO text on SQLite. Always returns timezone-aware UTC datetimes.

    SQLite has no time zones, so aware values are converted to naive UTC before they are stored and
    tagged UTC again when read; naive values are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or not isinstance(value, datetime):
            return value
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. through a view
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class JsonText(sa.types.TypeDecorator):
    """JSON stored as ``jsonb`` on Postgres and as text on SQLite; bound and read as JSON *text*.

    Staging already carries JSON text (see ``gradesync.records``), so nothing is parsed or
    re-encoded on the way in. On Postgres the server validates it.
    """

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return json.loads(value)  # the JSONB type serialises it again

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = json.loads(value)
        return json.dumps(value, ensure_ascii=False, sort_keys=True)


def KeyText() -> sa.types.TypeEngine:  # noqa: N802 - reads like a type
    """Text for identifiers (keys, references, run ids): byte order (``COLLATE "C"``) on Postgres.

    Ids are compared, hashed and indexed, never sorted for people; a locale collation makes index
    builds and joins several times slower for nothing.
    """
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
