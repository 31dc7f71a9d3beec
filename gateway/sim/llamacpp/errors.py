"""llama-server's error answers: its error objects, its statuses' default messages,
and the exact words of its 400s (nlohmann::json's parse errors, prompt and embeddings
input checks), shared by the native endpoints and the `/v1` layer.

One module because clients (and the gateway's error mapping) match on these words;
keeping them together keeps them consistent across endpoints.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sim.base import Core
from gateway.sim.openai import phrase
from gateway.sim.wire import json_response

JSON_TYPE = "application/json; charset=utf-8"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
_ERROR_MESSAGES = {
    400: "Invalid request",
    401: "Invalid API Key",
    404: "File Not Found",
    500: "Internal server error",
    501: "This server does not support this feature",
    503: "Loading model",
}
# nlohmann::json's words, which llama-server quotes in its 400s.
_EMPTY_INPUT = (
    "attempting to parse an empty input; check that your input string or stream "
    "contains the expected JSON"
)
BAD_PROMPT = (
    '"prompt" elements must be a string, a list of tokens, a JSON object containing a '
    "prompt string, or a list of mixed strings & tokens."
)
_NO_PROMPT = "[json.exception.out_of_range.403] key 'prompt' not found"
NO_EMBEDDINGS = "This server does not support embeddings. Start it with `--embeddings`"
NO_INPUT = '"input" or "content" must be provided'
EMPTY_CONTENT = '"input" must not be empty'
POOLING_NONE = "Pooling type 'none' is not OAI compatible. Please use a different pooling type"
BAD_ENCODING = "The format to return the embeddings in. Can be either float or base64"


def error_obj(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    type_ = type_ or _ERROR_TYPES.get(status, "server_error")
    return {"error": {"code": status, "message": message, "type": type_}}


def error(status: int, message: str | None = None) -> web.Response:
    message = message or _ERROR_MESSAGES.get(status, phrase(status))
    return _closing(json_response(error_obj(status, message), status, JSON_TYPE))


def _closing(resp: web.Response) -> web.Response:
    # llama-server (cpp-httplib) answers every error status with `Connection: close`.
    resp.force_close()
    return resp


def unavailable(core: Core) -> web.Response | None:
    """The refusal while the model loads (generation and `/health` alike)."""
    return error(503) if core.behaviour.loading else None


def _json_type(doc: Any) -> str:
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "boolean"
    if isinstance(doc, int | float):
        return "number"
    if isinstance(doc, str):
        return "string"
    return "array" if isinstance(doc, list) else "object"


def json_error(raw: bytes) -> str:
    """llama-server's message for a body that is not a JSON object."""
    try:
        doc = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        return "[json.exception.parse_error.101] " + _parse_error(raw, exc.pos)
    return f"[json.exception.type_error.304] cannot use at() with {_json_type(doc)}"


def _parse_error(raw: bytes, pos: int) -> str:
    """nlohmann::json's parse error: where, and the token it read up to the first
    character that broke it (a misspelt true/false/null is read as far as it matches)."""
    text = raw.decode("utf-8", "replace")
    if not text:
        return f"parse error at line 1, column 1: {_EMPTY_INPUT}"
    pos = min(pos, len(text))
    read = text[pos : pos + 1]
    for literal in ("true", "false", "null"):
        if read and literal.startswith(read):
            n = 1
            while n < len(literal) and text[pos + n : pos + n + 1] == literal[n]:
                n += 1
            read = text[pos : pos + n + 1]
            break
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + max(len(read), 1)
    where = f"parse error at line {line}, column {column}: syntax error while parsing value"
    if not read:
        return f"{where} - unexpected end of input; expected '[', '{{', or a literal"
    return f"{where} - invalid literal; last read: '{read}'"


def prompt_error(body: dict[str, Any]) -> str | None:
    if "prompt" not in body:
        return _NO_PROMPT
    prompt = body["prompt"]
    if isinstance(prompt, bool) or not isinstance(prompt, str | list | dict):
        return BAD_PROMPT
    return None
