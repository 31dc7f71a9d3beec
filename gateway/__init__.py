"""llama-gateway: a Kong-compatible AI proxy for self-hosted Llama-family servers."""

__version__ = "0.1.0"
