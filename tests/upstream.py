"""A fake OpenAI-compatible provider over real HTTP, running in its own thread.

Its own thread and event loop, so tests that block (the synchronous OpenAI SDK) cannot stall it.
Behaviour is chosen by the upstream model name a deployment sends:

* ``echo``: answers with the last user message (streams one word per chunk, no delay);
* ``paced:<ms>``: streams 6 chunks ``<ms>`` apart;
* ``jitter:<lo>-<hi>``: takes a random ``lo``-``hi`` ms to answer (spread between the chunks of a
  stream, so a stream is always partly sent while it runs);
* ``slow:<ms>``: waits ``<ms>`` before answering;
* ``after:<ms>:<model>``: waits ``<ms>``, then behaves as ``<model>`` (``after:1500:status:400``:
  a failure that takes its time);
* ``status:<code>``: fails with that HTTP status (429 adds ``Retry-After: 2``;
  ``status:429:<seconds>`` that many);
* ``hang``: never answers;
* ``flaky:<n>``: fails with 500 for the first ``n`` calls, then echoes;
* ``trickle:<ms>``: streams 300 chunks ``<ms>`` apart (a long answer to walk away from);
* ``flood:<n>``: streams ``n`` chunks of ~1 KiB as fast as it can (a large answer);
* ``bigchunk:<kib>``: streams one chunk of ``<kib>`` KiB of text (one long SSE line); not
  streamed, answers that text (``bigwhole:<kib>``: that answer, stream asked for or not;
  ``bigchunked:<kib>``: the same answer without a
  Content-Length, in 1 MiB parts);
* ``midfail``: streams two words, then reports a failure in the stream
  (``data: {"error": ...}``, as OpenAI and vLLM do), then ``[DONE]``;
* ``rolereset``: streams an opening chunk (the role, empty content), then resets the
  connection; ``role503``: the same chunk, then reports a 503 in the stream (``role503:<ms>``:
  ``<ms>`` after it); ``rolelate:<ms>``: the same chunk, then the echo ``<ms>`` later (a
  reasoning model that thinks after its role);
* ``stall:<ms>``: streams two words, is silent for ``<ms>``, then ends the answer;
* ``nodone``: streams the echo, its finish_reason and its usage (when asked), then neither
  ``[DONE]`` nor the end of the response (it holds the connection for an hour);
* ``endfail``: streams the echo and its finish_reason, then an error event (no usage, no
  ``[DONE]``): a failure after a whole answer;
* ``midreason``: streams the echo a word a chunk, each chunk with ``finish_reason: stop``
  (as litellm passes on Gemini's tool-call pieces: a reason before the choice's last chunk);
* ``cutshort``: streams two words and ends the response there (no finish_reason, no
  ``[DONE]``: an answer cut short);
* ``html``: answers 200 with an HTML page (a proxy's error page in front of a provider);
* ``said:<name>``: answers one of :data:`SAID` (an error with 200, JSON cut short, vLLM's,
  Azure's and plain-text error shapes, a 400 naming a chat field in its ``param``);
* ``twocut``: a stream for ``n=2`` whose second choice is cut before its finish_reason
  (``twoinone``: whole, both choices in its first chunk, without ``[DONE]``);
* ``keyecho``: echoes the API key it was sent (in a successful answer, streamed or not);
* ``hugeerror:<mib>``: answers 500 with an HTML page of ``<mib>`` MiB, without a
  Content-Length;
* ``nousage``: echoes, but reports no usage (a server that ignores ``include_usage``; legacy
  completions too);
  ``batched:<kib>``: the same, streaming ``<kib>`` KiB of text in two chunks (a server that
  sends many words a chunk);
* ``latename`` (with tools): streams its tool call as litellm translates Gemini's, the id and
  the first arguments before the name, with reasoning (``reasoning_content``) between the
  argument fragments; ``thinkcall`` (with tools): its tool call named at once, the same
  reasoning between the argument fragments;
* ``embedformat``: embeddings honour ``encoding_format`` as OpenAI does (``base64``: of
  little-endian float32); every other model answers lists of floats whatever was asked;
  ``dims:<n>``: vectors of ``n`` dimensions, each as long as OpenAI writes one (a float of
  17 digits, or 4 bytes of base64's input), and usage at the end, as OpenAI's;
* ``cached:<n>``: echoes, reporting ``n`` more prompt tokens, all read from the prompt cache
  (``prompt_tokens_details.cached_tokens``; Responses: ``input_tokens_details.cached_tokens``);
* ``ctl:<name>``: whatever :meth:`FakeOpenAI.set_mode` last set for ``name`` (default echo);
* ``gate:<name>`` (as a mode): waits until :meth:`FakeOpenAI.open_gate` opens ``name``, then
  echoes (a provider that hangs until the test releases it).

``POST /v1/responses`` answers as OpenAI's Responses API does (``native: <input>``; its id is
``resp_native``, or the request's ``metadata.response_id``; a request with a ``web_search`` tool
gets ``max_tool_calls`` (default 1) ``web_search_call`` items before its message), and
``/v1/responses/input_tokens`` counts ``NATIVE_COUNT`` plus the characters of the input.

Every call is recorded (path, headers, JSON body, time) for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from switchyard.stack.ports import listen_port
from tests.fakes.events import NumberedEvents
from tests.portrange import worker_range

NATIVE_COUNT = 3000
# What the fake calls a tool taking one ``input`` string with (a patch, as Codex's apply_patch).
CUSTOM_INPUT = '*** Begin Patch\n*** Add File: hello.txt\n+hello "world"\n*** End Patch'
# ``said:<name>``: answers exactly this (status, content type, body), streamed or not: the
# shapes servers other than OpenAI give their errors, and answers that are none.
SAID = {
    "error200": (
        200,
        "application/json",
        '{"error": {"message": "The server had an error while processing your request.",'
        ' "type": "server_error", "param": null, "code": null}}',
    ),
    "cut200": (200, "application/json", '{"id": "chatcmpl-cut", "choices": ['),
    "vllm400": (
        400,
        "application/json",
        '{"object": "error", "message": "This model\'s maximum context length is 4096 tokens.'
        ' However, you requested 5000 tokens.", "type": "BadRequestError", "param": null,'
        ' "code": 400}',
    ),
    "filter400": (
        400,
        "application/json",
        '{"error": {"message": "The response was filtered due to the prompt triggering'
        ' content management policy.", "type": null, "param": "prompt",'
        ' "code": "content_filter", "status": 400}}',
    ),
    "text400": (400, "text/plain", "upstream refused: prompt too long for this server\n"),
    # A 400 naming a field of the chat request it was sent, in its param and its message
    # (``param400-<field>``; the message in the pydantic servers' spelling for ``dotted``).
    **{
        f"param400-{name}": (
            400,
            "application/json",
            json.dumps(
                {
                    "error": {
                        "message": "upstream refused a field: Invalid value for "
                        + ("'messages.1.content'" if name == "dotted" else f"'{param}'"),
                        "type": "invalid_request_error",
                        "param": param,
                        "code": "invalid_value",
                    }
                }
            ),
        )
        for name, param in {
            "message": "messages[1].content",
            "dotted": "messages[1].content",
            "maxtokens": "max_tokens",
            "tool": "tools[0].function.name",
            "added": "stream_options.include_usage",
        }.items()
    },
    "sseasjson": (  # an event stream labelled as JSON
        200,
        "application/json",
        'data: {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,'
        ' "delta": {"content": "labelled"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
    ),
    "whole200": (  # a server that never streams: this answer, stream asked for or not
        200,
        "application/json",
        '{"id": "chatcmpl-whole", "object": "chat.completion", "created": 0, "model": "m",'
        ' "choices": [{"index": 0, "message": {"role": "assistant", "content": "a whole'
        ' answer"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1,'
        ' "completion_tokens": 3, "total_tokens": 4}}',
    ),
}


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.time)  # wall clock when it reached the provider


def _jitter(spec: str) -> float:
    """Seconds for ``<lo>-<hi>`` (milliseconds)."""
    low, _, high = spec.partition("-")
    return random.uniform(int(low), int(high or low)) / 1000


def _cached(model: str) -> int:
    """The prompt-cache tokens mode ``cached:<n>`` reports (0 for any other mode)."""
    kind, _, arg = model.partition(":")
    return int(arg) if kind == "cached" and arg.isdecimal() else 0


def _last_user_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body["prompt"])
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class FakeOpenAI:
    def __init__(self) -> None:
        self.port = listen_port(within=worker_range())
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._flaky: dict[str, int] = {}
        self._last_auth = ""
        self.modes: dict[str, str] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self.cut: list[str] = []  # models whose stream the caller abandoned mid-way

    def set_mode(self, name: str, mode: str) -> None:
        """Switch the behaviour of model ``ctl:<name>`` (e.g. ``status:500``, ``hang``)."""
        with self._lock:
            self.modes[name] = mode

    def open_gate(self, name: str) -> None:
        """Release every request held at gate ``name`` (and the ones that come later)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._gate(name).set)

    def _gate(self, name: str) -> asyncio.Event:
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = asyncio.Event()
        return gate

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls_for(self, model: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.body.get("model") == model]

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/responses/input_tokens", self._input_tokens)
        # A handler still holding a call (model "hang", a closed gate) must not hold the stop:
        # aiohttp waits 60 s for handlers by default, and stop() gave up after 10.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = json.loads(await request.read())
        self._last_auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            self.calls.append(Call(request.path, dict(request.headers), body))
        return body

    async def _behaviour(self, body: dict[str, Any]) -> web.Response | None:
        model = str(body.get("model", ""))
        kind, _, arg = model.partition(":")
        if kind == "ctl":
            with self._lock:
                model = self.modes.get(arg, "echo")
            kind, _, arg = model.partition(":")
        if kind == "after":
            wait, _, model = arg.partition(":")
            await asyncio.sleep(int(wait) / 1000)
            kind, _, arg = model.partition(":")
        if kind == "slow":
            await asyncio.sleep(int(arg) / 1000)
        elif kind == "jitter" and not body.get("stream"):
            await asyncio.sleep(_jitter(arg))
        elif kind == "hang":
            await asyncio.sleep(3600)
        elif kind == "gate":
            await self._gate(arg).wait()
        elif kind == "html":
            page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
            return web.Response(text=page, content_type="text/html")
        elif kind == "said":
            status, content_type, text = SAID[arg]
            return web.Response(text=text, status=status, content_type=content_type)
        elif kind == "authecho":  # a provider that echoes the key it got, as some do on 401
            given = self._last_auth
            err = {"error": {"message": f"Incorrect API key provided: {given}", "type": "auth"}}
            return web.json_response(err, status=401)
        elif kind == "status":
            number, _, wait = arg.partition(":")
            code = int(number)
            headers = {"Retry-After": wait or "2"} if code == 429 else {}
            fields: dict[str, str | None] = {
                "message": f"fake upstream error {code}",
                "type": "fake",
                "code": f"e{code}",
                # the field a provider blames on a client error
                "param": "messages[0].content" if code < 500 else None,
            }
            return web.json_response({"error": fields}, status=code, headers=headers)
        elif kind == "flaky":
            with self._lock:
                seen = self._flaky.get(model, 0)
                self._flaky[model] = seen + 1
            if seen < int(arg):
                return web.json_response(
                    {"error": {"message": "flaky", "type": "fake"}}, status=500
                )
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if str(body.get("model", "")).startswith("hugeerror:"):
            return await _huge_error(request, int(str(body["model"]).partition(":")[2]))
        failure = await self._behaviour(body)
        if failure is not None:
            return failure
        model = body.get("model", "")
        messages = body.get("messages") or []
        if body.get("tools") and (not messages or messages[-1].get("role") != "tool"):
            return await _tool_call(request, body)
        text = f"echo: {_last_user_text(body)}"
        if model == "keyecho":  # a broken upstream that sends the key it got back
            text = "echo: " + request.headers.get("Authorization", "").removeprefix("Bearer ")
        usage: dict[str, Any] = {
            "prompt_tokens": 7,
            "completion_tokens": len(text.split()),
            "total_tokens": 7 + len(text.split()),
        }
        cached = _cached(model)
        if cached:
            usage["prompt_tokens"] += cached
            usage["total_tokens"] += cached
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        kind, _, arg = str(model).partition(":")
        counted = model != "nousage" and kind != "batched"
        whole = kind == "bigwhole"  # a server that ignores ``stream: true``
        if (whole or not body.get("stream")) and kind in ("bigchunk", "bigchunked", "bigwhole"):
            text = "x" * (int(arg) * 1024)
        if whole or not body.get("stream"):
            answer = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
            if kind == "bigchunked":  # no Content-Length: sent in parts, chunked
                return await _chunked(request, {**answer, "usage": usage})
            return web.json_response({**answer, "usage": usage} if counted else answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        kind, _, arg = str(model).partition(":")
        pace = int(arg) / 1000 if kind == "paced" else 0.0
        words = text.split(" ") if kind != "paced" else [f"w{i}" for i in range(6)]
        if kind == "jitter":
            pace = _jitter(arg) / len(words)
        if kind == "flood":
            words = ["x" * 1000] * int(arg)
        if kind == "trickle":
            pace, words = int(arg) / 1000, [f"t{i}" for i in range(300)]
        if kind == "bigchunk":
            words = ["x" * (int(arg) * 1024)]
        if kind == "batched":  # <kib> KiB of words in two chunks (and no usage: see counted)
            words = ["word " * (int(arg) * 1024 // 10)] * 2
        if kind == "cutshort":
            await self._chunks(resp, model, ["half", "an"], 0.0)
            await resp.write_eof()
            return resp
        if kind in ("twocut", "twoinone"):  # n=2 streams that end without [DONE]
            # twocut: the first choice ends, the second is cut mid-answer; twoinone: one chunk
            # carries both choices, the second's finish_reason not the first in it.
            base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
            chunks = [
                [{"index": 0, "delta": {"content": "one"}, "finish_reason": "stop"}],
                [{"index": 1, "delta": {"content": "half"}, "finish_reason": None}],
            ]
            if kind == "twoinone":
                chunks = [
                    [
                        {"index": 0, "delta": {"content": "one"}, "finish_reason": None},
                        {"index": 1, "delta": {"content": "two"}, "finish_reason": "stop"},
                    ],
                    [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                ]
            for choices in chunks:
                await resp.write(b"data: " + json.dumps({**base, "choices": choices}).encode())
                await resp.write(b"\n\n")
            await resp.write_eof()
            return resp
        if kind in ("rolereset", "role503", "rolelate"):  # an opening role chunk, then ...
            opening = {"role": "assistant", "content": ""}
            await resp.write(_chunk(model, [{"index": 0, "delta": opening, "finish_reason": None}]))
            await asyncio.sleep(int(arg or 0) / 1000)
            if kind == "rolelate":
                await self._chunks(resp, model, words, 0.0)
                stop = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
                await resp.write(_chunk(model, stop))
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp
            if kind == "rolereset":
                assert request.transport is not None
                request.transport.abort()  # the connection reset, no end of the stream
                return resp
            broke = {"error": {"message": "overloaded, try again", "code": 503}}
            await resp.write(b"data: " + json.dumps(broke).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if kind == "stall":  # two words, silence for <ms>, then the end of the answer
            await self._chunks(resp, model, ["half", "an"], 0.0)
            try:
                await asyncio.sleep(int(arg) / 1000)
                await resp.write(
                    _chunk(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
                )
                await resp.write(b"data: [DONE]\n\n")
            except (ConnectionError, asyncio.CancelledError):
                with self._lock:
                    self.cut.append(str(model))
                raise
            await resp.write_eof()
            return resp
        if kind == "nodone":  # a whole answer, its usage, then neither [DONE] nor an end
            await self._chunks(resp, model, text.split(" "), 0.0)
            await resp.write(_chunk(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(_chunk(model, [], usage=usage))
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                with self._lock:
                    self.cut.append(str(model))
                raise
            return resp
        if kind == "endfail":  # a whole answer, its finish_reason, then an error, no usage
            await self._chunks(resp, model, text.split(" "), 0.0)
            await resp.write(_chunk(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            broke = {"error": {"message": "upstream broke at the end", "type": "server_error"}}
            await resp.write(b"data: " + json.dumps(broke).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        if kind == "midreason":  # every piece says its finish_reason, the last one too
            for i, word in enumerate(text.split(" ")):
                delta = {"content": word if i == 0 else " " + word}
                await resp.write(
                    _chunk(model, [{"index": 0, "delta": delta, "finish_reason": "stop"}])
                )
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(_chunk(model, [], usage=usage))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if kind == "midfail":
            await self._chunks(resp, model, ["half", "an"], 0.0)
            broke = {"error": {"message": "upstream broke mid-answer", "type": "server_error"}}
            await resp.write(b"data: " + json.dumps(broke).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        try:
            await self._chunks(resp, model, words, pace)
        except ConnectionError:
            with self._lock:
                self.cut.append(str(model))  # the caller went away mid-stream
            return resp
        except asyncio.CancelledError:
            with self._lock:
                self.cut.append(str(model))
            raise
        done = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        await resp.write(b"data: " + json.dumps(done).encode() + b"\n\n")
        if counted and (body.get("stream_options") or {}).get("include_usage"):
            tail = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    async def _chunks(resp: web.StreamResponse, model: Any, words: list[str], pace: float) -> None:
        for i, word in enumerate(words):
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else " " + word},
                        "finish_reason": None,
                    }
                ],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if pace:
                await asyncio.sleep(pace)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._behaviour(body)
        if failure is not None:
            return failure
        text = f"echo: {_last_user_text(body)}"
        if body.get("stream") is True:
            return await self._completion_stream(request, body, text)
        answer = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        }
        if body.get("model") != "nousage":
            answer["usage"] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        return web.json_response(answer)

    @staticmethod
    async def _completion_stream(
        request: web.Request, body: dict[str, Any], text: str
    ) -> web.StreamResponse:
        """A legacy completion streamed as OpenAI streams it: text chunks, a last chunk with
        the finish reason, the usage chunk when asked for, then ``[DONE]``."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(text: str, finish: str | None) -> bytes:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            event = {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [choice],
            }
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        for i, word in enumerate(text.split(" ")):
            await resp.write(chunk(word if i == 0 else " " + word, None))
        await resp.write(chunk("", "stop"))
        options = body.get("stream_options")
        counted = body.get("model") != "nousage"
        if counted and isinstance(options, dict) and options.get("include_usage"):
            usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
            event = {"id": "cmpl-fake", "object": "text_completion", "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._behaviour(body)
        if failure is not None:
            return failure
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        vector: Any = [0.1, 0.2, 0.3]
        model = str(body.get("model"))
        if model.startswith("dims:"):
            vector = [-0.006929283495992422] * int(model.partition(":")[2])
        wants_base64 = body.get("encoding_format") == "base64"
        if wants_base64 and (model == "embedformat" or model.startswith("dims:")):
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i in range(len(items))
                ],
                "model": body.get("model"),
                "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
            }
        )

    async def _input_tokens(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's own token count: NATIVE_COUNT + the length of the input's text, so a test
        can tell it from the gateway's estimate."""
        body = await self._record(request)
        count = NATIVE_COUNT + len(_input_text(body))
        return web.json_response({"object": "response.input_tokens", "input_tokens": count})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API, natively: what a provider of kind ``openai`` answers."""
        body = await self._record(request)
        text = f"native: {_input_text(body)}"
        cached = _cached(str(body.get("model", "")))
        usage = {
            "input_tokens": 5 + cached,
            "output_tokens": len(text.split()),
            "total_tokens": 5 + cached + len(text.split()),
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        message = {
            "type": "message",
            "id": "msg_native",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        # A test may name the id (``metadata.response_id``), to tell its answers apart.
        named = body.get("metadata")
        rid = named.get("response_id") if isinstance(named, dict) else None
        searches = _web_searches(body)
        response = {
            "id": rid if isinstance(rid, str) else "resp_native",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model"),
            "output": [*searches, message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(response)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        send = NumberedEvents(resp).send

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        await send("response.created", {"response": started})
        for index, search in enumerate(searches):
            going = {**search, "status": "in_progress"}
            await send("response.output_item.added", {"output_index": index, "item": going})
            await send("response.output_item.done", {"output_index": index, "item": search})
        at = len(searches)
        empty = {**message, "status": "in_progress", "content": []}
        await send("response.output_item.added", {"output_index": at, "item": empty})
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": "msg_native", "output_index": at, "content_index": 0}
        await send("response.content_part.added", {**where, "part": part})
        for i, word in enumerate(text.split(" ")):
            await send(
                "response.output_text.delta", {**where, "delta": word if i == 0 else f" {word}"}
            )
        await send("response.output_text.done", {**where, "text": text})
        await send("response.content_part.done", {**where, "part": message["content"][0]})
        await send("response.output_item.done", {"output_index": at, "item": message})
        await send("response.completed", {"response": response})
        await resp.write_eof()
        return resp


def _web_searches(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``web_search_call`` items of an answer to ``body``: none without a web search tool,
    else ``max_tool_calls`` of them (default 1)."""
    tools = body.get("tools") or []
    if not any(
        isinstance(t, dict) and str(t.get("type", "")).startswith("web_search") for t in tools
    ):
        return []
    calls = body.get("max_tool_calls")
    return [
        {
            "type": "web_search_call",
            "id": f"ws_native{n}",
            "status": "completed",
            "action": {"type": "search", "query": f"query {n}"},
        }
        for n in range(calls if isinstance(calls, int) else 1)
    ]


def _input_text(body: dict[str, Any]) -> str:
    given = body.get("input")
    if isinstance(given, str):
        return given
    for item in reversed(given or []):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


async def _tool_call(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A chat answer that calls the first tool offered (``{"city": "Paris"}``; for a tool whose
    one parameter is ``input``, what a translated Responses custom tool takes,
    ``{"input": CUSTOM_INPUT}``)."""
    function = body["tools"][0]["function"]
    name = function["name"]
    arguments = '{"city": "Paris"}'
    if list((function.get("parameters") or {}).get("properties") or {}) == ["input"]:
        arguments = json.dumps({"input": CUSTOM_INPUT})
    model = body.get("model", "")
    usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    call = {
        "id": "call_fake1",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-tool",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": usage,
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)

    async def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        doc = {
            "id": "chatcmpl-tool",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            if delta or finish
            else [],
            **extra,
        }
        await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")

    first = {
        "index": 0,
        "id": "call_fake1",
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    half = arguments.index(":") + 2  # '{"city": ' then '"Paris"}'
    if model == "latename":
        await chunk({"role": "assistant", "tool_calls": [{**first, "function": {}}]})
        await chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]})
        await chunk({"reasoning_content": "The city is Paris."})
        named = {"index": 0, "function": {"name": name, "arguments": arguments[half:]}}
        await chunk({"tool_calls": [named]}, "tool_calls")
        if (body.get("stream_options") or {}).get("include_usage"):
            await chunk({}, None, usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    await chunk({"role": "assistant", "tool_calls": [first]})
    for piece in (arguments[:half], arguments[half:]):
        await chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        if model == "thinkcall" and piece != arguments[half:]:
            await chunk({"reasoning_content": "The city is Paris."})
    await chunk({}, "tool_calls")
    if (body.get("stream_options") or {}).get("include_usage"):
        await chunk({}, None, usage=usage)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _chunk(model: Any, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One chat chunk's SSE event."""
    doc = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
    doc.update({"model": model, "choices": choices, **extra})
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def _chunked(request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
    """``answer`` as JSON sent in 1 MiB parts, without a Content-Length (chunked)."""
    data = json.dumps(answer).encode()
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for start in range(0, len(data), 1024 * 1024):
        await resp.write(data[start : start + 1024 * 1024])
    await resp.write_eof()
    return resp


async def _huge_error(request: web.Request, mib: int) -> web.StreamResponse:
    """A 500 whose HTML page is ``mib`` MiB (a reader that stops early ends it)."""
    resp = web.StreamResponse(status=500, headers={"Content-Type": "text/html"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    part = b"<p>" + b"x" * (1024 * 1024 - 7) + b"</p>"
    try:
        for _ in range(mib):
            await resp.write(part)
        await resp.write_eof()
    except ConnectionError:
        pass
    return resp
