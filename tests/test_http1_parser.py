"""Conformance tests of gateway.http1.ResponseParser (RFC 9112 framing on llhttp), pure
bytes in / body out.

Every representative response, and every limit, is also fed cut at every position, byte
by byte and in seeded random pieces: the network may split a response anywhere, the
result must not depend on where.

Deliberately stricter than the hand-written parser this one replaced (llhttp's strict
mode; each is an InvalidResponse now, tested in "strictness" below):

- a bare LF as line end, anywhere (status line, fields, the empty line, chunk-size
  lines, after chunk data, trailers); RFC 9112 §2.2 allows accepting it, never requires;
- whitespace in chunk-size lines: before the size, between the size and `;`, around `;`
  and `=` in extensions (the BWS of §7.1.1); an empty extension (`5;`);
- malformed chunk extensions: `;name` or `;name=value` with a token or a closed quoted
  string, nothing else (the old parser read only the size and skipped the rest);
- a bare CR anywhere in a chunk-size line, also inside a quoted extension value;
- field names that are not tokens (RFC 9110 §5.1: no `=`, `,`, `/`, `;`, space inside,
  no byte >= 0x80); control characters (other than HTAB) in field names and values;
- trailer fields are checked like header fields (the old parser skipped their content);
- Content-Length repeated, even with the same value (`5, 5` or two fields);
- Transfer-Encoding together with Content-Length (the old parser read the body as
  chunked and only refused to reuse the connection);
- a Content-Length in the trailers.

Also earlier: a head fails at the first byte that makes it invalid, where the old parser
waited for the empty line that ends it (often: for the read timeout).

And one leniency: `close` in Connection must be a whole token (`Connection: closed` no
longer makes the connection unusable).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

from gateway.http1 import InvalidResponse, ResponseParser
from gateway.http1 import parser as parser_module
from gateway.http1.parser import (
    MAX_HEAD,
    MAX_INTERIM,
    MAX_LENGTH_DIGITS,
    MAX_LINE,
    MAX_SIZE_DIGITS,
)

Head = tuple[int, str, list[tuple[str, str]]]


@dataclass(frozen=True)
class Parsed:
    head: Head | None
    body: bytes
    done: bool
    keep_alive: bool
    added: list[int]  # what each feed() returned


def feed_all(pieces: Iterable[bytes], eof: bool = False) -> Parsed:
    """Feed `pieces` in order; check each feed() returns the body bytes it appended and
    that it never appends an empty piece (a reader would take it for the end)."""
    parser = ResponseParser()
    out: list[bytes] = []
    added: list[int] = []
    for piece in pieces:
        before = len(out)
        n = parser.feed(piece, out)
        assert n == sum(len(chunk) for chunk in out[before:])
        assert all(out[before:]), "empty body piece"
        added.append(n)
    if eof:
        parser.eof()
    head = None
    if parser.head is not None:
        status, reason, headers = parser.head
        head = (status, reason, list(headers.items()))
    return Parsed(head, b"".join(out), parser.done, parser.keep_alive, added)


def whole(data: bytes, eof: bool = False) -> Parsed:
    return feed_all([data], eof)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_splits(data: bytes, seed: int, count: int = 20) -> Iterator[list[bytes]]:
    """`count` ways of cutting `data` into 2..40 pieces, from a seeded generator."""
    rng = random.Random(seed)
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 39))))
        yield [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def every_split(data: bytes) -> Iterator[list[bytes]]:
    """Cut in two at every position, with an empty read in between."""
    for i in range(len(data) + 1):
        yield [data[:i], b"", data[i:]]


def outcome(pieces: Iterable[bytes], eof: bool = False) -> Parsed | str:
    """The parse, or "invalid" if it raised InvalidResponse."""
    try:
        return feed_all(pieces, eof)
    except InvalidResponse:
        return "invalid"


def all_splits(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """Whole, byte by byte, in random pieces and (for a short input) cut at every position."""
    yield [data]
    yield byte_by_byte(data)
    yield from random_splits(data, seed)
    if len(data) <= 4096:
        yield from every_split(data)


def same_outcome(a: Parsed, b: Parsed) -> bool:
    """Everything but the per-call return values (those depend on the split)."""
    return (a.head, a.body, a.done, a.keep_alive) == (b.head, b.body, b.done, b.keep_alive)


LENGTH = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5;x=y\r\nhello\r\n"
    b'1a;name="quo ted";z\r\n' + b"b" * 26 + b"\r\n"
    b"1A\r\n" + b"C" * 26 + b"\r\n"
    b"0;last=1\r\n"
    b"X-Trailer: t\r\n"
    b"X-Other: u\r\n"
    b"\r\n"
)
CHUNKED_BODY = b"hello" + b"b" * 26 + b"C" * 26
INTERIM_THEN_CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
)
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until the end\n\n"
# Many small chunks in one read: the framing between the pieces adds up past MAX_LINE.
MANY = 2000
MANY_CHUNKS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n" % (i % 3 + 1) + b"abc"[: i % 3 + 1] + b"\r\n" for i in range(MANY))
    + b"0\r\n\r\n"
)
MANY_BODY = b"".join(b"abc"[: i % 3 + 1] for i in range(MANY))

EXPECTED: dict[str, tuple[bytes, bool, Parsed]] = {
    # name: (bytes, call eof() at the end, expected outcome; `added` is not compared)
    "length": (
        LENGTH,
        False,
        Parsed(
            (200, "OK", [("Content-Type", "application/json"), ("Content-Length", "7")]),
            b'{"a":1}',
            True,
            True,
            [],
        ),
    ),
    "chunked-ext-trailers": (
        CHUNKED,
        False,
        Parsed((200, "OK", [("Transfer-Encoding", "chunked")]), CHUNKED_BODY, True, True, []),
    ),
    "1xx-then-chunked": (
        INTERIM_THEN_CHUNKED,
        False,
        Parsed((201, "Created", [("Transfer-Encoding", "chunked")]), b"abcde", True, True, []),
    ),
    "until-close": (
        UNTIL_CLOSE,
        True,
        Parsed(
            (200, "OK", [("Content-Type", "text/plain")]),
            b"streamed until the end\n\n",
            True,
            False,
            [],
        ),
    ),
}


# ------------------------------------------------------------------ golden, every split


@pytest.mark.parametrize("name", list(EXPECTED))
def test_golden_whole(name: str) -> None:
    """Fed in one piece: exact head (status, reason, fields in order), body, done,
    keep_alive; feed() returns the body length."""
    data, eof, expected = EXPECTED[name]
    got = whole(data, eof)
    assert same_outcome(got, expected), got
    assert got.added == [len(expected.body)]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_golden_every_split_point(name: str) -> None:
    """Cut in two at every position (with an empty feed in between): same outcome as whole,
    and the feed() return values add up to the body length."""
    data, eof, expected = EXPECTED[name]
    for pieces in every_split(data):
        got = feed_all(pieces, eof)
        assert same_outcome(got, expected), (len(pieces[0]), got)
        assert sum(got.added) == len(expected.body), len(pieces[0])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_golden_byte_by_byte(name: str) -> None:
    """One byte per feed(): same outcome as whole."""
    data, eof, expected = EXPECTED[name]
    got = feed_all(byte_by_byte(data), eof)
    assert same_outcome(got, expected), got
    assert sum(got.added) == len(expected.body)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_golden_random_splits(name: str) -> None:
    """Cut into random pieces (seeded): same outcome as whole."""
    data, eof, expected = EXPECTED[name]
    for pieces in random_splits(data, seed=len(name), count=200):
        got = feed_all(pieces, eof)
        assert same_outcome(got, expected), [len(p) for p in pieces]


def test_golden_every_two_split_points_chunked() -> None:
    """Cut in three anywhere (all pairs of cut points) in the chunked response: same outcome."""
    data, _, expected = EXPECTED["chunked-ext-trailers"]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            got = feed_all([data[:i], data[i:j], data[j:]])
            assert same_outcome(got, expected), (i, j)


def test_many_chunks_in_one_read() -> None:
    """Thousands of small chunks in one read (a consumer that fell behind): all delivered,
    in order, whole or in random pieces."""
    for pieces in [[MANY_CHUNKS], *random_splits(MANY_CHUNKS, seed=7)]:
        got = feed_all(pieces)
        assert (got.body, got.done, got.keep_alive) == (MANY_BODY, True, True)


def test_until_close_not_done_before_eof() -> None:
    """Without a length the body runs until the connection closes: not done, not
    reusable, and eof() is what ends it (returning True)."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nabc", out) == 3
    assert parser.feed(b"def", out) == 3
    assert (parser.done, parser.keep_alive) == (False, False)
    assert parser.eof() is True
    assert parser.done is True
    assert b"".join(out) == b"abcdef"


