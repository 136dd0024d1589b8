"""Keep secrets out of logs, reprs, exception messages and pickles.

``Secret`` wraps a value so that ``str``/``repr``/f-strings print ``***`` and pickling (XCom,
multiprocessing) fails loudly. ``register_secret`` feeds every secret (client secret, vendor secret,
the vendor header, bearer tokens) both to Airflow's secrets masker (task logs) and to ``redact``,
which the client applies to any text it did not write itself (IC error bodies) before using it in a
message. ``install_log_guards`` silences the DEBUG logs of requests-oauthlib, which print the token
request's Basic-auth header and the token response verbatim.
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any

_MIN_SECRET_LENGTH = 4
_lock = threading.Lock()
_known: set[str] = set()


class Secret:
    """A string that does not print itself; call ``reveal()`` at the one place that sends it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled or serialised (keep secrets out of XCom)")


def register_secret(value: str | None) -> None:
    """Remember ``value`` for ``redact`` and hand it to Airflow's masker when running in Airflow."""
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _known:
            return
        _known.add(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # pragma: no cover - masking is defence in depth, never a reason to fail
        pass


def register_basic_auth(user: str, password: str) -> None:
    """The base64 form of ``user:password`` as it appears in an Authorization header."""
    register_secret(base64.b64encode(f"{user}:{password}".encode()).decode())


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` by ``***``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, "***")
    return text


_NOISY_LOGGERS = ("requests_oauthlib", "oauthlib")


def install_log_guards() -> None:
    """requests-oauthlib logs request headers (Basic auth) and token responses at DEBUG: cap them at INFO.

    Setting the level on the package loggers caps every child logger that has no level of its own,
    even when the root logger (or Airflow's task logging) runs at DEBUG.
    """
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
