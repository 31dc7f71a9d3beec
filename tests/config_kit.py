"""Minimal valid config documents for the config tests, to vary one key at a time."""

from __future__ import annotations

from typing import Any


def target(**over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "route_type": "llm/v1/chat",
        "model": {
            "provider": "llama2",
            "name": "llama2",
            "options": {
                "llama2_format": "ollama",
                "upstream_url": "http://127.0.0.1:11434/api/chat",
            },
        },
    }
    t.update(over)
    return t


def doc(*targets: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "r",
                "paths": ["/chat"],
                "plugin": "ai-proxy-advanced",
                "config": {"targets": list(targets) or [target()], **config},
            }
        ]
    }
