"""The provider call a dispatched request makes: its body as the provider gets it, and the
bounds it runs under (the deployment's timeouts cut to the request's deadline)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from switchyard.errors import DeadlineExceeded, InvalidRequest
from switchyard.schemas.openai import decode_body
from switchyard.schemas.secret import Secret
from switchyard.workers.modelproxy.job import Job, Target
from switchyard.workers.modelproxy.providers.base import ProviderCall

_BODY = msgspec.json.Decoder(dict[str, Any])


def provider_call(
    job: Job, target: Target, body: dict[str, Any], key: Secret | None, max_answer_bytes: int
) -> ProviderCall:
    """``job``'s call to ``target`` of ``body`` (:func:`decode_request_body`, its model set
    here) with ``key`` (its provider's API key, if it has one). ``max_answer_bytes``: one bus
    message's worth, or for a whole answer what a caller that reads parts takes.

    Raises:
        DeadlineExceeded: the request's deadline has passed (504; nothing was called).
    """
    body["model"] = target.deployment.model
    timeouts = target.timeouts
    remaining = job.deadline - time.time()
    if remaining <= 0:
        raise DeadlineExceeded("the request deadline passed before the provider was called")
    options = body.get("stream_options")
    return ProviderCall(
        op=job.env.op,
        body=body,
        stream=job.stream,
        client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        provider=target.provider,
        provider_name=target.provider_name,
        deployment=target.deployment,
        api_key=key,
        first_token_timeout=min(timeouts.first_token_s, remaining),
        total_timeout=min(timeouts.stream_s if job.stream else timeouts.request_s, remaining),
        idle_timeout=timeouts.idle_s,
        anthropic_beta=job.env.beta,
        max_answer_bytes=max_answer_bytes,
        request=job.msg.data,
    )


def decode_request_body(data: bytes) -> dict[str, Any]:
    """A request's whole body, read for the first time here (the edge reads only the fields it
    needs): a value the edge skipped can still be unreadable, as a number too large for a float
    or a string that is not UTF-8. Either is the client's 400 (:class:`InvalidRequest`), named
    as what it is."""
    return decode_body(_BODY, data, _unreadable)


def _unreadable(problem: str) -> InvalidRequest:
    where = problem.partition(" - at `")[0]  # msgspec's "at `$[...]`" names no field here
    return InvalidRequest(f"request body cannot be read: {where}", code="invalid_json")
