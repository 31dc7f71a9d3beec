"""`server.*` settings from the environment (12-factor): `LLAMA_GATEWAY_<KEY>` for every
field of `ServerConfig`, so a key added there gets its variable with nothing else to do.

Precedence: command-line flag > environment > config file > default. A variable's
value goes into the file's `server` mapping before validation, so it passes the same
checks as the file's value would; an error names the variable. An empty variable is
the same as an unset one (a Deployment's `value: ""` must not mean "bind nothing").
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from ._checks import Checker, shown
from .schema import ServerConfig

PREFIX = "LLAMA_GATEWAY_"


def server_variables() -> dict[str, str]:
    """`server.*` key → its environment variable, for every key."""
    return {f.name: PREFIX + f.name.upper() for f in fields(ServerConfig)}


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """`server.*` key → the text of its variable, for the variables set (non-empty)."""
    out: dict[str, str] = {}
    for key, var in server_variables().items():
        text = env.get(var, "").strip()
        if text:
            out[key] = text
    return out


def _typed(kind: Any, text: str) -> Any:
    """The value a YAML file would have given for a field of type `kind`: a number for
    a number field (when the text is one), the text otherwise. Text that is not a valid
    value stays text, for the validator to refuse by the key's own rule."""
    kinds = typing.get_args(kind) or (kind,)
    if bool in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if len(text) > 64:  # no sane number is this long (and int() refuses 4300+ digits)
        return text
    if int in kinds:
        try:
            return int(text)
        except ValueError:
            pass
    if float in kinds:
        try:
            return float(text)  # "nan" and "inf" too: the number check refuses them
        except ValueError:
            pass
    return text


class EnvChecks(Checker):
    def with_env(self, raw: Any, check: Callable[[Any], ServerConfig]) -> ServerConfig:
        """`check(raw)` (the `server` mapping's validation) with the environment's
        values in place of the file's; errors about them name the variable."""
        texts = server_env(self.env)
        if not texts or not (raw is None or isinstance(raw, dict)):
            return check(raw)  # nothing set, or not a mapping (that error comes first)
        hints = typing.get_type_hints(ServerConfig)
        raw = {**(raw or {}), **{k: _typed(hints[k], v) for k, v in texts.items()}}
        first = len(self.errors)
        cfg = check(raw)
        names = server_variables()
        for i in range(first, len(self.errors)):
            for key, text in texts.items():
                head = f"server.{key}: "
                if self.errors[i].startswith(head):
                    why = self.errors[i][len(head) :]
                    self.errors[i] = f"{names[key]}: {why}, got {shown(text)} (server.{key})"
        return cfg
