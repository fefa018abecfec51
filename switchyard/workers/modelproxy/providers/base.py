"""The one interface every provider adapter implements, and what a call carries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from switchyard.schemas.openai import Usage
from switchyard.schemas.routing import Deployment, Provider
from switchyard.schemas.secret import Secret


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One upstream call.

    Attributes:
        op: ``chat``, ``complete`` or ``embed``.
        body: the client's request, decoded, with ``model`` already set to the deployment's
            upstream model; unknown fields are kept.
        stream: whether to stream the answer.
        client_wants_usage: the client asked for ``stream_options.include_usage``.
        provider_name: the provider's key in the route table (for errors and metrics).
        api_key: the key from the secrets service, if the provider needs one.
        first_token_timeout / total_timeout: already capped by the request's deadline.
        idle_timeout: the longest gap between two chunks once a stream's content began
            (``timeouts.idle_s``; 0: none).
        anthropic_beta: the client's ``anthropic-beta`` features, sent on to Anthropic's API.
        max_answer_bytes: the largest whole answer that can be sent on (0: no bound); a
            larger one is not read past it (:func:`.upstream_errors.read_answer`).
        request: the request's body as the model-proxy received it (its prompt is estimated
            from it when the provider reports no usage: :mod:`..estimate`).
        request_id: the request's id (``Sy-Request-Id``), sent to providers that log a
            client's id (:mod:`.client_request_id`), so their logs can be matched to ours.
    """

    op: str
    body: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    provider: Provider
    provider_name: str
    deployment: Deployment
    api_key: Secret | None
    first_token_timeout: float
    total_timeout: float
    idle_timeout: float = 0.0
    anthropic_beta: str = ""
    max_answer_bytes: int = 0
    request: bytes = b""
    request_id: str = ""


@dataclass(slots=True)
class Completion:
    """A non-streamed answer: the OpenAI-shaped JSON body and its usage if reported."""

    body: bytes
    usage: Usage | None


@dataclass(slots=True)
class StreamEvent:
    """One streamed chunk (OpenAI chunk JSON) to forward, or usage to record, or both."""

    payload: bytes | None
    usage: Usage | None = None


class Adapter(Protocol):
    """Turn a :class:`ProviderCall` into an upstream request.

    Implementations raise :class:`~switchyard.errors.ProviderError` (with ``retryable`` set)
    for every upstream failure, and nothing else; their messages never contain the key.
    """

    async def complete(self, call: ProviderCall) -> Completion: ...

    def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]: ...

    async def close(self) -> None: ...
