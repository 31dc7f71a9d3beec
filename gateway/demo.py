"""`llama-gateway demo`: the gateway in front of three simulated upstreams, one process.

Two Ollama-like servers and one llama.cpp-like server on free loopback ports, streaming
tokens at a human pace, behind a round-robin route for chat, one for completions and one
for embeddings; both front doors are on, so OpenAI clients (`/v1`) and Ollama clients
(`/api/…`) reach the same routes by model.
"""

from __future__ import annotations

import sys

from .config import load_text
from .server import GatewayServer, run_until_signalled
from .sim import Behaviour, FakeUpstream

_CONFIG = """
server:
  host: 127.0.0.1
  port: {port}
  status_host: 127.0.0.1
  status_port: {status_port}
  drain_timeout: 5
frontends:
  openai: {{prefix: /v1}}
  ollama: {{prefix: ""}}
routes:
  - name: demo-chat
    paths: ["/llama2-chat"]
    plugin: ai-proxy-advanced
    config:
      balancer: {{algorithm: round-robin}}
      targets:
        - {{name: ollama-a, route_type: llm/v1/chat, model: {{provider: llama2, name: llama2,
            options: {{llama2_format: ollama, upstream_url: "{a}/api/chat"}}}}}}
        - {{name: ollama-b, route_type: llm/v1/chat, model: {{provider: llama2, name: llama2,
            options: {{llama2_format: ollama, upstream_url: "{b}/api/chat"}}}}}}
        - {{name: llamacpp-c, route_type: llm/v1/chat, model: {{provider: llama2, name: llama2,
            options: {{llama2_format: raw, raw_flavor: llamacpp,
            upstream_url: "{c}/completion"}}}}}}
  - name: demo-completions
    paths: ["/llama2-completions"]
    plugin: ai-proxy-advanced
    config:
      targets:
        - {{name: ollama-a, route_type: llm/v1/completions, model: {{provider: llama2, name: llama2,
            options: {{llama2_format: ollama, upstream_url: "{a}/api/generate"}}}}}}
        - {{name: llamacpp-c, route_type: llm/v1/completions, model: {{provider: llama2,
            name: llama2, options: {{llama2_format: raw, raw_flavor: llamacpp,
            upstream_url: "{c}/completion"}}}}}}
  - name: demo-embeddings
    paths: ["/llama2-embeddings"]
    plugin: ai-proxy-advanced
    config:
      targets:
        - {{name: ollama-a, route_type: llm/v1/embeddings, model: {{provider: llama2,
            name: nomic-embed-text, options: {{llama2_format: ollama,
            upstream_url: "{a}/api/embed"}}}}}}
        - {{name: llamacpp-c, route_type: llm/v1/embeddings, model: {{provider: llama2,
            name: nomic-embed-text, options: {{llama2_format: raw, raw_flavor: llamacpp,
            upstream_url: "{c}/embedding"}}}}}}
"""

_TEXT = (
    "Llamas are social animals that live in herds. They are calm, curious and clever, "
    "and they hum to each other when they are worried or tired."
)


def _commands(base: str, status: str) -> list[str]:
    chat = (
        '{"model": "llama2", "messages": [{"role": "system", "content": "You are a helpful '
        'assistant."}, {"role": "user", "content": "Tell me about llamas."}]}'
    )
    stream = (
        '{"model": "llama2", "stream": true, "stream_options": {"include_usage": true}, '
        '"messages": [{"role": "user", "content": "Tell me about llamas."}]}'
    )
    completion = '{"model": "llama2", "prompt": "Llamas are", "max_tokens": 16}'
    ollama_chat = (
        '{"model": "llama2", "messages": [{"role": "user", "content": "Tell me about llamas."}]}'
    )
    embed = '{"model": "nomic-embed-text", "input": "Llamas hum."}'
    return [
        f"curl -s {base}/llama2-chat -H 'Content-Type: application/json' -d '{chat}'",
        f"curl -sN {base}/llama2-chat -H 'Content-Type: application/json' -d '{stream}'",
        f"curl -s {base}/llama2-completions -H 'Content-Type: application/json' -d '{completion}'",
        f"curl -s {base}/v1/models",
        f"curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' -d '{chat}'",
        f"curl -s {base}/v1/embeddings -H 'Content-Type: application/json' -d '{embed}'",
        f"curl -sN {base}/api/chat -d '{ollama_chat}'",
        f"curl -s {base}/api/tags",
        f"curl -s {status}/readyz",
    ]


def _ollama_example(base: str) -> str:
    """The `ollama` Python client against the gateway (pip install ollama)."""
    code = (
        f"import ollama; c = ollama.Client(host='{base}'); "
        "print(c.chat(model='llama2', messages=[{'role': 'user', "
        "'content': 'Tell me about llamas.'}]).message.content)"
    )
    return f'python3 -c "{code}"'


async def run_demo(port: int, status_port: int) -> int:
    upstreams = [
        FakeUpstream(
            "ollama",
            name="ollama-a",
            models=("llama2", "nomic-embed-text"),
            text=_TEXT,
            behaviour=Behaviour(token_interval=0.04, n_tokens=24),
        ),
        FakeUpstream(
            "ollama",
            name="ollama-b",
            text=_TEXT,
            behaviour=Behaviour(token_interval=0.06, n_tokens=24),
        ),
        FakeUpstream(
            "llamacpp",
            name="llamacpp-c",
            text=_TEXT,
            behaviour=Behaviour(token_interval=0.05, n_tokens=24),
        ),
    ]
    server: GatewayServer | None = None
    try:
        for up in upstreams:
            await up.start()
        a, b, c = (up.url() for up in upstreams)
        cfg = load_text(_CONFIG.format(port=port, status_port=status_port, a=a, b=b, c=c), {})
        server = GatewayServer(cfg)
        try:
            await server.start()
        except OSError as exc:
            print(
                f"llama-gateway demo: cannot listen on port {port}: {exc.strerror}", file=sys.stderr
            )
            return 1
        base = f"http://127.0.0.1:{server.port}"
        status = f"http://127.0.0.1:{server.status_port}"

        def started() -> None:
            print(f"llama-gateway demo: gateway on {base}, status on {status}")
            print(f"  upstreams: ollama-a {a}, ollama-b {b}, llamacpp-c {c}")
            print("Try (Ctrl-C or SIGTERM stops the demo):")
            for line in _commands(base, status):
                print(line)
            print("With Ollama's Python client (pip install ollama):")
            print(_ollama_example(base))
            sys.stdout.flush()

        await run_until_signalled(server, started)
        return 0
    finally:
        if server is not None and server.ready:
            await server.stop()
        for up in upstreams:
            await up.stop()
