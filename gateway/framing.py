"""Incremental splitters for upstream stream framings.

Upstreams write frames in whatever pieces TCP gives us; a JSON line or an SSE event may
arrive split over several reads (Kong does not re-join NDJSON, we do). Each splitter
keeps the unfinished tail and returns only complete frames.
"""

from __future__ import annotations


class LineSplitter:
    """NDJSON: one JSON document per line; blank lines ignored."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        return [line for line in (ln.strip() for ln in lines) if line]

    def flush(self) -> list[bytes]:
        """Frames left at end of input: a last line without its newline is still a line."""
        tail, self._tail = self._tail.strip(), b""
        return [tail] if tail else []


class SSESplitter:
    """Server-sent events: returns the `data` payload of each complete event.

    Follows the WHATWG parsing rules that matter here: `data:` with or without one
    space, several `data:` lines joined with "\\n", comment lines (`:` keep-alives) and
    other fields ignored, CRLF or LF line ends, an event ends at a blank line.
    """

    __slots__ = ("_data", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        for line in lines:
            self._line(line, events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append(b"\n".join(self._data))
                self._data = []
            return
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            self._data.append(value)
        # comments (":...") and other fields (event:, id:, retry:) carry nothing we use

    def flush(self) -> list[bytes]:
        """At end of input, an event not closed by a blank line still counts."""
        events: list[bytes] = []
        if self._tail:
            tail, self._tail = self._tail, b""
            self._line(tail, events)
        if self._data:
            events.append(b"\n".join(self._data))
            self._data = []
        return events
