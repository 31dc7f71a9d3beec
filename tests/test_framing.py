"""The incremental splitters: frames are re-joined the same way however the reads cut
them, and a frame past the size limit fails at the same byte however it is cut."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise

import pytest
from golden import call, model_options

from gateway.adapters import get_adapter
from gateway.framing import MAX_FRAME, FrameTooLarge, LineSplitter, SSESplitter


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


# ------------------------------------------------------------------ any cutting


def cuttings(data: bytes, seed: int) -> Iterator[list[bytes]]:
    """Whole, byte by byte, in two at every position (with an empty read), and in up to
    twelve pieces at seeded random positions."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(len(data) + 1):
        yield [data[:i], b"", data[i:]]
    rng = random.Random(seed)
    for _ in range(40):
        bounds = [0, *sorted(rng.randint(0, len(data)) for _ in range(rng.randint(1, 11)))]
        bounds.append(len(data))
        yield [data[a:b] for a, b in pairwise(bounds)]


def lines_reference(data: bytes) -> list[bytes]:
    return [s for line in data.split(b"\n") if (s := line.strip())]


def sse_reference(data: bytes) -> list[bytes]:
    events: list[bytes] = []
    values: list[bytes] = []
    for line in [*data.split(b"\n"), b""]:
        line = line.removesuffix(b"\r")
        if not line and values:
            events.append(b"\n".join(values))
            values = []
        elif line.startswith(b"data:"):
            values.append(line[5:].removeprefix(b" "))
    return events


def random_stream(rng: random.Random, sse: bool) -> bytes:
    if sse:
        kinds = [b"data: %s", b"data:%s", b"data:  %s", b": ping", b"event: e", b"id: 3", b""]
    else:
        kinds = [b'{"t":"%s"}', b"  ", b""]
    out = []
    for _ in range(rng.randint(0, 12)):
        line = rng.choice(kinds)
        if b"%s" in line:
            line %= b"x" * rng.randint(0, 30)
        out.append(line + rng.choice([b"\n", b"\r\n"]))
    if rng.random() < 0.5:
        out.append(rng.choice(kinds).replace(b"%s", b"tail"))  # unfinished at EOF
    return b"".join(out)


@pytest.mark.parametrize("sse", [False, True], ids=["ndjson", "sse"])
def test_random_streams_any_cutting_match_the_reference(sse: bool) -> None:
    cls, reference = (SSESplitter, sse_reference) if sse else (LineSplitter, lines_reference)
    rng = random.Random(5)
    for n in range(150):
        data = random_stream(rng, sse)
        expected = reference(data)
        for pieces in cuttings(data, n):
            assert feed_all(cls(), pieces) == expected, (data, pieces)


# ------------------------------------------------------------------ frame size limit

# (splitter, frame before, the frame to size, frame after); a frame's size is its bytes
# up to the newline that ends it: for SSE the whole event but the blank line's LF.
SIZED = {
    "ndjson": (LineSplitter, b'{"a":1}\n', b'{"big":"%s"}\n', b'{"b":2}\n'),
    "ndjson-crlf": (LineSplitter, b'{"a":1}\r\n', b'{"big":"%s"}\r\n', b'{"b":2}\r\n'),
    "sse": (SSESplitter, b"data: a\n\n", b'data: {"big":"%s"}\n\n', b"data: b\n\n"),
    "sse-crlf": (SSESplitter, b": hi\r\n\r\n", b"data: %s\r\n\r\n", b"data: b\r\n\r\n"),
    "sse-lines": (
        SSESplitter,
        b"data: a\n\n",
        b": c\nid: 1\ndata: %s\ndata: 2\n\n",
        b"data: b\n\n",
    ),
}


def fed_until_raise(cls: type, limit: int, pieces: list[bytes]) -> tuple[list[bytes], range]:
    """The frames a splitter with max_frame=limit returned, and the stream offsets of the
    piece whose feed raised FrameTooLarge (an empty range when none did)."""
    s = cls(limit)
    out: list[bytes] = []
    at = 0
    for piece in pieces:
        try:
            out += s.feed(piece)
        except FrameTooLarge as exc:
            assert str(exc) == "upstream stream frame too large"
            assert s.flush() == []  # spent: it holds nothing any more
            return out, range(at, at + len(piece))
        at += len(piece)
    return out + s.flush(), range(0)


