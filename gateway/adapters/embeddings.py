"""`route_type: llm/v1/embeddings`: one adapter per `llama2_format`.

Whatever the upstream, the client gets OpenAI's answer: `{"object":"list","data":[{"object":
"embedding","index":i,"embedding":[…]}],"model","usage":{"prompt_tokens","total_tokens"}}`,
each embedding a list of floats or, with `encoding_format: "base64"`, the base64 of its
little-endian float32 bytes (the openai SDK asks for base64 by default and decodes it).

- `ollama`: `/api/embed` `{"model","input",…}` → `{"model","embeddings":[[…]],
  "total_duration","load_duration","prompt_eval_count"}`; text only. A target URL on the
  legacy `/api/embeddings` sends `{"model","prompt"}` (one text) and reads `{"embedding"}`.
- `openai`: `/v1/embeddings`, the client's body with the effective model; the answer is
  passed through byte for byte when it already has the encoding the client asked for.
- `raw` (`raw_flavor: llamacpp`): llama-server's native `/embedding` `{"content": …}` →
  `[{"index":i,"embedding":[[…]]}]`, one row per input when the server pools (one per
  token with `--pooling none`, which we refuse: clients want one vector per input);
  older builds answer `{"embedding":[…]}` or `{"results":[…]}`. No token counts.

Embeddings never stream (intake), so these adapters have no decoders.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from typing import Any

from ..config import ModelOptions
from ..jsonutil import JSONDecodeError, dumps, loads
from .base import Adapter, Call, Parsed, ResponseError, StreamDecoder, TransformError, Usage
from .common import error_message, estimate_tokens, usage_from_openai

FLOAT = "float"
BASE64 = "base64"
_BIG_ENDIAN = sys.byteorder == "big"
# Client keys that only make sense for generation: an embeddings upstream must answer
# one JSON body, and OpenAI's own API refuses keys it does not know.
_NOT_FOR_EMBEDDINGS = ("stream", "stream_options")
# Ollama front-door fields other servers have no use for: `keep_alive` only says how
# long Ollama keeps the model in memory, `truncate` how it treats an over-long input.
_OLLAMA_HINTS = frozenset({"keep_alive", "truncate"})

Input = str | list[int]
Vector = list[float] | str  # floats, or base64 float32 as an upstream sent it


# ------------------------------------------------------------------ the request


def encoding(body: dict[str, Any]) -> str:
    """The client's `encoding_format`: float (also when absent) or base64."""
    value = body.get("encoding_format")
    if value is None or value == FLOAT:
        return FLOAT
    if value == BASE64:
        return BASE64
    shown = dumps(value).decode()
    raise TransformError(f'encoding_format: {shown} is not supported (use "float" or "base64")')


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_is_token(t) for t in value)


