"""The litellm path: providers whose wire format is not OpenAI's (Anthropic, Gemini, Cohere...).

litellm translates OpenAI-shaped requests into each provider's dialect and back. It is slow to
import (~2-3 s) and costs several ms of CPU per call (DESIGN §8), so only kinds that need a
translation come here; OpenAI-compatible APIs take the direct path in ``openai_compat``.

Conventions shared with that path: every upstream failure becomes an
:class:`~switchyard.errors.ApiError` via ``upstream_errors``, messages are redacted of the key,
streamed chunks are forwarded as they arrive, and timeouts wrap each upstream read, never a yield.

Only documented OpenAI request fields are passed on. litellm's keyword arguments mix request
parameters with its own controls (``api_base``, ``api_key``, ``mock_response``, ``metadata``...),
so forwarding arbitrary client fields would let a client redirect our key to its own server;
any other field is refused, naming it, save the few only OpenAI's platform acts on
(:mod:`.litellm_request`).
Legacy completions go through ``litellm.atext_completion``, which keeps the ``text_completion``
response shape clients of ``/v1/completions`` expect. What litellm would quietly answer wrong is
refused instead: a field the provider cannot take (litellm would leave it out;
:mod:`.litellm_params` says which it may), ``n`` above 1 in its own words, and several prompts
in one legacy completion (litellm joins them into one conversation with one answer).

Redirects are never followed (:mod:`.redirects`): litellm's HTTP clients are made by litellm
itself, per provider, and follow them by default, so the adapter turns that off once, when it
loads litellm (:func:`_refuse_redirects`). A request litellm cannot build because it nests too
deeply for the interpreter's recursion limit is the client's 400, like any request it cannot
build, never the provider's failure.

Embeddings are always asked for as floats and encoded here as the client asked
(``encoding_format``): litellm answers floats whatever ``encoding_format`` says, and passes
the field to providers that read it as something else (Cohere's ``embedding_types``).

The usage a client gets holds OpenAI's fields and the provider's own counts, not litellm's
additions: its ``cost`` is its list price for the call, not what Switchyard bills.
A chat or legacy answer is in OpenAI's shape (:mod:`.litellm_answer`), not litellm's: no
nulls for what the provider did not send, none of litellm's own fields but Claude's
``thinking_blocks`` (sent back on the next turn, litellm needs them), a streamed tool call
named once, the deployment's ``model`` whether streamed or not.

A stream that ends having carried no content, no tool call and no usage is the provider's
failure (retried elsewhere), not an empty answer: litellm makes up a closing ``stop`` chunk
for a stream that closed before its first event. Chunks that carry nothing are held back
until something does, so the failure can still go to another deployment (an empty event says
the provider began: :mod:`..stream_watch`). A chat choice's ``finish_reason`` is sent once,
in its last chunk, when the stream ends (:mod:`.litellm_stream`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import msgspec

from switchyard.config import prepare_litellm_environment
from switchyard.errors import ApiError, DeploymentCannotTake, InvalidRequest, ProviderError
from switchyard.schemas.openai import Usage, cache_counts
from switchyard.schemas.secret import redact
from switchyard.workers.modelproxy.providers import (
    connect_failure,
    embedding_format,
    litellm_answer,
    litellm_params,
    litellm_request,
)
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.client_request_id import (
    OPENAI_FAMILIES,
    client_request_id,
)
from switchyard.workers.modelproxy.providers.embedded_error import provider_error
from switchyard.workers.modelproxy.providers.litellm_stream import closing, delivers, whole
from switchyard.workers.modelproxy.providers.redirects import is_redirect, redirected
from switchyard.workers.modelproxy.providers.stream_timers import GRACE_S, WHOLE, read_by

log = logging.getLogger("switchyard.modelproxy")
_ENCODE = msgspec.json.Encoder()
# The usage fields a client gets: OpenAI's, then the provider's own counts as litellm reports
# them (Anthropic's cache reads and writes and server tool use).
_USAGE_FIELDS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "server_tool_use",
    }
)
_SAMPLING = (
    "frequency_penalty logit_bias max_tokens n presence_penalty seed stop temperature top_p user"
)
# The OpenAI request fields passed to litellm, per op (see the module docstring for why).
_PARAMS = {
    "chat": frozenset(
        f"{_SAMPLING} audio function_call functions logprobs max_completion_tokens modalities "
        "parallel_tool_calls prediction reasoning_effort response_format service_tier "
        "tool_choice tools top_logprobs web_search_options".split()
    ),
    "complete": frozenset(f"{_SAMPLING} best_of echo logprobs suffix".split()),
    "embed": frozenset({"dimensions", "user"}),  # encoding_format: see the module docstring
}
_INPUT = {"chat": "messages", "complete": "prompt", "embed": "input"}
# The other fields a request may carry: read by the adapter or set by it, not passed as they are.
_FRAME = {
    op: frozenset({"model", _INPUT[op], "stream", "stream_options"})
    | ({"encoding_format"} if op == "embed" else set())
    for op in _INPUT
}
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, httpx.TransportError, ConnectionError)
# What litellm's own code raises on a request of the wrong shape, before sending anything.
_REQUEST_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)
_MAX_MESSAGE = 1000
# What litellm's HTTP handlers read as ``follow_redirects`` once loaded (_refuse_redirects):
# False, whatever their constructor was given (the value it sets is dropped).
_NEVER = property(lambda _self: False, lambda _self, _value: None)


class LiteLLM:
    """One adapter for every litellm-backed provider; litellm keeps its own connection pools."""

    def __init__(self) -> None:
        self._module: Any = None
        self._session: httpx.AsyncClient | None = None  # see _refuse_redirects

    async def _litellm(self) -> Any:
        if self._module is None:
            prepare_litellm_environment()
            # The import takes seconds of CPU; in a thread the event loop still gets turns (the
            # GIL is handed over every few ms), so requests in flight are not frozen meanwhile.
            module: Any = await asyncio.to_thread(importlib.import_module, "litellm")
            # Not a credential: stops litellm printing "Give Feedback / Get Help" banners to
            # stdout on every upstream error, which would flood worker logs.
            module.suppress_debug_info = True
            self._session = _refuse_redirects(module)
            self._module = module
        return self._module

    async def close(self) -> None:
        if self._module is not None:
            await self._module.close_litellm_async_clients()
        if self._session is not None:
            await self._session.aclose()
            self._session = None

    async def complete(self, call: ProviderCall) -> Completion:
        lib = await self._litellm()
        wanted = embedding_format.requested(call.body) if call.op == "embed" else ""
        try:
            async with asyncio.timeout(call.total_timeout):
                response = await _call(lib, call, stream=False)
            # Nulls are left out by pydantic's own serializer (see litellm_answer).
            body = response.model_dump(mode="json", exclude_none=call.op != "embed")
        except TimeoutError:
            raise ue.timed_out(call.provider_name, "the response") from None
        except Exception as exc:  # noqa: BLE001 - every litellm failure is translated, see _translate
            raise _translate(lib, exc, call, "the response") from None
        if wanted:
            body = embedding_format.encoded(body, wanted)
        elif call.op == "chat":
            body = litellm_answer.completion(body, call.deployment.model, one_call=_one_call(call))
        elif call.op == "complete":
            body = litellm_answer.legacy(body, call.deployment.model)
        usage = _usage(body)
        _own_fields_out(body)
        return Completion(_ENCODE.encode(body), usage)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamEvent]:
        lib = await self._litellm()
        name = call.provider_name
        loop = asyncio.get_running_loop()
        first_by = loop.time() + call.first_token_timeout
        end_by = loop.time() + call.total_timeout
        held: list[StreamEvent] = []  # chunks carrying nothing yet: sent once something comes
        delivered = False
        shape = litellm_answer.stream(call.op, call.deployment.model, one_call=_one_call(call))
        try:
            async with asyncio.timeout_at(min(first_by, end_by)):
                chunks = await _call(lib, call, stream=True)
        except TimeoutError:
            raise ue.timed_out(name, "the first token") from None
        except Exception as exc:  # noqa: BLE001 - every litellm failure is translated
            raise _translate(lib, exc, call, "the first token") from None
        # Timeouts wrap each read, never a yield: the consumer's time between chunks must not
        # be cancelled by a scope that belongs to this generator.
        try:
            while True:
                by, what = _read_by(
                    call,
                    shape,
                    first=not (held or delivered),  # (every chunk read is held or delivered)
                    delivered=delivered,
                    first_by=first_by,
                    end_by=end_by,
                )
                try:
                    async with asyncio.timeout_at(by):
                        chunk = await anext(chunks)
                    # A chunk is reshaped (litellm_answer): its nulls are left out by
                    # pydantic's own serializer, the cheapest place to do it.
                    doc = chunk.model_dump(mode="json", exclude_none=True)
                except StopAsyncIteration:
                    if not delivered:
                        raise ue.cut_short(name, "no content, tool call or usage came") from None
                    break
                except Exception as exc:  # noqa: BLE001 - every litellm failure is translated
                    done = whole(shape, call.body, delivered=delivered)
                    if (error := _read_failed(lib, exc, call, what, done=done)) is not None:
                        raise error from None
                    break  # (no end after a whole answer: ended all the same)
                substance = delivered or delivers(doc)  # before _event, which may drop usage
                if (shaped := shape.chunk(doc)) is None:  # a bare finish_reason: said at the end
                    continue
                events = [*closing(shape, before=shaped), _event(shaped, call.client_wants_usage)]
                if not delivered:
                    held += events
                    if not substance:  # the provider began (an empty event says so)
                        yield StreamEvent(None)
                        continue
                    delivered, events = True, held  # (held is read no more)
                for event in events:
                    yield event
            for event in closing(shape):  # the stream's end: its choices' finish_reason
                yield event
        finally:
            await _close(chunks)


def _read_by(
    call: ProviderCall,
    shape: litellm_answer.ChatStream | litellm_answer.LegacyStream,
    *,
    first: bool,
    delivered: bool,
    first_by: float,
    end_by: float,
) -> tuple[float, str]:
    """By when the next chunk must come, and what it waits for (:func:`read_by`); once a chat
    answer is whole (every choice asked for finished), :data:`GRACE_S` at most, as on the
    direct path (litellm keeps the usage until the response ends: a provider that sent no end
    held the stream until ``idle_s``, then ended it in a timeout after the whole answer)."""
    by, what = read_by(first, delivered, first_by, end_by, call.idle_timeout)
    if whole(shape, call.body, delivered=delivered):
        grace_by = asyncio.get_running_loop().time() + GRACE_S
        if grace_by < by:
            return grace_by, WHOLE
    return by, what


def _read_failed(
    lib: Any, exc: Exception, call: ProviderCall, what: str, *, done: bool
) -> ApiError | None:
    """The error a stream's failed read (waiting for ``what``) ends it with; None to end it
    as whole (its held ``finish_reason`` sent): the grace after a whole answer ran out, or a
    read after one (``done``) failed otherwise (its usage chunk or end never came: logged)."""
    if isinstance(exc, TimeoutError):  # (ours: each read's timeout scope)
        return None if what == WHOLE else ue.timed_out(call.provider_name, what)
    error = _translate(lib, exc, call, what)
    if done:
        log.warning(  # (its message redacted of the key by _translate)
            "provider %s failed after a whole answer, ended as it is: %s",
            call.provider_name,
            error.message,
        )
        return None
    return error


async def _close(chunks: Any) -> None:
    # Releases the upstream connection when the consumer stopped early or a read failed. Text
    # completion streams have no aclose; the chat stream they wrap does.
    target = chunks if hasattr(chunks, "aclose") else getattr(chunks, "completion_stream", None)
    if target is not None and hasattr(target, "aclose"):
        await target.aclose()


async def _call(lib: Any, call: ProviderCall, *, stream: bool) -> Any:
    """litellm's answer (or stream) to ``call``. A field the provider cannot take is refused
    by litellm before anything is sent; those it can go without are left out and the call made
    again, and a refusal naming none of them is the client's 400 (:mod:`.litellm_params`)."""
    function = _function(lib, call.op)
    args = _arguments(call, stream=stream, lib=lib)
    while True:  # each round leaves out at least one field, so it ends
        try:
            return await function(**args)
        except lib.UnsupportedParamsError as exc:
            said = redact(str(getattr(exc, "message", None) or exc), call.api_key)
            sent = [k for k in args if k in _PARAMS[call.op] or k == "stream_options"]
            spare = [
                field
                for field in litellm_params.named(said, sent)
                if litellm_params.can_go_without(field, args[field], args)
            ]
            if not spare:
                fields = litellm_params.listed(said, sent)
                model = call.deployment.model
                raise litellm_params.refusal(call.provider_name, model, fields, said) from None
            args = litellm_params.without(args, spare)


