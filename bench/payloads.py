"""Wire bytes shared by the benchmark's upstreams (nginx and `stream_server.py`) and clients.

Everything here is fixed bytes, built once: the upstreams answer without any per-request
work, so they never become what is measured.

Streamed token text carries a marker `~<scheduled send time, µs of CLOCK_MONOTONIC>~`.
The client (another process on the same machine, same clock) finds the markers in
whatever framing arrives (Ollama NDJSON, TGI SSE, OpenAI SSE, or the gateway's
re-framed OpenAI SSE) and computes each chunk's lateness against the upstream's
schedule and the time to first token, without parsing JSON.
"""

from __future__ import annotations

import json
import re

MODEL = "llama2"
TEXT = "The quick brown fox jumps over the lazy dog."
CREATED_AT = "2024-01-15T08:13:38.876196Z"

# Client request bodies (OpenAI chat shape; Ollama/TGI/OpenAI upstreams accept or
# ignore it when the client talks to them directly). The stream prompt tells
# `stream_server.py` how many chunks to send and at which interval (ms).
NONSTREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a mathematician."},
            {"role": "user", "content": "What is 1+1?"},
        ],
        "stream": False,
    },
    separators=(",", ":"),
).encode()


def stream_body(n_chunks: int, interval_ms: int) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"bench n={n_chunks} iv={interval_ms}"}],
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()


STREAM_PARAMS = re.compile(rb"n=(\d+) iv=(\d+)")
MARKER = re.compile(rb"~(\d+)~")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ------------------------------------------------------------------ non-stream answers

OLLAMA_CHAT = _dumps(
    {
        "model": MODEL,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": TEXT},
        "done_reason": "stop",
        "done": True,
        "total_duration": 4_883_583_458,
        "load_duration": 1_334_875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342_546_000,
        "eval_count": 10,
        "eval_duration": 4_535_599_000,
    }
)
TGI_GENERATE = _dumps(
    {
        "generated_text": TEXT,
        "details": {"finish_reason": "eos_token", "generated_tokens": 11, "seed": None},
    }
)
OPENAI_CHAT = _dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_705_306_418,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 26, "completion_tokens": 10, "total_tokens": 36},
    }
)
OPENAI_MODELS = _dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
)
OLLAMA_ROOT = b"Ollama is running"

# path -> (content type, body) for POST generation without streaming; GET probes.
NONSTREAM = {
    "/api/chat": ("application/json; charset=utf-8", OLLAMA_CHAT),
    "/generate": ("application/json", TGI_GENERATE),
    "/v1/chat/completions": ("application/json", OPENAI_CHAT),
}
PROBES = {
    "/": ("text/plain; charset=utf-8", OLLAMA_ROOT),
    "/health": ("application/json", b""),
    "/v1/models": ("application/json", OPENAI_MODELS),
}


# ------------------------------------------------------------------ stream frames
# Each kind: (content type, token frame with one %d for the marker, final frames).


def _ollama_token(marker: str) -> bytes:
    return (
        _dumps(
            {
                "model": MODEL,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": marker},
                "done": False,
            }
        )
        + b"\n"
    )


def _ollama_final(n: int) -> bytes:
    return (
        _dumps(
            {
                "model": MODEL,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "done": True,
                "total_duration": 700_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": 9,
                "prompt_eval_duration": 2_000_000,
                "eval_count": n,
                "eval_duration": n * 10_000_000,
            }
        )
        + b"\n"
    )


def _tgi_token(marker: str) -> bytes:
    token = {"id": 1000, "text": marker, "logprob": -0.1, "special": False}
    return (
        b"data:" + _dumps({"index": 1, "token": token, "generated_text": None, "details": None})
    ) + b"\n\n"


def _tgi_final(n: int) -> bytes:
    eos = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}
    details = {"finish_reason": "eos_token", "generated_tokens": n + 1, "seed": None}
    # generated_text has no markers: only token frames carry them.
    doc = {"index": n + 1, "token": eos, "generated_text": "bench", "details": details}
    return b"data:" + _dumps(doc) + b"\n\n"


def _openai_chunk(delta: dict[str, str], finish: str | None) -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_705_306_418,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + _dumps(doc) + b"\n\n"


def _openai_token(marker: str) -> bytes:
    return _openai_chunk({"content": marker}, None)


def _openai_final(n: int) -> bytes:
    return _openai_chunk({}, "stop") + b"data: [DONE]\n\n"


def _template(make: object) -> tuple[bytes, bytes]:
    """Split a frame built around a placeholder marker into (before, after) bytes."""
    frame = make(" ~0~")  # type: ignore[operator]
    before, _, after = frame.partition(b" ~0~")
    return before + b" ~", b"~" + after


STREAM_KINDS = {
    "ollama": ("application/x-ndjson", _template(_ollama_token), _ollama_final),
    "tgi": ("text/event-stream", _template(_tgi_token), _tgi_final),
    "openai": ("text/event-stream", _template(_openai_token), _openai_final),
}


def token_frame(kind: str, scheduled_us: int) -> bytes:
    before, after = STREAM_KINDS[kind][1]
    return before + str(scheduled_us).encode() + after
