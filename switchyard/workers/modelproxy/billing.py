"""What a provider call is billed: the provider's count, or an estimate, as a usage event.

An answer is billed with the usage the provider reported. One without a count (a stream cut
short, failed or abandoned after content was sent, where the count would have come at the end;
a server that never reports usage) is billed an estimate rather than nothing, which would never
reach a budget; so is a stream that ended early with only its opening count (Anthropic's
``message_start`` says 1 output token), i.e. one whose count came before content it delivered;
a stream whose final count came before its caller left is billed that count. A call stopped
from outside while its provider worked is billed its estimate too, whether its caller left or
its deadline passed: the provider charges for the work either way. So is an answer the provider
gave that could not be passed on (larger than one bus message, a streamed line past 4 MiB:
``job.undelivered``): its prompt's estimate, as the provider's count (at the end of the answer)
was not read; its completion is not guessed (an embeddings answer has none). A whole answer
the provider gave is billed its usage, the provider's count or, for a chat or completions
answer without one, the estimate of its prompt and answer (:mod:`.shown_usage`), whatever its
caller then got: one whose parts its caller stopped taking (499 ``caller_gone``, 504 past the
deadline) or that reconnects kept losing (502 ``stream_interrupted``, :mod:`.whole`) too,
since the provider charges for it. Any other failure that delivered nothing is not billed,
nor a request whose provider was never called (the handler bills only calls that were made).
"""

from __future__ import annotations

import time

import msgspec

from switchyard.errors import DeadlineExceeded
from switchyard.schemas.events import ANSWERED, LATE, LEFT, UsageEvent
from switchyard.schemas.openai import Usage
from switchyard.workers.modelproxy import estimate
from switchyard.workers.modelproxy.job import Job, Target

CLIENT_CLOSED = 499  # the status of a stream its caller abandoned (usage events, metrics)
# The status of a call its deadline stopped while the provider worked (the handler turns the
# provider timeout cut to the deadline into this 504).
DEADLINE_PASSED = DeadlineExceeded.status
# Calls stopped from outside, not failed: billed (an estimate without a count), and under an
# event id of their own (see event_id).
_STOPPED = {CLIENT_CLOSED: LEFT, DEADLINE_PASSED: LATE}


def billed(job: Job) -> tuple[Usage, bool] | None:
    """The usage to bill ``job`` for and whether it is an estimate, or None for nothing."""
    usage = job.usage
    if usage is None:
        failed = job.status != 200 and job.status not in _STOPPED
        if failed and not job.chunks and not job.undelivered:
            return None  # a failure that delivered nothing
        return estimated_usage(job), True
    if job.status != 200 and job.chunks.content_after(job.usage_mark):
        # Ended early with only its opening count (content came after it): what was delivered
        # is at least its estimate. A final count (no content after it) is the provider's.
        sent = estimate.tokens(job.chunks.generated())
        if sent > usage.completion_tokens:
            return msgspec.structs.replace(
                usage, completion_tokens=sent, total_tokens=usage.prompt_tokens + sent
            ), True
    # An answer that showed its client Switchyard's estimate (a translated Messages or
    # Responses answer, a chat or completions one: .shown_usage) is billed that.
    return usage, isinstance(usage, estimate.Estimated)


def measures_chunks(job: Job) -> bool:
    """Whether :func:`billed` measures the content of ``job``'s chunks (what
    :meth:`.replay.SentChunks.settle` prepares without holding the event loop)."""
    if job.usage is None:
        return bool(job.chunks)
    return job.status != 200 and job.chunks.content_after(job.usage_mark)


def estimated_usage(job: Job) -> Usage:
    """The estimate of :mod:`.estimate`: the prompt as the edge estimated it (a quarter token
    per byte, inline media at most ``MEDIA_TOKENS`` each); an answer, streamed or whole, a
    quarter token per byte of what it delivered (its text, reasoning and tool calls, not its
    JSON); embeddings have no completion."""
    prompt = estimate.prompt_tokens(job.msg.data)
    if job.chunks:
        completion = estimate.tokens(job.chunks.generated())
    elif isinstance(job.answer, bytes):
        completion = estimate.answer_tokens(job.env.op, job.answer)
    elif job.undelivered and job.env.op != "embed":
        # Made but too large to pass on, its count unknown: the cap the request set (else
        # nothing), so a client cannot have long answers made for it unbilled.
        completion = _answer_cap(job.msg.data)
    else:
        completion = 0
    total = prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


class _Caps(msgspec.Struct):
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None
    n: int | None = None


_CAPS = msgspec.json.Decoder(_Caps)


def _answer_cap(body: bytes) -> int:
    """The most completion tokens the request let its answers take in all (its cap times
    ``n``), or 0 when it set none or does not decode."""
    try:
        caps = _CAPS.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    cap = caps.max_completion_tokens or caps.max_tokens or caps.max_output_tokens or 0
    return max(0, cap) * max(1, caps.n or 1)


def event_id(job: Job) -> str:
    """The id accounting bills once: one per request and deployment hop for a call that did not
    answer (an edge's re-send after a NATS failover, or a redelivery after a worker died, is
    the same call), one per request for an answer.

    A call stopped because its caller left gets an id of its own (``:left``): that caller may
    send the request again under the same id with a higher attempt (the batch runner does
    after a restart), and the answer it then gets must be billed too, not taken by accounting
    for a repeat of the stopped call's estimate. Every stopped attempt of one request and hop
    shares that id: two attempts running at once (an edge's re-send after a NATS failover)
    that are both stopped are the platform's duplicate, billed once.

    A call its deadline stopped (``:late``) is the same case: its caller (the batch runner, an
    internal client) may send it again under the same id with more time, and that answer is billed
    too. Its own suffix keeps it apart from a stop because the caller left, so one attempt
    stopped each way is billed twice: two provider calls.

    An answer (status 200) is billed once per request, whichever hop gave it: a copy of the
    request that a stalled model-proxy finished on the first deployment, while its redelivered
    copy failed there and was answered by the next, is one answer to its caller, not two (an
    id with the hop billed both). A stopped copy of a request whose answer was billed already
    is not billed (accounting, :func:`switchyard.schemas.events.answer_of`): the platform ran it
    twice and its caller left because it had the answer. One stopped before the answer (the
    order a caller's own re-send takes) is billed as before."""
    env = job.env
    if job.status == 200:
        return f"{env.billing_id}:{ANSWERED}"
    hop = f"{env.billing_id}:{','.join(env.tried)}"
    stopped = _STOPPED.get(job.status)
    return f"{hop}:{stopped}" if stopped else hop


def usage_event(job: Job, target: Target | None, *, estimated: bool) -> UsageEvent:
    """The event accounting bills once (:func:`event_id`)."""
    env = job.env
    u = job.usage or Usage()
    return UsageEvent(
        id=event_id(job),
        request_id=env.request_id,
        ts=time.time(),
        op=env.op,
        alias=env.alias,
        deployment=job.deployment_id,
        provider=target.provider_name if target else "",
        model=target.deployment.model if target else "",
        key_id=env.key_id,
        tenant=env.tenant,
        budget_period=env.budget_period or "monthly",
        stream=job.stream,
        status=job.status,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        web_search_calls=u.web_search_calls,
        latency_ms=round((time.time() - job.started) * 1000, 3),
        ttft_ms=round(job.ttft * 1000, 3) if job.ttft is not None else None,
        prompt_tokens_estimated=u.prompt_tokens if estimated else 0,
    )