def _function(lib: Any, op: str) -> Any:
    return {"chat": lib.acompletion, "complete": lib.atext_completion, "embed": lib.aembedding}[op]


def _arguments(call: ProviderCall, *, stream: bool, lib: Any) -> dict[str, Any]:
    kind = call.provider.kind
    body = call.body
    _one_choice_only(lib, call)
    if call.op == "complete":
        _one_prompt_only(call)
    litellm_request.unknown(call, _PARAMS[call.op] | _FRAME[call.op])
    args = {k: v for k, v in body.items() if k in _PARAMS[call.op]}
    args[_INPUT[call.op]] = body.get(_INPUT[call.op])
    litellm_request.end_user(body, args)
    args.update(
        model=call.deployment.model if kind == "litellm" else f"{kind}/{call.deployment.model}",
        api_base=call.provider.api_base,
        timeout=call.total_timeout,
        drop_params=False,  # see _call
        # The gateway retries across deployments itself; retries in here would multiply them.
        num_retries=0,
        max_retries=0,
    )
    litellm_request.check(lib, call, args)
    sent_id = client_request_id(call.request_id)
    if sent_id and litellm_request.family(lib, str(args["model"]), kind) in OPENAI_FAMILIES:
        args["extra_headers"] = sent_id
    if call.api_key is not None:
        args["api_key"] = call.api_key.reveal()
    if stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # count tokens on every stream; see _event
        args.update(stream=True, stream_options=options)
    return args


