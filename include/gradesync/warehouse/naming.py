"""Validation of the identifiers that come from configuration (schema name, table prefix).

Identifiers cannot be bound parameters, so they are the one thing that reaches SQL text from
outside the code. They are checked against a strict pattern before any SQL is built, and then
quoted by SQLAlchemy like any other name.
"""

from __future__ import annotations

import re

IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER = 40  # leaves room for a prefix, a table name and index suffixes within 63 bytes


class InvalidIdentifier(ValueError):
    """A schema name or table prefix from configuration is not a safe SQL identifier."""


def validate_identifier(value: str, what: str, *, allow_empty: bool = False) -> str:
    """Return ``value`` if it is a lowercase ASCII identifier; raise ``InvalidIdentifier`` otherwise."""
    if not isinstance(value, str):
        raise InvalidIdentifier(f"{what} must be a string, got {type(value).__name__}")
    if value == "" and allow_empty:
        return value
    if len(value) > MAX_IDENTIFIER or not IDENTIFIER_RE.fullmatch(value):
        raise InvalidIdentifier(
            f"{what} {value!r} is not allowed: use 1-{MAX_IDENTIFIER} characters of a-z, 0-9 and _, "
            "not starting with a digit"
        )
    return value
