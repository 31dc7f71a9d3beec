"""The nesting limit of client JSON bodies.

orjson parses up to 1024 levels but serialises only up to 254, and the gateway
re-serialises what clients send (the upstream body, the access log): a body nested
255–1024 deep would be a 500 on every request. Bodies nested deeper than MAX_DEPTH are
refused with 400 instead, at parse time, in every door (route paths and both front
doors). Real requests nest a handful of levels (a tool's JSON schema a dozen or so).

The check costs almost nothing for what clients really send:

- a small body cannot nest deeper than the number of `{` and `[` in it (two byte counts,
  about a microsecond up to 2 KiB);
- otherwise orjson serialises the parsed value inside a fixed wrapper of
  `254 - MAX_DEPTH` lists and fails exactly when the value nests deeper than MAX_DEPTH:
  no Python walk over the value (which would cost more than the parse for a long
  conversation), no recursion of ours, and about a quarter of the parse's time.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 128
TOO_DEEP = f"request body is nested too deeply (limit {MAX_DEPTH})"

_ORJSON_MAX_DEPTH = 254  # orjson.dumps refuses more (JSONEncodeError)
# Up to this size, counting brackets is cheaper than serialising (measured: the counts
# cost about 0.7 ns a byte, the serialisation about 1.5 µs plus 0.25 ns a byte).
_COUNT_UP_TO = 2048

# The wrapper: nested lists, the innermost one holding the value while it is checked.
# The event loop runs one check at a time and orjson calls no Python code meanwhile.
_slot: list[Any] = []
_wrapper: list[Any] = _slot
for _ in range(_ORJSON_MAX_DEPTH - MAX_DEPTH - 1):
    _wrapper = [_wrapper]


TOO_DEEP_ANSWER = "the answer is nested too deeply"


def encoder_refused_depth(exc: BaseException) -> bool:
    """Whether orjson refused to write a value because it nests past orjson's limit:
    for a value parsed from an upstream's JSON, the upstream's doing, not a bug of
    ours (it is the only thing orjson can refuse in a value it parsed itself)."""
    return isinstance(exc, orjson.JSONEncodeError) and "recursion" in str(exc).lower()


def too_deep(raw: bytes, value: Any) -> bool:
    """Whether `value`, parsed from `raw`, nests more than MAX_DEPTH containers deep (a
    top-level object is depth 1)."""
    if len(raw) <= _COUNT_UP_TO and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return False
    if not isinstance(value, dict | list):
        return False
    _slot.append(value)
    try:
        orjson.dumps(_wrapper)
    except orjson.JSONEncodeError:
        # Depth is the only thing orjson can refuse in a value it parsed itself.
        return True
    finally:
        _slot.clear()
    return False