def _one_call(call: ProviderCall) -> bool:
    """The client asked for one tool call per answer: the answer keeps its first, as Gemini
    has no such setting (litellm sends it nothing) and Anthropic's may be ignored."""
    return call.body.get("parallel_tool_calls") is False


def _one_prompt_only(call: ProviderCall) -> None:
    """A legacy completion's ``prompt`` as these providers take it: one text. litellm turns a
    list of prompts into one conversation of several user messages, answered once, where
    OpenAI answers each prompt (``choices`` per prompt); token ids it cannot send at all.
    Refused instead, naming the field.

    Raises:
        InvalidRequest: a list of several prompts, or a prompt of token ids.
    """
    prompt = call.body.get("prompt")
    if not isinstance(prompt, list) or (len(prompt) == 1 and isinstance(prompt[0], str)):
        return
    if all(isinstance(p, str) for p in prompt):  # also an empty list: no prompt at all
        why = f"takes one prompt per request, not a list of {len(prompt)}"
        fix = "send one request per prompt"
    else:
        why = "takes the prompt as text, not as token ids"
        fix = "send the prompt as a string"
    raise DeploymentCannotTake(
        f"`prompt`: provider {call.provider_name} {why}; {fix}",
        param="prompt",
        code="unsupported_parameter",
    )


