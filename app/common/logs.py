"""Structured logging: readable lines for a learner, one JSON object a line for log shippers."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Route the root and uvicorn loggers through one handler of the chosen format."""
    handler = logging.StreamHandler()
    if json:
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.propagate and not logger.handlers:
            continue  # uvicorn --no-access-log turned it off; keep it off
        logger.handlers[:] = []
        logger.propagate = True
