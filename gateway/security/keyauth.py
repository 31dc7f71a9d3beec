"""Kong's key-auth: which consumer a request belongs to, or 401/403.

A key is looked for, in order, in each of the route's `key_names` as a header, then
as a query parameter, then (`key_in_body`) as a top-level field of the JSON body, then
in `Authorization: Bearer <key>` (so OpenAI SDKs work with `api_key=`). It is compared
by digest (`digest.py`): one HMAC and one dictionary probe, the same work whatever the
key, and no plaintext key is kept in memory.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy, MultiDict, MultiMapping

from ..config.schema import ConsumerConfig, KeyAuthConfig
from ..errors import GatewayError
from .digest import digest

# Kong's answers (key-auth and acl plugins).
NO_KEY = "No API key found in request"
INVALID_KEY = "Unauthorized"
DUPLICATE_KEY = "Duplicate API key found"
FORBIDDEN = "You cannot consume this service"
CHALLENGE = {"WWW-Authenticate": 'Key realm="llama-gateway"'}


@dataclass(frozen=True, slots=True)
class Credential:
    """What authenticated a request: who, and with which key."""

    consumer: ConsumerConfig
    key: str  # the client's key: redacted from anything echoed (never logged)
    bearer: bool = False  # it came in `Authorization: Bearer`


@dataclass(frozen=True, slots=True)
class Hidden:
    """hide_credentials: every place key-auth reads a key from is kept from upstreams,
    not only the one that matched: a second copy, or another consumer's key under
    another name, must not travel either."""

    headers: frozenset[bytes]  # lower-case field names never forwarded
    query: tuple[str, ...]  # parameters taken out of the query
    fields: tuple[str, ...]  # top-level body fields taken out (key_in_body)


class Rejected(GatewayError):
    """401/403 with the reason as a metric label."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(status, message, CHALLENGE if status == 401 else None)
        self.reason = reason


class KeyAuth:
    """One route's key check against the runtime's consumers."""

    __slots__ = ("by_digest", "cfg", "header_names", "hidden", "hidden_auth", "route")

    def __init__(self, cfg: KeyAuthConfig, route: str, by_digest: Mapping[bytes, ConsumerConfig]):
        self.cfg = cfg
        self.route = route
        self.by_digest = by_digest
        names = cfg.key_names
        self.header_names = names if cfg.key_in_header else ()
        headers = frozenset(n.lower().encode() for n in self.header_names)
        query = names if cfg.key_in_query else ()
        fields = names if cfg.key_in_body else ()
        self.hidden = Hidden(headers, query, fields)
        self.hidden_auth = Hidden(headers | {b"authorization"}, query, fields)

    def hiding(
        self,
        cred: Credential,
        headers: CIMultiDictProxy[str],
        query: MultiMapping[str],
        body: Mapping[str, Any] | None,
    ) -> tuple[Hidden, tuple[str, ...]]:
        """What hide_credentials keeps from upstreams for this request, and the values
        found there (to redact from anything echoed). `Authorization` is kept back when
        it carried the key or carries any consumer's key; a token for another service
        passes (when the target allows an override)."""
        hidden = self.hidden
        values = [v for n in self.header_names for v in headers.getall(n, ())]
        values += [v for n in hidden.query for v in query.getall(n, ())]
        if body is not None:
            for n in hidden.fields:
                v = body.get(n)
                values += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)]
        token = _bearer(headers)
        if token and (cred.bearer or digest(token) in self.by_digest):
            hidden = self.hidden_auth
            values.append(token)
        return hidden, tuple(dict.fromkeys(v for v in values if v))

    def authenticate(
        self,
        headers: CIMultiDictProxy[str],
        query: MultiMapping[str],
        body: Mapping[str, Any] | None = None,
    ) -> Credential:
        """`body`: the parsed JSON body, when `key_in_body` (else not looked at)."""
        key, bearer = self._find(headers, query, body)
        presented = digest(key)
        consumer = self.by_digest.get(presented)
        # The probe found the digest; the constant-time comparison is belt and braces
        # against a dictionary that ever compared by anything but equality of hashes.
        if consumer is None or not any(
            hmac.compare_digest(d, presented) for d in consumer.key_digests
        ):
            raise Rejected(401, INVALID_KEY, "invalid")
        allowed = consumer.allowed_routes
        if allowed is not None and self.route not in allowed:
            raise Rejected(403, FORBIDDEN, "forbidden")
        return Credential(consumer, key, bearer=bearer)

    def _find(
        self,
        headers: CIMultiDictProxy[str],
        query: MultiMapping[str],
        body: Mapping[str, Any] | None,
    ) -> tuple[str, bool]:
        """The key and whether it came as a Bearer token."""
        cfg = self.cfg
        in_body = cfg.key_in_body and body is not None
        for name in cfg.key_names:
            if cfg.key_in_header:
                values = headers.getall(name, ())
                if len(values) > 1:
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if values and values[0]:
                    return values[0], False
            if cfg.key_in_query:
                values = query.getall(name, ())
                if len(values) > 1:
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if values and values[0]:
                    return values[0], False
            if in_body:
                assert body is not None
                value = body.get(name)
                if isinstance(value, list):  # as Kong reads `apikey=a&apikey=b` forms
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if isinstance(value, str) and value:
                    return value, False
        token = _bearer(headers)
        if token:
            return token, True
        raise Rejected(401, NO_KEY, "missing")


def _bearer(headers: CIMultiDictProxy[str]) -> str:
    """The token of `Authorization: Bearer <token>`, or ""."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def consumers_by_digest(consumers: tuple[ConsumerConfig, ...]) -> dict[bytes, ConsumerConfig]:
    return {d: c for c in consumers for d in c.key_digests}


def without_params(query: MultiMapping[str], names: tuple[str, ...]) -> MultiDict[str]:
    """The client's query minus the key parameters (hide_credentials)."""
    return MultiDict((k, v) for k, v in query.items() if k not in names)