def _one_choice_only(lib: Any, call: ProviderCall) -> None:
    """``n`` above 1 where the provider has no such parameter (Anthropic, Mistral): dropped,
    one choice would come back and a client reading ``choices[1]`` fail far from the cause.
    Refused in words of its own (:func:`_call` would name the field only); for chat and legacy
    completions alike (litellm serves both through the provider's chat API).

    Raises:
        InvalidRequest: ``n`` > 1 for a provider litellm does not send it to.
    """
    n = call.body.get("n")
    if call.op == "embed" or not isinstance(n, int) or isinstance(n, bool) or n <= 1:
        return
    kind = call.provider.kind
    model = call.deployment.model
    try:
        if kind == "litellm":
            supported = lib.get_supported_openai_params(model=model)
        else:
            supported = lib.get_supported_openai_params(model=model, custom_llm_provider=kind)
    except Exception:  # noqa: BLE001 - litellm's own lookup failing must not refuse the request
        return
    if supported is not None and "n" not in supported:
        raise DeploymentCannotTake(
            f"`n` ({n}) is not offered by provider {call.provider_name}: it returns one choice "
            "per request; send the request n times instead",
            param="n",
            code="unsupported_parameter",
        )


def _event(doc: dict[str, Any], client_wants_usage: bool) -> StreamEvent:
    usage = _usage(doc)
    if usage is None or client_wants_usage:
        _own_fields_out(doc)
        return StreamEvent(_ENCODE.encode(doc), usage)
    if not doc.get("choices"):
        return StreamEvent(None, usage)  # our own usage request: record it, do not forward it
    doc.pop("usage", None)
    return StreamEvent(_ENCODE.encode(doc), usage)


