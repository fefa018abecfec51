"""What a litellm stream's chunks carry, and the chunk that ends its choices.

A chunk *delivers* (:func:`delivers`) when it carries part of an answer: usage, or a choice
with text (legacy completions) or a non-empty delta field (:data:`SUBSTANCE`). A role-only
opening or a bare ``finish_reason`` carries nothing: litellm sends one even for an empty
stream, which is the provider's failure (retried elsewhere), not an empty answer.

A chat choice's ``finish_reason`` goes out in its last chunk only, as OpenAI sends it: litellm
has put one on chunks a choice had more after (Gemini's tool-call pieces), and a client SDK
may stop reading at the first it sees. :class:`~.litellm_answer.ChatStream` holds every one
back, and :func:`closing` sends them, with those of the choices left open, once the stream
ends (its usage chunk, its end, or the grace after a whole answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from switchyard.workers.modelproxy.providers import litellm_answer
from switchyard.workers.modelproxy.providers.base import StreamEvent

_ENCODE = msgspec.json.Encoder()
# What makes a streamed chunk an answer (see delivers): a delta's non-empty field of these.
SUBSTANCE = ("content", "tool_calls", "function_call", "reasoning_content", "refusal", "audio")


def closing(
    shape: litellm_answer.ChatStream | litellm_answer.LegacyStream,
    *,
    before: dict[str, Any] | None = None,
) -> list[StreamEvent]:
    """The chunk that ends a stream's choices (their held ``finish_reason``, or one for those
    left open), if any (see the module). ``before``: a chunk read, which ends them only when
    it is the usage alone (litellm's last: every choice ends before it)."""
    if before is not None and ("usage" not in before or before.get("choices")):
        return []
    end = shape.closing()
    return [] if end is None else [StreamEvent(_ENCODE.encode(end))]


def whole(
    shape: litellm_answer.ChatStream | litellm_answer.LegacyStream,
    body: Mapping[str, Any],
    *,
    delivered: bool,
) -> bool:
    """Whether a stream's answer is whole: it ``delivered``, and every choice the request
    ``body`` asked for (its ``n``, else 1) finished."""
    n = body.get("n")
    return delivered and shape.finished(n if type(n) is int else 1)


def delivers(doc: dict[str, Any]) -> bool:
    """Whether a dumped litellm chunk carries part of an answer (see the module)."""
    usage = doc.get("usage")
    # A count of something: litellm makes up a usage of zeros for a stream that carried nothing.
    if isinstance(usage, dict) and any(
        isinstance(n, int) and n > 0
        for n in (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    ):
        return True
    for choice in doc.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(delta.get(field) for field in SUBSTANCE):
            return True
    return False
