"""A fake OpenAI upstream that paces its answers like a model does: ``python -m bench.paced``.

nginx answers at once (or after one fixed sleep) but cannot drip a stream, so this small server
does what a provider does under real traffic: a streamed answer is a chunk now and one every
``interval`` after it, a non-streamed answer comes after a delay. Path prefixes choose the
behaviour (Switchyard calls ``{api_base}/chat/completions``, so each is its own ``api_base``):

* ``/pace/<n>x<ms>/v1``  ``text/event-stream``: ``n`` content chunks, the first at once, then one
  every ``ms`` milliseconds; then a finish chunk, a usage chunk and ``[DONE]``;
* ``/pace/<n>x<ms>j/v1`` the same, jittered like a real model: the first chunk after a random
  0-``ms``, each gap a random 0.5-1.5 x ``ms``. Exact pacing keeps every stream on the phase its
  request started at, so streams that start together stay in step and their chunks share
  wake-ups all the way down the pipeline; jitter spreads them the way real providers' tokens are;
* ``/delay/<ms>/v1``     a ``chat.completion`` JSON with usage after ``ms`` milliseconds.

Every content chunk carries the time it was written (``CLOCK_MONOTONIC`` ns, shared by every
process on the machine) and its index in its ``id``: ``"id":"t<ns>-<i>"``. The load generator
(:mod:`bench.streamload`) reads it back, so gaps and delays are measured against what the
upstream actually sent, through Switchyard or not. Bytes pass through Switchyard unchanged.

One process, uvloop, raw ``asyncio.Protocol`` and one timer per chunk: a few microseconds of
CPU per chunk, so ~10,000 chunks/s cost it a small fraction of a core (its CPU is reported as
the ``upstream`` group, like nginx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from typing import cast

MODEL = "bench-model"
_CHUNK_HEAD = b'data: {"id":"t'
_CHUNK_TAIL = (
    '","object":"chat.completion.chunk","created":1700000000,"model":"' + MODEL + '",'
    '"choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n'
).encode()
_FINISH = (
    'data: {"id":"end","object":"chat.completion.chunk","created":1700000000,"model":"'
    + MODEL
    + '","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
).encode()
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _usage_chunk(tokens: int) -> bytes:
    doc = {
        "id": "usage",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
    }
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def completion_body() -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the paced upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


_COMPLETION = completion_body()
_JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_COMPLETION)).encode()
    + b"\r\n\r\n"
    + _COMPLETION
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"


def _framed(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Conn(asyncio.Protocol):
    """One client connection: parse requests (one at a time), answer them on timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if len(self.buf) < end + 4 + length:
            return
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        path = head.split(b" ", 2)[1].decode("latin-1")
        self.busy = True
        self._answer(path, body)

    def _done(self) -> None:
        self.busy = False
        self.timer = None
        if self.buf:
            self._next_request()

    def _answer(self, path: str, body: bytes) -> None:
        parts = path.strip("/").split("/")
        try:
            if parts[0] == "pace":
                count, _, ms = parts[1].partition("x")
                usage = b'"include_usage":true' in body
                jitter = ms.endswith("j")
                self._stream(int(count), int(ms.removesuffix("j")) / 1000, usage, jitter)
                return
            if parts[0] == "delay":
                self.timer = self.loop.call_later(int(parts[1]) / 1000, self._json)
                return
        except (IndexError, ValueError):
            pass
        if self.transport is not None:
            self.transport.write(_NOT_FOUND)
        self._done()

    def _json(self) -> None:
        if self.transport is not None:
            self.transport.write(_JSON_RESPONSE)
        self._done()

    def _stream(self, count: int, interval: float, usage: bool, jitter: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(_SSE_HEAD)
        start = self.loop.time()

        def after(i: int) -> float:  # when chunk i is due
            if not jitter:
                return start + i * interval
            return self.loop.time() + interval * (
                random.uniform(0.5, 1.5) if i else random.random()
            )

        def send(i: int) -> None:
            transport = self.transport
            if transport is None:
                return
            chunk = _CHUNK_HEAD + b"%d-%d" % (time.monotonic_ns(), i) + _CHUNK_TAIL
            if i + 1 < count:
                transport.write(_framed(chunk))
                self.timer = self.loop.call_at(after(i + 1), send, i + 1)
                return
            tail = chunk + _FINISH + (_usage_chunk(count) if usage else b"") + b"data: [DONE]\n\n"
            transport.write(_framed(tail) + b"0\r\n\r\n")
            self._done()

        if jitter:
            self.timer = self.loop.call_at(after(0), send, 0)
        else:
            send(0)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: _Conn(loop), host, port, backlog=4096)
    print(f"paced upstream on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.paced", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