def inputs(body: dict[str, Any]) -> list[Input]:
    """OpenAI's `input` as a list of inputs: a string, a list of strings, one list of
    token ids, or a list of token-id lists (a string and token lists may mix)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise TransformError("input: must be a string or a non-empty list")
    if _is_tokens(value):
        return [value]  # one input given as token ids
    out: list[Input] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) and not _is_tokens(item):
            raise TransformError(f"input[{i}]: must be a string or a non-empty list of token ids")
        out.append(item)
    return out


def estimated_usage(items: list[Input]) -> Usage:
    """Prompt tokens counted by us: token ids as given, text at ≈4 characters a token."""
    n = sum(len(item) if isinstance(item, list) else estimate_tokens(item) for item in items)
    return Usage(n, 0, n, estimated=True)


def _foreign_fields(call: Call, fmt: str) -> None:
    """Ollama-native fields (from the Ollama front door) that a `fmt` server cannot
    take are refused by name; scheduling hints are dropped."""
    if call.native_options:
        names = ", ".join(sorted(call.native_options))
        raise TransformError(f"options ({names}): Ollama model options cannot go to a {fmt} server")
    for key in call.native_fields or ():
        if key not in _OLLAMA_HINTS:
            raise TransformError(f"{key}: not supported by a {fmt} embeddings server")


# ------------------------------------------------------------------ the answer


def _load(body: bytes, who: str) -> Any:
    try:
        return loads(body)
    except JSONDecodeError:
        raise ResponseError(f"failed to decode {who} embeddings response") from None


def _numbers(value: Any, where: str) -> list[float]:
    """`value` when it is a list of numbers (checked in C, not element by element)."""
    if isinstance(value, list):
        try:
            array("d", value)
        except (TypeError, OverflowError):
            pass
        else:
            return value
    raise ResponseError(f"{where}: the embedding is not a list of numbers")


def _from_base64(value: str, where: str) -> list[float]:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) % 4:
        raise ResponseError(f"{where}: the embedding is not base64 of float32 values")
    floats = array("f", raw)
    if _BIG_ENDIAN:
        floats.byteswap()
    return floats.tolist()


def _to_base64(vector: list[float]) -> str:
    floats = array("f", vector)  # float32, as OpenAI sends them
    if _BIG_ENDIAN:
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def _encoded(vector: Vector, enc: str, where: str) -> Vector:
    if enc == BASE64:
        return vector if isinstance(vector, str) else _to_base64(vector)
    return _from_base64(vector, where) if isinstance(vector, str) else vector


def _count(items: list[Input], got: int, who: str) -> None:
    n = len(items)
    if got != n:
        raise ResponseError(f"{who} answered {got} embeddings for {n} input{'s' * (n != 1)}")


def response(vectors: list[Vector], enc: str, model: str | None, usage: Usage) -> bytes:
    """The OpenAI embeddings body for the client."""
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, enc, f"data[{i}]")}
        for i, v in enumerate(vectors)
    ]
    return dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }
    )


class _Embeddings(Adapter):
    def decoder(self, call: Call, opts: ModelOptions) -> StreamDecoder:
        # Intake never lets an embeddings request stream: reaching this is our bug.
        raise NotImplementedError("embeddings never stream")


# ------------------------------------------------------------------ ollama


def _legacy(opts: ModelOptions) -> bool:
    """A target on Ollama's legacy `/api/embeddings` (one `prompt`, one `embedding`)."""
    return opts.upstream_url.path.split("?", 1)[0].rstrip("/").endswith("/api/embeddings")


class OllamaEmbeddings(_Embeddings):
    format = "ollama"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        body = call.body
        encoding(body)
        items = inputs(body)
        if any(isinstance(item, list) for item in items):
            raise TransformError("input: ollama embeds text only, not token ids (send strings)")
        # Ollama's own fields first, so they can never replace the model or the input.
        out: dict[str, Any] = dict(call.native_fields or {})
        out["model"] = call.model if call.model is not None else body.get("model")
        dimensions = body.get("dimensions")
        if _legacy(opts):
            if len(items) != 1:
                raise TransformError("input: /api/embeddings takes one text (use /api/embed)")
            if dimensions is not None:
                raise TransformError(
                    "dimensions: not supported by /api/embeddings (use /api/embed)"
                )
            out["prompt"] = items[0]
        else:
            out["input"] = body["input"]
            if dimensions is not None:
                out["dimensions"] = dimensions
        if call.native_options:
            out["options"] = dict(call.native_options)
        return out

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        obj = _load(body, "ollama")
        if not isinstance(obj, dict):
            raise ResponseError("failed to decode ollama embeddings response")
        if "error" in obj:
            raise ResponseError("ollama error: " + error_message(obj["error"]))
        items = inputs(call.body)
        vectors: list[Vector]
        if _legacy(opts):
            vectors = [_numbers(obj.get("embedding"), "'embedding' of ollama")]
        else:
            embeddings = obj.get("embeddings")
            if not isinstance(embeddings, list):
                raise ResponseError("'embeddings' not in ollama embed response")
            _count(items, len(embeddings), "ollama")
            vectors = [_numbers(v, f"embeddings[{i}]") for i, v in enumerate(embeddings)]
        # Ollama leaves `prompt_eval_count` out when it is 0, and /api/embeddings never
        # gives it.
        count = obj.get("prompt_eval_count")
        usage = Usage(count, 0, count) if isinstance(count, int) else estimated_usage(items)
        upstream = obj.get("model") if isinstance(obj.get("model"), str) else None
        out = response(vectors, encoding(call.body), call.model or upstream, usage)
        return Parsed(out, usage, upstream)


# ------------------------------------------------------------------ openai