# ------------------------------------------------------------------ framing


def test_content_length_body_spread_over_feeds() -> None:
    """A Content-Length body is done exactly when its last byte arrives; the pieces are
    the bytes as read (no copy, no empty piece for an empty read)."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123", out) == 4
    assert parser.done is False
    assert parser.body_length == 10
    piece = b"45678"
    assert parser.feed(piece, out) == 5
    assert parser.feed(b"", out) == 0
    assert parser.done is False
    assert parser.feed(b"9", out) == 1
    assert (parser.done, parser.keep_alive) == (True, True)
    assert out == [b"0123", b"45678", b"9"]
    assert out[1] is piece


@pytest.mark.parametrize(
    ("data", "reusable"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 12\r\n\r\n", False),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", True),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    ],
    ids=["204", "204-with-length", "304-with-length", "304-with-chunked", "length-0"],
)
def test_no_body(data: bytes, reusable: bool) -> None:
    """204 / 304 (whatever their framing fields say) and Content-Length 0 have no body:
    done as soon as the head is in. A 204 announcing a body is not reused (RFC 9110 §8.6
    lets a 304 carry Content-Length; a 204 may not)."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(data, out) == 0
    assert (parser.done, parser.keep_alive, out) == (True, reusable, [])
    assert parser.body_length == 0
    assert parser.eof() is True


