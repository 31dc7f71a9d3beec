"""Secrets out of what an upstream echoes back.

Many upstream error pages (a 401, a framework's 500 with the request dumped) repeat the
request they got: our auth header, the query with our key, the body with our key, and
whatever the client sent. Such a body would reach the client as a pass-through answer
and the access log as the `response` payload. A `Redactor` replaces each secret there
with `[redacted]`, in every form an echo shows it in: as sent, URL-encoded (a query
echo: percent-encoded as we send it, or fully, with `+` or `%20` for a space, upper or
lower-case hex) and JSON-escaped (a body echo, by orjson's rules or with `\\uXXXX` and
`\\/` as other serialisers write them), also twice (our JSON body inside a JSON error
page). A secret of letters, digits, `-` and `_` has one form; one with spaces, quotes,
slashes or non-ASCII characters a few dozen at most.

Each route's redactor is built once, when its config is loaded (`routing.Route`); the
client's own credential is added per request (`Redactor.with_extra`), and only when
something is to be redacted: an upstream non-200 body, or an access-log payload. A
body with no secret in it costs one substring scan per form and is returned as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from .jsonutil import dumps

MARK = "[redacted]"
MIN_CLIENT_SECRET = 8  # characters; see `credential`
_BMARK = MARK.encode()
# What yarl (which builds our upstream URLs) leaves unencoded in a query value, besides
# the unreserved characters; a space becomes `+`.
_YARL_QUERY_SAFE = "/?:@!$'()*,"
_HEX = re.compile(r"%[0-9A-F]{2}")
# Characters that every URL and JSON encoding leaves as they are.
_PLAIN = re.compile(r"[A-Za-z0-9._~-]+")


def forms(secret: str) -> set[str]:
    """`secret` as an echo may show it (see the module doc). Empty for an empty one."""
    if not secret:
        return set()
    if _PLAIN.fullmatch(secret):  # most keys: nothing encodes them differently
        return {secret}
    out = {secret}
    for encoded in (
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        quote(secret, safe=_YARL_QUERY_SAFE),
        quote_plus(secret, safe=_YARL_QUERY_SAFE),
    ):
        out.add(encoded)
        out.add(_HEX.sub(lambda m: m.group().lower(), encoded))
    # JSON-escaped once (a body echo, or a query echo in a JSON page), and twice (the
    # JSON body we sent, quoted inside the JSON error page that echoes it).
    level = out
    for _ in range(2):
        level = {e for form in level for e in _json_escaped(form)}
        out |= level
    out.discard("")
    return out


def _json_escaped(text: str) -> tuple[str, ...]:
    plain = dumps(text).decode()[1:-1]
    ascii_only = json.dumps(text)[1:-1]
    return plain, ascii_only, plain.replace("/", "\\/"), ascii_only.replace("/", "\\/")


def credential(authorization: str) -> str:
    """The secret part of a client's `Authorization` value: the token after the scheme
    (`Bearer`, `Basic`, …), or the whole value when it has no scheme. Empty when shorter
    than MIN_CLIENT_SECRET: an SDK's placeholder (`x`, `EMPTY`, `ollama`) is no secret,
    and hiding it would cut those letters out of every word of an error text."""
    scheme, space, token = authorization.strip().partition(" ")
    token = token.strip() if space else scheme
    return token if len(token) >= MIN_CLIENT_SECRET else ""


class Redactor:
    """Replaces a fixed set of secrets (and their encoded forms) with `[redacted]`."""

    __slots__ = ("_bytes", "_secrets", "_str")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(dict.fromkeys(s for s in secrets if s))
        self._needles(set().union(*map(forms, self._secrets)))

    def _needles(self, needles: set[str]) -> None:
        # Longest first: only the order of the scans (overlaps are merged either way).
        self._str = tuple(sorted(needles, key=len, reverse=True))
        self._bytes = tuple(n.encode() for n in self._str)

    def __bool__(self) -> bool:
        return bool(self._str)

    def with_extra(self, extra: tuple[str, ...]) -> Redactor:
        """This redactor plus per-request secrets (itself when there are none new);
        only the new ones' forms are computed."""
        new = [s for s in extra if s and s not in self._secrets]
        if not new:
            return self
        out = Redactor.__new__(Redactor)
        out._secrets = (*self._secrets, *new)
        out._needles(set(self._str).union(*map(forms, new)))
        return out

    def text(self, text: str) -> str:
        spans = _spans(text, self._str)
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        for start, end in spans:
            out += (text[pos:start], MARK)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def data(self, data: bytes) -> bytes:
        spans = _spans(data, self._bytes)
        if not spans:
            return data
        out: list[bytes] = []
        pos = 0
        for start, end in spans:
            out += (data[pos:start], _BMARK)
            pos = end
        out.append(data[pos:])
        return b"".join(out)


def _spans(
    haystack: str | bytes, needles: tuple[str, ...] | tuple[bytes, ...]
) -> list[tuple[int, int]]:
    """Where any needle occurs, overlapping occurrences merged: two secrets that share
    characters (`abc123`, `123xyz` in `abc123xyz`) are both hidden entirely."""
    found: list[tuple[int, int]] = []
    for needle in needles:
        at = haystack.find(needle)  # type: ignore[arg-type]
        n = len(needle)
        while at >= 0:
            found.append((at, at + n))
            at = haystack.find(needle, at + 1)  # type: ignore[arg-type]
    if len(found) < 2:
        return found
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged
