"""Property-based tests of the running gateway over raw sockets (hypothesis).

A gateway in front of faithful fake upstreams (tests/fuzz_kit.py) gets generated
requests: bodies (valid-ish OpenAI and Ollama requests with fields of random types and
values, deep and wide JSON, random bytes), headers (odd names and values, framing and
encoding headers), request targets, methods and versions, and mangled bytes. Whatever
comes in:

- no 5xx: the upstreams behave, so any 5xx is the gateway's own fault;
- no hang: every exchange ends within `EXCHANGE_BOUND` (the gateway's client
  timeouts are 1 s here);
- every non-2xx answer is a JSON error, `{"error": {"message": "…"}}` (the Ollama
  front door: `{"error": "…"}`);
- a well-formed request gets an answer; a malformed one gets an answer or a clean close,
  never an answer cut short.

Bounded and derandomized (the same examples on every run) so CI stays fast;
`LLAMA_GATEWAY_FUZZ_RANDOM=1` draws new examples each run;
`LLAMA_GATEWAY_FUZZ_EXAMPLES` raises the number of examples per property.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_bodies import bodies, body_paths, content_types, dump, requests_for_paths
from fuzz_kit import (
    DERANDOMIZE,
    EXAMPLES,
    FUZZ_KEY,
    KNOWN_PATHS,
    OLLAMA_PATHS,
    Exchange,
    LiveGateway,
    exchange,
    request,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gw = LiveGateway().start()
    yield gw
    gw.stop()


def check(
    ex: Exchange,
    path: bytes | str = b"",
    *,
    well_formed: bool,
    head: bool = False,
    version_ok: bool = True,
    transfer_coded: bool = False,
) -> None:
    """The invariants of every exchange (see the module docstring). A request whose
    HTTP version is not 1.0 or 1.1 may get 505 (Version Not Supported), and one with a
    transfer coding besides chunked 501 (Not Implemented): the 5xx that name a
    client's fault."""
    assert not ex.hang, ex.describe()
    assert not ex.truncated, f"answer cut short: {ex.describe()}"
    if ex.status is None:
        assert not well_formed, f"a well-formed request got no answer: {ex.describe()}"
        return
    client_5xx = (ex.status == 505 and not version_ok) or (ex.status == 501 and transfer_coded)
    assert ex.status < 500 or client_5xx, f"gateway 5xx: {ex.describe()}"
    ctype = ex.header("content-type") or ""
    if 200 <= ex.status < 300:
        if ctype.startswith("application/json") and not head:
            json.loads(ex.body)  # a whole answer, not one cut or mangled
        return
    assert ctype.startswith("application/json"), f"non-JSON error: {ex.describe()}"
    if head:
        return
    body = json.loads(ex.body)
    p = path.decode("latin-1") if isinstance(path, bytes) else path
    err = body.get("error") if isinstance(body, dict) else None
    if p.split("?")[0] in OLLAMA_PATHS and isinstance(err, str):
        return  # the Ollama front door's shape
    assert isinstance(err, dict) and isinstance(err.get("message"), str), ex.describe()


@FUZZ
@given(req=requests_for_paths())
def test_requests(live: LiveGateway, req: tuple[str, dict[str, Any]]) -> None:
    """Requests of the right kind for their path, valid or with fields gone wrong: these
    reach the upstreams, streams included."""
    path, body = req
    ex = exchange(
        live.port, request("POST", path, [(b"Content-Type", b"application/json")], dump(body))
    )
    check(ex, path, well_formed=True)


@FUZZ
@given(path=body_paths, body=bodies, ctype=content_types)
def test_bodies(live: LiveGateway, path: str, body: bytes, ctype: bytes) -> None:
    """Any body on any path that takes one."""
    ex = exchange(live.port, request("POST", path, [(b"Content-Type", ctype)], body))
    check(ex, path, well_formed=True)


# --------------------------------------------------------------------------- headers

