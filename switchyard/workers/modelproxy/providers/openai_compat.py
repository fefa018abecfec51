"""The direct path for OpenAI-compatible APIs: one aiohttp POST, bytes passed through.

Covers OpenAI, Azure OpenAI, vLLM, Ollama, Groq, Together and any ``api_base`` that speaks the
OpenAI wire format. No litellm on this path: it costs ~4.5 ms CPU per call where a plain POST
costs ~0.2 ms (DESIGN §8). Non-streamed bodies are returned as received; streamed SSE events
are forwarded one by one as they arrive (no buffering; an event whose data spans several
``data:`` lines is joined as the SSE standard says, and sent on as one line). One exception:
embeddings asked for as base64 that a server answered as float lists anyway are encoded as
asked (see :mod:`.embedding_format`; only those answers are decoded). Redirects are not
followed (see :mod:`.redirects`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from aiohttp.http_exceptions import LineTooLong

from switchyard.errors import ApiError, ProviderError
from switchyard.schemas.openai import Usage, usage_in, usage_of
from switchyard.schemas.secret import Secret, redact
from switchyard.workers.modelproxy.providers import embedding_format, whole_stream
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.chunk_content import has_content
from switchyard.workers.modelproxy.providers.client_request_id import client_request_id
from switchyard.workers.modelproxy.providers.error_fields import error_fields
from switchyard.workers.modelproxy.providers.redirects import is_redirect, redirected
from switchyard.workers.modelproxy.providers.stream_timers import FIRST_TOKEN, STREAM_END, Watchdog

_PATHS = {"chat": "chat/completions", "complete": "completions", "embed": "embeddings"}
_ENCODE = msgspec.json.Encoder()
_DONE = b"[DONE]"
# Every stream asks for usage so spend and TPM are counted, and the extra chunk is dropped again
# when the client did not ask for it. OpenAI, Azure, vLLM, Groq, Together and Ollama accept
# ``stream_options``; a generic server that rejects it shows up at once as a 400.
_USAGE_CAPABLE = frozenset(
    {"openai", "azure", "vllm", "groq", "together", "ollama", "openai-compatible"}
)
# OpenAI's ``developer`` role (what SDKs send to reasoning models in place of ``system``) is
# OpenAI's own: other servers' chat templates refuse it or drop the message. Sent to them as
# ``system``, as the Responses translation and litellm already do.
_KNOWS_DEVELOPER = frozenset({"openai", "azure"})


def _developer_as_system(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "developer" for m in messages
    ):
        return body
    return {
        **body,
        "messages": [
            {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
            for m in messages
        ],
    }


class OpenAICompatible:
    """One adapter (one connection pool) shared by every OpenAI-compatible provider."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
                skip_auto_headers=("User-Agent",),
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def _target(call: ProviderCall) -> tuple[str, dict[str, str]]:
        p = call.provider
        base = (p.base_url or "").rstrip("/")
        path = _PATHS[call.op]
        headers = {"Content-Type": "application/json", **client_request_id(call.request_id)}
        key = call.api_key.reveal() if call.api_key else ""
        if p.kind == "azure":
            deployment = call.deployment.model
            url = f"{base}/openai/deployments/{deployment}/{path}?api-version={p.api_version}"
            if key:
                headers["api-key"] = key
        else:
            url = f"{base}/{path}"
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return url, headers

    def _body(self, call: ProviderCall) -> bytes:
        body: dict[str, Any] = call.body
        if call.op == "chat" and call.provider.kind not in _KNOWS_DEVELOPER:
            body = _developer_as_system(body)
        if call.stream and call.provider.kind in _USAGE_CAPABLE and not call.client_wants_usage:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True  # count tokens on every stream; stripped again below
            body = {**body, "stream_options": options}
        return _ENCODE.encode(body)

    async def complete(self, call: ProviderCall) -> Completion:
        url, headers = self._target(call)
        name = call.provider_name
        try:
            async with asyncio.timeout(call.total_timeout):
                async with self._http().post(
                    url, data=self._body(call), headers=headers, allow_redirects=False
                ) as resp:
                    if is_redirect(resp.status):
                        raise redirected(name, resp.status)
                    if resp.status >= 400:
                        data = await ue.read_error(resp)
                        raise http_error(
                            resp.status,
                            data,
                            resp.headers,
                            name,
                            call.api_key,
                            path=resp.url.path,
                            op=call.op,
                        )
                    data = await ue.read_answer(resp, call.max_answer_bytes, name)
                    data = ue.json_answer(name, data, resp.content_type)
        except TimeoutError:
            raise ue.timed_out(name, "the response") from None
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        usage = checked(name, data, call.api_key)
        if call.op == "embed" and call.body.get("encoding_format") == "base64":
            data = embedding_format.base64_answer(data)  # for a server that ignores the field
        return Completion(data, usage)

    async def _open(
        self, call: ProviderCall, url: str, headers: dict[str, str], first_by: float
    ) -> aiohttp.ClientResponse:
        """POST a streamed request; the response once its status is known to be a success."""
        name = call.provider_name
        try:
            async with asyncio.timeout_at(first_by):
                resp = await self._http().post(
                    url, data=self._body(call), headers=headers, allow_redirects=False
                )
                if is_redirect(resp.status):
                    resp.close()
                    raise redirected(name, resp.status)
                if resp.status >= 400:
                    data = await ue.read_error(resp)
                    raise http_error(
                        resp.status,
                        data,
                        resp.headers,
                        name,
                        call.api_key,
                        path=resp.url.path,
                        op=call.op,
                    )
                if resp.content_type == "text/html":  # a proxy's page: the provider's failure
                    data = await ue.read_error(resp)
                    raise ue.not_a_stream(name, resp.content_type, len(data))
        except TimeoutError:
            raise ue.timed_out(name, "the first token") from None
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        return resp

    async def stream(  # noqa: PLR0915  (one frame per chunk: no helper generator on this path)
        self, call: ProviderCall
    ) -> AsyncIterator[StreamEvent]:
        url, headers = self._target(call)
        name = call.provider_name
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_by = started + call.first_token_timeout
        end_by = started + call.total_timeout
        # ended: a chunk said why the answer ended (a finish_reason), for every choice
        first, finished, ended = True, False, False
        choices = _Choices.of(call.op, call.body)
        # No timeout scope spans a yield: the consumer's time between chunks must not be
        # cancelled by a scope that belongs to this generator.
        resp = await self._open(call, url, headers, min(first_by, end_by))
        if resp.content_type == "application/json":  # a server that does not stream
            for whole in await _whole(call, resp, end_by):
                yield whole
            return
        watchdog = Watchdog(resp, min(first_by, end_by), FIRST_TOKEN)
        # The answer's content began: the idle clock runs (a pause before it is not idle:
        # a reasoning model thinks then). The usage is due when it was asked for.
        content, usage_due = False, call.client_wants_usage or call.provider.kind in _USAGE_CAPABLE
        parts: list[bytes] | None = None  # the data lines of an event spread over several
        try:
            while True:
                try:
                    line = await resp.content.readline(max_line_length=ue.MAX_LINE_BYTES)
                except aiohttp.ClientError:
                    if watchdog.whole:
                        return
                    if watchdog.expired:
                        raise ue.timed_out(name, watchdog.expired) from None
                    raise
                if watchdog.expired:
                    if watchdog.whole:  # no [DONE], no end: whole all the same
                        return
                    raise ue.timed_out(name, watchdog.expired)
                if not line:
                    finished = True
                    if not ended:  # neither [DONE] nor a finish_reason: the answer was cut
                        raise ue.cut_short(name)
                    return
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if parts is not None:  # the next line of an event spread over several
                        parts.append(payload)
                        continue
                    # Every server's usual event is one line of a JSON object (or [DONE]),
                    # passed on at once; any other line is the first of several, joined
                    # at the blank line that ends the event (_joined). One test per chunk.
                    if payload[-1:] != b"}" and payload != _DONE:
                        parts = [payload]
                        continue
                elif parts is None or line.strip():  # an event's other fields, a comment
                    continue
                else:  # the blank line that ends an event spread over several data lines
                    joined, parts = _joined(parts, name), None
                    if joined is None:
                        continue
                    payload = joined
                if payload == _DONE:
                    finished = True
                    return
                if first:
                    first = False
                    watchdog.rearm(end_by, STREAM_END)
                if content:
                    watchdog.last = loop.time()
                elif has_content(payload):
                    content = True
                    watchdog.watch_idle(call.idle_timeout)
                _raise_reported(payload, name, call.api_key)
                ended = ended or (finishes(payload) if choices is None else choices.ended(payload))
                event = _event(payload, call.client_wants_usage)
                if event is not None and event.usage is not None:
                    usage_due = False
                if ended:
                    watchdog.ended = True
                    if not usage_due:  # whole: [DONE] or the end is all that may follow
                        watchdog.grace(end_by)
                if event is not None:
                    watchdog.away = True  # the consumer's time, not the provider's
                    yield event
                    watchdog.away = False
                    watchdog.last = loop.time()
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        except LineTooLong:
            raise ue.line_too_long(name) from None
        finally:
            watchdog.cancel()
            if finished:
                resp.release()
            else:
                resp.close()


