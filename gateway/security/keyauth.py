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
    """What authenticated a request: who, and where the key was (to hide it)."""

    consumer: ConsumerConfig
    key: str  # the client's key: redacted from anything echoed (never logged)
    header: str | None = None  # the field it came in (lower-case), if a header
    query: str | None = None  # the query parameter it came in, if one
    field: str | None = None  # the body field it came in, if one
    bearer: bool = False


class Rejected(GatewayError):
    """401/403 with the reason as a metric label."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(status, message, CHALLENGE if status == 401 else None)
        self.reason = reason


class KeyAuth:
    """One route's key check against the runtime's consumers."""

    __slots__ = ("by_digest", "cfg", "route")

    def __init__(self, cfg: KeyAuthConfig, route: str, by_digest: Mapping[bytes, ConsumerConfig]):
        self.cfg = cfg
        self.route = route
        self.by_digest = by_digest

    def authenticate(
        self,
        headers: CIMultiDictProxy[str],
        query: MultiMapping[str],
        body: Mapping[str, Any] | None = None,
    ) -> Credential:
        """`body`: the parsed JSON body, when `key_in_body` (else not looked at)."""
        key, where = self._find(headers, query, body)
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
        if where == "bearer":
            return Credential(consumer, key, bearer=True)
        if where.startswith("h:"):
            return Credential(consumer, key, header=where[2:])
        if where.startswith("b:"):
            return Credential(consumer, key, field=where[2:])
        return Credential(consumer, key, query=where[2:])

    def _find(
        self,
        headers: CIMultiDictProxy[str],
        query: MultiMapping[str],
        body: Mapping[str, Any] | None,
    ) -> tuple[str, str]:
        cfg = self.cfg
        in_body = cfg.key_in_body and body is not None
        for name in cfg.key_names:
            if cfg.key_in_header:
                values = headers.getall(name, ())
                if len(values) > 1:
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if values and values[0]:
                    return values[0], "h:" + name.lower()
            if cfg.key_in_query:
                values = query.getall(name, ())
                if len(values) > 1:
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if values and values[0]:
                    return values[0], "q:" + name
            if in_body:
                assert body is not None
                value = body.get(name)
                if isinstance(value, list):  # as Kong reads `apikey=a&apikey=b` forms
                    raise Rejected(401, DUPLICATE_KEY, "duplicate")
                if isinstance(value, str) and value:
                    return value, "b:" + name
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token, "bearer"
        raise Rejected(401, NO_KEY, "missing")


def consumers_by_digest(consumers: tuple[ConsumerConfig, ...]) -> dict[bytes, ConsumerConfig]:
    return {d: c for c in consumers for d in c.key_digests}


def without_param(query: MultiMapping[str], name: str) -> MultiDict[str]:
    """The client's query minus the key parameter (hide_credentials)."""
    return MultiDict((k, v) for k, v in query.items() if k != name)