class OpenAIEmbeddings(_Embeddings):
    format = "openai"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        encoding(call.body)
        inputs(call.body)
        _foreign_fields(call, self.format)
        out = {k: v for k, v in call.body.items() if k not in _NOT_FOR_EMBEDDINGS}
        if call.model is not None:
            out["model"] = call.model
        return out

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        obj = _load(body, "openai")
        if not isinstance(obj, dict):
            raise ResponseError("failed to decode openai embeddings response")
        data = obj.get("data")
        if not isinstance(data, list):
            if "error" in obj:
                raise ResponseError("upstream error: " + error_message(obj["error"]))
            raise ResponseError("'data' not in embeddings response")
        items = inputs(call.body)
        _count(items, len(data), "the upstream")
        enc = encoding(call.body)
        as_asked = True
        vectors: list[tuple[Any, Vector]] = []
        for i, item in enumerate(data):
            where = f"data[{i}]"
            value = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(value, list) and value and isinstance(value[0], list):
                # llama-cpp-python with a model that does not pool: one row per token.
                raise ResponseError(
                    f"{where}: one embedding per token (a model without pooling), not one per input"
                )
            vector: Vector = value if isinstance(value, str) else _numbers(value, where)
            # Servers that ignore `encoding_format` (llama-cpp-python) send floats anyway.
            as_asked = as_asked and isinstance(vector, str) == (enc == BASE64)
            vectors.append((item.get("index"), vector))
        model = obj.get("model") if isinstance(obj.get("model"), str) else None
        usage = usage_from_openai(obj.get("usage")) or estimated_usage(items)
        if as_asked:
            return Parsed(body, usage, model)
        if all(_is_token(index) for index, _ in vectors):
            vectors.sort(key=lambda pair: pair[0])
        out = response([v for _, v in vectors], enc, model or call.model, usage)
        return Parsed(out, usage, model)


# ------------------------------------------------------------------ llama.cpp


class LlamaCppEmbeddings(_Embeddings):
    format = "raw"

    def build(self, call: Call, opts: ModelOptions) -> dict[str, Any]:
        if opts.raw_flavor != "llamacpp":
            # Config refuses this; kept for adapters used without it.
            raise TransformError("TGI (raw_flavor: hf) has no embeddings endpoint")
        body = call.body
        encoding(body)
        inputs(body)
        _foreign_fields(call, "llama.cpp")
        if body.get("dimensions") is not None:
            raise TransformError("dimensions: llama.cpp cannot shorten embeddings (leave it out)")
        return {"content": body["input"]}

    def parse(self, call: Call, opts: ModelOptions, body: bytes) -> Parsed:
        obj = _load(body, "llama.cpp")
        if isinstance(obj, dict):
            if "error" in obj:
                raise ResponseError("llama.cpp error: " + error_message(obj["error"]))
            results = obj.get("results")  # older builds, for a list of inputs
            found = results if isinstance(results, list) else [obj] if "embedding" in obj else None
        else:
            found = obj if isinstance(obj, list) else None
        if found is None:
            raise ResponseError("'embedding' not in llama.cpp response")
        items = inputs(call.body)
        _count(items, len(found), "llama.cpp")
        rows: list[tuple[Any, Vector]] = []
        for i, entry in enumerate(found):
            where = f"[{i}]"
            value = entry.get("embedding") if isinstance(entry, dict) else None
            if isinstance(value, list) and value and isinstance(value[0], list):
                if len(value) != 1:
                    raise ResponseError(
                        f"{where}: llama.cpp answered one embedding per token "
                        "(--pooling none): start llama-server with --pooling mean, cls or last"
                    )
                value = value[0]
            index = entry.get("index") if isinstance(entry, dict) else None
            rows.append((index, _numbers(value, where)))
        if all(_is_token(index) for index, _ in rows):
            rows.sort(key=lambda pair: pair[0])
        usage = estimated_usage(items)  # the native answer counts no tokens
        out = response([v for _, v in rows], encoding(call.body), call.model, usage)
        return Parsed(out, usage, None)


EMBEDDING_ADAPTERS: dict[str, Adapter] = {
    a.format: a for a in (OllamaEmbeddings(), LlamaCppEmbeddings(), OpenAIEmbeddings())
}
