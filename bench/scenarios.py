"""The measured scenarios and the request bodies they send.

Each scenario is run twice with identical wrk settings: directly against nginx (the model name is
the upstream's) and through the Switchyard tail (the model name is the route alias that leads to
the same nginx location).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.upstream import MODEL


@dataclass(frozen=True)
class Scenario:
    """One load shape against one upstream behaviour.

    Attributes:
        key: stable identifier used in the JSON results.
        label: what the table shows.
        route: Switchyard route alias, also the nginx path prefix.
        stream: whether the body asks for ``"stream": true``.
        connections / threads: wrk ``-c`` and ``-t``.
        limited: sent with a client key that has every limit set (never refusing) instead of
            the demo key; compared with ``LIMITS_BASELINE`` via Switchyard, no direct run.
        dialect: ``chat``, or ``responses`` / ``messages``: the same request in the OpenAI
            Responses or Anthropic Messages API, which Switchyard translates to chat
            completions for the same upstream (the direct run is the chat request).
    """

    key: str
    label: str
    route: str
    stream: bool
    connections: int
    threads: int
    limited: bool = False
    dialect: str = "chat"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("nonstream_c1", "non-streaming", "fast", stream=False, connections=1, threads=1),
    Scenario("nonstream_c64", "non-streaming", "fast", stream=False, connections=64, threads=2),
    Scenario(
        "limits_c64",
        "non-streaming, key with limits",
        "fast",
        stream=False,
        connections=64,
        threads=2,
        limited=True,
    ),
    Scenario("stream_c1", "streaming", "sse", stream=True, connections=1, threads=1),
    Scenario("stream_c64", "streaming", "sse", stream=True, connections=64, threads=2),
    Scenario("delay50_c64", "50 ms upstream", "delay50", stream=False, connections=64, threads=2),
    Scenario(
        "responses_c64",
        "Responses API, translated",
        "fast",
        stream=False,
        connections=64,
        threads=2,
        dialect="responses",
    ),
    Scenario(
        "messages_c64",
        "Anthropic Messages, translated",
        "fast",
        stream=False,
        connections=64,
        threads=2,
        dialect="messages",
    ),
)
# Where each dialect is served on the edge.
DIALECT_PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}

# The scenario a ``limited`` one is compared with (same shape, demo key without limits).
LIMITS_BASELINE = "nonstream_c64"
# Not a wrk scenario: the in-process routing micro-benchmark (bench.routing), also for --only.
ROUTING = "routing"


def scenario(key: str) -> Scenario:
    return next(s for s in SCENARIOS if s.key == key)


def request_body(model: str, *, stream: bool) -> str:
    """A small, typical chat request."""
    doc = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 32,
        "temperature": 0,
        "stream": stream,
    }
    return json.dumps(doc, separators=(",", ":"))


def direct_body(scenario: Scenario) -> str:
    return request_body(MODEL, stream=scenario.stream)


def switchyard_body(scenario: Scenario) -> str:
    if scenario.dialect == "responses":
        doc: dict[str, object] = {
            "model": scenario.route,
            "instructions": "You are a helpful assistant.",
            "input": "Say hello in one short sentence.",
            "max_output_tokens": 32,
            "temperature": 0,
            "stream": scenario.stream,
        }
        return json.dumps(doc, separators=(",", ":"))
    if scenario.dialect == "messages":
        doc = {
            "model": scenario.route,
            "system": "You are a helpful assistant.",
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 32,
            "temperature": 0,
            "stream": scenario.stream,
        }
        return json.dumps(doc, separators=(",", ":"))
    return request_body(scenario.route, stream=scenario.stream)