def _usage(doc: dict[str, Any]) -> Usage | None:
    """The usage of a dumped litellm response or chunk. litellm folds Anthropic's cache reads
    and writes into ``prompt_tokens`` and reports them beside it (``cache_read_input_tokens``,
    ``cache_creation_input_tokens``) and in ``prompt_tokens_details`` (``cached_tokens``,
    ``cache_creation_tokens``); OpenAI's and Gemini's cached tokens are ``cached_tokens``."""
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        details = {}
    read, write = cache_counts(
        prompt,
        _count(usage.get("cache_read_input_tokens")),
        _count(usage.get("cache_creation_input_tokens")),
        _count(details.get("cached_tokens")),
        _count(details.get("cache_creation_tokens")),
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _own_fields_out(doc: dict[str, Any]) -> None:
    """Keep in ``doc``'s usage only OpenAI's fields and the provider's own counts (its cache
    reads and writes, its server tools' use): litellm adds its own, ``cost`` among them, its
    list price for the call, which is not what Switchyard bills (a route's price, an override)
    and would mislead a client reading it as the bill."""
    usage = doc.get("usage")
    if isinstance(usage, dict):
        doc["usage"] = {k: v for k, v in usage.items() if k in _USAGE_FIELDS}


def _count(value: object) -> int | None:
    """A token count litellm reported, or None (absent, null or not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _translate(lib: Any, exc: Exception, call: ProviderCall, what: str) -> ApiError:
    """The Switchyard error for a litellm failure (litellm raises its own, status-carrying ones)."""
    name = call.provider_name
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, lib.Timeout | TimeoutError):
        return ue.timed_out(name, what)
    # litellm walks the request recursively (tool schemas, content) to build the provider's:
    # a value nested a few hundred levels deep, which every JSON decoder on the way took,
    # ends it with a RecursionError, wrapped as a 500. The client's request, not a provider
    # failure: as such it cooled the deployment for every tenant, and nothing was sent.
    if _in_chain(exc, RecursionError) is not None:
        return InvalidRequest(
            f"the request nests objects or lists too deeply to be sent to provider {name}: "
            "flatten the deepest value (a tool's parameters, a message's content)",
            code="invalid_request",
        )
    moved = _redirect_status(exc)
    if moved is not None:  # not followed (_refuse_redirects); its text may name the target
        return redirected(name, moved)
    text = str(getattr(exc, "message", None) or exc)
    # Some litellm messages embed a formatted traceback: internal detail, not for clients.
    text = text.split("\nTraceback (most recent call last)", 1)[0].strip()
    text = litellm_params.plain(text)  # "litellm.APIConnectionError: " says nothing to clients
    said, param = provider_error(text)  # the provider's own sentence, when litellm embeds it
    message = redact(said, call.api_key)[:_MAX_MESSAGE]
    # litellm reports a refused connection as a 500 from the provider; the cause says otherwise.
    # One that closed mid-answer it reports alike (httpx's ReadError): said as the direct path
    # says it, not as "cannot connect" to a provider that was reached.
    cause = _connection_failure(exc)
    if cause is not None and connect_failure.closed_early(cause):
        return ue.closed_early(name)
    if cause is not None:
        return ue.unreachable(name, redact(connect_failure.describe(cause), call.api_key))
    # A request litellm could not even build for the provider ("'int' object is not
    # iterable" for a message whose content is a number) is reported as a 500 too. It is the
    # client's request: a 400, not a provider failure that would cool the deployment for
    # everyone (and be tried on every other deployment, each time cooling another).
    if _built_nothing(exc):
        return InvalidRequest(
            f"the request cannot be sent to provider {name} as it is: {message}",
            code="invalid_request",
        )
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return ProviderError(f"provider {name} failed: {message}", provider=name)
    headers = getattr(exc, "litellm_response_headers", None)
    retry_after = headers.get("retry-after") if headers is not None else None
    error = ue.from_status(
        status,
        message,
        provider=name,
        retry_after=ue.parse_retry_after(retry_after),
        param=redact(param, call.api_key)[:200] if param else None,
    )
    if isinstance(error, ProviderError) and error.upstream_status is None:
        error.upstream_status = status
    return error


def _built_nothing(exc: BaseException) -> bool:
    """Whether litellm failed in its own code before any HTTP exchange: a Python error (a
    wrong type or shape in the request, tool arguments that are not JSON) that litellm
    wrapped directly in its generic connection error. Only the direct cause counts: deeper in
    the chain sits a provider's answer litellm could not read (an HTML page's JSONDecodeError
    under AnthropicError), which is the provider's failure."""
    if getattr(exc, "response", None) is not None:  # a provider answered
        return False
    return isinstance(exc.__cause__ or exc.__context__, _REQUEST_SHAPE_ERRORS)


