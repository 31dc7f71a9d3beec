"""One active health probe: `GET <path>` on a fresh connection through the gateway's own
HTTP/1.1 client, and what came of it in the gateway's failure vocabulary (`Reason`).

A probe answers "does this server accept a connection and answer this GET in time?":
the status line is the answer, so the body is never read and the connection is closed
right after the head. Redirects are answers like any other status (never followed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from yarl import URL

from balancers import Reason

from ..failure import classify
from ..http1 import Pool, Timeouts, UpstreamError
from ..outbound import get_request, origin_of

USER_AGENT = "llama-gateway-healthcheck"


def public_url(url: str) -> str:
    """`url` without userinfo or fragment and with query values masked (display only)."""
    try:
        u = URL(url).with_user(None).with_fragment(None)
        if u.query:
            u = u.with_query({k: "***" for k in u.query})
        return str(u)
    except (ValueError, TypeError):
        return "<invalid url>"


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe. Header names are lower-cased and pairs sorted, so specs that send
    the same headers compare (and share a prober) equal whatever order they were given."""

    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        norm = tuple(sorted((k.lower(), v) for k, v in self.headers))
        object.__setattr__(self, "headers", norm)

    def __repr__(self) -> str:
        names = ",".join(k for k, _ in self.headers)
        return f"ProbeSpec(url={public_url(self.url)!r}, headers=[{names}])"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe got: a status (`failure` None; whether it is a healthy one is the
    policy's call), or why there was none."""

    status: int | None
    failure: Reason | None = None


class ProbeRequest:
    """A spec's probe, built once: where it goes and its bytes (which hold the auth
    header's value, hence no repr beyond the origin)."""

    __slots__ = ("data", "origin")

    def __init__(self, spec: ProbeSpec) -> None:
        url = URL(spec.url)
        self.origin = origin_of(url)  # the same rule as the proxied requests
        self.data = get_request(url, self.origin, spec.headers, USER_AGENT)

    def __repr__(self) -> str:
        return f"<ProbeRequest {self.origin}>"


async def probe(pool: Pool, request: ProbeRequest, timeout: float) -> ProbeResult:
    """Send `request` on a new connection and wait at most `timeout` for its head.

    Fresh: a pooled socket proves nothing about whether the server still accepts
    connections. The overall bound matters because the client's read timeout restarts
    with every byte, and a server trickling its head would otherwise hold the probe."""
    limits = Timeouts(connect=timeout, read=timeout, write=timeout)
    try:
        async with asyncio.timeout(timeout):
            resp = await pool.request(request.origin, request.data, limits, fresh=True)
    except TimeoutError:
        return ProbeResult(None, Reason.TIMEOUT)
    except UpstreamError as exc:
        return ProbeResult(None, classify(exc).reason)
    resp.close()
    return ProbeResult(resp.status)
