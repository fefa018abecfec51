"""The usage an OpenAI chat or legacy completion answer shows when its provider reported none.

Such an answer is billed Switchyard's estimate (:mod:`.billing`, :mod:`.estimate`), yet it
reached its client as the provider sent it: a whole answer without ``usage``, a stream asked
with ``stream_options.include_usage`` without its usage chunk, so an SDK's
``resp.usage.total_tokens`` raised where the key was billed tokens all the same. The client
now sees the figures its key is billed, marked as an estimate by ``"estimated": true`` inside
``usage`` (an extra key, which the OpenAI SDKs keep and read as any other): a whole answer gets
them as its ``usage`` (replacing a ``null``; its other fields are passed on as written), a
stream its usage chunk (``choices: []``, named as its last chunk was) after its last chunk and
before its end, as OpenAI sends one, only when the client asked for it. The estimate becomes
the job's usage, so the bill is the one shown (flagged ``prompt_tokens_estimated`` as before)
and the final message carries it (``Sy-Usage``: the edge settles ``tpm`` with it).

An answer with the provider's usage is not read here (the handler calls these only when none
came); a stream's usage chunk is sent and kept like any other chunk (a replay sends it again,
the final counts it), and never when the provider sent its own. Nor is a usage the provider
wrote that does not read as a count (``"completion_tokens": null``, ``"prompt_tokens": 5.0``)
replaced or doubled: a whole answer whose ``usage`` is anything but absent or ``null`` keeps it
as written, and a stream whose last chunk carries one (OpenAI-compatible servers send their
usage chunk last) gets no second usage chunk; each is billed the same estimate all the same.
The Messages and Responses translations show their estimate themselves
(:class:`.dialects.Translated`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy import estimate
from switchyard.workers.modelproxy.job import Job

# The client ops whose answers are OpenAI chat completions or legacy completions.
SHOWN_OPS = frozenset({"chat", "complete"})
# What a chunk's ``object`` says, when its last chunk said nothing.
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "complete": "text_completion"}
_ID_PREFIX = {"chat": "chatcmpl-", "complete": "cmpl-"}
_ENCODE = msgspec.json.Encoder()
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])  # each top-level value as written
_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
Send = Callable[[Job, int, bytes], Awaitable[None]]


class _Named(msgspec.Struct, frozen=True):
    """What names a chunk, as its provider wrote it."""

    id: Any = None
    object: Any = None
    created: Any = None
    model: Any = None
    system_fingerprint: Any = None
    usage: msgspec.Raw = msgspec.Raw(b"")  # (the provider's own, if it wrote one: read or not)


_NAMED = msgspec.json.Decoder(_Named)


def wire(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object of an estimate, marked as one."""
    return {**usage.wire(), "estimated": True}


def with_usage(job: Job, body: bytes, room: int) -> bytes:
    """``body``, ``job``'s whole answer that its provider gave without usage, showing the
    estimate it is billed (which becomes ``job.usage``). Another op's answer, a body that is
    no JSON object, one with a ``usage`` of the provider's that did not read as a count (any
    value but ``null``: kept as written), and one the usage would make larger than ``room``
    (its caller's bound; 0 for none) are passed on as they came (billed the estimate all the
    same, as ``Sy-Usage`` says).
    """
    op = job.env.op
    if op not in SHOWN_OPS:
        return body
    usage = estimate.estimated(job.msg.data, estimate.answer_tokens(op, body))
    job.usage = usage
    try:
        doc = _TOP.decode(body)
    except _ERRORS:
        return body
    if _written(doc.get("usage")):
        return body
    doc["usage"] = msgspec.Raw(_ENCODE.encode(wire(usage)))
    shown = _ENCODE.encode(doc)
    return body if room and len(shown) > room else shown


async def send_usage_chunk(job: Job, last: bytes | None, send: Send) -> None:
    """Send ``job``'s usage chunk, the estimate its stream is billed (which becomes
    ``job.usage``), after its chunks (``last``, the last one sent, names it); for a stream whose
    client asked for the usage and whose provider sent none: not when its last chunk carries
    a usage of the provider's that did not read as a count (then left as the client's last)."""
    op = job.env.op
    if op not in SHOWN_OPS:
        return
    named = _Named()
    if last is not None:
        with contextlib.suppress(*_ERRORS):
            named = _NAMED.decode(last)
    if _written(named.usage):
        return
    await job.chunks.settle()  # (in batches: a long answer never holds the loop)
    usage = estimate.estimated(job.msg.data, estimate.tokens(job.chunks.generated()))
    job.usage = usage
    chunk = {**_names(job, op, named), "choices": [], "usage": wire(usage)}
    payload = _ENCODE.encode(chunk)
    seq = len(job.chunks)
    job.chunks.append(payload)
    await send(job, seq, payload)
    job.sent = True


def _written(usage: msgspec.Raw | None) -> bool:
    """Whether ``usage``, an answer's or chunk's as written, is one of the provider's (any
    value but absent or ``null``)."""
    return usage is not None and bytes(usage) not in (b"", b"null")


def _names(job: Job, op: str, named: _Named) -> dict[str, Any]:
    """The ``id``, ``object``, ``created``, ``model`` (and ``system_fingerprint``) of the
    stream's last chunk (``named``), as the provider wrote them; made up where it had none."""
    names = {
        "id": named.id if named.id is not None else _ID_PREFIX[op] + job.env.request_id,
        "object": named.object if named.object is not None else _CHUNK_OBJECT[op],
        "created": named.created if named.created is not None else int(time.time()),
        "model": named.model if named.model is not None else job.env.alias,
    }
    if named.system_fingerprint is not None:
        names["system_fingerprint"] = named.system_fingerprint
    return names