def _connection_failure(exc: BaseException) -> BaseException | None:
    return _in_chain(exc, _CONNECTION_ERRORS)


def _redirect_status(exc: BaseException) -> int | None:
    """The 3xx a provider answered, if that is what ``exc`` reports. litellm reports a status
    it has no error class for as a 500 (``APIConnectionError``), the 3xx in its cause."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        for status in (getattr(seen, "status_code", None), _response_status(seen)):
            if isinstance(status, int) and is_redirect(status):
                return status
        seen = seen.__cause__ or seen.__context__
    return None


def _response_status(exc: BaseException) -> object:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _in_chain(
    exc: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc``'s chain of causes, ``exc`` included."""
    seen: BaseException | None = exc
    for _ in range(10):  # litellm wraps a few levels deep; bounded in case of a cycle
        if seen is None or isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _refuse_redirects(lib: Any) -> httpx.AsyncClient:
    """Make every HTTP client litellm uses refuse redirects; returns the one made here.

    litellm has no setting for it and makes its clients itself, per provider. Its own handler
    (``AsyncHTTPHandler``: Anthropic, Gemini, Cohere, Bedrock...) follows redirects unless
    built with ``follow_redirects=False``, which litellm never asks for; the OpenAI SDK's
    client (Mistral, ``openai/...`` models) follows them too unless ``litellm.aclient_session``
    gives it one. A handler passed per call (``client=``) is not enough: Cohere's chat and
    Gemini's embeddings ignore it, and the OpenAI SDK's code fails on it. So the handlers'
    ``follow_redirects`` reads False whatever they were built with, and the SDK gets a client
    made without redirects. Set once, when the adapter loads litellm (before any client of
    litellm's exists); an answer of 3xx then fails as such (:func:`_translate`).
    """
    handlers = importlib.import_module("litellm.llms.custom_httpx.http_handler")
    for handler in (handlers.AsyncHTTPHandler, handlers.HTTPHandler):
        handler.follow_redirects = _NEVER
    session = httpx.AsyncClient(
        follow_redirects=False,
        transport=handlers.AsyncHTTPHandler.create_async_transport(),
        # litellm passes each call's own timeout; this is the OpenAI SDK's default.
        timeout=httpx.Timeout(600.0, connect=5.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
    )
    lib.aclient_session = session
    return session
