"""The upstream HTTP/1.1 client: a pool of keep-alive connections, nothing else.

Why not aiohttp's ClientSession: the gateway sends one kind of request (a POST whose
bytes it has just built) and reads one kind of answer, and the session's general
machinery (URL objects, cookie jar, trace hooks, auto headers, payload objects, a
timer rescheduled on every read, redirect and proxy handling) cost the gateway about a
third of its CPU per request (README "Performance"). This client does what the proxy
needs: a pool per origin that knows whether a connection was reused (a pooled connection
the upstream closed while idle fails before any answer and the request may go again),
Content-Length / chunked / until-close bodies parsed by llhttp (httptools), 1xx skipping,
a body size limit, flow control for slow readers, connect / read / write timeouts, Happy
Eyeballs (aiohappyeyeballs), TLS, a small DNS cache.

Deliberately absent: redirects (never followed), cookies, proxies from the environment,
compression (requests say `Accept-Encoding: identity`), HTTP/2.
"""

from .connection import Response
from .errors import (
    BodyTooLarge,
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    UpstreamError,
    WriteTimeout,
)
from .parser import ResponseParser
from .pool import Origin, Pool, Timeouts

__all__ = [
    "BodyTooLarge",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "InvalidResponse",
    "Origin",
    "Pool",
    "ReadTimeout",
    "Response",
    "ResponseParser",
    "Timeouts",
    "UpstreamError",
    "WriteTimeout",
]
