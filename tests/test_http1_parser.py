"""Golden tests of gateway.http1.ResponseParser (RFC 9112 framing), pure bytes in / body out.

Every representative response is also fed cut at every single position and byte by byte:
the network may split a response anywhere, the result must not depend on where.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from gateway.http1 import InvalidResponse, ResponseParser
from gateway.http1.parser import MAX_HEAD, MAX_LINE

Head = tuple[int, str, list[tuple[str, str]]]


@dataclass(frozen=True)
class Parsed:
    head: Head | None
    body: bytes
    done: bool
    keep_alive: bool
    added: list[int]  # what each feed() returned


def feed_all(pieces: Iterable[bytes], eof: bool = False) -> Parsed:
    """Feed `pieces` in order; check each feed() returns the body bytes it appended."""
    parser = ResponseParser()
    out: list[bytes] = []
    added: list[int] = []
    for piece in pieces:
        before = len(out)
        n = parser.feed(piece, out)
        assert n == sum(len(chunk) for chunk in out[before:])
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


def same_outcome(a: Parsed, b: Parsed) -> bool:
    """Everything but the per-call return values (those depend on the split)."""
    return (a.head, a.body, a.done, a.keep_alive) == (b.head, b.body, b.done, b.keep_alive)


def lf(data: bytes) -> bytes:
    """The same response with bare-LF line ends (RFC 9112 §2.2)."""
    return data.replace(b"\r\n", b"\n")


LENGTH = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5;x=y\r\nhello\r\n"
    b'1a ; name="quoted" ; z\r\n' + b"b" * 26 + b"\r\n"
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
# Bare-LF variants (heads and chunk lines). The until-close body keeps its own bytes.
EXPECTED["length-lf"] = (lf(LENGTH), False, EXPECTED["length"][2])
EXPECTED["chunked-ext-trailers-lf"] = (lf(CHUNKED), False, EXPECTED["chunked-ext-trailers"][2])
EXPECTED["1xx-then-chunked-lf"] = (
    lf(INTERIM_THEN_CHUNKED),
    False,
    EXPECTED["1xx-then-chunked"][2],
)


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
    for i in range(len(data) + 1):
        got = feed_all([data[:i], b"", data[i:]], eof)
        assert same_outcome(got, expected), (i, got)
        assert sum(got.added) == len(expected.body), i


@pytest.mark.parametrize("name", list(EXPECTED))
def test_golden_byte_by_byte(name: str) -> None:
    """One byte per feed(): same outcome as whole."""
    data, eof, expected = EXPECTED[name]
    got = feed_all([data[i : i + 1] for i in range(len(data))], eof)
    assert same_outcome(got, expected), got
    assert sum(got.added) == len(expected.body)


def test_golden_every_two_split_points_chunked() -> None:
    """Cut in three anywhere (all pairs of cut points) in the chunked response: same outcome."""
    data, _, expected = EXPECTED["chunked-ext-trailers"]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            got = feed_all([data[:i], data[i:j], data[j:]])
            assert same_outcome(got, expected), (i, j)


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
    """A Content-Length body is done exactly when its last byte arrives."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123", out) == 4
    assert parser.done is False
    assert parser.feed(b"45678", out) == 5
    assert parser.done is False
    assert parser.feed(b"9", out) == 1
    assert (parser.done, parser.keep_alive) == (True, True)
    assert out == [b"0123", b"45678", b"9"]


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
    assert parser.eof() is True


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
    got = whole(data)
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
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n", False),
    ],
    ids=["http11", "http11-keep-alive", "http10", "connection-close", "close-in-list"],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    """HTTP/1.0 and a `close` connection option make the connection not reusable; the
    body is still framed by Content-Length."""
    got = whole(head + b"\r\nok")
    assert (got.body, got.done, got.keep_alive) == (b"ok", True, keep_alive)


def test_transfer_encoding_and_content_length() -> None:
    """Both framings present: chunked wins (the Content-Length is ignored) and the
    connection is never reused (a request-smuggling sign)."""
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    got = whole(data)
    assert (got.body, got.done, got.keep_alive) == (b"hello", True, False)


@pytest.mark.parametrize(
    "coding", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"Chunked\r\nTransfer-Encoding: br"]
)
def test_transfer_codings_other_than_chunked_are_invalid(coding: bytes) -> None:
    """We ask for identity: a body still compressed by a transfer coding cannot be relayed
    (nor framed reliably), so it is an invalid response rather than garbage passed on."""
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