def test_body_length_unknown_for_chunked_and_until_close() -> None:
    for data in (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ):
        parser = ResponseParser()
        parser.feed(data, [])
        assert parser.head is not None and parser.body_length is None


def test_eof_does_not_end_a_framed_body() -> None:
    """eof() before the head, inside a Content-Length body or inside a chunked body
    returns False: the response is incomplete."""
    assert ResponseParser().eof() is False
    for data in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-",
    ):
        parser = ResponseParser()
        parser.feed(data, [])
        assert parser.eof() is False, data
        assert parser.done is False


def test_interim_responses_skipped() -> None:
    """100 Continue and 103 Early Hints are skipped; their fields are not merged into the
    real head, and no body bytes come from them."""
    data = (
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    for pieces in all_splits(data):
        got = feed_all(pieces)
        assert got.head == (200, "OK", [("Content-Length", "2")])
        assert (got.body, got.done, got.keep_alive) == (b"ok", True, True)


def test_interim_response_alone_is_not_the_head() -> None:
    """After only a 100 Continue the head is still missing."""
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n", []) == 0
    assert parser.head is None
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", []) == 0
    assert parser.head is not None and parser.head[0] == 200


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: x , close ,y\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 2\r\n", True),
    ],
    ids=[
        "http11",
        "http11-keep-alive",
        "http10",
        "http10-keep-alive",
        "connection-close",
        "close-in-list",
        "close-with-spaces",
        "closed-is-another-token",
    ],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    """HTTP/1.0 (even with `keep-alive`) and a `close` connection option make the
    connection not reusable; the body is still framed by Content-Length."""
    got = whole(head + b"\r\nok")
    assert (got.body, got.done, got.keep_alive) == (b"ok", True, keep_alive)


