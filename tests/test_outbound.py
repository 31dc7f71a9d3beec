"""Upstream request bytes from plain data: which client fields go, which never do, and
where the target's auth goes."""

from __future__ import annotations

from multidict import MultiDict
from yarl import URL

from gateway.config.schema import AuthConfig
from gateway.http1 import Origin
from gateway.outbound import RequestTemplate

URL_ = URL("http://127.0.0.1:8080/api/chat")
ORIGIN = Origin("http", "127.0.0.1", 8080)
NO_QUERY: MultiDict[str] = MultiDict()


def head_and_body(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def test_fixed_parts_and_client_fields() -> None:
    t = RequestTemplate(URL_, ORIGIN, AuthConfig())
    headers = [
        (b"X-Tag", b"a"),
        (b"x-tag", b"b"),
        (b"Host", b"evil"),
        (b"Content-Length", b"999"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Accept-Encoding", b"gzip"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"s"),
        (b"Content-Encoding", b"gzip"),
    ]
    lines, body = head_and_body(t.build(headers, NO_QUERY, b'{"a":1}'))
    assert lines == [
        b"POST /api/chat HTTP/1.1",
        b"Host: 127.0.0.1:8080",
        b"X-Tag: a",
        b"x-tag: b",
        b"Content-Type: application/json",
        b"Accept-Encoding: identity",
        b"Content-Length: 7",
    ]
    assert body == b'{"a":1}'


def test_forced_auth_header_replaces_the_clients() -> None:
    t = RequestTemplate(URL_, ORIGIN, AuthConfig(header_name="Authorization", header_value="k1"))
    lines, _ = head_and_body(t.build([(b"authorization", b"client")], NO_QUERY, b"{}"))
    assert b"Authorization: k1" in lines and b"authorization: client" not in lines


def test_overridable_auth_header_only_when_the_client_sent_none() -> None:
    auth = AuthConfig(header_name="X-Key", header_value="k1", allow_override=True)
    t = RequestTemplate(URL_, ORIGIN, auth)
    lines, _ = head_and_body(t.build([(b"x-key", b"mine")], NO_QUERY, b"{}"))
    assert b"x-key: mine" in lines and b"X-Key: k1" not in lines
    lines, _ = head_and_body(t.build([], NO_QUERY, b"{}"))
    assert b"X-Key: k1" in lines


def test_query_auth_and_client_query() -> None:
    auth = AuthConfig(param_name="key", param_value="k1", param_location="query")
    t = RequestTemplate(URL("http://127.0.0.1:8080/v1/x?fixed=1"), ORIGIN, auth)
    lines, _ = head_and_body(t.build([], MultiDict([("key", "c"), ("t", "1"), ("t", "2")]), b"{}"))
    assert lines[0] == b"POST /v1/x?fixed=1&key=k1&t=1&t=2 HTTP/1.1"


def test_body_auth() -> None:
    t = RequestTemplate(
        URL_, ORIGIN, AuthConfig(param_name="api_key", param_value="k1", param_location="body")
    )
    body: dict[str, object] = {"model": "m"}
    t.inject_body_auth(body, {"api_key": "client"})
    assert body["api_key"] == "k1"
    o = RequestTemplate(
        URL_,
        ORIGIN,
        AuthConfig(
            param_name="api_key", param_value="k1", param_location="body", allow_override=True
        ),
    )
    o.inject_body_auth(body, {"api_key": "client"})
    assert body["api_key"] == "client"


def test_overridable_auth_named_hop_by_hop_is_neither_forwarded_nor_replaced() -> None:
    auth = AuthConfig(header_name="X-Key", header_value="k1", allow_override=True)
    t = RequestTemplate(URL_, ORIGIN, auth)
    lines, _ = head_and_body(
        t.build([(b"Connection", b"X-Key"), (b"X-Key", b"mine")], NO_QUERY, b"{}")
    )
    assert not [ln for ln in lines if ln.lower().startswith(b"x-key")]