def test_too_many_interim_responses() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" * 11 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(InvalidResponse):
        whole(data)
    got = whole(
        b"HTTP/1.1 100 Continue\r\n\r\n" * 10 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert got.head is not None and got.head[0] == 200


def test_bare_lf_search_does_not_reach_into_the_body() -> None:
    """A CRLF head whose body contains blank LF lines: the head ends at its CRLF end."""
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\na\n\nb\n\n"
    got = whole(data)
    assert (got.body, got.done) == (b"a\n\nb\n\n", True)


@pytest.mark.parametrize(
    "fields",
    [b"Content-Length: 5, 5\r\n", b"Content-Length: 5\r\nContent-Length: 5\r\n"],
    ids=["list", "two-fields"],
)
def test_repeated_identical_content_length_accepted(fields: bytes) -> None:
    """The same length repeated (as a list or as two fields) is one valid length."""
    got = whole(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello")
    assert (got.body, got.done, got.keep_alive) == (b"hello", True, True)


def test_field_values_trimmed_and_reason_kept() -> None:
    """Optional whitespace around a field value is dropped; the reason phrase keeps its
    spaces; an empty reason is allowed."""
    got = whole(
        b"HTTP/1.1 404 Not  Found Here\r\nX-A:\t v a l \t\r\nX-B:\r\nContent-Length: 0\r\n\r\n"
    )
    assert got.head == (
        404,
        "Not  Found Here",
        [("X-A", "v a l"), ("X-B", ""), ("Content-Length", "0")],
    )
    got = whole(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
    assert got.head == (200, "", [("Content-Length", "0")])


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
@pytest.mark.parametrize("separate", [False, True], ids=["same-feed", "later-feed"])
def test_bytes_beyond_the_body(data: bytes, separate: bool) -> None:
    """Bytes after the framed end (in the same read or a later one) make the connection
    not reusable and are not appended to the body."""
    body = b"" if data.startswith(b"HTTP/1.1 204") else b"ok"
    extra = b"HTTP/1.1 200 OK\r\n\r\n"
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


# ------------------------------------------------------------------ bare LF


def test_bare_lf_same_as_crlf() -> None:
    """Bare-LF heads and chunk lines parse exactly like their CRLF versions (including a
    bare LF after chunk data)."""
    for name in ("length", "chunked-ext-trailers", "1xx-then-chunked"):
        data, eof, expected = EXPECTED[name]
        assert same_outcome(whole(lf(data), eof), expected), name
    mixed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\n3\nabc\r\n2\r\nde\n0\n\n"
    got = whole(mixed)
    assert (got.body, got.done, got.keep_alive) == (b"abcde", True, True)


# ------------------------------------------------------------------ errors

STATUS_ERRORS = {
    "http2": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "two-digit-code": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "four-digit-code": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "letters-code": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "no-code": b"HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "lowercase-version": b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"garbage\r\n\r\n",
    "json": b'{"error": "nope"}\n\n',
}
FIELD_ERRORS = {
    "no-colon": b"X-A b\r\n",
    "space-before-colon": b"X-A : b\r\n",
    "tab-before-colon": b"X-A\t: b\r\n",
    "empty-name": b": b\r\n",
    "obs-fold": b"X-A: b\r\n  folded\r\n",
    "obs-fold-tab": b"X-A: b\r\n\tfolded: x\r\n",
    "cr-inside": b"X-A: b\rc\r\n",
    "conflicting-length-list": b"Content-Length: 5, 6\r\n",
    "conflicting-length-fields": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "length-letters": b"Content-Length: abc\r\n",
    "length-negative": b"Content-Length: -1\r\n",
    "length-plus": b"Content-Length: +5\r\n",
    "length-empty": b"Content-Length:\r\n",
    "length-hex": b"Content-Length: 0x5\r\n",
    "length-decimal-point": b"Content-Length: 5.0\r\n",
    "length-too-many-digits": b"Content-Length: 1234567890123456789\r\n",
}
CHUNK_ERRORS = {
    "0x-prefix": b"0x1a\r\n",
    "negative": b"-1\r\n",
    "underscore": b"1_0\r\n",
    "empty": b"\r\n",
    "not-hex": b"zz\r\n",
    "space-inside": b"1 0\r\n",
    "too-many-digits": b"1234567890abcdef\r\n",
    "no-crlf-after-data": b"5\r\nhelloX\r\n0\r\n\r\n",
    "cr-not-lf-after-data": b"5\r\nhello\rX0\r\n\r\n",
    "data-longer-than-size": b"2\r\nhello\r\n0\r\n\r\n",
}
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
ERRORS = {
    **{f"status-{k}": v for k, v in STATUS_ERRORS.items()},
    **{f"field-{k}": b"HTTP/1.1 200 OK\r\n" + v + b"\r\nhello" for k, v in FIELD_ERRORS.items()},
    **{f"chunk-{k}": CHUNKED_HEAD + v for k, v in CHUNK_ERRORS.items()},
    "101-switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
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
    data = ERRORS[name]
    with pytest.raises(InvalidResponse):
        feed_all([data[i : i + 1] for i in range(len(data))])


def test_valid_prefix_of_an_invalid_chunk_is_kept() -> None:
    """The error comes when the bad bytes arrive; the chunks before it were delivered."""
    parser = ResponseParser()
    out: list[bytes] = []
    assert parser.feed(CHUNKED_HEAD + b"3\r\nabc\r\n", out) == 3
    with pytest.raises(InvalidResponse):
        parser.feed(b"zz\r\n", out)
    assert out == [b"abc"]


def test_head_larger_than_max_head_incremental() -> None:
    """A head that grows past MAX_HEAD without ending is rejected (the parser does not
    buffer it forever)."""
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n", [])
    line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    with pytest.raises(InvalidResponse):
        for _ in range(MAX_HEAD // len(line) + 2):
            parser.feed(line, [])
    assert parser.head is None


def test_head_just_under_max_head_accepted() -> None:
    """A head somewhat under MAX_HEAD, fed in pieces, is fine."""
    head = (
        b"HTTP/1.1 200 OK\r\nX-Filler: "
        + b"f" * (MAX_HEAD - 200)
        + b"\r\nContent-Length: 2\r\n\r\n"
    )
    got = feed_all([head[i : i + 4096] for i in range(0, len(head), 4096)] + [b"ok"])
    assert (got.body, got.done) == (b"ok", True)


def test_overlong_chunk_size_line() -> None:
    """A chunk-size line (here: a long extension) longer than MAX_LINE with no end in sight
    is rejected, whole or in pieces."""
    data = CHUNKED_HEAD + b"5;ext=" + b"e" * (MAX_LINE + 10)
    with pytest.raises(InvalidResponse):
        whole(data)
    with pytest.raises(InvalidResponse):
        feed_all([data[i : i + 1000] for i in range(0, len(data), 1000)])


def test_overlong_trailer_line() -> None:
    """A trailer line longer than MAX_LINE with no end is rejected."""
    data = CHUNKED_HEAD + b"0\r\nX-T: " + b"t" * (MAX_LINE + 10)
    with pytest.raises(InvalidResponse):
        feed_all([data[i : i + 1000] for i in range(0, len(data), 1000)])


# ------------------------------------------------------------------ found in review


def test_head_larger_than_max_head_in_one_read() -> None:
    """The same oversized head is rejected however it is split: here it arrives whole
    (one socket read can carry up to 256 KiB)."""
    head = (
        b"HTTP/1.1 200 OK\r\nX-Filler: "
        + b"f" * (MAX_HEAD + 100)
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(InvalidResponse):
        whole(head)


def test_overlong_chunk_size_line_in_one_read() -> None:
    """An over-long chunk-size line is rejected even when its LF is in the same read."""
    data = CHUNKED_HEAD + b"2;ext=" + b"e" * (MAX_LINE + 10) + b"\r\nhi\r\n0\r\n\r\n"
    with pytest.raises(InvalidResponse):
        whole(data)


def test_close_in_second_connection_field() -> None:
    """Connection is a list field: `Connection: keep-alive` + `Connection: close` means
    close (RFC 9110 §5.3 / §7.6.1)."""
    data = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert whole(data).keep_alive is False


@pytest.mark.parametrize("code", [b"000", b"099"])
def test_status_below_100_rejected(code: bytes) -> None:
    """Status codes are 100-599 (RFC 9110 §15); a 0xx response is not an interim one.
    Here the 0xx response's body looks like a response and is taken as the real head."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    data = b"HTTP/1.1 " + code + b" X\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled
    with pytest.raises(InvalidResponse):
        whole(data)


def test_bare_cr_at_end_of_field_rejected() -> None:
    """`Content-Length: 2<CR><CR><LF>` carries a bare CR (RFC 9112 §2.2), like
    `X-A: b<CR>c`, which is rejected (field-cr-inside)."""
    with pytest.raises(InvalidResponse):
        whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\r\n\r\nhi")


def test_bare_lf_field_line_then_crlf_empty_line() -> None:
    """With LF accepted as a line end and a preceding CR ignored (RFC 9112 §2.2), LF CR LF
    is a line end followed by an empty line: the end of the head."""
    got = whole(b"HTTP/1.1 200 OK\nContent-Length: 2\n\r\nhi")
    assert got.head == (200, "OK", [("Content-Length", "2")])
    assert (got.body, got.done) == (b"hi", True)