@pytest.mark.parametrize(
    "coding",
    [
        b"gzip",
        b"gzip, chunked",
        b"chunked, gzip",
        b"Chunked\r\nTransfer-Encoding: br",
        b"chunked\r\nTransfer-Encoding: chunked",
        b"chunked , ",
    ],
)
def test_transfer_codings_other_than_chunked_are_invalid(coding: bytes) -> None:
    """We ask for identity: a body still compressed by a transfer coding cannot be relayed
    (nor framed reliably), so it is an invalid response rather than garbage passed on.
    `chunked` twice is not `chunked` either (RFC 9112 §6.1)."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    with pytest.raises(InvalidResponse):
        whole(data)


def test_chunked_coding_name_is_case_insensitive() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    got = whole(data)
    assert (got.body, got.done, got.keep_alive) == (b"hi", True, True)


@pytest.mark.parametrize(
    "fields", [b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"], ids=["cl", "te"]
)
def test_204_with_body_framing_is_not_reused(fields: bytes) -> None:
    """A 204 has no body, but one announcing a body may send bytes that would be read as
    the next answer on this connection: done at once, never reused."""
    got = whole(b"HTTP/1.1 204 No Content\r\n" + fields + b"\r\n")
    assert (got.body, got.done, got.keep_alive) == (b"", True, False)


def test_blank_lines_in_body_are_body() -> None:
    """A body containing blank lines (CRLF or LF) is not taken for anything else."""
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\na\n\nb\r\n\r\nc\n"
    got = whole(data)
    assert (got.body, got.done) == (b"a\n\nb\r\n\r\nc\n", True)


def test_field_values_trimmed_and_reason_kept() -> None:
    """Optional whitespace around a field value is dropped; the reason phrase keeps its
    spaces; an empty reason is allowed (with or without the space before it)."""
    got = whole(
        b"HTTP/1.1 404 Not  Found Here\r\nX-A:\t v a l \t\r\nX-B:\r\nContent-Length: 0\r\n\r\n"
    )
    assert got.head == (
        404,
        "Not  Found Here",
        [("X-A", "v a l"), ("X-B", ""), ("Content-Length", "0")],
    )
    for status_line in (b"HTTP/1.1 200", b"HTTP/1.1 200 "):
        got = whole(status_line + b"\r\nContent-Length: 0\r\n\r\n")
        assert got.head == (200, "", [("Content-Length", "0")])


def test_obs_text_in_values_and_reason_kept() -> None:
    """Bytes 0x80-0xFF (obs-text) are allowed in values and the reason, read as Latin-1."""
    got = whole(b"HTTP/1.1 200 Ol\xe9\r\nX-A: caf\xe9\r\nContent-Length: 0\r\n\r\n")
    assert got.head == (200, "Ol\xe9", [("X-A", "caf\xe9"), ("Content-Length", "0")])


# ------------------------------------------------------------------ bytes past the end


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["length", "chunked", "204"],
)
@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\r\n",
        b"garbage",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ],
    ids=["head", "crlf", "garbage", "response"],
)
@pytest.mark.parametrize("separate", [False, True], ids=["same-feed", "later-feed"])
def test_bytes_beyond_the_body(data: bytes, extra: bytes, separate: bool) -> None:
    """Bytes after the framed end (in the same read or a later one; even a lone CRLF that
    llhttp would skip) make the connection not reusable, are not appended to the body
    and are not an error."""
    body = b"" if data.startswith(b"HTTP/1.1 204") else b"ok"
    got = feed_all([data, extra] if separate else [data + extra])
    assert (got.body, got.done, got.keep_alive) == (body, True, False)
    assert sum(got.added) == len(body)
    if separate:
        assert got.added[1] == 0


# ------------------------------------------------------------------ feed() return value


def test_feed_returns_body_bytes_appended() -> None:
    """feed() returns the number of body bytes it appended in that call: 0 for head-only
    bytes and chunk framing, the data bytes otherwise."""
    parser = ResponseParser()
    out: list[bytes] = []
    steps = [
        (b"HTTP/1.1 200 OK\r\nTransfer-", 0),
        (b"Encoding: chunked\r\n\r\n4\r\nab", 2),
        (b"cd\r", 2),
        (b"\n10\r\n0123456789", 10),
        (b"abcdef\r\n", 6),
        (b"0\r\n", 0),
        (b"\r\n", 0),
    ]
    for data, n in steps:
        assert parser.feed(data, out) == n, data
    assert parser.done is True
    assert b"".join(out) == b"abcd0123456789abcdef"


# ------------------------------------------------------------------ strictness

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def lf(data: bytes) -> bytes:
    """The same response with bare-LF line ends."""
    return data.replace(b"\r\n", b"\n")


STRICT = {
    # Bare LF as a line end (RFC 9112 §2.2 allows accepting it; llhttp does not).
    "lf-length": lf(LENGTH),
    "lf-chunked": lf(CHUNKED),
    "lf-1xx": lf(INTERIM_THEN_CHUNKED),
    "lf-status-line-only": b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nhi",
    "lf-field-then-crlf": b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nhi",
    "lf-empty-line": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nhi",
    "lf-after-chunk-size": CHUNKED_HEAD + b"3\nabc\r\n0\r\n\r\n",
    "lf-after-chunk-data": CHUNKED_HEAD + b"3\r\nabc\n0\r\n\r\n",
    "lf-after-last-chunk": CHUNKED_HEAD + b"3\r\nabc\r\n0\n\r\n",
    "lf-in-trailers": CHUNKED_HEAD + b"0\r\nX-T: 1\n\r\n",
    "lf-ending-trailers": CHUNKED_HEAD + b"0\r\n\n",
    # Whitespace in chunk-size lines.
    "space-before-size": CHUNKED_HEAD + b" 3\r\nabc\r\n0\r\n\r\n",
    "space-after-size": CHUNKED_HEAD + b"3 \r\nabc\r\n0\r\n\r\n",
    "tab-after-size": CHUNKED_HEAD + b"3\t\r\nabc\r\n0\r\n\r\n",
    "space-before-semicolon": CHUNKED_HEAD + b"3 ;x=y\r\nabc\r\n0\r\n\r\n",
    "space-after-semicolon": CHUNKED_HEAD + b"3; x=y\r\nabc\r\n0\r\n\r\n",
    "space-around-equals": CHUNKED_HEAD + b"3;x = y\r\nabc\r\n0\r\n\r\n",
    "empty-extension": CHUNKED_HEAD + b"3;\r\nabc\r\n0\r\n\r\n",
    # Bare CR in chunk-size lines.
    "cr-in-extension": CHUNKED_HEAD + b"3;x=a\rb\r\nabc\r\n0\r\n\r\n",
    "cr-in-quoted-extension": CHUNKED_HEAD + b'3;x="a\rb"\r\nabc\r\n0\r\n\r\n',
    # Control characters in fields.
    "ctl-in-value": b"HTTP/1.1 200 OK\r\nX-A: b\x01c\r\nContent-Length: 0\r\n\r\n",
    "del-in-value": b"HTTP/1.1 200 OK\r\nX-A: b\x7fc\r\nContent-Length: 0\r\n\r\n",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\nContent-Length: 0\r\n\r\n",
    "ctl-in-name": b"HTTP/1.1 200 OK\r\nX\x01A: bc\r\nContent-Length: 0\r\n\r\n",
    # Field names that are not tokens.
    **{
        f"name-with-{label}": b"HTTP/1.1 200 OK\r\nX" + char + b"A: b\r\nContent-Length: 0\r\n\r\n"
        for label, char in [
            ("equals", b"="),
            ("comma", b","),
            ("slash", b"/"),
            ("semicolon", b";"),
            ("space", b" "),
            ("obs-text", b"\x80"),
        ]
    },
    # Malformed chunk extensions.
    "ext-quote-in-name": CHUNKED_HEAD + b'3;n"q"\r\nabc\r\n0\r\n\r\n',
    "ext-quote-in-token": CHUNKED_HEAD + b'3;n=1q"\r\nabc\r\n0\r\n\r\n',
    "ext-after-quoted": CHUNKED_HEAD + b'3;n="q"1\r\nabc\r\n0\r\n\r\n',
    "ext-unclosed-quote": CHUNKED_HEAD + b'3;n="q\r\nabc\r\n0\r\n\r\n',
    # Trailer fields.
    "ctl-in-trailer": CHUNKED_HEAD + b"0\r\nX-T: a\x01b\r\n\r\n",
    "trailer-without-colon": CHUNKED_HEAD + b"0\r\nX-T a\r\n\r\n",
    "trailer-empty-name": CHUNKED_HEAD + b"0\r\n: a\r\n\r\n",
    "trailer-folded": CHUNKED_HEAD + b"0\r\nX-T: a\r\n b\r\n\r\n",
    "trailer-name-not-token": CHUNKED_HEAD + b"0\r\nX,T: a\r\n\r\n",
    # Content-Length repeated, even the same value.
    "length-list-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "length-twice-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    # Both framings (a request-smuggling sign), in either order; Content-Length in trailers.
    "te-and-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "cl-after-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "cl-in-trailers": CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
}


@pytest.mark.parametrize("name", list(STRICT))
def test_strictness(name: str) -> None:
    """What the old parser accepted and llhttp refuses: an InvalidResponse however the
    bytes are split."""
    for pieces in all_splits(STRICT[name], seed=len(name)):
        assert outcome(pieces) == "invalid", [len(p) for p in pieces]


@pytest.mark.parametrize(
    "start",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 2\n",  # bare LF: never a CRLFCRLF end
        b"HTTP/1.1 200 OK\r\nX-A b\r\n",  # a field line without a colon
        b'{"error": ',  # not a response at all
        b"RTSP/1.0 ",  # llhttp knows the protocol; we do not
    ],
    ids=["bare-lf", "no-colon", "json", "rtsp"],
)
def test_invalid_head_fails_before_it_ends(start: bytes) -> None:
    """A head fails as soon as the bytes that make it invalid arrive, not at its end
    (which may never come: the read timeout would be the error)."""
    parser = ResponseParser()
    with pytest.raises(InvalidResponse):
        parser.feed(start, [])


# ------------------------------------------------------------------ errors

STATUS_ERRORS = {
    "http2": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "http2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "http1.2": b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "http0.9": b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n",
    "rtsp": b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "ice": b"ICE/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "two-digit-code": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "four-digit-code": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "letters-code": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "no-code": b"HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "two-spaces": b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
    "lowercase-version": b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "leading-crlf": b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"garbage\r\n\r\n",
    "json": b'{"error": "nope"}\n\n',
}
FIELD_ERRORS = {
    "no-colon": b"X-A b\r\n",
    "space-before-colon": b"X-A : b\r\n",
    "tab-before-colon": b"X-A\t: b\r\n",
    "empty-name": b": b\r\n",
    "space-before-name": b" X-A: b\r\n",
    "obs-fold": b"X-A: b\r\n  folded\r\n",
    "obs-fold-tab": b"X-A: b\r\n\tfolded: x\r\n",
    "cr-inside": b"X-A: b\rc\r\n",
    "cr-at-end": b"Content-Length: 2\r\r\n",
    "conflicting-length-list": b"Content-Length: 5, 6\r\n",
    "conflicting-length-fields": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "length-letters": b"Content-Length: abc\r\n",
    "length-negative": b"Content-Length: -1\r\n",
    "length-plus": b"Content-Length: +5\r\n",
    "length-empty": b"Content-Length:\r\n",
    "length-hex": b"Content-Length: 0x5\r\n",
    "length-decimal-point": b"Content-Length: 5.0\r\n",
    "length-space-inside": b"Content-Length: 5 5\r\n",
    "length-too-many-digits": b"Content-Length: 1234567890123456789\r\n",
    "length-leading-zeros": b"Content-Length: 0000000000000000005\r\n",
    "length-overflow": b"Content-Length: 99999999999999999999999\r\n",
}
CHUNK_ERRORS = {
    "0x-prefix": b"0x1a\r\n",
    "negative": b"-1\r\n",
    "underscore": b"1_0\r\n",
    "empty": b"\r\n",
    "not-hex": b"zz\r\n",
    "space-inside": b"1 0\r\n",
    "too-many-digits": b"1234567890abcdef\r\n",
    "leading-zeros": b"0000000000000001\r\nx\r\n0\r\n\r\n",
    "overflow": b"1234567890abcdef0\r\n",
    "no-crlf-after-data": b"5\r\nhelloX\r\n0\r\n\r\n",
    "cr-not-lf-after-data": b"5\r\nhello\rX0\r\n\r\n",
    "data-longer-than-size": b"2\r\nhello\r\n0\r\n\r\n",
}
ERRORS = {
    **{f"status-{k}": v for k, v in STATUS_ERRORS.items()},
    **{f"field-{k}": b"HTTP/1.1 200 OK\r\n" + v + b"\r\nhello" for k, v in FIELD_ERRORS.items()},
    **{f"chunk-{k}": CHUNKED_HEAD + v for k, v in CHUNK_ERRORS.items()},
    "101-switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: upgrade\r\n\r\n",
    "101-bare": b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "101-after-100": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_invalid_whole(name: str) -> None:
    """Malformed status lines, fields, lengths, chunk framing and 101 raise InvalidResponse."""
    with pytest.raises(InvalidResponse):
        whole(ERRORS[name])


@pytest.mark.parametrize("name", list(ERRORS))
def test_invalid_byte_by_byte(name: str) -> None:
    """The same errors are found when the bytes arrive one at a time."""
    with pytest.raises(InvalidResponse):
        feed_all(byte_by_byte(ERRORS[name]))


@pytest.mark.parametrize("name", list(ERRORS))
def test_invalid_random_splits(name: str) -> None:
    """And in random pieces."""
    for pieces in random_splits(ERRORS[name], seed=len(name)):
        assert outcome(pieces) == "invalid", [len(p) for p in pieces]


def test_error_messages_carry_no_values() -> None:
    """Messages are short and fixed: never a header value (nor a URL) from the input."""
    secret = b"s3cr3t-value"
    for data in (
        b"HTTP/1.1 200 OK\r\nX-A: " + secret + b"\x01\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + secret + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + secret + b"\r\n\r\n",
        CHUNKED_HEAD + secret + b"\r\n",
    ):
        with pytest.raises(InvalidResponse) as caught:
            whole(data)
        assert "s3cr3t" not in str(caught.value) and len(str(caught.value)) < 40


def test_valid_prefix_of_an_invalid_chunk_is_kept() -> None:
    """The error comes when the bad bytes arrive; the chunks before it were delivered,
    also those in the same read as the error."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(CHUNKED_HEAD + b"3\r\nabc\r\n", out) == 3
    with pytest.raises(InvalidResponse):
        parser.feed(b"2\r\nde\r\nzz\r\n", out)
    assert out == [b"abc", b"de"]


