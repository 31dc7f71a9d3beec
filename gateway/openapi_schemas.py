"""The fixed part of the OpenAPI document (gateway/openapi.py): request and answer
schemas of the OpenAI-shaped route API and of the Ollama front door.

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


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}
_OBJ: Schema = {"type": "object"}
_STR_LIST: Schema = {"type": "array", "items": _STR}
_TOKENS: Schema = {"type": "array", "items": _INT}
_STOP: Schema = _nullable({"oneOf": [_STR, {**_STR_LIST, "maxItems": 4}]})
_USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "total_tokens"],
    "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT},
}

# Sampling and length fields chat and completions share.
_SAMPLING: dict[str, Schema] = {
    "model": {**_STR, "description": "selects targets by `model.name` / `model_alias`"},
    "stream": _nullable(_BOOL),
    "stream_options": _nullable(
        {"type": "object", "properties": {"include_usage": _BOOL}},
    ),
    "max_tokens": _nullable({**_INT, "minimum": 1}),
    "temperature": _nullable({**_NUM, "minimum": 0, "maximum": 2}),
    "top_p": _nullable({**_NUM, "minimum": 0, "maximum": 1}),
    "top_k": _nullable(_INT),
    "n": _nullable({**_INT, "minimum": 1, "maximum": 128}),
    "stop": _STOP,
    "seed": _nullable(_INT),
    "presence_penalty": _nullable({**_NUM, "minimum": -2, "maximum": 2}),
    "frequency_penalty": _nullable({**_NUM, "minimum": -2, "maximum": 2}),
    "logit_bias": _nullable({"type": "object", "additionalProperties": _NUM}),
    "user": _STR,
}

_CONTENT_PART: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url", "input_audio", "file"]},
        "text": _STR,
        "image_url": {"type": "object", "properties": {"url": _STR, "detail": _STR}},
    },
}

_TOOL_CALL: Schema = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": _STR,
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {"name": _STR, "arguments": _STR},
        },
    },
}

_MESSAGE: Schema = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {
            "type": "string",
            "enum": ["system", "developer", "user", "assistant", "tool", "function"],
        },
        "content": _nullable({"oneOf": [_STR, {"type": "array", "items": _CONTENT_PART}]}),
        "name": _STR,
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "tool_call_id": _STR,
        "reasoning_content": _STR,
    },
}

_TOOL: Schema = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _STR, "description": _STR, "parameters": _OBJ, "strict": _BOOL},
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
            "properties": {"name": _STR, "description": _STR, "schema": _OBJ, "strict": _BOOL},
        },
    },
}

CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        **_SAMPLING,
        "max_completion_tokens": _nullable({**_INT, "minimum": 1}),
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {
            "oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type"], "properties": {"type": _STR}},
            ]
        },
        "parallel_tool_calls": _BOOL,
        "response_format": _RESPONSE_FORMAT,
        "logprobs": _nullable(_BOOL),
        "top_logprobs": _nullable({**_INT, "minimum": 0, "maximum": 20}),
    },
}

COMPLETIONS_REQUEST: Schema = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {
            "oneOf": [
                _STR,
                {**_STR_LIST, "minItems": 1},
                {**_TOKENS, "minItems": 1},
                {"type": "array", "minItems": 1, "items": _TOKENS},
            ]
        },
        **_SAMPLING,
        "suffix": _nullable(_STR),
        "echo": _nullable(_BOOL),
        "best_of": _nullable({**_INT, "minimum": 0, "maximum": 20}),
        "logprobs": _nullable({**_INT, "minimum": 0, "maximum": 5}),
    },
}

EMBEDDINGS_REQUEST: Schema = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {
            "oneOf": [
                _STR,
                {**_STR_LIST, "minItems": 1},
                {**_TOKENS, "minItems": 1},
                {"type": "array", "minItems": 1, "items": _TOKENS},
            ]
        },
        "model": _STR,
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {**_INT, "minimum": 1},
        "user": _STR,
    },
}

_CHOICE_COMMON: dict[str, Schema] = {
    "index": _INT,
    "finish_reason": _nullable(_STR),
    "logprobs": _nullable(_OBJ),
}

CHAT_COMPLETION: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": _STR,
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": _INT,
        "model": _STR,
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
                            "role": _STR,
                            "content": _nullable(_STR),
                            "refusal": _nullable(_STR),
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
        "id": _STR,
        "object": {"type": "string", "enum": ["text_completion"]},
        "created": _INT,
        "model": _STR,
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {**_CHOICE_COMMON, "text": _STR},
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
                    "index": _INT,
                    # floats, or base64 of little-endian float32 (`encoding_format`)
                    "embedding": {"oneOf": [{"type": "array", "items": _NUM}, _STR]},
                },
            },
        },
        "model": _STR,
        "usage": _USAGE,
    },
}

MODEL: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": _STR,
        "object": {"type": "string", "enum": ["model"]},
        "created": _INT,
        "owned_by": _STR,
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
            "properties": {"message": _STR, "type": _nullable(_STR), "param": _nullable(_STR)},
        }
    },
}

# ------------------------------------------------------------------ Ollama front door

OLLAMA_ERROR: Schema = {"type": "object", "required": ["error"], "properties": {"error": _STR}}

_OLLAMA_COMMON: dict[str, Schema] = {
    "model": _STR,
    "stream": _BOOL,
    "format": {"oneOf": [{"type": "string", "enum": ["json"]}, _OBJ]},
    "options": _OBJ,
    "keep_alive": {"oneOf": [_STR, _NUM]},
    "think": {"oneOf": [_BOOL, {"type": "string", "enum": ["low", "medium", "high"]}]},
}

OLLAMA_CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {
                        "type": "string",
                        "enum": ["system", "user", "assistant", "tool"],
                    },
                    "content": _STR,
                    "images": _STR_LIST,
                    "thinking": _STR,
                    "tool_name": _STR,
                    "tool_calls": {"type": "array", "items": _OBJ},
                },
            },
        },
        "tools": {"type": "array", "items": _TOOL},
    },
}

OLLAMA_GENERATE_REQUEST: Schema = {
    "type": "object",
    "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "prompt": _STR,
        "suffix": _STR,
        "system": _STR,
        "template": _STR,
        "raw": _BOOL,
        "images": _STR_LIST,
        "context": _TOKENS,
    },
}

OLLAMA_EMBED_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _STR,
        "input": {"oneOf": [_STR, _STR_LIST]},
        "truncate": _BOOL,
        "dimensions": {**_INT, "minimum": 1},
        "options": _OBJ,
        "keep_alive": {"oneOf": [_STR, _NUM]},
    },
}

OLLAMA_EMBEDDINGS_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": _STR,
        "prompt": _STR,
        "options": _OBJ,
        "keep_alive": {"oneOf": [_STR, _NUM]},
    },
}

OLLAMA_SHOW_REQUEST: Schema = {
    "type": "object",
    "properties": {"model": _STR, "name": _STR, "verbose": _BOOL},
}

_OLLAMA_DONE: dict[str, Schema] = {
    "model": _STR,
    "created_at": _STR,
    "done": _BOOL,
    "done_reason": _STR,
    "total_duration": _INT,
    "prompt_eval_count": _INT,
    "eval_count": _INT,
}

OLLAMA_CHAT_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "created_at", "message", "done"],
    "properties": {
        **_OLLAMA_DONE,
        "message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": _STR, "content": _STR},
        },
    },
}

OLLAMA_GENERATE_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "created_at", "response", "done"],
    "properties": {**_OLLAMA_DONE, "response": _STR},
}

OLLAMA_EMBED_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "embeddings"],
    "properties": {
        "model": _STR,
        "embeddings": {"type": "array", "items": {"type": "array", "items": _NUM}},
    },
}

OLLAMA_EMBEDDINGS_RESPONSE: Schema = {
    "type": "object",
    "required": ["embedding"],
    "properties": {"embedding": {"type": "array", "items": _NUM}},
}

_OLLAMA_MODEL: Schema = {
    "type": "object",
    "required": ["name", "model", "modified_at", "size", "digest", "details"],
    "properties": {
        "name": _STR,
        "model": _STR,
        "modified_at": _STR,
        "size": _INT,
        "digest": _STR,
        "details": _OBJ,
    },
}

OLLAMA_MODELS: Schema = {
    "type": "object",
    "required": ["models"],
    "properties": {"models": {"type": "array", "items": _OLLAMA_MODEL}},
}

OLLAMA_SHOW_RESPONSE: Schema = {
    "type": "object",
    "required": ["capabilities", "details"],
    "properties": {"capabilities": _STR_LIST, "details": _OBJ, "modified_at": _STR},
}

OLLAMA_VERSION: Schema = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": _STR},
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "OllamaError": OLLAMA_ERROR,
    "ChatRequest": CHAT_REQUEST,
    "CompletionsRequest": COMPLETIONS_REQUEST,
    "EmbeddingsRequest": EMBEDDINGS_REQUEST,
    "ChatCompletion": CHAT_COMPLETION,
    "TextCompletion": TEXT_COMPLETION,
    "EmbeddingList": EMBEDDING_LIST,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
    "OllamaChatRequest": OLLAMA_CHAT_REQUEST,
    "OllamaGenerateRequest": OLLAMA_GENERATE_REQUEST,
    "OllamaEmbedRequest": OLLAMA_EMBED_REQUEST,
    "OllamaEmbeddingsRequest": OLLAMA_EMBEDDINGS_REQUEST,
    "OllamaShowRequest": OLLAMA_SHOW_REQUEST,
    "OllamaChatResponse": OLLAMA_CHAT_RESPONSE,
    "OllamaGenerateResponse": OLLAMA_GENERATE_RESPONSE,
    "OllamaEmbedResponse": OLLAMA_EMBED_RESPONSE,
    "OllamaEmbeddingsResponse": OLLAMA_EMBEDDINGS_RESPONSE,
    "OllamaModels": OLLAMA_MODELS,
    "OllamaShowResponse": OLLAMA_SHOW_RESPONSE,
    "OllamaVersion": OLLAMA_VERSION,
}
