"""HTTP/1.1 response parsing on llhttp (httptools), as a pure byte-in / body-out state
machine (no I/O).

llhttp checks the syntax, strictly: the status line and fields (RFC 9112 §4, §5), the
Content-Length value, the chunked coding (§7.1). CRLF is the only line end (the bare LF
that §2.2 lets a recipient accept is an error), fields carry no control characters, chunk
extensions no whitespace. What llhttp leaves to its caller is done here:

- limits: a head (status line, fields, empty line) of at most MAX_HEAD bytes; chunk-size
  and trailer lines of at most MAX_LINE bytes; Content-Length of at most 18 digits, chunk
  sizes of at most 15 hex digits (llhttp only refuses what overflows 64 bits); at most
  MAX_INTERIM 1xx answers; however the bytes are split into reads;
- framing (§6.3) and reuse: 204 / 304 have no body, a response without Content-Length
  or Transfer-Encoding runs until the connection closes, any transfer coding but exactly
  `chunked` is refused (llhttp itself refuses Transfer-Encoding with Content-Length),
  HTTP/1.0 or a `close` option ends the connection after the response, and so do bytes
  past the end of the message.

llhttp sees each head on its own (this module finds where it ends, which also measures
it) and the bytes of a chunked body. A Content-Length or until-close body never goes
through it: llhttp hands body bytes out as copies, and such a body has nothing to check.

httptools reports neither positions nor chunk sizes, yet the line limits need both: the
chunk callbacks append markers to the same list as the body pieces, in order, and a walk
over that list (`_walk`) finds the framing lines between the pieces (§7.1 fixes their
shape, which llhttp enforces). A stream costs one feed_data call, C-level callbacks and
that short walk per read.
"""

from __future__ import annotations

from functools import partial

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from multidict import CIMultiDict

from .errors import InvalidResponse

MAX_HEAD = 64 * 1024  # status line + fields + empty line; more is not an LLM server talking
MAX_LINE = 8 * 1024  # one chunk-size or trailer line, without its CRLF
MAX_INTERIM = 10  # 1xx responses before the real one
MAX_LENGTH_DIGITS = 18  # Content-Length: below 10**18, far inside 64 bits
MAX_SIZE_DIGITS = 15  # chunk size: below 16**15

# What the parser is reading.
_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _DONE = range(5)
# Where a chunked body stands at the end of a read. _SIZE: in a chunk-size line.
# _AFTER_SIZE: past one, no data yet: data follows, or the trailer section if it was the
# last chunk (llhttp reports data as it goes, so bytes here with no data are trailers).
# _DATA: in chunk data or in the CRLF after it.
_SIZE, _AFTER_SIZE, _DATA = range(3)

_HEAD_END = b"\r\n\r\n"
_HTTP1 = (b"HTTP/1.1 ", b"HTTP/1.0 ")
# The chunk-complete marker. Compared by identity: llhttp hands out new bytes objects
# (or the interpreter's shared empty and one-byte ones), never this one.
_CHUNK_END = b"<chunk end>"
_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
_NO_CALLBACKS = object()  # llhttp looks callbacks up by name: it finds none here

Head = tuple[int, str, CIMultiDict[str]]


class _ChunkSink:
    """The llhttp callbacks of a chunked body: bound C methods appending to one list, so
    no Python frame runs per chunk. It holds no reference to the parser: no reference
    cycle, so a parser dropped mid-body is freed at once."""

    __slots__ = ("on_body", "on_chunk_complete", "on_chunk_header")

    def __init__(self, events: list[bytes | None]) -> None:
        self.on_body = events.append
        self.on_chunk_header = partial(events.append, None)
        self.on_chunk_complete = partial(events.append, _CHUNK_END)