@pytest.mark.parametrize("code", [b"000", b"099"])
def test_status_below_100_rejected(code: bytes) -> None:
    """Status codes are 100-599 (RFC 9110 §15); a 0xx response is not an interim one.
    Here the 0xx response's body looks like a response and is taken as the real head."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    data = b"HTTP/1.1 " + code + b" X\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled
    with pytest.raises(InvalidResponse):
        whole(data)


# ------------------------------------------------------------------ limits, every split


def limit_cases(at_limit: bytes, over_limit: bytes, seed: int) -> None:
    """`at_limit` parses to a done response and `over_limit` is invalid, however split."""
    for pieces in all_splits(at_limit, seed):
        got = outcome(pieces)
        assert isinstance(got, Parsed) and got.done, [len(p) for p in pieces]
    for pieces in all_splits(over_limit, seed):
        assert outcome(pieces) == "invalid", [len(p) for p in pieces]


def head_of(size: int, final: bytes = b"Content-Length: 2\r\n") -> bytes:
    """A head of exactly `size` bytes (status line, filler field, `final`, empty line)."""
    fixed = b"HTTP/1.1 200 OK\r\nX-Filler: \r\n" + final + b"\r\n"
    return fixed.replace(b"X-Filler: ", b"X-Filler: " + b"f" * (size - len(fixed)))


def test_head_limit() -> None:
    """A head (status line + fields + empty line) of MAX_HEAD bytes is taken, one byte more
    is refused, however split (whole, byte by byte, random pieces)."""
    assert len(head_of(MAX_HEAD)) == MAX_HEAD
    limit_cases(head_of(MAX_HEAD) + b"ok", head_of(MAX_HEAD + 1) + b"ok", seed=1)


def test_head_limit_every_split_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same at every split point, with the limit lowered to keep the test quick."""
    monkeypatch.setattr(parser_module, "MAX_HEAD", 300)
    limit_cases(head_of(300) + b"ok", head_of(301) + b"ok", seed=2)


