"""The client's address for `identifier: ip`: the TCP peer, or, when the peer is a
trusted proxy (`server.trusted_proxies`), the nearest address in `X-Forwarded-For`
that is not a trusted proxy (nginx's `real_ip_recursive on`). Untrusted peers' headers
are ignored: anyone can send one."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp.web import BaseRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(address: str, trusted: Sequence[Network]) -> bool | None:
    """Whether `address` is a trusted proxy; None when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return any(ip in net for net in trusted)


def request_client(request: BaseRequest, trusted: Sequence[Network]) -> str:
    """`request`'s client: its peer, or the client behind a trusted proxy."""
    forwarded = request.headers.getall("X-Forwarded-For", ()) if trusted else ()
    return client_address(request.remote, forwarded, trusted)


def client_address(peer: str | None, forwarded: Sequence[str], trusted: Sequence[Network]) -> str:
    """`forwarded`: the X-Forwarded-For field values in order (the last hop is last)."""
    if peer is None:
        return "-"
    if not trusted or not forwarded or not _trusted(peer, trusted):
        return peer
    client = peer
    hops = [h.strip() for value in forwarded for h in value.split(",")]
    for hop in reversed(hops):
        verdict = _trusted(hop, trusted)
        if verdict is None:  # garbage: the hop that added it is the best we know
            return client
        client = hop
        if not verdict:
            return hop
    return client  # every hop trusted: the farthest one
