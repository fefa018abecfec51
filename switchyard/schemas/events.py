"""Events on the bus: usage per request (input to accounting) and change notices."""

from __future__ import annotations

import msgspec

# A usage event's id (see ``switchyard.workers.modelproxy.billing.event_id``): an answer is
# ``<billing id>:answered``; a call stopped from outside ``<billing id>:<hops>:left`` (its caller
# left) or ``:late`` (its deadline passed), where ``<hops>`` (deployment ids) holds no colon.
ANSWERED = "answered"
LEFT = "left"
LATE = "late"


def answer_of(event_id: str) -> str:
    """The id of the answer of the request a stopped call's event (``:left``, ``:late``) is
    for; any other event's own id. Accounting does not bill a stopped copy of a request whose
    answer it billed: the platform ran that copy twice (a redelivery, a re-send in a NATS
    failover) and its caller left because the other copy had answered."""
    parts = event_id.rsplit(":", 2)
    if len(parts) == 3 and parts[2] in (LEFT, LATE):
        return f"{parts[0]}:{ANSWERED}"
    return event_id


class UsageEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One finished provider call, sent on ``llm.v1.usage`` (in a batch) after the reply.

    ``id`` is the request id and reroute hop: the same for every execution of one request on
    one deployment (an edge's re-send after a NATS failover, a redelivery after a worker died),
    so accounting bills it once.
    """

    id: str
    request_id: str
    ts: float
    op: str
    alias: str
    deployment: str
    provider: str
    model: str
    key_id: str = ""
    tenant: str = ""
    stream: bool = False
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Of prompt_tokens, those read from and written to the provider's prompt cache (priced
    # apart: cache_read_input_token_cost, cache_creation_input_token_cost).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # The provider's own web searches the answer made (Anthropic's web_search tool, OpenAI's
    # web_search_call items), charged per call: priced apart (Price.web_search_per_call).
    # Left out by an older model-proxy (0); an older accounting worker ignores it.
    web_search_calls: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    # Set when the provider gave no count and the tokens are Switchyard's estimate (an
    # abandoned or failed stream, a server without usage): the estimated prompt tokens.
    prompt_tokens_estimated: int = 0
    # The key's budget period (set by the head from the key record): picks the spend counter.
    budget_period: str = "monthly"


class SecretChanged(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``secrets.v1.changed.<name>``: drop any cached copy (carries no value)."""

    name: str
    version: int
    action: str  # put | rotate | delete
    ts: float


class UsageBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What one message on ``llm.v1.usage`` carries: events of one model-proxy, ~20 ms' worth.

    ``id`` is the message's ``Nats-Msg-Id`` (a re-publish is stored once) and what accounting
    remembers to apply the batch once.
    """

    id: str
    events: list[UsageEvent]


USAGE_BATCH_ENCODER = msgspec.json.Encoder()
USAGE_BATCH_DECODER = msgspec.json.Decoder(UsageBatch)