def test_head_limit_applies_to_each_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each interim head is measured alone: two heads of the limit each are fine."""
    monkeypatch.setattr(parser_module, "MAX_HEAD", 300)
    interim = head_of(300, b"X-Interim: 1\r\n").replace(b"200 OK", b"100 Go")
    limit_cases(interim + head_of(300) + b"ok", interim + head_of(301) + b"ok", seed=3)


def test_head_larger_than_max_head_incremental() -> None:
    """A head that grows past MAX_HEAD without ending is refused at once (the parser does
    not buffer it forever)."""
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n", [])
    line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    with pytest.raises(InvalidResponse):
        for _ in range(MAX_HEAD // len(line) + 2):
            parser.feed(line, [])
    assert parser.head is None


def test_head_that_cannot_end_within_the_limit_fails_at_once() -> None:
    """Refused as soon as the bytes without an end reach MAX_HEAD, not a read later."""
    data = head_of(MAX_HEAD + 10)[:MAX_HEAD]
    parser = ResponseParser()
    parser.feed(data[:-1], [])
    with pytest.raises(InvalidResponse):
        parser.feed(data[-1:], [])


def test_lines_that_cannot_end_within_the_limit_fail_at_once() -> None:
    """An unfinished chunk-size or trailer line is refused as soon as it is longer than
    MAX_LINE + its CR, not a read later."""
    for start in (CHUNKED_HEAD + b"2;e=", CHUNKED_HEAD + b"2\r\nhi\r\n0\r\nX-T: "):
        prefix_length = len(start) - start.rfind(b"\n") - 1
        data = start + b"x" * (MAX_LINE + 2 - prefix_length)
        parser = ResponseParser()
        parser.feed(data[:-1], [])
        with pytest.raises(InvalidResponse):
            parser.feed(data[-1:], [])


def size_line_response(size_line: bytes) -> bytes:
    return CHUNKED_HEAD + size_line + b"\r\nhi\r\n0\r\n\r\n"


def extension_of(length: int) -> bytes:
    """A chunk-size line for 2 bytes with an extension: `length` bytes without CRLF."""
    return b"2;e=" + b"x" * (length - 4)


def test_chunk_size_line_limit() -> None:
    """A chunk-size line (here: a long extension) of MAX_LINE bytes without its CRLF is
    taken, one byte more is refused, however split."""
    limit_cases(
        size_line_response(extension_of(MAX_LINE)),
        size_line_response(extension_of(MAX_LINE + 1)),
        seed=4,
    )


def test_chunk_size_line_limit_every_split_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser_module, "MAX_LINE", 40)
    limit_cases(size_line_response(extension_of(40)), size_line_response(extension_of(41)), seed=5)


def test_chunk_size_line_limit_between_other_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit holds for a line between chunks too (after data, in a read full of
    other chunks), not only for the first one."""
    monkeypatch.setattr(parser_module, "MAX_LINE", 40)
    chunks = b"3\r\nabc\r\n" * 5

    def response(line: bytes) -> bytes:
        return CHUNKED_HEAD + chunks + line + b"\r\nhi\r\n" + chunks + b"0\r\n\r\n"

    limit_cases(response(extension_of(40)), response(extension_of(41)), seed=6)


