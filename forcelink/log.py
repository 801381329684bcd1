"""Logging setup: named loggers per component, optional JSON, secrets masked.

Components log through ``logging.getLogger("forcelink.<component>")``.
Lifecycle (connected, slot created, backfill 40% done) goes at INFO, one line
per event at DEBUG. ``register_secret`` adds a value (a token, a private key)
that no handler may ever print; every handler installed here masks them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TextIO

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never print ``value``: log records containing it are masked."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)
            for line in value.splitlines():
                if len(line.strip()) >= 16:
                    _secrets.add(line.strip())


def mask(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        # Masked before encoding: JSON escapes quotes, backslashes and newlines,
        # so a secret holding one would no longer match in the encoded line.
        # The second pass covers the escaped forms of what is left.
        return mask(json.dumps(entry, default=str))


def make_handler(stream: TextIO, json_output: bool = False) -> logging.Handler:
    """A handler writing to ``stream`` that masks every registered secret."""
    handler = logging.StreamHandler(stream)
    if json_output:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _MaskingFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
        )
    return handler


def setup(level: str = "INFO", json_output: bool = False) -> None:
    """Install one stderr handler on the ``forcelink`` logger tree."""
    handler = make_handler(sys.stderr, json_output)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("forcelink").setLevel(level.upper())
