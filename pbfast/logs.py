"""Logging set-up: one line per event, prefixed with the component that logged it.

Components log through :func:`component_logger` (``component_logger("Gateway")`` writes ``[Gateway] ...``).
The level comes from ``--debug`` or ``PB_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARN``, ``ERROR``).
Secrets never go into log lines: callers log where a token is stored, never its value.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOG_LEVELS", "component_logger", "configure_logging", "parse_log_level"]

LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

_ROOT = "pbfast"


class _ComponentFormatter(logging.Formatter):
    """Formats ``pbfast.<Component>`` records as ``<time> <LEVEL> [<Component>] <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.rsplit(".", 1)[-1] if record.name.startswith(_ROOT + ".") else "HTTP"
        message = record.getMessage().replace("\n", " ")
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<5} [{component}] {message}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def parse_log_level(value: str) -> int:
    """Map a ``PB_LOG_LEVEL`` value to a logging level; raises ValueError for anything else."""
    try:
        return LOG_LEVELS[value.strip().upper()]
    except KeyError as err:
        raise ValueError(f"PB_LOG_LEVEL must be one of DEBUG, INFO, WARN, ERROR (got {value!r})") from err


def configure_logging(level: int) -> None:
    """Send pbfast's and granian's records to stderr, one line each, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ComponentFormatter())
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