def test_overlong_chunk_size_line_without_end() -> None:
    """A chunk-size line longer than MAX_LINE with no end in sight is refused, whole or
    in pieces (nothing waits for its LF)."""
    data = CHUNKED_HEAD + b"5;ext=" + b"e" * (MAX_LINE + 10)
    with pytest.raises(InvalidResponse):
        whole(data)
    with pytest.raises(InvalidResponse):
        feed_all([data[i : i + 1000] for i in range(0, len(data), 1000)])


def trailer_response(length: int) -> bytes:
    """A chunked response whose second trailer line is `length` bytes without CRLF."""
    line = b"X-T: " + b"t" * (length - 5)
    return CHUNKED_HEAD + b"2\r\nhi\r\n0\r\nX-A: 1\r\n" + line + b"\r\nX-B: 2\r\n\r\n"


def test_trailer_line_limit() -> None:
    limit_cases(trailer_response(MAX_LINE), trailer_response(MAX_LINE + 1), seed=7)


def test_trailer_line_limit_every_split_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser_module, "MAX_LINE", 40)
    limit_cases(trailer_response(40), trailer_response(41), seed=8)


def test_overlong_trailer_line_without_end() -> None:
    data = CHUNKED_HEAD + b"0\r\nX-T: " + b"t" * (MAX_LINE + 10)
    with pytest.raises(InvalidResponse):
        feed_all([data[i : i + 1000] for i in range(0, len(data), 1000)])