def _joined(parts: list[bytes], provider: str) -> bytes | None:
    """The data of an event spread over several ``data:`` lines, joined with newlines as the
    SSE standard says and made one line again (each chunk is passed on as one ``data:``
    line); None for an event without data (not dispatched, as the standard says).

    Sent as separate events, each line reached chat clients as broken JSON, and the
    Responses translation failed the answer (502 ``invalid_upstream_reply``).

    Raises:
        ProviderError: the joined data is not JSON (the provider's failure).
    """
    data = b"\n".join(parts)
    if not data.strip():
        return None
    try:
        return msgspec.json.format(data, indent=-1)  # (keeps every value as written)
    except msgspec.DecodeError:
        raise ProviderError(
            f"provider {provider} sent a streamed event of {len(parts)} data lines that is "
            "not JSON",
            provider=provider,
            retryable=True,
            upstream_status=200,
        ) from None


def _event(payload: bytes, client_wants_usage: bool) -> StreamEvent | None:
    usage = usage_of(payload)
    if usage is None:
        return StreamEvent(payload)
    if client_wants_usage or not _usage_only(payload):
        return StreamEvent(payload, usage)
    return StreamEvent(None, usage)  # our own usage request: record it, do not forward it


def _usage_only(payload: bytes) -> bool:
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return False
    return isinstance(doc, dict) and not doc.get("choices")


