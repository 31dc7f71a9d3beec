"""Answers the fakes cannot decide on their own (they have no model to call a tool):
what a real server sends when the model calls `get_weather`, for tests to have a fake
answer with (`Behaviour(status=200, error_body=<these bytes>)`)."""

from __future__ import annotations

from typing import Any

from gateway.jsonutil import dumps


def ollama_tool_answer(arguments: Any = None) -> bytes:
    """Ollama's non-stream chat answer with one tool call (`arguments` an object)."""
    args = {"city": "Paris"} if arguments is None else arguments
    return dumps(
        {
            "model": "llama2",
            "created_at": "2025-01-01T00:00:00.000000Z",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": args}}],
            },
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 12,
            "eval_count": 5,
        }
    )


def openai_tool_answer(arguments: str = '{"city": "Paris"}') -> bytes:
    """An OpenAI server's chat completion with one tool call (`arguments` a JSON string)."""
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    return dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "llama2",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
    )