def test_content_length_digits_limit() -> None:
    """Content-Length has at most 18 digits, leading zeros included (llhttp alone takes
    up to 2**64 - 1 and any number of zeros)."""
    assert MAX_LENGTH_DIGITS == 18

    def response(digits: int) -> bytes:
        value = b"0" * (digits - 1) + b"2"
        return b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nok"

    limit_cases(response(18), response(19), seed=9)
    got = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\nabc")
    assert (got.body, got.done) == (b"abc", False)


def test_chunk_size_digits_limit() -> None:
    """A chunk size has at most 15 hex digits, leading zeros included (llhttp alone takes
    16 and any number of zeros)."""
    assert MAX_SIZE_DIGITS == 15

    def response(digits: int, ext: bytes = b"") -> bytes:
        return size_line_response(b"0" * (digits - 1) + b"2" + ext)

    limit_cases(response(15), response(16), seed=10)
    limit_cases(response(15, b";a=b"), response(16, b";a=b"), seed=11)
    got = whole(CHUNKED_HEAD + b"fffffffffffffff\r\nabc")
    assert (got.body, got.done) == (b"abc", False)


def test_interim_limit() -> None:
    """MAX_INTERIM 1xx answers are skipped, one more is refused, however split."""
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    limit_cases(interim * MAX_INTERIM + final, interim * (MAX_INTERIM + 1) + final, seed=12)
