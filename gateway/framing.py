"""Incremental splitters for upstream stream framings.

Upstreams write frames in whatever pieces TCP gives us; a JSON line or an SSE event may
arrive split over several reads (Kong does not re-join NDJSON, we do). Each splitter
keeps the unfinished frame and returns only complete frames.

An unfinished line is held as the pieces it arrived in and joined once, when its newline
arrives: re-joining it with every read would make a long line that comes in small reads
cost time quadratic in its length. So each byte is scanned and copied a bounded number
of times, however the stream is cut.

A frame may hold at most `max_frame` bytes: everything received since the previous frame
ended, up to the newline that ends this one (for SSE the newlines inside the event count,
as they are held too). The splitters raise `FrameTooLarge` as soon as the unfinished frame
passes the limit, so an upstream that never ends its line cannot make us hold more than
that. A splitter that raised is spent: it holds nothing and its stream is unreadable.
"""

from __future__ import annotations

from typing import Protocol

# An LLM stream frame is one token or a final-stats object: a few hundred bytes to a few
# KiB. A tool call, or a final frame that repeats the whole answer, can be far larger; a
# MiB leaves room for those while still bounding what one stream can make us hold.
MAX_FRAME = 1 << 20

# A read that ends with a blank line ends an event and leaves nothing unfinished.
_EVENT_END = (b"\n\n", b"\n\r\n")


class FrameTooLarge(Exception):
    """An upstream frame grew past `max_frame`. Deliberately not a ValueError: it is not
    one unreadable frame to skip or report as such, the rest of the stream cannot be
    framed at all."""

    def __init__(self) -> None:
        super().__init__("upstream stream frame too large")


class Splitter(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """One network read → the frames it completes, in order."""
        ...

    def flush(self) -> list[bytes]:
        """End of input → the frames still unfinished that count anyway."""
        ...


class LineSplitter:
    """NDJSON: one JSON document per line; blank lines ignored; surrounding whitespace
    (a CR before the LF included) stripped."""

    __slots__ = ("_held", "_max", "_parts")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._parts: list[bytes] = []  # the unfinished line, as it arrived
        self._held = 0  # len of _parts, joined

    def feed(self, data: bytes) -> list[bytes]:
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._held + len(data) > self._max:  # else no line of this read can be too long
            self._check(lines, tail)
        if lines and self._parts:
            self._parts.append(lines[0])
            lines[0] = b"".join(self._parts)
            self._parts = []
            self._held = 0
        if tail:
            self._parts.append(tail)
            self._held += len(tail)
        return [s for line in lines if (s := line.strip())]

    def _check(self, lines: list[bytes], tail: bytes) -> None:
        limit = self._max
        if lines:
            long = self._held + len(lines[0]) > limit or len(tail) > limit
            long = long or any(len(line) > limit for line in lines)
        else:
            long = self._held + len(tail) > limit
        if long:
            raise self._spent()

    def _spent(self) -> FrameTooLarge:
        self._parts = []
        self._held = 0
        return FrameTooLarge()

    def flush(self) -> list[bytes]:
        """A last line without its newline is still a line."""
        tail = b"".join(self._parts).strip()
        self._parts = []
        self._held = 0
        return [tail] if tail else []


class SSESplitter:
    """Server-sent events: returns the `data` payload of each complete event.

    Follows the WHATWG parsing rules that matter here: `data:` with or without one
    space, several `data:` lines joined with "\\n", comment lines (`:` keep-alives) and
    other fields ignored, CRLF or LF line ends, an event ends at a blank line.
    """

    __slots__ = ("_data", "_max", "_parts", "_size")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._parts: list[bytes] = []  # the unfinished line, as it arrived
        self._size = 0  # bytes of the unfinished event so far, _parts included
        self._data: list[bytes] = []  # its data values so far

    def feed(self, data: bytes) -> list[bytes]:
        size = self._size + len(data)  # the unfinished event, if this read ends none
        lines = data.split(b"\n")
        tail = lines.pop()
        if not lines:  # the line goes on
            if size > self._max:
                raise self._spent()
            if tail:
                self._parts.append(tail)
                self._size = size
            return []
        if size <= self._max and data.endswith(_EVENT_END):
            self._size = 0  # the per-chunk hot path: a read that ends with whole events
            if self._parts:
                self._parts.append(lines[0])
                lines[0] = b"".join(self._parts)
                self._parts = []
        else:
            self._size = self._measure(lines, tail)
        events: list[bytes] = []
        self._lines(lines, events)
        return events

    def _join(self, lines: list[bytes]) -> int:
        """Completes the held line with the first line of this read; returns the length of
        the part that was held."""
        parts = self._parts
        parts.append(lines[0])
        lines[0] = line = b"".join(parts)
        self._parts = []
        return len(line) - len(parts[-1])

    def _measure(self, lines: list[bytes], tail: bytes) -> int:
        """The unfinished event's size once this read is in (holding its tail), or
        FrameTooLarge if some frame of the read passes the limit."""
        size, limit = self._size, self._max
        if self._parts:
            size -= self._join(lines)  # counted again below, in its whole line
        for line in lines:
            if not line or line == b"\r":  # a blank line: the event ends at its newline
                if size + len(line) > limit:
                    raise self._spent()
                size = 0
            else:
                size += len(line) + 1
                if size > limit:
                    raise self._spent()
        if tail:
            size += len(tail)
            if size > limit:
                raise self._spent()
            self._parts.append(tail)
        return size

    def _spent(self) -> FrameTooLarge:
        self._parts = []
        self._size = 0
        self._data.clear()
        return FrameTooLarge()

    def _lines(self, lines: list[bytes], events: list[bytes]) -> None:
        # One loop over all the lines of a read, with no call per line: this is the hot path.
        data = self._data
        for line in lines:
            if line and line[-1] == 13:  # CR: slicing and indexing beat method calls here
                line = line[:-1]
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data.clear()
            elif line[:6] == b"data: ":
                data.append(line[6:])
            elif line[:5] == b"data:":
                data.append(line[5:])
            else:
                self._field(line)

    def _field(self, line: bytes) -> None:
        """A line other than `data:` or a blank one (never empty, no line end)."""
        # comments (":...") and other fields (event:, id:, retry:) carry nothing we use

    def flush(self) -> list[bytes]:
        """At end of input, an event not closed by a blank line still counts."""
        events: list[bytes] = []
        if self._parts:
            line = b"".join(self._parts)
            self._parts = []
            self._lines([line], events)
        if self._data:
            events.append(b"\n".join(self._data))
            self._data.clear()
        self._size = 0
        return events
