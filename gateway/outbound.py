"""The bytes of one upstream request, built from plain data (header pairs, a query
multidict, a body), never from a server request object.

Everything that does not depend on the client request is computed once per target at
startup: the request line, `Host`, the fields we always add, the auth field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from multidict import MultiDict, MultiMapping
from yarl import URL

from .config import AuthConfig
from .http1 import Origin

Headers = Iterable[tuple[bytes, bytes]]

# Never forwarded to an upstream: hop-by-hop fields (RFC 9110 §7.6.1), Host and
# Content-Length (ours), Accept-Encoding (we ask for identity), Expect.
_NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"content-type",
        b"accept-encoding",
        b"expect",
        # The body is re-serialised plain JSON: whatever coding or digest the client's
        # body had does not describe ours.
        b"content-encoding",
        b"content-md5",
        b"digest",
        b"content-digest",
        b"repr-digest",
        # Ours: the request's id (the client's when sane, see requestid.py) is added.
        b"x-request-id",
    }
)


def origin_of(url: URL) -> Origin:
    """Where a configured URL's requests go: the IDNA host as on the wire, the scheme's
    default port when none is written."""
    return Origin(url.scheme, url.raw_host or "", url.port or 80)


def get_request(
    url: URL,
    origin: Origin,
    headers: Iterable[tuple[str, str]],
    user_agent: str,
    *fields: bytes,
) -> bytes:
    """A background `GET` (health probe, discovery): one request per connection, the
    operator's credential headers, `fields` as extra lines. Built once per URL."""
    lines = [
        b"GET " + url.raw_path_qs.encode("ascii") + b" HTTP/1.1\r\n",
        origin.host_field(),
        b"User-Agent: " + user_agent.encode("ascii") + b"\r\n",
        *fields,
        # One request, one connection: the server need not keep it for a next one.
        b"Connection: close\r\n",
    ]
    # Values were checked at config load (no CR/LF); UTF-8 as the proxied requests.
    lines += [k.encode("ascii") + b": " + v.encode("utf-8") + b"\r\n" for k, v in headers]
    return b"".join(lines) + b"\r\n"


def _request_line(url: URL) -> bytes:
    return b"POST " + url.raw_path_qs.encode("ascii") + b" HTTP/1.1\r\n"


def _field(name: str, value: str) -> bytes:
    # Values were checked at load (no CR/LF); UTF-8 like aiohttp sent them before.
    return name.encode("ascii") + b": " + value.encode("utf-8") + b"\r\n"


class RequestTemplate:
    """One target's upstream POST: `build()` adds the client's forwardable fields,
    query and the body to the parts computed at startup."""

    __slots__ = (
        "auth",
        "auth_field",
        "auth_name",
        "drop",
        "fixed_fields",
        "host_field",
        "request_line",
        "url",
    )

    def __init__(self, url: URL, origin: Origin, auth: AuthConfig) -> None:
        self.url = url
        self.auth = auth
        drop = set(_NOT_FORWARDED)
        fixed = _field("Content-Type", "application/json") + _field("Accept-Encoding", "identity")
        self.auth_field: bytes | None = None  # an allow_override header, sent when absent
        self.auth_name = b""  # its lower-cased name
        if not auth.allow_override:
            # The client's Authorization is for us (or an SDK's dummy key, or a key for
            # another service): never the upstream's business unless the target says so.
            drop.add(b"authorization")
        if auth.header_name is not None and auth.header_value is not None:
            line = _field(auth.header_name, auth.header_value)
            if auth.allow_override:
                self.auth_field = line
                self.auth_name = auth.header_name.lower().encode()
            else:
                drop.add(auth.header_name.lower().encode())
                fixed += line
        self.drop = frozenset(drop)
        self.fixed_fields = fixed
        self.request_line = _request_line(url)
        self.host_field = origin.host_field()

    def build(
        self,
        headers: Headers,
        query: MultiMapping[str],
        body: bytes,
        drop: frozenset[bytes] | None = None,
        request_id: bytes = b"",
        hidden: frozenset[bytes] = frozenset(),
    ) -> bytes:
        """The whole upstream request: client fields (repeated ones kept) minus the
        ones we must not forward, our fields (`request_id`: the whole X-Request-Id
        line), then the body. `headers` are raw field pairs the server already checked
        (no CR, LF or NUL). `hidden`: fields key-auth keeps back (hide_credentials),
        dropped like `drop` but never the client's override of our auth header."""
        if drop is None:
            drop = self.drop
        if hidden:
            drop = drop | hidden
        auth = self.auth
        if query or auth.param_location == "query":
            line = _request_line(self.upstream_url(query))
        else:
            line = self.request_line
        parts = [line, self.host_field]
        named: set[bytes] = set()
        client_has_auth = False
        auth_name = self.auth_name
        for name, value in headers:
            low = name.lower()
            if low == auth_name and auth_name and low not in hidden:
                # The client sent the header (even one it named hop-by-hop): ours,
                # which it may override, is not added. Key-auth's key kept back
                # (`hidden`) is no override: ours is sent.
                client_has_auth = True
            if low in drop or low.startswith(b"proxy-"):
                if low == b"connection":
                    # Hop-by-hop fields the client named in Connection, over all its
                    # field lines (RFC 9110 §7.6.1).
                    named.update(t.strip().lower() for t in value.split(b","))
                continue
            parts.append(name + b": " + value + b"\r\n")
        named -= drop
        named.discard(b"close")
        if named:  # rare: build again without them
            return self.build(headers, query, body, drop | named, request_id, hidden)
        parts.append(self.fixed_fields)
        if request_id:
            parts.append(request_id)
        if self.auth_field is not None and not client_has_auth:
            parts.append(self.auth_field)
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
        return b"".join(parts)

    def upstream_url(self, client_query: MultiMapping[str]) -> URL:
        auth = self.auth
        query_auth = auth.param_location == "query"
        if not client_query and not query_auth:
            return self.url
        # The operator's query first, then the client's (a client key replaces the
        # operator's; repeated client keys are all kept).
        query: MultiDict[str] = MultiDict(
            (k, v) for k, v in self.url.query.items() if k not in client_query
        )
        query.extend(client_query)
        if (
            query_auth
            and auth.param_name is not None
            and auth.param_value is not None
            and (not auth.allow_override or auth.param_name not in client_query)
        ):
            query[auth.param_name] = auth.param_value
        return self.url.with_query(query)

    def inject_body_auth(self, upstream_body: dict[str, Any], client_body: dict[str, Any]) -> None:
        """Body-located auth: the operator's value, or the client's under allow_override."""
        auth = self.auth
        name = auth.param_name
        if auth.param_location != "body" or name is None:
            return
        if auth.allow_override and name in client_body:
            upstream_body[name] = client_body[name]
        else:
            upstream_body[name] = auth.param_value