class ResponseParser:
    """Feed it the bytes of one response; it fills `head`, appends body bytes to the
    caller's list as they arrive, and sets `done` at the body's end."""

    __slots__ = (
        "_buf",
        "_events",
        "_interim",
        "_left",
        "_llhttp",
        "_mode",
        "_partial",
        "_state",
        "body_length",
        "done",
        "head",
        "keep_alive",
    )

    def __init__(self) -> None:
        self.head: Head | None = None
        self.done = False
        self.keep_alive = True  # the connection may carry another request afterwards
        self.body_length: int | None = None  # as announced: Content-Length, 0 if no body
        self._mode = _HEAD
        self._buf: bytes | bytearray = b""  # a head not complete yet (then a bytearray)
        self._interim = 0
        self._left = 0  # Content-Length body bytes still to come
        self._llhttp: HttpResponseParser | None = None
        self._events: list[bytes | None] = []
        self._state = _SIZE
        self._partial = b""  # the unfinished chunk-size or trailer line of the last read

    def feed(self, data: bytes, out: list[bytes]) -> int:
        """Parse `data`; body bytes go to `out`. Returns how many body bytes were added.
        Raises InvalidResponse for anything that is not a well-framed response."""
        mode = self._mode
        if mode == _CHUNKED:
            # On an empty read llhttp would report an empty body piece, which a reader
            # takes for the end of the body.
            return self._chunked(data, out) if data else 0
        if mode == _LENGTH:
            left = self._left
            n = len(data)
            if n < left:
                self._left = left - n
                if n:
                    out.append(data)
                return n
            self._left = 0
            self._finish()
            if n > left:
                self.keep_alive = False  # bytes past the end: do not trust the framing
                data = data[:left]
            out.append(data)
            return left
        if mode == _UNTIL_CLOSE:
            if data:
                out.append(data)
            return len(data)
        if mode == _DONE:
            if data:
                self.keep_alive = False
            return 0
        return self._head(data, out)

    def eof(self) -> bool:
        """The connection closed: True if that ends the body (until-close framing)."""
        if self._mode == _UNTIL_CLOSE:
            self._finish()
        return self.done

    def _finish(self) -> None:
        self._mode = _DONE
        self.done = True
        self._llhttp = None

    # ------------------------------------------------------------------ head

    def _head(self, data: bytes, out: list[bytes]) -> int:
        buf: bytes | bytearray = data
        start = 0
        if self._buf:
            start = max(len(self._buf) - 3, 0)  # the end of the head may straddle reads
            self._buf += data
            buf = self._buf
        base = 0  # where the current head starts in buf
        fed = len(buf) - len(data)  # llhttp has seen buf up to here
        while True:
            end = buf.find(_HEAD_END, start, base + MAX_HEAD)
            if end < 0:
                if len(buf) - base >= MAX_HEAD:  # cannot end within the limit any more
                    raise InvalidResponse("response head too large")
                prefix = buf[base : base + 9]
                if not any(version.startswith(prefix) for version in _HTTP1):
                    raise InvalidResponse("invalid status line")
                # llhttp sees the bytes now: a malformed head fails at once, not after
                # the read timeout.
                self._head_bytes(buf if fed == 0 else buf[fed:])
                if buf is data or base:
                    self._buf = bytearray(buf[base:])
                return 0
            end += len(_HEAD_END)
            if not buf.startswith(_HTTP1, base):  # llhttp also takes HTTP/2.0, RTSP/, ICE/
                raise InvalidResponse("invalid status line")
            head = buf if base == 0 and end == len(buf) else buf[base:end]
            self._head_bytes(head if fed == base else buf[fed:end])
            status = self._head_done(head)
            if status >= 200:
                break
            # 100 Continue / 103 Early Hints: the real answer follows.
            self._interim += 1
            if status == 101 or status < 100 or self._interim > MAX_INTERIM:
                raise InvalidResponse("unexpected status")
            base = start = fed = end
        if end == len(buf):
            self._buf = b""
            return 0
        if buf is data:
            return self.feed(data[end:], out)
        self._buf = b""
        return self.feed(bytes(buf[end:]), out)

    def _head_bytes(self, data: bytes | bytearray) -> None:
        """Give llhttp the next bytes of a head (a fresh parser for each head)."""
        llhttp = self._llhttp
        if llhttp is None:
            llhttp = self._llhttp = HttpResponseParser(_NO_CALLBACKS)
        try:
            llhttp.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            if llhttp.get_status_code() == 101:
                raise InvalidResponse("unexpected status") from None
            raise InvalidResponse("invalid response head") from None

    def _head_done(self, head: bytes | bytearray) -> int:
        """A whole head that llhttp took; for a final one, set `head` and decide the
        framing. Returns the status code."""
        # No error up to the first empty line: the head is complete (CRLF is the only
        # line end llhttp takes, so that empty line is the one that ends the head).
        assert self._llhttp is not None
        status = self._llhttp.get_status_code()
        self._llhttp = None
        if status < 200:
            return status
        # llhttp checked the shape (CRLF lines, `name:` with no space before the colon,
        # no control characters), so a split is all the fields need. Field callbacks
        # would cost a Python call per field.
        lines = head.decode("latin-1").split("\r\n")
        fields: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:-2]:
            name, _, value = line.partition(":")
            fields.add(name, value.strip(" \t"))
        self.head = (status, lines[0][13:], fields)  # the reason after "HTTP/1.1 200 "
        self.keep_alive = head[7] == 0x31 and not _close_requested(fields)
        if status in (204, 304):
            # A 304's Content-Length is the length it did not send (RFC 9110 §8.6); a 204
            # announcing a body may send bytes that would be read as the next answer.
            if status == 204 and (
                "Transfer-Encoding" in fields or fields.get("Content-Length", "0") != "0"
            ):
                self.keep_alive = False
            self.body_length = 0
            self._finish()
        elif "Transfer-Encoding" in fields:
            # llhttp refuses Transfer-Encoding together with Content-Length (a smuggling
            # sign). It would read `gzip, chunked` as chunked and `gzip` as until-close;
            # we ask for identity: a coded body could not be relayed.
            codings = [
                c.strip().lower() for v in fields.getall("Transfer-Encoding") for c in v.split(",")
            ]
            if codings != ["chunked"]:
                raise InvalidResponse("unsupported transfer coding")
            self._mode = _CHUNKED
            # A parser with the chunk callbacks, primed with a minimal head: llhttp cannot
            # start mid-message, and a non-chunked answer then pays for no callbacks.
            self._llhttp = HttpResponseParser(_ChunkSink(self._events))
            self._llhttp.feed_data(_CHUNKED_HEAD)
        elif "Content-Length" in fields:
            value = fields["Content-Length"]  # llhttp checked: digits, one value
            if len(value) > MAX_LENGTH_DIGITS:
                raise InvalidResponse("invalid Content-Length")
            self.body_length = self._left = int(value)
            if self._left:
                self._mode = _LENGTH
            else:
                self._finish()
        else:
            self._mode = _UNTIL_CLOSE
            self.keep_alive = False
        return status

    # ------------------------------------------------------------------ chunked

    def _chunked(self, data: bytes, out: list[bytes]) -> int:
        assert self._llhttp is not None
        events = self._events
        try:
            self._llhttp.feed_data(data)
        except HttpParserError:
            failed = True  # maybe only in bytes past the end: the walk tells
        else:
            failed = False
        try:
            added = self._walk(data, events, out)
        finally:
            events.clear()
        if failed and not self.done:
            raise InvalidResponse("malformed chunked body")
        return added

    def _walk(self, data: bytes, events: list[bytes | None], out: list[bytes]) -> int:
        """Deliver the body pieces and check the framing lines between them."""
        added = pos = 0
        state = self._state
        partial = self._partial  # the start of a line cut by the previous read
        for event in events:
            if event is None:  # a chunk-size line ended: at the first LF from pos
                nl = data.find(b"\n", pos)
                if partial:
                    _check_size_line(partial + data[pos:nl])
                    partial = b""
                elif nl - pos - 1 > MAX_SIZE_DIGITS:  # shorter lines pass both limits
                    _check_size_line(data[pos:nl])
                pos = nl + 1
                state = _AFTER_SIZE
            elif event is _CHUNK_END:
                if state == _DATA:  # past the CRLF after the data; its CR may be in partial
                    pos += 2 - len(partial)
                    partial = b""
                    state = _SIZE
                else:  # after the last chunk: the trailer section and its empty line
                    self._partial = partial
                    pos = self._trailers(data, pos, True)
                    self._finish()
                    if pos < len(data):
                        self.keep_alive = False  # bytes past the end of the message
                    return added
            else:
                out.append(event)
                n = len(event)
                added += n
                pos += n
                state = _DATA
        self._state = state
        self._partial = partial
        if pos < len(data):
            if state == _AFTER_SIZE:
                self._trailers(data, pos, False)
            else:
                partial += data[pos:]
                if len(partial) > MAX_LINE + 1:  # + the CR; the LF is still to come
                    raise InvalidResponse("chunk-size line too long")
                self._partial = partial
        return added

    def _trailers(self, data: bytes, pos: int, ended: bool) -> int:
        """Check the trailer lines that are complete in data[pos:]; with `ended` (llhttp
        saw the empty line) stop after it. Returns the position after the last line."""
        partial = self._partial
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            length = len(partial) + nl - pos - 1  # without CRLF
            partial = b""
            pos = nl + 1
            if length > MAX_LINE:
                raise InvalidResponse("trailer line too long")
            if ended and length == 0:
                return pos
        partial += data[pos:]
        if len(partial) > MAX_LINE + 1:
            raise InvalidResponse("trailer line too long")
        self._partial = partial
        return len(data)


def _check_size_line(line: bytes) -> None:
    """A chunk-size line, with its CR: within MAX_LINE, the size within its digits."""
    if len(line) - 1 > MAX_LINE:
        raise InvalidResponse("chunk-size line too long")
    semi = line.find(b";")
    if (semi if semi >= 0 else len(line) - 1) > MAX_SIZE_DIGITS:
        raise InvalidResponse("chunk size too large")


def _close_requested(fields: CIMultiDict[str]) -> bool:
    """A `close` connection option (RFC 9112 §9.6), in any Connection field."""
    values = fields.getall("Connection", None)
    return values is not None and any(
        token.strip().lower() == "close" for value in values for token in value.split(",")
    )
