"""Primitive checks shared by the config validators: each records `key.path: message`.

Hostile values are refused here, once, so nothing later has to cope with them: numbers
must be finite and of a sane size, and strings that reach the wire (a header, a request
line, a log line, a metric label) must be free of control characters."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING: Any = object()

# RFC 9110 §5.6.2 token: a header name (and any other name that must be one).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# C0 controls, DEL and C1 controls. None belongs in a header value or a request line (a
# CR or LF there splits the message), in a log line or on an operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, except HTAB, which RFC 9110 allows inside a field value.
_CONTROL_NO_TAB = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CHAR_NAMES = {"\0": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x7f": "DEL"}
# Names that end up in response headers and metric labels (route, target, model names):
# long enough for any real name, short enough that a header stays far below the 8 KiB
# line limit of common HTTP clients.
MAX_NAME = 256
# The largest magnitude a number may have whatever its key: every integer up to it is
# exact as a float and in JSON, and converting it can never overflow.
MAX_MAGNITUDE = 2**53


def char_name(ch: str) -> str:
    return _CHAR_NAMES.get(ch) or f"U+{ord(ch):04X}"


def shown(value: Any, limit: int = 64) -> str:
    """`repr(value)` cut to `limit` characters, for echoing an operator's (non-secret)
    value in a message: repr escapes control characters, the cut bounds a huge one."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _to_number(text: str, integer: bool) -> Any:
    """An environment value as the number it spells, else the text (refused later)."""
    text = text.strip()
    if len(text) > 64:  # no sane number is this long; int() would refuse 4300+ digits
        return text
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return text


class Checker:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}" if path else msg)

    # ---- primitives ------------------------------------------------------------------

    def mapping(self, value: Any, path: str, allowed: set[str], kong: Mapping[str, Any]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, "must be a mapping")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in allowed:
                out[key] = item
                continue
            # An unknown key is echoed: escaped and cut, it cannot garble the terminal.
            text = key if isinstance(key, str) and key.isprintable() and len(key) <= 64 else None
            sub_key = text if text is not None else shown(key)
            sub = f"{path}.{sub_key}" if path else sub_key
            if key in kong:
                if item != kong[key]:
                    self.err(sub, "not supported")
            else:
                self.err(sub, "unknown key")
        return out

    def string(self, d: dict, key: str, path: str, default: Any = _MISSING) -> Any:
        value = d.get(key)
        if value is None:
            if default is _MISSING:
                self.err(f"{path}.{key}", "required")
                return None
            return default
        if not isinstance(value, str):
            self.err(f"{path}.{key}", "must be a string")
            return default if default is not _MISSING else None
        return self.interpolate(value, f"{path}.{key}")

    def interpolate(self, value: str, path: str) -> str:
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.env:
                self.err(path, f"environment variable {name} is not set")
                return ""
            return self.env[name]

        return _ENV.sub(sub, value)

    # ---- strings that reach the wire -------------------------------------------------

    def clean(
        self,
        value: str,
        path: str,
        *,
        secret: bool = False,
        tab: bool = False,
        max_len: int | None = None,
    ) -> bool:
        """Whether `value` (after `${ENV}` substitution) may go into a header, a request
        line or a log line: no control character (C0, DEL, C1; HTAB only with `tab`, as
        in a header value) and, with `max_len`, not longer. A `secret` is never quoted,
        nor where the character sits, beyond "at the end" (a secret file's newline)."""
        m = (_CONTROL_NO_TAB if tab else _CONTROL).search(value)
        if m is not None:
            ch = char_name(m.group())
            if not secret:
                where = f"at index {m.start()}"
            elif m.start() == len(value) - 1:
                where = (
                    "at the end: a secret file's trailing newline?" if ch == "LF" else "at the end"
                )
            else:
                where = "inside the value"
            self.err(path, f"must not contain control characters (found {ch} {where})")
            return False
        if max_len is not None and len(value) > max_len:
            self.err(path, f"must be at most {max_len} characters long (is {len(value)})")
            return False
        return True

    def wire_string(
        self,
        d: dict,
        key: str,
        path: str,
        default: Any = _MISSING,
        *,
        secret: bool = False,
        tab: bool = False,
        max_len: int | None = None,
    ) -> Any:
        """`string()` for a value that reaches the wire: checked by `clean()`. The value
        is returned even when refused (the error is recorded; the config is not built),
        so that checks depending on it being set do not add errors of their own."""
        value = self.string(d, key, path, default)
        if isinstance(value, str):
            self.clean(value, f"{path}.{key}", secret=secret, tab=tab, max_len=max_len)
        return value

    def name(self, d: dict, key: str, path: str, default: Any = _MISSING) -> Any:
        """A name shown in headers, logs and metric labels (route, target, model names,
        a consumer's username): a wire string of at most MAX_NAME characters."""
        return self.wire_string(d, key, path, default, max_len=MAX_NAME)

    def token(self, d: dict, key: str, path: str, default: Any = _MISSING) -> Any:
        """An HTTP header name (an RFC 9110 token). Returned even when refused, as
        `wire_string()` does."""
        value = self.string(d, key, path, default)
        if isinstance(value, str) and not TOKEN.fullmatch(value):
            self.err(f"{path}.{key}", "must be a valid HTTP header name")
        return value

    def choice(self, d: dict, key: str, path: str, choices: tuple[str, ...], default: Any) -> Any:
        value = self.string(d, key, path, default)
        if value is not None and value not in choices:
            self.err(f"{path}.{key}", f"must be one of: {', '.join(choices)} (got {shown(value)})")
            return default
        return value

    def boolean(self, d: dict, key: str, path: str, default: bool) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.err(f"{path}.{key}", "must be a boolean")
            return default
        return value

    def number(
        self,
        d: dict,
        key: str,
        path: str,
        default: Any,
        *,
        integer: bool = False,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
    ) -> Any:
        """A number within [lo, hi] (`lo_open`: above lo), finite, and within
        ±MAX_MAGNITUDE whatever the bounds. Bounds are compared before any conversion
        (Python compares int and float exactly), so a 400-digit integer is refused
        instead of overflowing `float()`."""
        value = d.get(key)
        if value is None:
            return default
        where = f"{path}.{key}"
        if isinstance(value, str) and "${" in value:
            value = _to_number(self.interpolate(value, where), integer)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.err(where, "must be an integer" if integer else "must be a number")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.err(where, "must be a finite number")
            return default
        if integer and isinstance(value, float):
            if not value.is_integer():
                self.err(where, "must be an integer")
                return default
            value = int(value)
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and value > hi
        ):
            lo_txt = "" if lo is None else (f"> {_bound(lo)}" if lo_open else f">= {_bound(lo)}")
            hi_txt = "" if hi is None else f"<= {_bound(hi)}"
            self.err(where, f"value must be {' and '.join(t for t in (lo_txt, hi_txt) if t)}")
            return default
        if abs(value) > MAX_MAGNITUDE:
            self.err(where, f"value is too large (at most {MAX_MAGNITUDE})")
            return default
        return int(value) if integer else float(value)
