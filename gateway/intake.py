"""Client request intake: size limit, JSON, prompt/format checks, streaming mode."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from . import clientconn, errors
from .adapters.base import Call
from .config import CHAT, COMPLETIONS, EMBEDDINGS, RouteConfig
from .errors import GatewayError
from .jsondepth import TOO_DEEP, too_deep
from .jsonutil import JSONDecodeError, loads


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` (0 = none).

    The limit is the route's own (it may change on a reload), so it is enforced here
    while reading rather than by the application-wide `client_max_size`. A body still
    to come is read under the connection's watch (clientconn: `100 Continue` when owed,
    `client_body_timeout` between reads → 408, malformed framing → 400)."""
    length = request.content_length
    if limit and length is not None and length > limit:
        raise GatewayError(413, errors.BODY_TOO_LARGE)
    if request.content.is_eof():  # all there already (the usual small body): no wait
        return await _read_body(request, limit, length)
    conn = clientconn.await_body(request)
    try:
        return await _read_body(request, limit, length)
    except clientconn.BodyError as exc:
        raise GatewayError(exc.status, exc.message) from None
    finally:
        if conn is not None:
            conn.body_done()


async def _read_body(request: web.Request, limit: int, length: int | None) -> bytes:
    if not limit or length is not None:
        # Content-Length is within the limit and the parser stops at it.
        return await request.read()
    chunks: list[bytes] = []
    size = 0
    content = request.content
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, errors.BODY_TOO_LARGE)
        chunks.append(chunk)


def _is_prompt(value: Any) -> bool:
    """OpenAI's completions `prompt`: a string, or a non-empty list of strings or of
    token arrays (what each format can do with a list is the adapter's call)."""
    return isinstance(value, str) or (isinstance(value, list) and len(value) > 0)


def _is_input(value: Any) -> bool:
    """OpenAI's embeddings `input`: a non-empty string, or a non-empty list of them, of
    token ids, or of token-id lists (OpenAI refuses empty ones: there is nothing to
    embed, and some servers answer no vector at all)."""
    if isinstance(value, str):
        return value != ""
    return isinstance(value, list) and len(value) > 0 and "" not in value and [] not in value


def parse_body(raw: bytes, route_type: str) -> dict[str, Any]:
    """Steps 2–3, whatever the Content-Type (Kong#14536 let other types bypass checks)."""
    try:
        body = loads(raw) if raw else None
    except JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise GatewayError(400, errors.NO_PROMPTS)
    if too_deep(raw, body):
        raise GatewayError(400, TOO_DEEP)
    check_shape(body, route_type)
    return body


def check_shape(body: dict[str, Any], route_type: str) -> None:
    """The request's kind (messages, prompt or input) against the route type."""
    messages = body.get("messages")
    has_messages = isinstance(messages, list) and len(messages) > 0
    has_prompt = _is_prompt(body.get("prompt"))
    if route_type == EMBEDDINGS:
        if has_messages:
            raise GatewayError(400, errors.incompatible_format(CHAT, EMBEDDINGS))
        if has_prompt:
            raise GatewayError(400, errors.incompatible_format(COMPLETIONS, EMBEDDINGS))
        if not _is_input(body.get("input")):
            raise GatewayError(400, errors.NO_INPUT)
        return
    if not has_messages and not has_prompt:
        raise GatewayError(400, errors.NO_PROMPTS)
    if has_messages and has_prompt:
        raise GatewayError(400, errors.MULTIPLE_FORMATS)
    if has_messages and route_type == COMPLETIONS:
        raise GatewayError(400, errors.incompatible_format(CHAT, COMPLETIONS))
    if has_prompt and route_type == CHAT:
        raise GatewayError(400, errors.incompatible_format(COMPLETIONS, CHAT))


_ID_PREFIX = {CHAT: "chatcmpl-", COMPLETIONS: "cmpl-", EMBEDDINGS: "embd-"}


def make_call(cfg: RouteConfig, body: dict[str, Any], created: int) -> Call:
    """Step 5 (streaming mode) and the adapter-facing view of the request."""
    stream = body.get("stream") is True
    if cfg.route_type == EMBEDDINGS:
        stream = False  # embeddings never stream, whatever response_streaming says
    elif cfg.response_streaming == "deny":
        if stream:
            raise GatewayError(400, errors.STREAMING_DISABLED)
    elif cfg.response_streaming == "always":
        stream = True
    opts = body.get("stream_options")
    return Call(
        route_type=cfg.route_type,
        body=body,
        model=None,
        stream=stream,
        include_usage=stream and isinstance(opts, dict) and opts.get("include_usage") is True,
        id=_ID_PREFIX[cfg.route_type] + os.urandom(12).hex(),
        created=created,
    )
