"""A raw HTTP/1.1 client over a real socket, for what no real client would send: heads
byte by byte, stalled bodies, broken framing, odd request lines. Every wait is bounded
(a hang is a failure, never a timing assertion)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

WAIT = 10.0  # the bound on any single wait; far above every timeout the tests configure


@dataclass
class Answer:
    status: int
    version: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self
        return json.loads(self.body)

    def error(self) -> str:
        """The gateway's error text (asserting the JSON error shape)."""
        doc = self.json()
        assert set(doc) == {"error"} and isinstance(doc["error"]["message"], str), doc
        message: str = doc["error"]["message"]
        return message


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes, every: float) -> None:
        """`data` one byte at a time; stops quietly when the gateway hangs up."""
        try:
            for i in range(len(data)):
                await self.send(data[i : i + 1])
                await asyncio.sleep(every)
        except (ConnectionError, OSError):
            pass

    async def head(self, wait: float = WAIT) -> bytes:
        """Bytes up to the end of the next response head (a `100 Continue` is one)."""
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), wait)

    async def answer(self, wait: float = WAIT) -> Answer:
        """The next final response (Content-Length framed, as every gateway-made answer)."""
        raw = await self.head(wait)
        lines = raw.decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.add(name.strip(), value.strip())
        length = int(headers.get("Content-Length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), wait) if length else b""
        return Answer(int(status), version, headers, body)

    async def closed(self, wait: float = WAIT) -> bytes:
        """Waits for the gateway to close the connection; returns what came before."""
        out = b""
        async with asyncio.timeout(wait):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (ConnectionError, OSError):
                    return out
                if not chunk:
                    return out
                out += chunk

    def close(self) -> None:
        self.writer.close()


def request(
    method: str = "POST",
    path: str = "/chat",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request's bytes (Content-Length from `body`, unless given)."""
    fields = {"Host": "gw", **(headers or {})}
    if body is not None and "Content-Length" not in fields:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + (body or b"")
