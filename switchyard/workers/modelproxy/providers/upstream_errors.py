"""Upstream failures, translated once into Switchyard errors.

Which failures are worth another attempt (on this or another deployment): rate limits, timeouts,
server errors, connection failures, our own credentials being refused (another deployment
may hold a valid key), a provider key that is not stored or cannot be fetched (no cooldown:
the provider is fine), and a provider that does not know the deployment's model (404, 410: the
client named a Switchyard alias, the deployment is what is wrong). Not retried: anything the
client's request caused (400, 413, 422, content policy, a 404 or 410 for an id the client
named), because every deployment would answer the same. A 404 on an endpoint beside chat
that the deployment does not serve (the legacy completions endpoint for a chat model) is
neither: tried on the route's other deployments without cooling (:class:`EndpointNotServed`).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from switchyard.errors import (
    ApiError,
    DeploymentCannotTake,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProviderDisconnected,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnreachable,
    SecretMissing,
    ServiceUnavailable,
)
from switchyard.workers.modelproxy.providers.connect_failure import describe

__all__ = [
    "MAX_LINE_BYTES",
    "clients_own",
    "cut_short",
    "endpoint_not_served",
    "from_status",
    "json_answer",
    "key_unreachable",
    "line_too_long",
    "no_cooldown",
    "no_endpoint",
    "not_a_stream",
    "parse_retry_after",
    "retryable",
    "sized_for",
    "timed_out",
    "too_large",
    "unreachable",
]

DEPLOYMENT_REMOVED = "deployment_removed"  # a request queued for a deployment since removed
KEY_UNAVAILABLE = "secret_unavailable"  # a provider key not stored, or not fetched here
OVERLOADED = 529  # Anthropic's "overloaded": its SDKs retry it (OverloadedError)
OVERLOADED_CODE = "provider_overloaded"
RETRYABLE_STATUSES = frozenset({401, 403, 404, 408, 409, 410, 425, 429, 500, 502, 503, 504, 529})
# The longest line of a streamed answer read (aiohttp's own limit is 512 KiB, which a Responses
# stream's final event, echoing a long answer with its instructions and tools, can pass). Each
# chunk is one NATS message, so this stays well under the server's max_payload (8 MiB).
MAX_LINE_BYTES = 4 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024  # a whole answer is read in parts this large (read_answer)
MAX_ERROR_BYTES = 256 * 1024  # what is read of an error answer (read_error)


def from_status(
    status: int,
    message: str,
    *,
    provider: str,
    code: str | None = None,
    retry_after: float | None = None,
    param: str | None = None,
) -> ApiError:
    """The error a client should see for an upstream HTTP ``status``.

    ``param`` (the request field the provider blames) is kept on a client error: the SDKs show
    it (``BadRequestError.param``), and it is how a client finds the field at fault.

    Client-caused statuses keep their meaning (400 stays 400, and a 404 or 410 for something
    the client named stays a :class:`NotFound` of that status); everything else becomes a 502
    :class:`ProviderError` carrying the upstream status, except 429, which stays 429 so clients
    back off, and 529 (Anthropic overloaded), which stays 529 (``provider_overloaded``): an
    Anthropic client is told it as Anthropic would (``overloaded_error``, which its SDK waits
    out and retries), and the heads can tell it from a failure (an OpenAI client gets 503,
    529 being no status of OpenAI's). Both stay retryable on another deployment.
    """
    if status == 429:
        return ProviderRateLimited(
            message, provider=provider, upstream_status=429, code=code, retry_after=retry_after
        )
    if status == 413:
        return PayloadTooLarge(message, code=code, param=param)
    if status == OVERLOADED:
        return ProviderError(
            f"provider {provider} is overloaded (HTTP 529): {message}",
            provider=provider,
            upstream_status=OVERLOADED,
            retryable=True,
            status=OVERLOADED,
            type="overloaded_error",
            code=OVERLOADED_CODE,
            retry_after=retry_after,
        )
    if (
        status in (404, 410)
        and names_the_clients(code, param)
        and not about_the_model(message, code)
    ):
        # Something the client named is not there (a previous response, a stored item, a
        # file): its request, answered with the provider's status, as OpenAI does (and as
        # Switchyard's own check of a previous_response_id does); a 400 said "malformed".
        # Only when the error names it: a bare "Not Found" (FastAPI's, Azure's "Resource
        # not found") is what a wrong api_base gets, the deployment's failure.
        return NotFound(message, code=code, param=param, status=status)
    if 400 <= status < 500 and status not in RETRYABLE_STATUSES:
        return InvalidRequest(message, code=code or "provider_rejected_request", param=param)
    if status in (404, 410):  # the model or endpoint the deployment names is not there
        if not message.startswith(f"provider {provider} answered HTTP"):  # said (no_endpoint)
            why = f"does not serve this deployment's model (HTTP {status})"
            message = f"provider {provider} {why}: {message}"
        code = "provider_model_not_found"  # its "model_not_found" would name the client's alias
    if status in (401, 403):
        # Said as the provider refusing our key: in its own words ("Incorrect API key
        # provided", code invalid_api_key) a client would take it for its own Switchyard key.
        if status == 401:
            why = "refused the API key stored for it (HTTP 401; check or rotate its secret)"
        else:  # a valid key without access (to this model, organisation or region)
            why = "refused the request made with its stored key (HTTP 403)"
        message = f"provider {provider} {why}: {message}"
        code = "provider_auth_error"
    return ProviderError(
        message,
        provider=provider,
        upstream_status=status,
        retryable=status in RETRYABLE_STATUSES,
        code=code or ("provider_auth_error" if status in (401, 403) else "provider_error"),
        retry_after=retry_after,
    )


# Codes of a 404 about the deployment's model or deployment, not about the client's request.
MODEL_CODES = frozenset({"model_not_found", "DeploymentNotFound"})


def names_the_clients(code: str | None, param: str | None) -> bool:
    """Whether a 404's error names something of the client's request: a field (``param``,
    ``previous_response_id``, a file ``id``) or an id's code (``previous_response_not_found``),
    not the deployment's model."""
    if param and param != "model":
        return True
    return code is not None and code.endswith("_not_found") and code not in MODEL_CODES


def no_endpoint(provider: str, path: str) -> str:
    """What a 404 without an error of the API's says: nothing answers at ``path`` (an
    ``api_base`` without the ``/v1`` the server serves under, or a server of another API), or
    the server knows no such model. A newcomer's api_base without /v1 was told "does not serve
    this deployment's model", with neither the path nor /v1 named."""
    where = f" for {path}" if path else ""
    hint = ""
    if path and "/v1" not in path and "/openai/deployments/" not in path:  # (Azure's paths)
        hint = ": does its api_base lack /v1?"
    # Short: the failed attempts listed in a client's error keep 200 characters each.
    return f"provider {provider} answered HTTP 404{where}, no such endpoint or model{hint}"


class EndpointNotServed(DeploymentCannotTake):
    """A deployment whose provider has no such endpoint for its model: a 404 on the legacy
    completions endpoint whose words say so (OpenAI's "This is a chat model and not
    supported in the v1/completions endpoint"; a bare "Not Found" is no such word: a dead
    backend behind a proxy answers it too, and that is cooled). No provider outage: its
    chat works. Tried on the route's other deployments like any request a deployment cannot
    take (nothing cools, no attempt counted), and the client's 400 naming the endpoint and
    the route when none serves it; it was a 502 ``all_deployments_failed`` that cooled every
    deployment of the route for every tenant's chat."""

    code = "endpoint_not_supported"


# Ops whose endpoint a deployment may lack while serving its model on chat (a 404 there says
# nothing of the deployment's health), and the endpoint each is, as a client calls it.
SIDE_ENDPOINTS = {"complete": "/v1/completions"}
# How a 404 says the model itself is not there (OpenAI's and vLLM's "The model `x` does not
# exist", Ollama's "model \"x\" not found"): cooled as on chat.
_NO_SUCH_MODEL = ("does not exist", "not found")
# The words by which a provider says the deployment's model is not served on the endpoint
# (OpenAI's "This is a chat model and not supported in the v1/completions endpoint", vLLM's
# "does not support Completions API", Azure's "The completion operation does not work with
# the specified model"), and the codes that say it. Only these are taken as "not served": a
# bare or generic 404 ("404 Not Found" from nginx, "default backend - 404", Go's "404 page
# not found", FastAPI's {"detail": "Not Found"}, Azure's "Resource not found") is what a
# proxy whose backend died answers too, so it is the deployment's failure (cooled, a 502),
# not the client's 400 that cooled nothing and raised no alert.
_NOT_SERVED_WORDS = (
    "chat model",
    "not supported",
    "does not support",
    "not support the",
    "unsupported",
    "does not work with",
)
_NOT_SERVED_CODES = frozenset({"OperationNotSupported", "unsupported_endpoint"})


def says_not_served(said: str | None, code: str | None) -> bool:
    """Whether a 404's error says, in words or a code, that the endpoint is not served for
    the model (positive evidence), rather than only that nothing was found."""
    if code in _NOT_SERVED_CODES:
        return True
    text = (said or "").lower()
    return any(w in text for w in _NOT_SERVED_WORDS)


def endpoint_not_served(
    op: str, provider: str, path: str, said: str | None, code: str | None
) -> EndpointNotServed | None:
    """The refusal of a 404 on ``op``'s endpoint when its API's words say the deployment does
    not serve that endpoint, else None: a model that does not exist there, and a 404 saying
    nothing more than "Not Found" (a server or proxy without the path, a dead ingress
    backend), fail as on chat: the deployment is what is wrong, and it is cooled."""
    endpoint = SIDE_ENDPOINTS.get(op)
    if endpoint is None or code in MODEL_CODES or not says_not_served(said, code):
        return None
    text = (said or "").lower()
    if "model" in text and "endpoint" not in text and any(w in text for w in _NO_SUCH_MODEL):
        return None
    why = f": {said[:160]}" if said else ""
    return EndpointNotServed(
        f"provider {provider} does not serve {endpoint} for this deployment's model "
        f"(HTTP 404 for {path or endpoint}{why})",
        param="model",
    )


def about_the_model(message: str, code: str | None) -> bool:
    """Whether a 404 says the deployment's model (or deployment, or the API path itself) is
    not there, as OpenAI, Azure, Anthropic, vLLM and Ollama word it, rather than an id from
    the client's request (a Responses item not stored, a file): only the first is the
    deployment's failure. A 404 without an error body (a wrong ``api_base``) is too."""
    if code in MODEL_CODES:
        return True
    text = message.lower()
    return "model" in text or "deployment" in text or "answered http" in text


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """The seconds a provider's HTTP ``Retry-After`` asks to wait, or None when it asks
    nothing usable (the route's cooldown and its usual ``Retry-After`` apply then).

    RFC 9110 allows delay-seconds or an HTTP-date. A date counts from ``now`` (unix seconds;
    the clock when None); one already past is 0, as ``Retry-After: 0`` is: the wait it asked
    for is over, and the two ways of saying a time mean the same. A fraction is kept (some
    providers send one). A negative number, or anything else, is no value: read as 0 it told
    the head "retry at once" (no cooldown) and left the client's 429 without a Retry-After.
    The bus's own ``Sy-Retry-After`` is read by :func:`switchyard.bus.headers.parse_retry_after`.
    Never raises: the value comes from a provider.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _until(text, time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return max(0.0, seconds)  # "-0" too is 0 (rendered "-0" on the bus otherwise)


def _until(date: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP-date (0 when it is past), None when it is no date."""
    try:
        when = email.utils.parsedate_to_datetime(date)
        if when.tzinfo is None:  # asctime's form, or "-0000": HTTP-dates are all GMT
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


async def read_answer(resp: aiohttp.ClientResponse, limit: int, provider: str) -> bytes:
    """A successful answer's body, read no further than ``limit`` bytes (0: whole): past
    it, :func:`too_large` (an answer that cannot be sent on is not held in memory either)."""
    length = resp.content_length
    if not limit or (length is not None and length <= limit):  # the usual answer: at once
        return await resp.read()
    if length is not None:
        raise too_large(provider, length, limit)
    parts: list[bytes] = []
    size = 0
    async for part in resp.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(part)
        if size > limit:
            raise too_large(provider, None, limit)
        parts.append(part)
    return b"".join(parts)


async def read_error(resp: aiohttp.ClientResponse) -> bytes:
    """The start of an error answer's body (an error page, a JSON error): at most
    :data:`MAX_ERROR_BYTES`, all a message is read from; a provider's or proxy's huge page is
    not held in memory."""
    parts: list[bytes] = []
    size = 0
    while size < MAX_ERROR_BYTES:
        part = await resp.content.read(MAX_ERROR_BYTES - size)
        if not part:  # the end
            break
        parts.append(part)
        size += len(part)
    if resp.content.at_eof():
        resp.release()
    else:  # the rest is left unread: this connection cannot carry another request
        resp.close()
    return b"".join(parts)


class Undelivered(ProviderError):
    """The provider answered, but its answer could not be passed on (larger than a bus
    message, a streamed line past :data:`MAX_LINE_BYTES`): it did the work and charges for it,
    so the call is billed its prompt's estimate (:mod:`..billing`); never cooled."""


class AnswerTooLarge(Undelivered):
    """A whole answer larger than one bus message carries: ``size`` bytes (None: not read to
    its end), ``limit`` the most a whole answer may be.

    The client's 413 (``invalid_request_error``), not a 502: the same request gets the same
    answer from any deployment, every time, and the SDKs retry every 5xx, each retry a
    provider call that is billed (the OpenAI SDK sent an embeddings call of 1,500 float
    inputs three times). 413 rather than 400 or 422: the fix is the one for a body too large,
    a smaller request (fewer inputs, a lower max_tokens), and no SDK retries it (they retry
    408, 409, 429 and 5xx); ``x-should-retry: false`` says so to the OpenAI and Anthropic
    SDKs as well (:attr:`no_retry`)."""

    no_retry = True

    def __init__(self, message: str, *, provider: str, size: int | None, limit: int) -> None:
        super().__init__(
            message,
            provider=provider,
            code="answer_too_large",
            retryable=False,
            status=413,
            type="invalid_request_error",
        )
        self.size = size
        self.limit = limit


def too_large(
    provider: str, size: int | None, limit: int, *, inputs: int = 0, base64: bool = False
) -> AnswerTooLarge:
    """A whole answer larger than one bus message may carry (``max_payload`` less the
    headers' room; ``size`` None: not read to its end): the client's 413, never tried
    elsewhere (another deployment's answer would be as large), never cooled (the provider
    did its job), billed its prompt's estimate (:class:`Undelivered`). ``inputs``: an
    embeddings answer's input count (it cannot be streamed: the message says how many fit)."""
    what = "more than" if size is None else f"{size / 2**20:.1f} MiB, more than"
    fix = "ask for less (fewer embedding inputs, a lower max_tokens) or stream it"
    if inputs:
        fit = f"about {inputs * limit // size}" if size else f"fewer than {inputs}"
        fix = f"send fewer inputs per call ({fit} inputs of this size fit)"
        if inputs == 1 or fit == "about 0":
            fix = "not one input's vector fits: ask for fewer `dimensions`"
        if not base64:
            fix += ", or ask for encoding_format base64 (about a quarter of the size)"
    return AnswerTooLarge(
        f"the answer of provider {provider} is {what} the "
        f"{limit / 2**20:.1f} MiB a whole answer may be: {fix}",
        provider=provider,
        size=size,
        limit=limit,
    )


def sized_for(exc: AnswerTooLarge, op: str, body: Mapping[str, Any]) -> AnswerTooLarge:
    """``exc`` said for the request it answers: for embeddings, how many inputs fit."""
    if op != "embed":
        return exc
    given = body.get("input")
    many = isinstance(given, list) and bool(given) and not isinstance(given[0], int)
    inputs = len(given) if many and isinstance(given, list) else 1
    base64 = body.get("encoding_format") == "base64"
    return too_large(exc.provider, exc.size, exc.limit, inputs=inputs, base64=base64)


def unreachable(provider: str, detail: str) -> ProviderUnreachable:
    return ProviderUnreachable(f"provider {provider} is unreachable: {detail}", provider=provider)


def connection_failed(provider: str, exc: Exception) -> ProviderUnreachable:
    """The failure of a provider call whose connection failed (``exc``: aiohttp's error). One
    that closed while the answer came (a payload error, a server that disconnected) is said as
    such: the provider was reached, and aiohttp's own wording (a ``TransferEncodingError: 400``
    for a stream cut short) misleads."""
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return closed_early(provider)
    return unreachable(provider, describe(exc))  # the address and the system's reason


def closed_early(provider: str) -> ProviderDisconnected:
    """A provider that was reached and closed the connection before its answer was whole:
    retried and cooled as one unreachable, in words and under a code
    (``provider_disconnected``) that say it was reached."""
    return ProviderDisconnected(
        f"provider {provider} closed the connection before its answer was complete",
        provider=provider,
    )


def cut_short(provider: str, missing: str = "no finish_reason, no [DONE]") -> ProviderError:
    """A stream that ended without its dialect's last event: the answer is cut."""
    return ProviderError(
        f"provider {provider} ended its stream before the answer was complete ({missing})",
        provider=provider,
        retryable=True,
    )


def json_answer(provider: str, data: bytes, content_type: str) -> bytes:
    """``data`` when it is a JSON object, as every API here answers; else the provider's
    failure. A proxy in front of a provider may answer 200 with an HTML error page: passed
    on, the client's SDK fails to parse it and no other deployment is tried.

    Raises:
        ProviderError: the body is not a JSON object (tried elsewhere, cooled as a 5xx).
    """
    if data.lstrip()[:1] == b"{":
        return data
    kind = content_type.split(";", 1)[0].strip() or "no content type"
    raise ProviderError(
        f"provider {provider} answered 200 with a body that is not JSON ({kind}, "
        f"{len(data)} bytes)",
        provider=provider,
        retryable=True,
        upstream_status=200,
    )


def not_a_stream(provider: str, content_type: str, size: int) -> ProviderError:
    """A streamed request answered 200 with something other than an event stream (a proxy's
    HTML page): the provider's failure, before anything reached the client."""
    return ProviderError(
        f"provider {provider} answered a streamed request with {content_type or 'no content type'}"
        f" ({size} bytes), not an event stream",
        provider=provider,
        retryable=True,
        upstream_status=200,
    )


def line_too_long(provider: str) -> Undelivered:
    """A streamed line too long to pass on: tried on the route's next deployment (it may
    answer in shorter lines), never cooled (the line is this request's), billed its prompt's
    estimate (:class:`Undelivered`: the provider produced it)."""
    return Undelivered(
        f"provider {provider} sent a streamed line longer than {MAX_LINE_BYTES >> 20} MiB",
        provider=provider,
        retryable=True,
    )


def timed_out(provider: str, what: str) -> ProviderTimeout:
    return ProviderTimeout(f"provider {provider} timed out waiting for {what}", provider=provider)


def key_unreachable(exc: ApiError) -> bool:
    """A provider key this model-proxy could not fetch (the secrets service or Vault is
    down) and has no cached copy of: other model-proxies may hold it, and the provider is fine.
    Not :class:`SecretMissing` (the key is not stored at all: nobody can call with it)."""
    return (
        isinstance(exc, ServiceUnavailable)
        and not isinstance(exc, SecretMissing)
        and exc.code == KEY_UNAVAILABLE
    )


def retryable(exc: ApiError) -> bool:
    """Whether another deployment may answer: a provider failure that says so, a deployment
    whose provider key is not stored or cannot be fetched here, one whose provider has no
    place for a field of the request, or one no longer routed (its queue is being emptied)."""
    return (
        (isinstance(exc, ProviderError) and exc.retryable)
        or isinstance(exc, SecretMissing | DeploymentCannotTake)
        or key_unreachable(exc)
        or exc.code == DEPLOYMENT_REMOVED
    )


def clients_own(exc: ApiError) -> bool:
    """A failure the client's request caused (malformed, or naming an id the provider does
    not know): answered, not logged as the deployment's."""
    return isinstance(exc, InvalidRequest | NotFound)


def no_cooldown(exc: ApiError) -> bool:
    """A failure that says nothing about the provider's health: nothing to wait out. An
    answer that could not be passed on is this request's, not the provider's failure (cooling
    the deployment for it turned every tenant's requests away for one client's)."""
    return (
        isinstance(exc, SecretMissing | Undelivered | DeploymentCannotTake)
        or key_unreachable(exc)
        or exc.code == DEPLOYMENT_REMOVED
    )
