"""litellm's answers in OpenAI's shape: what a client of the litellm path reads.

litellm's response objects dump every field its own classes have: ``null`` for what the
provider did not send (``"tool_calls": [{"id": null, "function": {"name": null, ...}}]`` on
every piece of a streamed tool call after its first, ``role``, ``function_call``, ``audio``),
and fields OpenAI does not have (``provider_specific_fields``, ``citations``, ``images``,
Gemini's ``vertex_ai_*`` metadata). OpenAI sends a tool call's ``id``, ``type`` and ``name``
in its first piece only, and leaves out what it does not send; the npm ``openai`` SDK's
stream helper refuses a later piece that names the call again with other values ("changed
tool call identity"). So an answer keeps OpenAI's fields that have a value,
``reasoning_content`` (the reasoning the Messages and Responses translations turn into
thinking, docs/routing.md) and litellm's ``thinking_blocks``, Claude's signed thinking: an
OpenAI SDK's agent loop sends the answer's message back as it came
(``messages.append(message)``), and litellm turns those blocks back into the thinking
Anthropic requires before a tool call when thinking is on (without them it refuses the next
turn: "Expected `thinking` or `redacted_thinking`, but found `tool_use`"); SDKs ignore
fields they do not know. A streamed tool call's later pieces carry ``index`` and
``function.arguments`` only. A choice keeps ``finish_reason`` and ``logprobs`` when null, as
OpenAI sends them (clients index them), and a whole answer's message its ``content``.

Streamed or not, an answer names the same ``model``: the deployment's, as the route table
names it (Gemini's whole answers named its ``modelVersion``, its streams the deployment's). A
chat answer's ``id`` reads ``chatcmpl-...`` (Gemini's was its ``responseId``: prefixed), the
first chunk's on every chunk. A whole answer's tool calls have no ``index``, as OpenAI's
(litellm numbered Claude's by content block: 1 for the first call after text).

Every choice of a stream opens with a ``role`` and ends with a ``finish_reason``
(:meth:`ChatStream.closing`: ``tool_calls`` for a choice that called tools): for Gemini's
``n`` above 1 litellm sends both for the first choice only (the npm ``openai`` SDK's stream
helper refuses a choice without either). A choice's ``finish_reason`` is in its last chunk
only, as OpenAI's: every one litellm sends is held until the stream ends
(:mod:`.litellm_stream`), a chunk left with nothing else is not sent (the ``system_fingerprint``
and ``service_tier`` it said go on the closing chunk, which carries the last said). A choice's
first chunk is always sent: it opens the choice with its ``role``.
"""

from __future__ import annotations

from typing import Any

# What OpenAI defines, per level (openai.types.chat.ChatCompletionChunk).
_ENVELOPE = frozenset(
    {"id", "object", "created", "model", "system_fingerprint", "service_tier", "choices", "usage"}
)
_DELTA = frozenset(
    {"role", "content", "refusal", "tool_calls", "function_call", "audio", "reasoning_content"}
    | {"thinking_blocks"}
)
_MESSAGE = frozenset(
    {"role", "content", "refusal", "tool_calls", "function_call", "audio", "annotations"}
    | {"reasoning_content", "thinking_blocks"}
)
_TOOL_CALL = frozenset({"id", "type", "function", "custom"})
# A chunk's fields of the answer as a whole (OpenAI's are on every chunk): the last said goes on
# the closing chunk too, so that none is lost with a chunk that is not sent.
_CARRIED = ("system_fingerprint", "service_tier")
_CHAT_ID = "chatcmpl-"


