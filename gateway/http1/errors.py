"""What can go wrong on an upstream call. Messages never name the URL or a header."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of every failure of an upstream call."""


class ConnectFailed(UpstreamError):
    """Refused, unreachable, name not resolved, TLS handshake failed."""


class ConnectTimeout(UpstreamError):
    pass


class ReadTimeout(UpstreamError):
    """No byte for `read` seconds while waiting for the head or the body."""


class WriteTimeout(UpstreamError):
    """The socket did not take the request within `write` seconds."""


class InvalidResponse(UpstreamError):
    """Not a well-framed HTTP/1.x response."""


class BodyTooLarge(InvalidResponse):
    """The body is longer than the caller's limit (`Response.read(limit)`); the
    connection was closed at once and what had arrived dropped."""


class Disconnected(UpstreamError):
    """The connection ended before the response did.

    `stale`: it was a pooled connection and not one byte of the response arrived, so
    the upstream had closed it while idle and the request reached no server, so it is
    safe to send it once more on a new connection. `midway`: part of the response had
    arrived."""

    def __init__(self, message: str, stale: bool = False, midway: bool = False) -> None:
        super().__init__(message)
        self.stale = stale
        self.midway = midway
