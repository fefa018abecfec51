"""Logging (and, later, tracing and metrics) set up once per process.

Logs go to stderr, one event per line: ``console`` for people, ``json`` for collectors. The
request id of the message being handled is bound in a context variable and added to every line
logged while handling it, so one request can be followed across processes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from switchyard.config import LoggingSettings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "switchyard_request_id", default=None
)

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class _ContextFilter(logging.Filter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and value is not None:
                doc[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        rid = getattr(record, "request_id", None)
        where = getattr(record, "component", "")
        line = f"{stamp} {record.levelname[:4]:<4} {where} {record.name}: {record.getMessage()}"
        if rid:
            line += f" [req {rid}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _DropNoise(logging.Filter):
    """asyncio warns on every TLS connection close with uvloop/nats-py; it means nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "asyncio" and "eof_received()" in record.getMessage())


class _OwnLinesOnly(logging.Filter):
    """Below warning, only Switchyard's own lines: for a one-shot command.

    With ``logging.level: debug`` in the settings file, `keys show` printed redis's debug
    lines (``Failed to enable maintenance notifications...``) around its answer.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "switchyard" or record.name.startswith("switchyard.")
        return own or record.levelno >= logging.WARNING


def setup_logging(settings: LoggingSettings, component: str, *, libraries: bool = True) -> None:
    """Configure the root logger for this process (called once, from the CLI).

    ``libraries`` False (a one-shot command, not a server): the libraries' lines below
    warning (redis, nats, httpx...) are left out, whatever the level, so the command's
    output is its own; its own debug lines still show.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else ConsoleFormatter())
    handler.addFilter(_ContextFilter(component))
    handler.addFilter(_DropNoise())
    if not libraries:
        handler.addFilter(_OwnLinesOnly())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Library chatter that would drown our own lines at debug level.
    for noisy in ("asyncio", "urllib3", "hpack", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
