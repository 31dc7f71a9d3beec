"""Capturing the gateway's process log as parsed JSON lines (the JSON formatter the
CLI installs for `--log-format json`)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.accesslog import ACCESS_LOGGER, configure
from gateway.logs import JSONFormatter

SECRET = "sk-never-in-a-log-line"


class Captured:
    def __init__(self) -> None:
        self.buf = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        # Every line must be one JSON object: a parse error fails the test.
        return [json.loads(line) for line in self.buf.getvalue().splitlines()]

    def events(self, prefix: str = "") -> list[dict[str, Any]]:
        return [d for d in self.lines() if (d["event"] or "").startswith(prefix) and d["event"]]


@contextmanager
def json_log(level: int = logging.DEBUG) -> Iterator[Captured]:
    """Everything `llama_gateway.*` logs while inside, as JSON lines."""
    got = Captured()
    handler = logging.StreamHandler(got.buf)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("llama_gateway")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def capture_access_log() -> io.StringIO:
    """The access log's lines from now on, into a buffer (instead of stdout)."""
    buf = io.StringIO()
    logger = logging.getLogger(ACCESS_LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    configure(buf)
    return buf
