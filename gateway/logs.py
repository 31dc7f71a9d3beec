"""The process log (stderr): text or JSON lines, and named events.

An *event* is a log record with a stable name and fields, for things an operator acts
on (startup, drain, a target going down, a circuit opening, a reload). `event()` logs
one; the names and their fields are listed in docs/operations.md ("Log events"), and
`events.py` emits the gateway's own. A record logged the ordinary way
(`log.warning("…")`) is a line too, with `event` null.

JSON (`--log-format json`): one object per line, always with `ts` (RFC 3339, UTC, ms),
`level`, `logger`, `event` and `msg`, then the event's fields (`exc` holds a traceback
when there is one). A field never replaces one of the fixed keys. Text (the default):
`<ts> <LEVEL> <logger>: <msg>`, then ` event=<name> key=value …` for an event.

The access log (one JSON line per request on stdout) is `accesslog.py`'s, not this.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_FORMAT = "LLAMA_GATEWAY_LOG_FORMAT"
ENV_LEVEL = "LLAMA_GATEWAY_LOG_LEVEL"
DEFAULT_FORMAT = "text"
DEFAULT_LEVEL = "INFO"
# The keys every JSON line has, in this order; event fields never overwrite them.
FIXED = ("ts", "level", "logger", "event", "msg")


class SettingError(ValueError):
    """A log setting from the environment that is not one of its choices."""


def event(
    logger: logging.Logger,
    name: str,
    msg: str | None = None,
    *,
    level: int = logging.INFO,
    exc_info: bool | BaseException | None = None,
    **fields: Any,
) -> None:
    """Log the event `name` with `fields` (JSON-serialisable values). `msg` is the
    human sentence (the name when None). A trailing `_` is dropped from a field name,
    so Python keywords can be fields (`from_=` → `from`). Nothing is built when the
    level is off. `exc_info` (True: the exception being handled) adds a traceback (`exc`)."""
    if not logger.isEnabledFor(level):
        return
    if any(k.endswith("_") for k in fields):
        fields = {k.removesuffix("_"): v for k, v in fields.items()}
    extra = {"event": name, "fields": fields}
    # stacklevel 2: the record names the caller's file and line, not this function's.
    logger.log(level, name if msg is None else msg, exc_info=exc_info, extra=extra, stacklevel=2)


def rfc3339(created: float) -> str:
    """UTC with milliseconds: 2026-05-01T09:40:12.345Z."""
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


# Fields every line of this process carries (a worker's `worker` index); set once.
_CONTEXT: dict[str, Any] = {}


def set_context(**fields: Any) -> None:
    """Add `fields` to every line this process logs from now on (e.g. `worker=2`)."""
    _CONTEXT.update(fields)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            doc.setdefault(key, value)
        for key, value in _CONTEXT.items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray non-JSON value (an enum, a path) must not lose the line.
        return orjson.dumps(doc, default=str).decode()


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c in value for c in ' "=\\\n\r\t'):
        return value
    return orjson.dumps(value, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{rfc3339(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        name = getattr(record, "event", None)
        if name is not None:
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in _fields(record).items())
            line += f" event={name}" + (f" {pairs}" if pairs else "")
        context = [(k, v) for k, v in _CONTEXT.items() if k not in _fields(record)]
        if context:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in context)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _choice(value: str, choices: tuple[str, ...], where: str) -> str:
    v = value.strip()
    for c in choices:
        if v.lower() == c.lower():
            return c
    raise SettingError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")


def resolve(fmt: str | None, level: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The log format and level: the command-line value, else the environment's, else
    the default. Raises SettingError naming the variable or flag that is wrong."""
    if fmt is not None:
        fmt = _choice(fmt, FORMATS, "--log-format")
    elif env.get(ENV_FORMAT, "").strip():
        fmt = _choice(env[ENV_FORMAT], FORMATS, ENV_FORMAT)
    if level is not None:
        level = _choice(level, LEVELS, "--log-level")
    elif env.get(ENV_LEVEL, "").strip():
        level = _choice(env[ENV_LEVEL], LEVELS, ENV_LEVEL)
    return fmt or DEFAULT_FORMAT, level or DEFAULT_LEVEL


def configure(
    fmt: str = DEFAULT_FORMAT, level: str = DEFAULT_LEVEL, stream: TextIO | None = None
) -> None:
    """Send the process log to `stream` (stderr) in `fmt` at `level`. Calling it again
    replaces the handler it installed before (not anyone else's, e.g. pytest's)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_llama_log", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler._llama_log = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