def _raise_reported(payload: bytes, provider: str, key: Secret | None) -> None:
    """Raise the failure a chunk reports, if it is one (see :func:`stream_error`)."""
    if b'"error"' in payload:  # (in a chunk's text it would be escaped: \")
        failure = stream_error(payload, provider, key)
        if failure is not None:
            raise failure


class _Choices:
    """Which choices of a stream of several have ended (``n`` > 1, or a legacy completion of
    a list of prompts: ``n`` choices per prompt, indexed on): a stream cut after the first
    choice's finish_reason was taken for whole, and the others' answers ended mid-sentence."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._ended: set[int] = set()

    @classmethod
    def of(cls, op: str, body: dict[str, Any]) -> _Choices | None:
        """None for one choice (its finish_reason ends the answer)."""
        n = body.get("n")
        count = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        if op == "complete":
            count *= _prompts(body.get("prompt"))
        return cls(count) if count > 1 else None

    def ended(self, payload: bytes) -> bool:
        """Whether every choice has now ended, ``payload`` read (any of its choices may
        carry a finish_reason, not only its first)."""
        if b'"finish_reason"' not in payload:
            return False
        try:
            chunk = _FINISHES.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return False
        self._ended.update(c.index for c in chunk.choices if c.finish_reason is not None)
        return len(self._ended) >= self._left


def _prompts(prompt: Any) -> int:
    """How many prompts a legacy completion's ``prompt`` holds: a list of texts or of token
    lists is one per item; a text, or one list of tokens, is one."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


