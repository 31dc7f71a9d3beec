"""HTTP/1.1 response parsing, as a pure byte-in / body-out state machine (no I/O).

RFC 9112: status line and fields (§4, §5), message body length (§6.3), chunked coding
(§7.1). Lenient only where the RFC allows a recipient to be (a bare LF as line end,
§2.2); everything else that could frame a body two ways is an error.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict

from .errors import InvalidResponse

MAX_HEAD = 64 * 1024  # status line + fields; more is not an LLM server talking
MAX_LINE = 8 * 1024  # one chunk-size or trailer line
MAX_INTERIM = 10  # 1xx responses before the real one

_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(r"[0-9]{1,18}")

# Body framings.
_LENGTH, _CHUNKED, _UNTIL_CLOSE = range(3)
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ResponseParser:
    """Feed it the bytes of one response; it fills `head`, appends body bytes to the
    caller's list as they arrive, and sets `done` at the body's end."""

    __slots__ = ("_buf", "_chunk", "_framing", "_interim", "_left", "done", "head", "keep_alive")

    def __init__(self) -> None:
        self.head: tuple[int, str, CIMultiDict[str]] | None = None
        self.done = False
        self.keep_alive = True  # the connection may carry another request afterwards
        self._buf = b""  # unparsed head bytes, or a partial chunk-size / trailer line
        self._framing = _LENGTH
        self._left = 0  # body bytes (or bytes of the current chunk) still to come
        self._chunk = _SIZE
        self._interim = 0

    def feed(self, data: bytes, out: list[bytes]) -> int:
        """Parse `data`; body bytes go to `out`. Returns how many body bytes were added.
        Raises InvalidResponse for anything that is not a well-framed response."""
        if self.head is None:
            data = self._head(data)
            if self.head is None:
                return 0
        if self.done:
            if data:
                self.keep_alive = False  # bytes past the end: do not trust the framing
            return 0
        framing = self._framing
        if framing == _LENGTH:
            left = self._left
            if len(data) < left:
                self._left = left - len(data)
            else:
                self._left = 0
                self.done = True
                if len(data) > left:
                    self.keep_alive = False
                    data = data[:left]
        elif framing == _CHUNKED:
            return self._chunked(data, out)
        if data:
            out.append(data)
        return len(data)

    def eof(self) -> bool:
        """The connection closed: True if that ends the body (until-close framing)."""
        if self.head is not None and self._framing == _UNTIL_CLOSE:
            self.done = True
        return self.done

    # ------------------------------------------------------------------ head

    def _head(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        while True:
            end, sep = _head_end(buf)
            if end < 0 or end > MAX_HEAD:
                if len(buf) > MAX_HEAD:  # however the bytes were split into reads
                    raise InvalidResponse("response head too large")
                self._buf = buf
                return b""
            status, reason, headers, http11 = _parse_head(buf[:end])
            buf = buf[end + sep :]
            if status >= 200:
                break
            self._interim += 1
            if status == 101 or status < 100 or self._interim > MAX_INTERIM:
                raise InvalidResponse("unexpected status")
            # 100 Continue / 103 Early Hints: the real answer follows.
        self._buf = b""
        self._framing_of(status, headers, http11)
        self.head = (status, reason, headers)
        if self._framing == _LENGTH and self._left == 0:
            self.done = True
        return buf

    def _framing_of(self, status: int, headers: CIMultiDict[str], http11: bool) -> None:
        """How the body ends (RFC 9112 §6.3) and whether the connection is reusable."""
        connection = ",".join(headers.getall("Connection", ())).lower()
        self.keep_alive = http11 and "close" not in connection
        te = headers.getall("Transfer-Encoding", None)
        if status in (204, 304):
            self._framing, self._left = _LENGTH, 0
            if status == 204 and (te is not None or headers.get("Content-Length", "0") != "0"):
                # A 204 may not announce a body (a 304's Content-Length is the length it
                # did not send, RFC 9110 §8.6); one that does may send bytes that would
                # be read as the next answer on this connection.
                self.keep_alive = False
            return
        if te is not None:
            if "Content-Length" in headers:
                self.keep_alive = False  # both present: a smuggling sign, never reuse
            codings = [c.strip().lower() for value in te for c in value.split(",")]
            if codings != ["chunked"]:
                # We ask for identity; a compressed or unknown coding cannot be relayed.
                raise InvalidResponse("unsupported transfer coding")
            self._framing, self._chunk = _CHUNKED, _SIZE
            return
        lengths = headers.getall("Content-Length", None)
        if lengths is None:
            self._framing, self.keep_alive = _UNTIL_CLOSE, False
            return
        values = {v.strip() for value in lengths for v in value.split(",")}
        value = values.pop()
        if values or not _DIGITS.fullmatch(value):
            raise InvalidResponse("invalid Content-Length")
        self._framing, self._left = _LENGTH, int(value)

    # ------------------------------------------------------------------ chunked

    def _chunked(self, data: bytes, out: list[bytes]) -> int:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        added = 0
        pos, end = 0, len(data)
        state = self._chunk
        while pos < end:
            if state == _DATA:
                take = min(end - pos, self._left)
                out.append(data[pos : pos + take])
                added += take
                pos += take
                self._left -= take
                if self._left == 0:
                    state = _DATA_END
            elif state == _DATA_END:
                if data[pos] == 10:  # bare LF
                    pos += 1
                elif data[pos] == 13 and pos + 1 < end and data[pos + 1] == 10:
                    pos += 2
                elif data[pos] == 13 and pos + 1 == end:
                    break  # the LF is in the next read
                else:
                    raise InvalidResponse("malformed chunked body")
                state = _SIZE
            else:  # _SIZE or _TRAILER: one line
                nl = data.find(b"\n", pos)
                if nl < 0 or nl - pos > MAX_LINE:
                    break  # an over-long line fails below, however it was split
                line = _unterminated(data[pos:nl])
                pos = nl + 1
                if state == _TRAILER:
                    if not line:  # end of the message
                        self._chunk = state
                        self.done = True
                        if pos < end:
                            self.keep_alive = False
                        return added
                    continue  # trailer fields are not used
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise InvalidResponse("malformed chunked body")
                self._left = int(size, 16)
                state = _DATA if self._left else _TRAILER
        self._chunk = state
        if pos < end:
            if end - pos > MAX_LINE:
                raise InvalidResponse("malformed chunked body")
            self._buf = data[pos:]
        return added


def _head_end(buf: bytes) -> tuple[int, int]:
    """Where the head ends (the LF of its last line) and how long the empty line after
    it is; (-1, 0) if not yet. Any mix of CRLF and bare LF (§2.2)."""
    crlf = buf.find(b"\n\r\n")
    # The bare-LF form only before that point: never scan a long body for it.
    lf = buf.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else MAX_HEAD + 2)
    if lf >= 0:
        return lf, 2
    return crlf, 3


def _unterminated(line: bytes) -> bytes:
    """A line without its terminator: the LF is already cut; one CR before it goes."""
    return line[:-1] if line.endswith(b"\r") else line


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str], bool]:
    lines = head.split(b"\n")
    status_line = _unterminated(lines[0])
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or b"\r" in status_line:
        raise InvalidResponse("invalid status line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        raise InvalidResponse("invalid status line")
    headers: CIMultiDict[str] = CIMultiDict()
    for raw in lines[1:]:
        line = _unterminated(raw)
        name, colon, value = line.partition(b":")
        # No colon, whitespace around the name (also a folded line) or a stray CR.
        if not colon or not name or name[0] in b" \t" or name[-1] in b" \t" or b"\r" in line:
            raise InvalidResponse("invalid response header")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return int(code), reason, headers, parts[0] == b"HTTP/1.1"
