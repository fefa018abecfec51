"""The built-in ``demo`` provider: answers locally so a fresh install works offline.

It replies with a short sentence that quotes the last user message, streamed word by word (with
a short pause between words, like a real model), counts tokens as words, and returns small
deterministic embeddings (as floats or base64, as asked). It needs no key and never touches
the network. Its prompt tokens are the words of the whole request (system prompt, every
message's text), and it answers the two APIs' token counts (``count_tokens``,
``input_tokens``) with that same number, so what a client is told a request will cost is what
its usage then says.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from switchyard.dialects.probes import COUNTS
from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy.providers import embedding_format
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.token_estimate import as_chat

_ENCODE = msgspec.json.Encoder()
WORD_PAUSE_S = 0.02
EMBEDDING_DIMENSIONS = 16
MAX_CHOICES = 128  # OpenAI's bound on ``n``


def _prompt_text(call: ProviderCall) -> str:
    body = call.body
    if call.op == "complete":
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""


def _prompts(call: ProviderCall) -> list[str | None]:
    """One entry per answer a whole request asks for: each prompt of a completions prompt
    array, each ``n`` times (OpenAI's order), as LangChain's ``batch()`` expects; ``None``
    reads the request's own text.

    Raises:
        InvalidRequest: more than :data:`MAX_CHOICES` answers in all (a 4 MiB body holds a
            million empty prompts: built here, they would hold the model-proxy's loop).
    """
    prompt = call.body.get("prompt")
    texts: list[str | None] = [None]
    if call.op == "complete" and isinstance(prompt, list) and prompt:
        texts = [p for p in prompt if isinstance(p, str)] or texts  # token-id arrays: one
    n = call.body.get("n")
    n = n if isinstance(n, int) and 1 <= n <= MAX_CHOICES else 1
    if len(texts) * n > MAX_CHOICES:
        raise InvalidRequest(
            f"the demo model gives at most {MAX_CHOICES} choices a request (prompts x n); "
            f"this one asks for {len(texts) * n:,}",
            param="prompt" if len(texts) > 1 else "n",
        )
    return [text for text in texts for _ in range(n)]


def answer_words(call: ProviderCall, text: str | None = None) -> tuple[list[str], str]:
    """The answer's words and its ``finish_reason``: ``length`` when ``max_tokens`` cut it
    (one word a token), as a real model says (translated: Anthropic's ``max_tokens``)."""
    said = " ".join((_prompt_text(call) if text is None else text).split()[:40]) or "nothing"
    text = f"Hello from the Switchyard demo model. You said: {said}"
    words = text.split(" ")
    limit = call.body.get("max_tokens") or call.body.get("max_completion_tokens")
    if isinstance(limit, int) and 0 < limit < len(words):
        return words[:limit], "length"
    return words, "stop"


# Where a request's text is, in every shape the demo sees (chat, completions, and the
# Messages and Responses requests of a token count): a message's ``content``, a part's
# ``text``, Anthropic's ``system``, the Responses API's ``instructions`` and ``input``.
_TEXT_KEYS = ("messages", "content", "text", "system", "instructions", "input", "prompt")


def prompt_words(body: Any) -> int:
    """The words of a request's text, wherever its shape keeps them (at least 1).

    Walked with a list, not recursion: a client may nest lists as deep as the JSON decoder
    allows."""
    words, todo = 0, [body]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            words += len(node.split())
        elif isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node[key] for key in _TEXT_KEYS if key in node)
    return max(1, words)


def _usage(call: ProviderCall, completion_words: int) -> Usage:
    prompt = prompt_words(call.body)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_words,
        total_tokens=prompt + completion_words,
    )


class Demo:
    async def close(self) -> None:
        return None

    async def complete(self, call: ProviderCall) -> Completion:
        if call.op == "embed":
            return self._embed(call)
        if call.op in COUNTS:
            return _count(call)
        answers = [answer_words(call, text) for text in _prompts(call)]
        usage = _usage(call, sum(len(words) for words, _ in answers))
        rid = f"demo-{time.time_ns()}"
        chat = call.op != "complete"
        doc: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": call.deployment.model,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": " ".join(words)}}
                if chat
                else {"index": i, "text": " ".join(words), "logprobs": None}
                for i, (words, _) in enumerate(answers)
            ],
        }
        for choice, (_, finish) in zip(doc["choices"], answers, strict=True):
            choice["finish_reason"] = finish
        doc["usage"] = usage.wire()
        return Completion(_ENCODE.encode(doc), usage)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        if call.op in COUNTS:  # one object, asked for as a stream: a stream of one event
            yield StreamEvent(_count(call).body)
            return
        words, finish = answer_words(call)
        rid = f"demo-{time.time_ns()}"
        created = int(time.time())
        chat = call.op != "complete"
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            if chat:
                delta: dict[str, Any] = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
            yield StreamEvent(_ENCODE.encode(self._chunk(rid, created, call, [choice], chat)))
            await asyncio.sleep(WORD_PAUSE_S)
        last: dict[str, Any] = (
            {"index": 0, "delta": {}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "", "finish_reason": finish, "logprobs": None}
        )
        yield StreamEvent(_ENCODE.encode(self._chunk(rid, created, call, [last], chat)))
        usage = _usage(call, len(words))
        final = self._chunk(rid, created, call, [], chat)
        final["usage"] = usage.wire()
        yield StreamEvent(_ENCODE.encode(final) if call.client_wants_usage else None, usage)

    @staticmethod
    def _chunk(
        rid: str, created: int, call: ProviderCall, choices: list[Any], chat: bool
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": call.deployment.model,
            "choices": choices,
        }

    @staticmethod
    def _embed(call: ProviderCall) -> Completion:
        """Deterministic embeddings of ``input``, encoded as the request asks.

        Raises:
            InvalidRequest: an ``encoding_format`` other than float or base64, or nothing to
                embed (OpenAI refuses an empty ``input``; answering an empty list made the SDK
                raise "No embedding data received").
        """
        wanted = embedding_format.requested(call.body)
        raw = call.body.get("input", "")
        inputs = raw if isinstance(raw, list) else [raw]
        if not inputs or inputs == [""]:
            raise InvalidRequest("input must not be empty", param="input")
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else str(item)
            tokens += max(1, len(text.split()))
            digest = hashlib.sha256(text.encode()).digest()
            values = struct.unpack(f"<{EMBEDDING_DIMENSIONS}h", digest[: EMBEDDING_DIMENSIONS * 2])
            data.append(
                {"object": "embedding", "index": i, "embedding": [v / 32768 for v in values]}
            )
        usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
        doc = {
            "object": "list",
            "data": data,
            "model": call.deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Completion(_ENCODE.encode(embedding_format.encoded(doc, wanted)), usage)


def _count(call: ProviderCall) -> Completion:
    """A token count, as the API that asked shapes it: the words :func:`_usage` bills, of the
    same chat request (translated as the request itself would be, refusing what it would).

    Raises:
        InvalidRequest: the translation refuses the request.
    """
    tokens = prompt_words(as_chat(call.op, call.body))
    doc: dict[str, Any] = {"input_tokens": tokens}
    if call.op == "input_tokens":
        doc = {"object": "response.input_tokens", **doc}
    return Completion(_ENCODE.encode(doc), None)
