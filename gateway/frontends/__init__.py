"""Front doors: model-addressed endpoints in the OpenAI and Ollama dialects, in front of
the configured routes (`frontends:` in the config), and model listings."""

from .catalog import Catalog, ModelEntry
from .ollama import OllamaDialect, OllamaFront
from .openai import OpenAIFront, route_models, sibling_lists

__all__ = [
    "Catalog",
    "ModelEntry",
    "OllamaDialect",
    "OllamaFront",
    "OpenAIFront",
    "route_models",
    "sibling_lists",
]
