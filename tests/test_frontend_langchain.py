"""LangChain's `ChatOpenAI` through the OpenAI front door to an Ollama server: what
LangChain sends (max_completion_tokens, tools, streams) reaches Ollama in its dialect,
and the answers come back as LangChain reads them."""

from __future__ import annotations

import json
from typing import Any

import httpx
from canned import ollama_tool_answer
from helpers import route, target, url
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from gateway.server import GatewayServer
from gateway.sim import Behaviour, FakeUpstream

FRONT = {"openai": {"prefix": "/v1"}}


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return "22 degrees"


async def setup(upstream: Any, gateway: Any, **up_kw: Any) -> tuple[FakeUpstream, GatewayServer]:
    up = await upstream("ollama", **up_kw)
    gw = await gateway(route(target(up, "/api/chat"), path="/chat"), frontends=FRONT)
    return up, gw


def last_sent(up: FakeUpstream) -> Any:
    return up.generation_requests()[-1].json


def chat_model(gw: GatewayServer, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url(gw, "/v1"), api_key="x", model="llama2", max_retries=0, **kw)  # type: ignore[arg-type]


async def test_invoke_with_max_tokens(upstream, gateway) -> None:
    up, gw = await setup(upstream, gateway)
    sent: list[Any] = []

    async def seen(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    async with httpx.AsyncClient(event_hooks={"request": [seen]}) as http_client:
        llm = chat_model(gw, max_tokens=3, temperature=0, http_async_client=http_client)
        answer = await llm.ainvoke([HumanMessage("Hi there")])
    # What LangChain puts on the wire for max_tokens.
    assert sent[0]["max_completion_tokens"] == 3 and "max_tokens" not in sent[0]
    assert isinstance(answer, AIMessage)
    assert answer.content == up.expected_text(3)
    assert answer.response_metadata["finish_reason"] == "length"
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == 3
    req: Any = up.generation_requests()[-1]
    # LangChain sends max_completion_tokens; Ollama takes options.num_predict.
    assert req.json["options"] == {"num_predict": 3, "temperature": 0}
    assert req.json["messages"] == [{"role": "user", "content": "Hi there"}]
    assert req.json["stream"] is False


async def test_bind_tools(upstream, gateway) -> None:
    tool_answer = ollama_tool_answer()
    # The fake has no model to decide on a tool call: it answers what Ollama sends for one.
    up, gw = await setup(upstream, gateway, behaviour=Behaviour(status=200, error_body=tool_answer))
    llm = chat_model(gw).bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    answer = await llm.ainvoke([question])
    assert isinstance(answer, AIMessage)
    assert len(answer.tool_calls) == 1
    call = answer.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert call["id"]
    tools = last_sent(up)["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather"]
    assert tools[0]["type"] == "function"
    assert tools[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"

    up.behaviour = Behaviour()
    done = await llm.ainvoke([question, answer, ToolMessage("22 degrees", tool_call_id=call["id"])])
    assert done.content == up.expected_text(8)
    messages = last_sent(up)["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[2]["role"] == "tool" and messages[2]["content"] == "22 degrees"
    assert messages[2]["tool_name"] == "get_weather"


async def test_astream(upstream, gateway) -> None:
    up, gw = await setup(upstream, gateway)
    llm = chat_model(gw, max_tokens=5, stream_usage=True)
    chunks = [c async for c in llm.astream([HumanMessage("Hi")])]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    text = "".join(str(c.content) for c in chunks)
    assert text == up.expected_text(5)
    whole: Any = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 5
    assert whole.response_metadata.get("finish_reason") == "length"
    req = last_sent(up)
    assert req["stream"] is True and req["options"]["num_predict"] == 5