@pytest.mark.parametrize("case", list(SIZED))
def test_frame_at_the_limit_passes_and_one_byte_more_fails_at_that_byte(case: str) -> None:
    cls, before, frame, after = SIZED[case]
    frame = frame.replace(b"%s", b"y" * 40)
    size = len(frame) - 1
    data = before + frame + after
    expected = feed_all(cls(), [data])
    assert len(expected) >= 2
    for i, pieces in enumerate(cuttings(data, seed=len(case))):
        assert fed_until_raise(cls, size, pieces) == (expected, range(0)), pieces
        out, raised_by = fed_until_raise(cls, size - 1, pieces)
        # Not one byte early, not one read late: the read holding the first byte past the
        # limit raises, and nothing of the frame, or after it, was returned.
        assert len(before) + size - 1 in raised_by, (i, pieces)
        assert out in ([], expected[:1]), pieces


def test_frame_too_large_is_not_a_value_error() -> None:
    # Handlers that take ValueError for one unreadable frame must not catch it.
    assert not issubclass(FrameTooLarge, (ValueError, TypeError, KeyError))


ENDLESS = {
    "ndjson line": (LineSplitter, b"", b"x" * 4093),
    "sse line": (SSESplitter, b"data: ", b"x" * 4093),
    "sse event": (SSESplitter, b"", b"data: " + b"x" * 4087 + b"\n"),
}


@pytest.mark.parametrize("case", list(ENDLESS))
def test_endless_frame_raises_as_it_passes_the_limit(case: str) -> None:
    cls, start, piece = ENDLESS[case]
    s = cls()
    fed = len(start)
    assert s.feed(start) == []
    with pytest.raises(FrameTooLarge):
        for _ in range(MAX_FRAME // len(piece) + 2):
            assert s.feed(piece) == []
            fed += len(piece)
    assert fed <= MAX_FRAME < fed + len(piece)


@pytest.mark.parametrize("cls", [LineSplitter, SSESplitter])
def test_unfinished_line_is_held_as_its_pieces(cls: type) -> None:
    # Re-joining what is held with every read would cost time quadratic in a long line;
    # the pieces stay as they came until the newline arrives.
    s = cls()
    pieces = [b"data: ", *(b"%d" % i * 100 for i in range(50))]
    for n, piece in enumerate(pieces, 1):
        assert s.feed(piece) == []
        assert len(s._parts) == n
        assert sum(map(len, s._parts)) == sum(map(len, pieces[:n]))
    line = b"".join(pieces)
    assert s.feed(b"\n\n") == [line.removeprefix(b"data: ") if cls is SSESplitter else line]
    assert s._parts == []


# ------------------------------------------------------------------ through a decoder

DECODERS = {
    "ollama": (
        "ollama",
        model_options("ollama", 11434, "/api/chat"),
        b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}\n',
        b'{"model":"m","message":{"role":"assistant","content":"',
    ),
    "raw-llamacpp": (
        "raw",
        model_options("raw", 8080, "/completion", raw_flavor="llamacpp"),
        b'data: {"content":"hi","stop":false}\n\n',
        b'data: {"content":"',
    ),
}


@pytest.mark.parametrize("case", list(DECODERS))
def test_frame_too_large_propagates_from_the_decoder(case: str) -> None:
    fmt, opts, token, start = DECODERS[case]
    dec = get_adapter(fmt).decoder(call({}, stream=True), opts)
    assert len(dec.feed(token)) == 1
    assert dec.feed(start) == []
    fed = len(start)
    with pytest.raises(FrameTooLarge):
        for _ in range(MAX_FRAME // 65536 + 2):
            assert dec.feed(b"x" * 65536) == []
            fed += 65536
    assert fed <= MAX_FRAME
    # The stream cannot be read past it: the decoder takes nothing more.
    assert dec.feed(b'"}\n\n') == [] and dec.finish() == []
    assert not dec.done