def completion(doc: dict[str, Any], model: str, *, one_call: bool = False) -> dict[str, Any]:
    """A whole chat completion (dumped by litellm) in OpenAI's shape, naming ``model``; with
    ``one_call`` (the client sent ``parallel_tool_calls: false``) a message keeps its first
    tool call only, as a provider without that setting (Gemini) may answer several."""
    out = _clean(doc, _ENVELOPE)
    out["model"] = model
    out["id"] = chat_id(doc.get("id"))
    choices = []
    for choice in doc.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        choices.append(
            {
                "index": choice.get("index") or 0,
                "message": _message(message, one_call) if isinstance(message, dict) else {},
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    out["choices"] = choices
    return out


def legacy(doc: dict[str, Any], model: str) -> dict[str, Any]:
    """A legacy completion (``text_completion``), whole or a chunk, in OpenAI's shape, naming
    ``model``: a choice's ``text`` is a string ("" where litellm has none: a stream's end)."""
    out = _clean(doc, _ENVELOPE)
    out["model"] = model
    if "choices" in doc:
        out["choices"] = [
            {
                "index": choice.get("index") or 0,
                "text": choice.get("text") or "",
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in doc["choices"] or ()
            if isinstance(choice, dict)
        ]
    return out


def chat_id(value: object) -> str:
    """A chat answer's id as OpenAI's read: ``chatcmpl-...``."""
    text = value if isinstance(value, str) else ""
    return text if text.startswith(_CHAT_ID) else f"{_CHAT_ID}{text}"


def stream(op: str, model: str, *, one_call: bool = False) -> ChatStream | LegacyStream:
    """What shapes the chunks of a stream of ``op`` (``chat``, else a legacy completion);
    ``one_call``: as for :func:`completion`."""
    return ChatStream(model, one_call=one_call) if op == "chat" else LegacyStream(model)


class LegacyStream:
    """A legacy completion stream's chunks in OpenAI's shape (:func:`legacy`)."""

    __slots__ = ("_model",)

    def __init__(self, model: str) -> None:
        self._model = model

    def chunk(self, doc: dict[str, Any]) -> dict[str, Any]:
        return legacy(doc, self._model)

    def closing(self) -> None:
        """Nothing: litellm ends a legacy stream's choices itself."""

    def finished(self, asked: int) -> bool:
        """Never known here (a choice per prompt and ``n``): its stream ends at its end."""
        return False


class ChatStream:
    """One chat stream's chunks in OpenAI's shape (:meth:`chunk`), naming ``model``.

    Remembers the stream's ``id`` (every chunk carries the first one's), the tool calls
    begun (a later piece of one drops ``id``, ``type`` and ``name``), the choices opened and
    the ``finish_reason`` of those finished (the last said: a choice that delivers more after
    one is open again, so the adapter's grace for a whole answer waits for its next), and the
    last ``system_fingerprint`` and ``service_tier`` said (for the closing chunk: the one
    that said them may be a bare ``finish_reason``, not sent).
    """

    __slots__ = (
        "_calls",
        "_carried",
        "_count",
        "_created",
        "_finished",
        "_id",
        "_model",
        "_one_call",
        "_opened",
        "_said",
    )

    def __init__(self, model: str, *, one_call: bool = False) -> None:
        self._model = model
        self._one_call = one_call  # pieces of a choice's calls after its first are dropped
        self._id: str | None = None
        self._created: object = None
        # (choice, litellm's index): the call's index as OpenAI's (per choice) and its id
        self._calls: dict[tuple[int, int], tuple[int, str | None]] = {}
        self._count: dict[int, int] = {}  # calls begun, per choice
        self._opened: set[int] = set()
        self._finished: dict[int, str] = {}
        self._said: set[int] = set()  # choices whose finish_reason went out (closing)
        self._carried: dict[str, Any] = {}  # _CARRIED fields, as last said

    def chunk(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """``doc`` (a dumped litellm chunk, best with ``exclude_none``) in OpenAI's shape, its
        ``finish_reason`` held for :meth:`closing`; None when nothing else is left of it."""
        if self._id is None:
            self._id = chat_id(doc.get("id"))
            self._created = doc.get("created")
        out = _clean(doc, _ENVELOPE)
        out["id"] = self._id
        out["model"] = self._model
        for field in _CARRIED:
            if field in out:
                self._carried[field] = out[field]
        choices = []
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            at = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            reason = choice.get("finish_reason")
            shaped = self._delta(at, delta) if isinstance(delta, dict) else {}
            if at not in self._opened:  # a choice's first delta says its role, as OpenAI's
                self._opened.add(at)
                shaped.setdefault("role", "assistant")
            if reason:
                self._finished[at] = reason  # the last one said
            elif at in self._finished and any(v for k, v in shaped.items() if k != "role"):
                # litellm has put a finish_reason on a choice's intermediate chunks (Gemini's
                # tool-call pieces): content after it means the choice is not finished yet.
                del self._finished[at]
            logprobs = choice.get("logprobs")
            if reason and not shaped and logprobs is None:
                continue  # a bare finish_reason: held, nothing else to send
            choices.append(
                {"index": at, "delta": shaped, "finish_reason": None, "logprobs": logprobs}
            )
        if not choices and doc.get("choices") and "usage" not in out:
            return None
        out["choices"] = choices
        return out

    def finished(self, asked: int) -> bool:
        """Whether the answer is whole: ``asked`` choices (at least) opened, every one
        finished."""
        return len(self._finished) >= asked and self._opened <= self._finished.keys()

    def closing(self) -> dict[str, Any] | None:
        """The chunk that ends every choice opened: its last ``finish_reason`` said (held
        until now), or for a choice that has none, ``tool_calls`` when it called tools (agent
        loops run the calls on that reason only), else the first finished choice's reason,
        else ``stop``. None when no choice is left to end. Once: those choices are ended. It
        carries the stream's last ``system_fingerprint`` and ``service_tier``, as OpenAI's last
        chunk does (the chunk that said them may have been a bare ``finish_reason``)."""
        unsaid = sorted(self._opened - self._said)
        if not unsaid:
            return None
        first = self._finished[min(self._finished)] if self._finished else "stop"
        reasons = {
            i: self._finished.get(i) or ("tool_calls" if self._count.get(i) else first)
            for i in unsaid
        }
        self._finished.update(reasons)
        self._said.update(unsaid)
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **self._carried,
            "choices": [
                {"index": i, "delta": {}, "finish_reason": reasons[i], "logprobs": None}
                for i in unsaid
            ],
        }

    def _delta(self, choice: int, delta: dict[str, Any]) -> dict[str, Any]:
        out = _clean(delta, _DELTA)
        _no_empty_thinking(out)
        calls = out.get("tool_calls")
        if isinstance(calls, list):
            pieces = [
                self._call_piece(choice, position, call) if isinstance(call, dict) else call
                for position, call in enumerate(calls)
            ]
            if self._one_call:
                pieces = [p for p in pieces if isinstance(p, dict) and p.get("index") == 0]
            if pieces:
                out["tool_calls"] = pieces
            else:
                del out["tool_calls"]
        return out

    def _call_piece(self, choice: int, position: int, call: dict[str, Any]) -> dict[str, Any]:
        """A streamed tool call's piece: its first names it (``id``, ``type``, ``name``), a
        later one carries ``index`` and arguments only. Calls are numbered per choice from 0,
        as OpenAI's (litellm numbers Gemini's across choices: 2 for choice 1's first).

        A piece under a known index that brings an ``id`` other than its call's begins a new
        call: litellm numbers the calls of each chunk from 0 when the provider sends no
        index, so a provider sending each whole call in a chunk of its own gives all of them
        index 0 (as :class:`switchyard.dialects._chat.CallKeys` reads such servers)."""
        index = call.get("index")
        key = (choice, index if isinstance(index, int) else position)
        out = _tool_call(call)
        known = self._calls.get(key)
        call_id = out.get("id") if isinstance(out.get("id"), str) else None
        if known is None or (call_id and known[1] and call_id != known[1]):
            at = self._count.get(choice, 0)
            self._count[choice] = at + 1
            self._calls[key] = (at, call_id)
            out["index"] = at
            return out
        if known[1] is None and call_id:
            self._calls[key] = (known[0], call_id)
        out.pop("id", None)
        out.pop("type", None)
        function = out.get("function")
        if isinstance(function, dict):
            function.pop("name", None)
        out["index"] = known[0]
        return out


def _clean(doc: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """``doc`` without nulls and fields not in ``fields``; ``doc`` itself when it has none
    (the common case once dumped with ``exclude_none``: two C-level checks, no copy)."""
    if doc.keys() <= fields and None not in doc.values():
        return doc
    return {k: v for k, v in doc.items() if v is not None and k in fields}


def _message(message: dict[str, Any], one_call: bool = False) -> dict[str, Any]:
    """A whole answer's message: ``role`` and ``content`` always (``content`` null beside tool
    calls, as OpenAI sends it), OpenAI's other fields where they have a value, and tool calls
    without litellm's ``index`` (the first only, with ``one_call``)."""
    out = _clean(message, _MESSAGE)
    _no_empty_thinking(out)
    out.setdefault("role", "assistant")
    out.setdefault("content", None)
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_tool_call(c) if isinstance(c, dict) else c for c in calls]
        if one_call:
            out["tool_calls"] = out["tool_calls"][:1]
    return out


def _no_empty_thinking(out: dict[str, Any]) -> None:
    """``thinking_blocks`` out of ``out`` when it has none (litellm's ``[]`` for Gemini)."""
    if "thinking_blocks" in out and not out["thinking_blocks"]:
        del out["thinking_blocks"]


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in call.items() if v is not None and k in _TOOL_CALL}
    function = out.get("function")
    if isinstance(function, dict):
        out["function"] = {k: v for k, v in function.items() if v is not None}
    return out
