"""Configuration: YAML → validated, frozen dataclasses, once at startup."""

from .schema import *  # noqa: F403
from .schema import CHAT, COMPLETIONS, EMBEDDINGS, Config, ConfigError, RouteConfig, TargetConfig
from .validate import load_file, load_text, parse

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "Config",
    "ConfigError",
    "RouteConfig",
    "TargetConfig",
    "load_file",
    "load_text",
    "parse",
]
