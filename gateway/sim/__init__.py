"""Simulated LLM servers (Ollama, llama.cpp, TGI, OpenAI) on real sockets.

Used by `llama-gateway demo`, the test suite and the benchmark. Each kind follows its
real server's wire format: paths, bodies, stream framing, error shapes.
"""

from gateway.sim.behaviour import Behaviour
from gateway.sim.server import FakeUpstream, Kind
from gateway.sim.wire import Received

__all__ = ["Behaviour", "FakeUpstream", "Kind", "Received"]
