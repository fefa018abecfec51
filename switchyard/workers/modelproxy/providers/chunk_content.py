"""Whether a streamed OpenAI chunk carries any of the answer, or only opens it.

Providers open a stream with chunks that say nothing yet: the role alone
(``{"delta": {"role": "assistant", "content": ""}}``), Azure's ``prompt_filter_results`` with
no choices, a usage-less keep-alive. A failure right after them is a failure before any
content: it may still go to another deployment, and the time to the first token is not
measured at them. Read only until a stream's first content (after it, every chunk passes
unread), so its cost is a few chunks per stream.

A chunk carries content when a choice has a non-empty delta field other than ``role`` (text,
tool calls, a refusal, reasoning, audio, any field this module does not know), a
``text`` (legacy completions), ``logprobs`` or a ``finish_reason``. A chunk that is not
such JSON is taken for content: passed on at once, as before.
"""

from __future__ import annotations

from typing import Any

import msgspec

_EMPTY: tuple[Any, ...] = (None, "", [], {})


class _Choice(msgspec.Struct):
    delta: dict[str, Any] = {}
    text: Any = None
    logprobs: Any = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


_CHUNK = msgspec.json.Decoder(_Chunk)


def has_content(payload: bytes) -> bool:
    """Whether ``payload`` (one chunk's JSON) carries any of the answer (see the module)."""
    try:
        chunk = _CHUNK.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return True
    for choice in chunk.choices:
        if choice.text or choice.logprobs is not None or choice.finish_reason is not None:
            return True
        for name, value in choice.delta.items():
            if name != "role" and value not in _EMPTY:
                return True
    return False
