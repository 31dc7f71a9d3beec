"""The OpenAPI document of the proxy listener's API, served at `GET /openapi.json` on
the status listener (built from the running config: route paths and front doors)."""

from __future__ import annotations

from typing import Any

from .runtime import Runtime


def document(runtime: Runtime) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "llama-gateway", "version": "0"},
        "paths": {},
    }