class _Finish(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None


class _FinishChunk(msgspec.Struct):
    choices: list[_Finish] = []


class _Answer(msgspec.Struct):
    """A whole answer as far as checking and billing it need: its ``error`` if it has one (or
    ``object: "error"``, the error object alone), and its ``usage``, in one read of its JSON
    (which a body cut short fails). Raw fields: a mistyped one reads as nothing."""

    error: msgspec.Raw = msgspec.Raw(b"")  # (msgspec takes no Raw in a union)
    object: msgspec.Raw = msgspec.Raw(b"")
    usage: msgspec.Raw = msgspec.Raw(b"")


_FINISHES = msgspec.json.Decoder(_FinishChunk)
_ANSWER = msgspec.json.Decoder(_Answer)


async def _whole(
    call: ProviderCall, resp: aiohttp.ClientResponse, end_by: float
) -> list[StreamEvent]:
    """The events of a streamed request answered with JSON: a whole answer, streamed
    (:mod:`.whole_stream`), an error said with 200 (raised), or an event stream labelled as
    JSON (read as one). Other content types are read as events, as they always were (some
    servers label their streams loosely)."""
    name = call.provider_name
    read = False
    try:
        async with asyncio.timeout_at(end_by):
            data = await ue.read_answer(resp, call.max_answer_bytes, name)
        read = True
    except TimeoutError:
        raise ue.timed_out(name, "the response") from None
    except aiohttp.ClientError as exc:
        raise ue.connection_failed(name, exc) from None
    finally:  # read whole, its connection goes back to the pool, as a stream's does
        resp.release() if read else resp.close()
    if data.lstrip()[:5] == b"data:":
        return _labelled_json(call, data)
    checked(name, data, call.api_key)  # an error or a body cut short: the provider's failure
    payloads = whole_stream.as_chunks(call.op, msgspec.json.decode(data))
    if not payloads:
        raise ue.not_a_stream(name, resp.content_type, len(data))
    events = (_event(payload, call.client_wants_usage) for payload in payloads)
    return [event for event in events if event is not None]


def _labelled_json(call: ProviderCall, data: bytes) -> list[StreamEvent]:
    """An event stream a server labelled ``application/json``, read whole."""
    name = call.provider_name
    events: list[StreamEvent] = []
    ended, choices = False, _Choices.of(call.op, call.body)
    for line in data.splitlines():
        payload = line[5:].strip() if line.startswith(b"data:") else None
        if payload is None:
            continue
        if payload == _DONE:
            return events
        _raise_reported(payload, name, call.api_key)
        ended = ended or (finishes(payload) if choices is None else choices.ended(payload))
        event = _event(payload, call.client_wants_usage)
        if event is not None:
            events.append(event)
    if not ended:
        raise ue.cut_short(name)
    return events


def checked(provider: str, data: bytes, key: Secret | None) -> Usage | None:
    """The usage of a 200 answer; raises the provider's failure for one that is none: an
    error object (as some servers answer a failure, with 200), or JSON cut short. Passed on,
    a client's SDK read an answer without choices (``choices[0]`` failed in its code) and no
    other deployment was tried. A successful answer of these APIs has no ``error`` field."""
    try:
        answer = _ANSWER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        raise ProviderError(
            f"provider {provider} answered 200 with JSON that does not parse "
            f"({len(data)} bytes: cut short, or not JSON)",
            provider=provider,
            retryable=True,
            upstream_status=200,
        ) from None
    if bytes(answer.error) not in (b"", b"null") or bytes(answer.object) == b'"error"':
        reported = stream_error(data, provider, key, "answered 200 with an error")
        if reported is not None:
            raise reported
    return usage_in(bytes(answer.usage))


def finishes(payload: bytes) -> bool:
    """Whether a chunk carries a finish_reason (``"stop"``, ``"length"``...), not ``null``."""
    at = payload.find(b'"finish_reason"')
    return at >= 0 and not payload[at + 15 : at + 24].lstrip(b": ").startswith(b"null")


# Error types that say "bad request". vLLM reports any exception inside its stream that way
# (code 400), its engine dying included, so they cannot be taken for the client's fault.
_REQUEST_ERROR_TYPES = frozenset({"invalid_request_error", "BadRequestError"})


def stream_error(
    payload: bytes, provider: str, key: Secret | None, what: str = "failed mid-stream"
) -> ApiError | None:
    """The failure a provider reported in the middle of a stream (``data: {"error": ...}``,
    as OpenAI and vLLM do; older vLLM sends the error object itself), or None for a chunk.
    Passed on as a chunk, a client of another dialect would see its answer end as if
    complete, and no client would see it rerouted.

    Always a provider failure (502), tried elsewhere while nothing was sent. A rate limit or
    a server error (by its numeric code) cools the deployment as usual; a bad-request error
    does not (``retry_after`` 0): it may be the client's request, which would otherwise cool
    every deployment of the route for everyone, or vLLM's engine failing, which vLLM reports
    the same way.
    """
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("choices"):
        return None
    error = doc.get("error") or (doc if doc.get("object") == "error" else None)
    if not error:
        return None
    fields = error if isinstance(error, dict) else {"message": error}
    detail, code, kind = fields.get("message"), fields.get("code"), fields.get("type")
    text = redact(detail if isinstance(detail, str) and detail else "no message", key)[:500]
    status = code if isinstance(code, int) and 400 <= code < 600 else None
    request_error = (status is None and isinstance(kind, str) and kind in _REQUEST_ERROR_TYPES) or (
        status is not None and status < 500 and status not in ue.RETRYABLE_STATUSES
    )
    return ProviderError(
        f"provider {provider} {what}: {text}",
        provider=provider,
        retryable=True,
        upstream_status=status,
        code=code if isinstance(code, str) and code else "provider_error",
        retry_after=0.0 if request_error else None,
    )


def http_error(
    status: int,
    data: bytes,
    headers: Any,
    provider: str,
    key: Secret | None,
    *,
    path: str = "",
    op: str = "",
) -> Exception:
    """The error for a provider's HTTP failure ``status`` with body ``data``, on ``path``
    (the URL's path, never its host: an internal address is none of a client's business),
    for a request of ``op`` (a 404 on an endpoint beside chat may mean the deployment does
    not serve that endpoint: :func:`.upstream_errors.endpoint_not_served`)."""
    fields = error_fields(data)
    code = fields.code
    param = redact(fields.param, key)[:200] if fields.param else None
    said = redact(fields.message, key) if fields.message is not None else None
    if status == 404 and not ue.names_the_clients(code, param):
        unserved = ue.endpoint_not_served(op, provider, redact(path, key), said, code)
        if unserved is not None:
            return unserved
    message = f"provider {provider} answered HTTP {status}"
    if status == 404 and not (
        said is not None
        and not fields.plain
        and (ue.names_the_clients(code, param) or ue.about_the_model(said, code))
    ):  # nothing answers at the path (a wrong api_base), said as such, with what came back
        message = ue.no_endpoint(provider, redact(path, key))
        if said is not None:
            message = f"{message} ({said[:100]})"
    elif fields.plain and status < 500:  # a server's line of text: said as such
        message = f"{message}: {said}"
    elif said is not None and not fields.plain:  # (a 5xx's text, a proxy's, may name hosts)
        message = said
    exc = ue.from_status(
        status,
        message,
        provider=provider,
        code=code,
        retry_after=ue.parse_retry_after(headers.get("Retry-After")),
        param=param,
    )
    if isinstance(exc, ProviderError) and exc.upstream_status is None:
        exc.upstream_status = status
    return exc
