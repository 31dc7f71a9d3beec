"""The incremental splitters (SPEC §5): frames split across reads are re-joined."""

from __future__ import annotations

from gateway.framing import LineSplitter, SSESplitter


def feed_all(splitter: LineSplitter | SSESplitter, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out += splitter.feed(piece)
    return out + splitter.flush()


def every_split(cls: type, data: bytes) -> list[bytes]:
    """Same frames whole, byte by byte, and cut in two at every position."""
    whole = feed_all(cls(), [data])
    assert feed_all(cls(), [data[i : i + 1] for i in range(len(data))]) == whole
    for i in range(len(data) + 1):
        assert feed_all(cls(), [data[:i], b"", data[i:]]) == whole, i
    return whole


# ------------------------------------------------------------------ NDJSON


def test_lines_basic_and_split() -> None:
    data = b'{"a":1}\n{"b":"x\\ny"}\n{"c":3}\n'
    assert every_split(LineSplitter, data) == [b'{"a":1}', b'{"b":"x\\ny"}', b'{"c":3}']


def test_lines_crlf_and_blank_lines() -> None:
    data = b'{"a":1}\r\n\r\n  \n{"b":2}\r\n'
    assert every_split(LineSplitter, data) == [b'{"a":1}', b'{"b":2}']


def test_lines_tail_only_on_flush() -> None:
    s = LineSplitter()
    assert s.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert s.feed(b":2}") == []
    assert s.flush() == [b'{"b":2}']
    assert s.flush() == []


def test_lines_empty_input() -> None:
    s = LineSplitter()
    assert s.feed(b"") == [] and s.flush() == []


# ------------------------------------------------------------------ SSE


def test_sse_with_and_without_space() -> None:
    data = b'data: {"a":1}\n\ndata:{"b":2}\n\ndata:  two spaces\n\n'
    assert every_split(SSESplitter, data) == [b'{"a":1}', b'{"b":2}', b" two spaces"]


def test_sse_crlf() -> None:
    data = b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert every_split(SSESplitter, data) == [b'{"a":1}', b"[DONE]"]


def test_sse_multiline_data_joined() -> None:
    data = b"data: first\ndata: second\ndata:third\n\n"
    assert every_split(SSESplitter, data) == [b"first\nsecond\nthird"]


def test_sse_comments_and_other_fields_ignored() -> None:
    data = b": keep-alive\n\nevent: token\nid: 7\nretry: 100\ndata: x\n\n:\n\n"
    assert every_split(SSESplitter, data) == [b"x"]


def test_sse_event_needs_blank_line_until_flush() -> None:
    s = SSESplitter()
    assert s.feed(b"data: a\n") == []
    assert s.feed(b"data: b\n") == []
    assert s.feed(b"\n") == [b"a\nb"]


def test_sse_flush_unterminated_tail() -> None:
    s = SSESplitter()
    assert s.feed(b"data: done\n\ndata: last") == [b"done"]
    assert s.flush() == [b"last"]
    s = SSESplitter()
    assert s.feed(b"data: last\n") == []
    assert s.flush() == [b"last"]
    s = SSESplitter()
    assert s.feed(b": comment only") == []
    assert s.flush() == []
    assert s.flush() == []


def test_sse_many_events_one_read() -> None:
    data = b"".join(b"data: %d\n\n" % i for i in range(50))
    assert SSESplitter().feed(data) == [b"%d" % i for i in range(50)]
