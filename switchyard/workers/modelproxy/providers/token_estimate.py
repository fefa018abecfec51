"""Token counts for providers that cannot count them: an estimate with OpenAI's tokenizers.

Both agent dialects can ask how many input tokens a request holds: Anthropic's
``POST /v1/messages/count_tokens`` (op ``count_tokens``, answered ``{"input_tokens": N}``) and
OpenAI's ``POST /v1/responses/input_tokens`` (op ``input_tokens``, answered
``{"object": "response.input_tokens", "input_tokens": N}``). Each goes to its own vendor's
deployments, which count exactly. No other provider kind offers such a count, so for them this
adapter estimates it the way the request would reach the provider: translated to chat
completions (the same translation, so what it refuses is refused here too), then counted with
tiktoken's ``o200k_base`` (OpenAI's current tokenizer), or the model's own encoding when
tiktoken knows the model. Framing is counted as OpenAI frames chat: 3 tokens per message and
3 for the start of the reply. Tools and a response format count as their JSON; an image or
a document as 1,600 tokens (what Anthropic charges for an image of 1.15 megapixels, its
largest before resizing), since its size is unknown until the provider decodes it.

Other providers' tokenizers differ from OpenAI's: the figure is an estimate, good to a few
tens of percent, meant for what agents use it for (will this fit the context window?).
Nothing is called upstream and nothing is billed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import tiktoken

from switchyard.config import prepare_tokenizer_environment
from switchyard.dialects import anthropic, responses
from switchyard.errors import ServiceUnavailable
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent

DEFAULT_ENCODING = "o200k_base"
PER_MESSAGE = 3
REPLY_PRIMING = 3
MEDIA_PART = 1_600
_ENCODE = msgspec.json.Encoder()


class TokenEstimate:
    """Counts a Messages request's input tokens locally (no provider call)."""

    def __init__(self) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._loading = asyncio.Lock()

    async def complete(self, call: ProviderCall) -> Completion:
        chat = as_chat(call.op, call.body)
        encoding = await self._encoding(call.deployment.model)
        # Counting a long prompt takes milliseconds: off the loop, so streams keep flowing.
        count = await asyncio.to_thread(count_chat, encoding, chat)
        if call.op == "input_tokens":
            answer = {"object": "response.input_tokens", "input_tokens": count}
        else:
            answer = {"input_tokens": count}
        return Completion(_ENCODE.encode(answer), None)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        """A count is one object; asked for as a stream, it is a stream of one event."""
        done = await self.complete(call)
        yield StreamEvent(done.body)

    async def close(self) -> None:
        """Nothing to release."""

    async def _encoding(self, model: str) -> tiktoken.Encoding:
        name = encoding_name(model)
        found = self._encodings.get(name)
        if found is not None:
            return found
        async with self._loading:
            found = self._encodings.get(name)
            if found is None:
                prepare_tokenizer_environment()
                try:  # reads a few MB from disk and builds the tokenizer: once, off the loop
                    found = await asyncio.to_thread(tiktoken.get_encoding, name)
                except (OSError, ValueError) as exc:  # files missing: tiktoken tried the network
                    raise ServiceUnavailable(
                        f"token counting is unavailable: tokenizer {name} could not be loaded"
                        f" ({type(exc).__name__}); see TIKTOKEN_CACHE_DIR",
                        code="tokenizer_unavailable",
                    ) from None
                self._encodings[name] = found
        return found


def as_chat(op: str, body: dict[str, Any]) -> dict[str, Any]:
    """The chat request a count request of ``op`` would be sent as.

    Raises:
        InvalidRequest: what the dialect's translation refuses (``param`` names the field).
    """
    if op == "input_tokens":
        return responses.to_chat(body).chat
    # Anthropic's translation demands max_tokens, which a count does not carry.
    return anthropic.to_chat({**body, "max_tokens": 1}).chat


def encoding_name(model: str) -> str:
    """tiktoken's encoding for ``model`` when it knows the model, else :data:`DEFAULT_ENCODING`."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING


def count_chat(encoding: tiktoken.Encoding, chat: dict[str, Any]) -> int:
    """The estimated input tokens of a chat completions request (see the module docstring)."""

    def tokens(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    total = REPLY_PRIMING
    for message in chat.get("messages", []):
        total += PER_MESSAGE + tokens(str(message.get("role", "")))
        total += _content(message.get("content"), tokens)
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += tokens(str(function.get("name", ""))) + tokens(
                str(function.get("arguments", ""))
            )
    for extra in (chat.get("tools"), chat.get("response_format")):
        if extra:
            total += tokens(json.dumps(extra, separators=(",", ":"), ensure_ascii=False))
    return total


def _content(content: Any, tokens: Callable[[str], int]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return tokens(content)
    total = 0
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            total += tokens(part["text"])
        elif isinstance(part, str):
            total += tokens(part)
        else:  # an image, a document: its size is the provider's to measure
            total += MEDIA_PART
    return total
