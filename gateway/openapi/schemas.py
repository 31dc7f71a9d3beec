"""The fixed part of the OpenAPI document: request and answer schemas of the
OpenAI-shaped route API (the Ollama front door's are in `ollama.py`).

Request schemas name the fields the gateway reads or maps (docs/fields.md) and allow
others (an `openai` target gets the client's body as it is). Answer schemas require
what every answer carries, whatever the upstream's format (docs/api.md, "Answers").
OpenAPI 3.0: `nullable` instead of a `null` type.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}
STR_LIST: Schema = {"type": "array", "items": STR}
TOKENS: Schema = {"type": "array", "items": INT}
_STOP: Schema = _nullable({"oneOf": [STR, {**STR_LIST, "maxItems": 4}]})
_USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "total_tokens"],
    "properties": {"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT},
}

# Sampling and length fields chat and completions share.
_SAMPLING: dict[str, Schema] = {
    "model": {**STR, "description": "selects targets by `model.name` / `model_alias`"},
    "stream": _nullable(BOOL),
    "stream_options": _nullable(
        {"type": "object", "properties": {"include_usage": BOOL}},
    ),
    "max_tokens": _nullable({**INT, "minimum": 1}),
    "temperature": _nullable({**NUM, "minimum": 0, "maximum": 2}),
    "top_p": _nullable({**NUM, "minimum": 0, "maximum": 1}),
    "top_k": _nullable(INT),
    "n": _nullable({**INT, "minimum": 1, "maximum": 128}),
    "stop": _STOP,
    "seed": _nullable(INT),
    "presence_penalty": _nullable({**NUM, "minimum": -2, "maximum": 2}),
    "frequency_penalty": _nullable({**NUM, "minimum": -2, "maximum": 2}),
    "logit_bias": _nullable({"type": "object", "additionalProperties": NUM}),
    "user": STR,
}

_CONTENT_PART: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url", "input_audio", "file"]},
        "text": STR,
        "image_url": {"type": "object", "properties": {"url": STR, "detail": STR}},
    },
}

_TOOL_CALL: Schema = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": STR,
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {"name": STR, "arguments": STR},
        },
    },
}

_TEXT_OR_PARTS: Schema = {"oneOf": [STR, {"type": "array", "items": _CONTENT_PART}]}


def _role(names: list[str], required: list[str], **props: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["role", *required],
        "properties": {"role": {"type": "string", "enum": names}, "name": STR, **props},
    }


# By role, as OpenAI's schema has it: what each kind of message must carry.
_MESSAGE: Schema = {
    "oneOf": [
        _role(["system", "developer", "user"], ["content"], content=_TEXT_OR_PARTS),
        _role(
            ["assistant"],
            [],
            content=_nullable(_TEXT_OR_PARTS),
            tool_calls={"type": "array", "items": _TOOL_CALL},
            reasoning_content=STR,
        ),
        _role(["tool"], ["content", "tool_call_id"], content=_TEXT_OR_PARTS, tool_call_id=STR),
        _role(["function"], ["name", "content"], content=_nullable(STR)),
    ]
}

TOOL: Schema = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": STR, "description": STR, "parameters": OBJ, "strict": BOOL},
        },
    },
}

_RESPONSE_FORMAT: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": STR, "description": STR, "schema": OBJ, "strict": BOOL},
        },
    },
}

CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        **_SAMPLING,
        "max_completion_tokens": _nullable({**INT, "minimum": 1}),
        "tools": {"type": "array", "items": TOOL},
        "tool_choice": {
            "oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type"], "properties": {"type": STR}},
            ]
        },
        "parallel_tool_calls": BOOL,
        "response_format": _RESPONSE_FORMAT,
        "logprobs": _nullable(BOOL),
        "top_logprobs": _nullable({**INT, "minimum": 0, "maximum": 20}),
    },
}


def _text_or_tokens(text: Schema) -> Schema:
    """OpenAI's `prompt` / `input`: a text, a list of texts, token ids, or lists of them."""
    tokens = {**TOKENS, "minItems": 1}
    return {
        "oneOf": [
            text,
            {"type": "array", "minItems": 1, "items": text},
            tokens,
            {"type": "array", "minItems": 1, "items": tokens},
        ]
    }


COMPLETIONS_REQUEST: Schema = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": _text_or_tokens(STR),
        **_SAMPLING,
        "suffix": _nullable(STR),
        "echo": _nullable(BOOL),
        "best_of": _nullable({**INT, "minimum": 0, "maximum": 20}),
        "logprobs": _nullable({**INT, "minimum": 0, "maximum": 5}),
    },
}

EMBEDDINGS_REQUEST: Schema = {
    "type": "object",
    "required": ["input"],
    "properties": {
        # Empty strings and token lists are refused (nothing to embed).
        "input": _text_or_tokens({**STR, "minLength": 1}),
        "model": STR,
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {**INT, "minimum": 1},
        "user": STR,
    },
}

_CHOICE_COMMON: dict[str, Schema] = {
    "index": INT,
    "finish_reason": _nullable(STR),
    "logprobs": _nullable(OBJ),
}

CHAT_COMPLETION: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": STR,
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": INT,
        "model": STR,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    **_CHOICE_COMMON,
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": STR,
                            "content": _nullable(STR),
                            "refusal": _nullable(STR),
                            "tool_calls": {"type": "array", "items": _TOOL_CALL},
                        },
                    },
                },
            },
        },
        "usage": _USAGE,
    },
}

TEXT_COMPLETION: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": STR,
        "object": {"type": "string", "enum": ["text_completion"]},
        "created": INT,
        "model": STR,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {**_CHOICE_COMMON, "text": STR},
            },
        },
        "usage": _USAGE,
    },
}

EMBEDDING_LIST: Schema = {
    "type": "object",
    "required": ["object", "data", "model"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"type": "string", "enum": ["embedding"]},
                    "index": INT,
                    # floats, or base64 of little-endian float32 (`encoding_format`)
                    "embedding": {"oneOf": [{"type": "array", "items": NUM}, STR]},
                },
            },
        },
        "model": STR,
        "usage": _USAGE,
    },
}

MODEL: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": STR,
        "object": {"type": "string", "enum": ["model"]},
        "created": INT,
        "owned_by": STR,
    },
}

MODEL_LIST: Schema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": ref("Model")},
    },
}

# What the gateway makes, and what it re-shapes upstream errors into (docs/api.md).
ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": STR, "type": _nullable(STR), "param": _nullable(STR)},
        }
    },
}


BASE: dict[str, Schema] = {
    "Error": ERROR,
    "ChatRequest": CHAT_REQUEST,
    "CompletionsRequest": COMPLETIONS_REQUEST,
    "EmbeddingsRequest": EMBEDDINGS_REQUEST,
    "ChatCompletion": CHAT_COMPLETION,
    "TextCompletion": TEXT_COMPLETION,
    "EmbeddingList": EMBEDDING_LIST,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
}
