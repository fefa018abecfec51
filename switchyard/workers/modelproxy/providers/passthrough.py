"""Native dialects passed through: the Responses API to OpenAI, Messages to Anthropic.

When a deployment's provider speaks the client's dialect itself, the request goes to it as the
client wrote it (model replaced by the deployment's) and the answer comes back as the provider
wrote it: no translation, nothing lost. Only the usage is read on the way, for spend and limits.
Streams are relayed one SSE event (``event:`` + ``data:`` lines) at a time, as they arrive,
except that the opening events wait for the answer's first event, and an error event before it
is raised as the attempt's failure (:mod:`.native_stream`; one after it is relayed, then raised
by :class:`.native_stream.Relayed`).
Token counts (Anthropic's ``/v1/messages/count_tokens``, OpenAI's
``/v1/responses/input_tokens``) go the same way, less a ``stream`` field (see :func:`_sent`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from aiohttp.http_exceptions import LineTooLong

from switchyard.dialects.probes import COUNTS
from switchyard.dialects.usage import (
    AnthropicUsageTracker,
    ResponsesUsageTracker,
    anthropic_usage,
    responses_usage,
)
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.base import Completion, ProviderCall, StreamEvent
from switchyard.workers.modelproxy.providers.client_request_id import client_request_id
from switchyard.workers.modelproxy.providers.native_stream import Activity, Opening
from switchyard.workers.modelproxy.providers.openai_compat import http_error
from switchyard.workers.modelproxy.providers.redirects import is_redirect, redirected
from switchyard.workers.modelproxy.providers.stream_timers import pushed_by, read_by

ANTHROPIC_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_LAST = {"messages": "message_stop", "responses": "response.completed"}  # a stream's last event
_ENCODE = msgspec.json.Encoder()


def _target(call: ProviderCall) -> tuple[str, dict[str, str]]:
    key = call.api_key.reveal() if call.api_key else ""
    headers = {"Content-Type": "application/json"}
    if call.op in ("messages", "count_tokens"):
        base = (call.provider.api_base or ANTHROPIC_BASE).rstrip("/")
        url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        if call.op == "count_tokens":
            url += "/count_tokens"
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if call.anthropic_beta:  # e.g. Claude Code's features; the body's beta fields need it
            headers["anthropic-beta"] = call.anthropic_beta
        if key:
            headers["x-api-key"] = key
        return url, headers
    base = (call.provider.base_url or "").rstrip("/")
    headers.update(client_request_id(call.request_id))  # OpenAI's Responses API
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if call.op == "input_tokens":
        return f"{base}/responses/input_tokens", headers
    return f"{base}/responses", headers


def _sent(call: ProviderCall) -> dict[str, Any]:
    """The body sent upstream: the client's, except that a token count loses ``stream``.

    Agents count the very body they are about to send, ``"stream": true`` included, and
    Switchyard answers such a count (one answer, never a stream), as the estimate for other
    providers does. Neither vendor's count endpoint takes the field (the SDKs'
    ``MessageCountTokensParams`` and ``InputTokenCountParams`` have none), and Anthropic
    refuses a field it does not take with a 400 ("stream: Extra inputs are not permitted").
    """
    if call.op in COUNTS and "stream" in call.body:
        return {name: value for name, value in call.body.items() if name != "stream"}
    return call.body


class Passthrough:
    """One connection pool for every native-dialect provider."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, call: ProviderCall) -> Completion:
        url, headers = _target(call)
        name = call.provider_name
        try:
            async with asyncio.timeout(call.total_timeout):
                body = _ENCODE.encode(_sent(call))
                async with self._http().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    if is_redirect(resp.status):
                        raise redirected(name, resp.status)
                    if resp.status >= 400:
                        data = await ue.read_error(resp)
                        raise http_error(
                            resp.status, data, resp.headers, name, call.api_key, path=resp.url.path
                        )
                    data = await ue.read_answer(resp, call.max_answer_bytes, name)
                    data = ue.json_answer(name, data, resp.content_type)
        except TimeoutError:
            raise ue.timed_out(name, "the response") from None
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        if call.op in COUNTS:
            return Completion(data, None)  # a count, not an answer: nothing to bill
        usage = anthropic_usage(data) if call.op == "messages" else responses_usage(data)
        return Completion(data, usage)

    async def _open(
        self, call: ProviderCall, url: str, headers: dict[str, str], first_by: float
    ) -> aiohttp.ClientResponse:
        """The streamed response, its status checked, by the first token's time."""
        name = call.provider_name
        try:
            async with asyncio.timeout_at(first_by):
                body = _ENCODE.encode(call.body)
                resp = await self._http().post(
                    url, data=body, headers=headers, allow_redirects=False
                )
                if is_redirect(resp.status):
                    resp.close()
                    raise redirected(name, resp.status)
                if resp.status >= 400:
                    data = await ue.read_error(resp)
                    raise http_error(
                        resp.status, data, resp.headers, name, call.api_key, path=resp.url.path
                    )
                if resp.content_type != "text/event-stream":  # an HTML page from a proxy
                    data = await ue.read_error(resp)
                    raise ue.not_a_stream(name, resp.content_type, len(data))
        except TimeoutError:
            raise ue.timed_out(name, "the first token") from None
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        return resp

    async def stream(  # noqa: PLR0915  (one loop per SSE line: no helper call on this path)
        self, call: ProviderCall
    ) -> AsyncIterator[StreamEvent]:
        url, headers = _target(call)
        name = call.provider_name
        tracker: AnthropicUsageTracker | ResponsesUsageTracker = (
            AnthropicUsageTracker() if call.op == "messages" else ResponsesUsageTracker()
        )
        loop = asyncio.get_running_loop()
        now = loop.time()
        first_by, end_by = now + call.first_token_timeout, now + call.total_timeout
        resp = await self._open(call, url, headers, min(first_by, end_by))
        opening = Opening(call.op, name, call.api_key)
        frame: list[bytes] = []
        finished = data = False  # data: the frame being read has a data line
        # When the idle clock runs: what counts as activity differs per dialect (a Responses
        # reasoning item thinks in silence; see native_stream.idle_clock). Only an event with
        # data is activity (or the first token), as on every path: not a comment line alone
        # (a proxy's `: keep-alive`), nor a blank line.
        activity = Activity(call.op)
        by, what = read_by(True, activity.running, first_by, end_by, call.idle_timeout)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(by):
                        line = await resp.content.readline(max_line_length=ue.MAX_LINE_BYTES)
                except TimeoutError:
                    raise ue.timed_out(name, what) from None
                if not line:
                    finished = True
                    if frame:  # a last event without its blank line
                        for event in opening.take(b"".join(frame) + b"\n"):
                            yield StreamEvent(event, tracker.usage)
                    if not tracker.ended:
                        # Cut short: rerouted while nothing was sent, else the client's
                        # dialect gets an error event, as for chat streams without [DONE].
                        raise ue.cut_short(
                            name, f"no {_LAST.get(call.op, _LAST['responses'])} event"
                        )
                    return  # (its last event is the answer's: nothing is held back now)
                if line.strip():
                    frame.append(line.rstrip(b"\r\n") + b"\n")
                    if line.startswith(b"data:"):
                        data = True
                        tracker.feed(line)
                        opening.feed(line)
                        activity.feed(line)
                    continue
                if not frame:
                    continue
                event, frame, had_data, data = b"".join(frame) + b"\n", [], data, False
                away = 0.0 if had_data else loop.time()
                # Until the answer's first event: openings held back, an error raised.
                for out in opening.events(event, tracker.usage):
                    yield out
                # The time its consumer took is not the provider's: from now, or added.
                if had_data:
                    activity.after(event, opening.relayed)
                    by, what = read_by(False, activity.running, first_by, end_by, call.idle_timeout)
                else:  # a comment alone: no activity, nor its relay silence
                    by, what = pushed_by(by, what, loop.time() - away, end_by)
        except aiohttp.ClientError as exc:
            raise ue.connection_failed(name, exc) from None
        except LineTooLong:
            raise ue.line_too_long(name) from None
        finally:
            if finished:
                resp.release()
            else:
                resp.close()