_tchar = st.sampled_from(
    list("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
)
token = st.text(_tchar, min_size=1, max_size=20).map(lambda s: s.encode())
# Field values as RFC 9110 allows them: visible ASCII, spaces and tabs inside, obs-text.
_vchar = [bytes([b]) for b in range(0x21, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)]
field_values = st.lists(st.sampled_from([*_vchar, b" ", b"\t"]), max_size=40).map(
    lambda parts: b"".join(parts).strip(b" \t")
)
# And what it does not: any byte but CR and LF (those would end the line; mangled()
# covers them) in names and values.
_no_crlf = st.binary(min_size=1, max_size=16).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
)
odd_headers = st.tuples(_no_crlf.map(lambda b: b.replace(b":", b"") or b"\x00"), _no_crlf)
special = st.sampled_from(
    [
        [(b"Transfer-Encoding", b"chunked")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
        [(b"Transfer-Encoding", b"chunked, chunked")],
        [(b"Transfer-Encoding", b"Chunked")],
        [(b"Transfer-Encoding", b" chunked")],
        [(b"Transfer-Encoding", b"identity")],
        [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
        [(b"Transfer-Encoding", b"\x0bchunked")],
        [(b"Expect", b"100-continue")],
        [(b"Expect", b"100-Continue")],
        [(b"Expect", b"nope")],
        [(b"Content-Encoding", b"gzip")],
        [(b"Content-Encoding", b"br")],
        [(b"Content-Encoding", b"deflate")],
        [(b"Content-Encoding", b"identity")],
        [(b"Content-Encoding", b"gzip, identity")],
        [(b"Content-Encoding", b"\xfe")],
        [(b"Connection", b"close")],
        [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
        [(b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"h2c")],
        [(b"Host", b"")],
        [(b"Host", b"a"), (b"Host", b"b")],
        [(b"X-Request-Id", b"\x01\x7f\xff")],
        [(b"X-Priority", b"99999999999999999999999")],
        [(b"X-Priority", b"-nan")],
        [(b"Authorization", b"Bearer \xff\xfe")],
        [(b"Authorization", b"Bearer " + FUZZ_KEY.encode())],
        [(b"apikey", FUZZ_KEY.encode())],
        [(b"apikey", FUZZ_KEY.encode()), (b"apikey", b"other")],
        [(b"apikey", FUZZ_KEY.encode()), (b"Authorization", b"Bearer " + FUZZ_KEY.encode())],
        [(b"Authorization", b"")],
        [(b"Content-Type", b"application/json; charset=utf-16")],
        [(b"Content-Type", b"multipart/form-data; boundary=")],
        [(b"Accept-Encoding", b"gzip;q=\xff")],
    ]
)


def _framed(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A body that matches what the headers say (chunked or Content-Length), so that
    only the headers are under test here (framing is test_framing's)."""
    te = [v for k, v in headers if k.lower() == b"transfer-encoding"]
    if te and te[-1].strip().lower().endswith(b"chunked"):
        return headers, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return [*headers, (b"Content-Length", str(len(body)).encode())], body


@FUZZ
@given(
    req=requests_for_paths(),
    specials=st.lists(special, max_size=2),
    extra=st.lists(st.tuples(token, field_values), max_size=4),
    odd=st.just([]) | st.lists(odd_headers, min_size=1, max_size=2),
    dup_length=st.none()
    | st.sampled_from([b"same", b"0", b"1", b"-1", b"+1", b"0x10", b" 1 ", b""]),
)
def test_headers(
    live: LiveGateway,
    req: tuple[str, dict[str, Any]],
    specials: list[list[tuple[bytes, bytes]]],
    extra: list[tuple[bytes, bytes]],
    odd: list[tuple[bytes, bytes]],
    dup_length: bytes | None,
) -> None:
    path, body = req
    headers, payload = _framed([h for sp in specials for h in sp] + extra + odd, dump(body))
    if dup_length is not None:
        # A second Content-Length, equal or smaller: never one that leaves the gateway
        # waiting for bytes that will not come (that is test_framing's).
        value = str(len(payload)).encode() if dup_length == b"same" else dup_length
        headers.append((b"Content-Length", value))
    ex = exchange(live.port, request("POST", path, headers, payload, content_length=False))
    # Even a request the gateway must refuse gets an answer (a 400), when its lines
    # are lines: only odd bytes may make the gateway give up on the connection.
    coded = any(
        k.lower() == b"transfer-encoding"
        and any(c.strip().lower() not in (b"chunked", b"identity") for c in v.split(b","))
        for k, v in headers
    )
    check(ex, path, well_formed=not odd, transfer_coded=coded)


# --------------------------------------------------------------------------- targets, methods

_segments = st.sampled_from(
    [
        "chat", "v1", "api", "models", "completions", "embeddings", "..", ".", "",
        "%2e%2e", "%2E", "%0a", "%0d%0a", "%00", "%ff", "%", "%zz", "%2f", "%5c", ";", "~",
        "llama2", "chat?x=1", "a#frag", "\\", "é", "%e9", "{x}", "*",
    ]
)  # fmt: skip
_pct = st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{x:02x}" for x in b))
targets = st.one_of(
    st.lists(_segments | _pct | st.text(_tchar, max_size=8), max_size=6).map(
        lambda s: "/" + "/".join(s)
    ),
    st.sampled_from(KNOWN_PATHS).map(lambda p: p + "%0a"),
    st.just(f"/secure/chat?apikey={FUZZ_KEY}&apikey=x"),
    st.sampled_from(KNOWN_PATHS).flatmap(
        lambda p: st.just(p) | st.just(p + "/") | st.just(p + "?" + "a=%00&b")
    ),
    st.integers(1, 20000).map(lambda n: "/" + "a" * n),
    st.integers(1, 300).map(lambda n: "/" + "../" * n + "chat"),
    st.sampled_from(
        [
            "*",
            "",
            "http://127.0.0.1/chat",
            "127.0.0.1:80",
            "//chat",
            "/chat#x",
            "chat",
            "/v1/models/",
        ]
    ),
)


@FUZZ
@given(
    target=targets,
    method=st.sampled_from(["GET", "POST", "HEAD", "OPTIONS"]),
    body=st.sampled_from([b"", b'{"messages":[{"role":"user","content":"hi"}]}']),
)
def test_targets(live: LiveGateway, target: str, method: str, body: bytes) -> None:
    data = request(method, target.encode("utf-8"), [(b"Content-Type", b"application/json")], body)
    head = method == "HEAD"
    ex = exchange(live.port, data, head=head)
    plain = (
        target.startswith("/") and target.isascii() and target.isprintable() and " " not in target
    )
    check(ex, target, well_formed=plain, head=head)


methods = st.one_of(
    st.sampled_from(
        [
            "GET",
            "POST",
            "PUT",
            "DELETE",
            "PATCH",
            "HEAD",
            "OPTIONS",
            "TRACE",
            "CONNECT",
            "PROPFIND",
            "get",
            "post",
            "QUERY",
        ]
    ).map(str.encode),
    token,
    st.binary(min_size=1, max_size=12).map(
        lambda b: b.replace(b" ", b"").replace(b"\r", b"").replace(b"\n", b"") or b"\x00"
    ),
)
versions = st.sampled_from(
    [
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"",
        b"HTTP/2.0",
        b"HTTP/9.9",
        b"http/1.1",
        b"HTTP/1.1 x",
        b"HTTP/1",
        b"HTTP/01.01",
        b"\xff",
    ]
)


@FUZZ
@given(
    method=methods,
    path=st.sampled_from(KNOWN_PATHS),
    version=versions,
    body=st.sampled_from(
        [b"", b'{"messages":[{"role":"user","content":"hi"}]}', b'{"model":"llama2"}']
    ),
)
def test_request_line(
    live: LiveGateway, method: bytes, path: str, version: bytes, body: bytes
) -> None:
    head = method == b"HEAD"
    ex = exchange(live.port, request(method, path, [], body, version=version), head=head)
    http1 = version in (b"HTTP/1.1", b"HTTP/1.0")
    plain = http1 and method.isalpha() and method.isupper()
    check(ex, path, well_formed=plain and method != b"CONNECT", head=head, version_ok=http1)


# --------------------------------------------------------------------------- framing, raw bytes

framings = st.sampled_from(
    [
        "short-length",  # fewer bytes than Content-Length: the body timeout must end it
        "long-length",  # more bytes than Content-Length: the rest is a second request
        "bad-chunk-size",
        "chunk-no-end",  # chunked body that never ends: the body timeout again
        "chunk-size-overflow",
        "chunk-extension",
        "length-and-chunked",
        "negative-length",
    ]
)


def _framing(kind: str, body: bytes) -> list[bytes]:
    n = len(body)
    chunk = b"%x\r\n%s\r\n" % (n, body)
    cl = b"Content-Length: %d\r\n"
    if kind == "short-length":
        return [cl % (n + 50), body]
    if kind == "long-length":
        return [cl % max(n - 5, 0), body]
    if kind == "bad-chunk-size":
        return [b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + body + b"\r\n0\r\n\r\n"]
    if kind == "chunk-no-end":
        return [b"Transfer-Encoding: chunked\r\n", chunk]
    if kind == "chunk-size-overflow":
        return [b"Transfer-Encoding: chunked\r\n", b"f" * 40 + b"\r\n" + body + b"\r\n0\r\n\r\n"]
    if kind == "chunk-extension":
        return [b"Transfer-Encoding: chunked\r\n", b'%x;a="\xff"\r\n%s\r\n0\r\n\r\n' % (n, body)]
    if kind == "length-and-chunked":
        return [cl % n + b"Transfer-Encoding: chunked\r\n", chunk + b"0\r\n\r\n"]
    return [b"Content-Length: -1\r\n", body]


@settings(FUZZ, max_examples=max(EXAMPLES // 6, 8))  # two kinds wait out the body timeout
@given(kind=framings, path=st.sampled_from(["/chat", "/v1/chat/completions", "/api/chat", "/nope"]))
def test_framing(live: LiveGateway, kind: str, path: str) -> None:
    body = b'{"model":"llama2","messages":[{"role":"user","content":"hi"}]}'
    framing, payload = _framing(kind, body)
    data = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + payload
    check(exchange(live.port, data), path, well_formed=False)


_valid = request(
    "POST",
    "/chat",
    [(b"Content-Type", b"application/json")],
    b'{"messages":[{"role":"user","content":"hi"}]}',
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid request's head with bytes flipped, dropped or inserted (the body kept,
    so most variants do not wait for body bytes), or bytes from nowhere."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200)) + b"\r\n\r\n"
    head, _, body = _valid.partition(b"\r\n\r\n")
    buf = bytearray(head)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            buf[i] = draw(st.integers(0, 255))
        elif op == "drop":
            del buf[i]
        else:
            buf[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(buf) + b"\r\n\r\n" + body


@FUZZ
@given(data=mangled())
def test_raw_bytes(live: LiveGateway, data: bytes) -> None:
    check(exchange(live.port, data), b"", well_formed=False)
