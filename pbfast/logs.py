"""Logging set-up: one line per event, prefixed with the component that logged it.

Components log through :func:`component_logger` (``component_logger("Gateway")`` writes ``[Gateway] ...``).
The level comes from ``--debug`` or ``PB_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARN``, ``ERROR``).
``PB_LOG_FORMAT=json`` writes one JSON object per line instead (``time``, ``level``, ``component``,
``message``, and ``requestId``/``exception`` when there is one). A line written while a request is served
ends with ``request_id=<id>`` (:mod:`pbfast.request_ids`). Secrets never go into log lines: callers log where
a token is stored, never its value.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "component_logger", "configure_logging", "current_request_id",
           "parse_log_format", "parse_log_level"]

LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

LOG_FORMATS = ("text", "json")

_ROOT = "pbfast"

# The id of the request being served in this context (None outside requests).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("pbfast_request_id", default=None)


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id, in the thread that logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def _component(record: logging.LogRecord) -> str:
    return record.name.rsplit(".", 1)[-1] if record.name.startswith(_ROOT + ".") else "HTTP"


class _ComponentFormatter(logging.Formatter):
    """Formats ``pbfast.<Component>`` records as ``<time> <LEVEL> [<Component>] <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " ")
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<5} [{_component(record)}] {message}"
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" request_id={request_id}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``time`` in UTC, as its ``Z`` says)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": _component(record),
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["requestId"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def parse_log_level(value: str) -> int:
    """Map a ``PB_LOG_LEVEL`` value to a logging level; raises ValueError for anything else."""
    try:
        return LOG_LEVELS[value.strip().upper()]
    except KeyError as err:
        raise ValueError(f"PB_LOG_LEVEL must be one of DEBUG, INFO, WARN, ERROR (got {value!r})") from err


def parse_log_format(value: str) -> str:
    """Check a ``PB_LOG_FORMAT`` value (``text`` or ``json``); raises ValueError for anything else."""
    normalised = value.strip().lower()
    if normalised not in LOG_FORMATS:
        raise ValueError(f"PB_LOG_FORMAT must be text or json (got {value!r})")
    return normalised


def configure_logging(level: int, log_format: str = "text") -> None:
    """Send pbfast's and granian's records to stderr, one line each, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _ComponentFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # granian's own logger: only its warnings and errors matter to operators, unless debugging.
    granian = logging.getLogger("_granian")
    granian.handlers[:] = [handler]
    granian.setLevel(level if level <= logging.DEBUG else logging.ERROR)
    granian.propagate = False


def component_logger(component: str) -> logging.Logger:
    """The logger of one component, e.g. ``"Gateway"``, ``"ControlPlane"``, ``"TenantNode"``."""
    return logging.getLogger(f"{_ROOT}.{component}")
