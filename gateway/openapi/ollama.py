"""The Ollama front door's request and answer schemas (OpenAPI 3.0)."""

from __future__ import annotations

from .schemas import BOOL, INT, NUM, OBJ, STR, STR_LIST, TOKENS, TOOL, Schema

OLLAMA_ERROR: Schema = {"type": "object", "required": ["error"], "properties": {"error": STR}}

_OLLAMA_COMMON: dict[str, Schema] = {
    "model": STR,
    "stream": BOOL,
    "format": {"oneOf": [{"type": "string", "enum": ["json"]}, OBJ]},
    "options": OBJ,
    "keep_alive": {"oneOf": [STR, NUM]},
    "think": {"oneOf": [BOOL, {"type": "string", "enum": ["low", "medium", "high"]}]},
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
                    "content": STR,
                    "images": STR_LIST,
                    "thinking": STR,
                    "tool_name": STR,
                    "tool_calls": {"type": "array", "items": OBJ},
                },
            },
        },
        "tools": {"type": "array", "items": TOOL},
    },
}

OLLAMA_GENERATE_REQUEST: Schema = {
    "type": "object",
    "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "prompt": STR,
        "suffix": STR,
        "system": STR,
        "template": STR,
        "raw": BOOL,
        "images": STR_LIST,
        "context": TOKENS,
    },
}

OLLAMA_EMBED_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": STR,
        "input": {"oneOf": [STR, STR_LIST]},
        "truncate": BOOL,
        "dimensions": {**INT, "minimum": 1},
        "options": OBJ,
        "keep_alive": {"oneOf": [STR, NUM]},
    },
}

OLLAMA_EMBEDDINGS_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": STR,
        "prompt": STR,
        "options": OBJ,
        "keep_alive": {"oneOf": [STR, NUM]},
    },
}

OLLAMA_SHOW_REQUEST: Schema = {
    "type": "object",
    "properties": {"model": STR, "name": STR, "verbose": BOOL},
}

_OLLAMA_DONE: dict[str, Schema] = {
    "model": STR,
    "created_at": STR,
    "done": BOOL,
    "done_reason": STR,
    "total_duration": INT,
    "prompt_eval_count": INT,
    "eval_count": INT,
}

OLLAMA_CHAT_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "created_at", "message", "done"],
    "properties": {
        **_OLLAMA_DONE,
        "message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": STR, "content": STR},
        },
    },
}

OLLAMA_GENERATE_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "created_at", "response", "done"],
    "properties": {**_OLLAMA_DONE, "response": STR},
}

OLLAMA_EMBED_RESPONSE: Schema = {
    "type": "object",
    "required": ["model", "embeddings"],
    "properties": {
        "model": STR,
        "embeddings": {"type": "array", "items": {"type": "array", "items": NUM}},
    },
}

OLLAMA_EMBEDDINGS_RESPONSE: Schema = {
    "type": "object",
    "required": ["embedding"],
    "properties": {"embedding": {"type": "array", "items": NUM}},
}

_OLLAMA_MODEL: Schema = {
    "type": "object",
    "required": ["name", "model", "modified_at", "size", "digest", "details"],
    "properties": {
        "name": STR,
        "model": STR,
        "modified_at": STR,
        "size": INT,
        "digest": STR,
        "details": OBJ,
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
    "properties": {"capabilities": STR_LIST, "details": OBJ, "modified_at": STR},
}

OLLAMA_VERSION: Schema = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": STR},
}


COMPONENTS: dict[str, Schema] = {
    "OllamaError": OLLAMA_ERROR,
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
