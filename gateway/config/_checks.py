"""Primitive checks shared by the config validators: each records `key.path: message`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING: Any = object()


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
            sub = f"{path}.{key}" if path else str(key)
            if key in allowed:
                out[key] = item
            elif key in kong:
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

    def choice(self, d: dict, key: str, path: str, choices: tuple[str, ...], default: Any) -> Any:
        value = self.string(d, key, path, default)
        if value is not None and value not in choices:
            self.err(f"{path}.{key}", f"must be one of: {', '.join(choices)} (got {value!r})")
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
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, str) and "${" in value:
            value = self.interpolate(value, f"{path}.{key}")
            with contextlib.suppress(ValueError):
                value = int(value) if integer else float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and integer and not (isinstance(value, int) or float(value).is_integer()):
            ok = False
        if not ok:
            self.err(f"{path}.{key}", "must be an integer" if integer else "must be a number")
            return default
        value = int(value) if integer else float(value)
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and value > hi
        ):
            lo_txt = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
            hi_txt = "" if hi is None else f"<= {hi:g}"
            self.err(
                f"{path}.{key}", f"value must be {' and '.join(t for t in (lo_txt, hi_txt) if t)}"
            )
            return default
        return value
