"""Load generator for paced streams and slow requests: ``python -m bench.streamload SPEC``.

wrk cannot time chunks, so this client does: many concurrent HTTP/1.1 keep-alive connections
on uvloop with a raw ``asyncio.Protocol`` (no HTTP library: a few microseconds per chunk, so
10,000 chunks/s cost it a fraction of a core, which the direct baseline shows). Each
connection ("slot") sends a request, reads the whole answer and sends the next, for the warm-up
and the measured window; then it stops starting requests and lets the open ones finish.

The spec (JSON, argument) lists classes of slots::

    {"warmup_s": 3, "duration_s": 10, "drain_s": 15,
     "classes": [{"name": "streams", "url": "http://127.0.0.1:1234/v1/chat/completions",
                  "body": "{...}", "api_key": "", "slots": 200, "stream": true,
                  "chunks": 100, "stagger_s": 2.0}]}

Slots start spread over ``stagger_s`` (real streams do not start in lockstep). Streamed chunks
carry the upstream's send time (``bench.paced``), so for every content chunk we know when it
was sent and when it arrived. Printed on stdout: ``MARK start`` and ``MARK end`` when the
measured window opens and closes (the benchmark reads CPU there), then one ``RESULT {json}``
line. Per class, over the measured window:

* requests started and completed, chunks received, errors (non-200, broken or short streams);
* latency (request sent -> last byte) and TTFT (request sent -> first ``data:`` line);
* gap distortion: for each chunk after the first, (arrival gap) - (send gap), in ms;
* chunk delay: arrival - send time, in ms (the pipeline's one-way delay per chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

_ID = b'"id":"t'
NS_PER_MS = 1_000_000


@dataclass
class ClassStats:
    """Samples of one class, for requests sent in the measured window (chunks: arrived in it)."""

    name: str
    started: int = 0
    completed: int = 0
    chunks: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latency_ns: list[int] = field(default_factory=list)
    ttft_ns: list[int] = field(default_factory=list)
    gap_ns: list[int] = field(default_factory=list)
    delay_ns: list[int] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def pct(values: list[int], q: float) -> float:
    """Percentile (nearest rank) in ms, NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / NS_PER_MS


def summary(stats: ClassStats, seconds: float) -> dict[str, Any]:
    def dist(values: list[int]) -> dict[str, float]:
        return {f"p{int(q * 100)}": pct(values, q) for q in (0.5, 0.9, 0.99)} | {
            "max": max(values) / NS_PER_MS if values else float("nan"),
            "n": len(values),
        }

    return {
        "started": stats.started,
        "completed": stats.completed,
        "rps": stats.completed / seconds if seconds else 0.0,
        "chunks": stats.chunks,
        "chunks_per_s": stats.chunks / seconds if seconds else 0.0,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "latency_ms": dist(stats.latency_ns),
        "ttft_ms": dist(stats.ttft_ns),
        "gap_distortion_ms": dist(stats.gap_ns),
        "chunk_delay_ms": dist(stats.delay_ns),
    }


class Window:
    """The measured window: [start, end) in monotonic ns (0 = not yet)."""

    start = 0
    end = 0

    def inside(self, t: int) -> bool:
        return self.start != 0 and t >= self.start and (self.end == 0 or t < self.end)


class _Response(asyncio.Protocol):
    """An HTTP/1.1 connection that runs one request at a time and parses its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self._reset()

    def _reset(self) -> None:
        self.buf = b""
        self.head_done = False
        self.status = 0
        self.chunked = False
        self.remaining = -1  # content-length left, or bytes left in the current chunk
        self.crlf = False  # chunked: the CRLF after a chunk's data is due
        self.lines = b""
        self.data_times: list[tuple[int, int]] = []  # (arrival ns, sent ns or 0)
        self.first_data = 0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def send(self, request: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split(b" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
                elif name == b"content-length":
                    self.remaining = int(value.strip())
            self.head_done = True
            if self.chunked:
                self.remaining = -1
        if self.chunked:
            self._chunked(now)
        else:
            take = self.buf if self.remaining < 0 else self.buf[: self.remaining]
            self.buf = self.buf[len(take) :]
            self._body(take, now)
            if self.remaining >= 0:
                self.remaining -= len(take)
                if self.remaining == 0:
                    self._finish()

    def _chunked(self, now: int) -> None:
        """Decode chunked transfer encoding: size line, data, CRLF; a 0 size ends it."""
        while self.buf and not self.done:
            if self.crlf:  # after a chunk's data
                if len(self.buf) < 2:
                    return
                self.buf = self.buf[2:]
                self.crlf = False
                continue
            if self.remaining < 0:  # a size line
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(self.buf[:end].split(b";")[0], 16)
                if size == 0:
                    if len(self.buf) < end + 4:
                        return
                    self.buf = self.buf[end + 4 :]
                    self._finish()
                    return
                self.buf = self.buf[end + 2 :]
                self.remaining = size
            take = self.buf[: self.remaining]
            self.buf = self.buf[len(take) :]
            self.remaining -= len(take)
            self._body(take, now)
            if self.remaining == 0:
                self.remaining = -1
                self.crlf = True

    def _body(self, data: bytes, now: int) -> None:
        if not data:
            return
        self.lines += data
        if b"\n" not in data:
            return
        *complete, self.lines = self.lines.split(b"\n")
        for line in complete:
            if not line.startswith(b"data:"):
                continue
            if not self.first_data:
                self.first_data = now
            at = line.find(_ID)
            if at < 0:
                continue
            end = line.find(b"-", at + 7)
            self.data_times.append((now, int(line[at + 7 : end])))

    def _finish(self) -> None:
        if self.lines.startswith(b"{") and not self.first_data:
            self.first_data = time.monotonic_ns()  # a JSON answer: its first byte counts
        self.done = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


@dataclass
class _Class:
    name: str
    host: str
    port: int
    request: bytes
    slots: int
    stream: bool
    chunks: int
    stagger_s: float
    stats: ClassStats


def _request(url: str, body: str, api_key: str, stream: bool) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    data = body.encode()
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Accept: {'text/event-stream' if stream else 'application/json'}",
        f"Content-Length: {len(data)}",
    ]
    if api_key:
        lines.append(f"Authorization: Bearer {api_key}")
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def _slot(
    cls: _Class, index: int, window: Window, stopping: asyncio.Event, timeout_s: float
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(cls.stagger_s * index / max(1, cls.slots))
    conn: _Response | None = None
    stats = cls.stats
    while not stopping.is_set():
        if conn is None or conn.lost:
            try:
                _, proto = await loop.create_connection(_Response, cls.host, cls.port)
            except OSError:
                stats.error("connect")
                await asyncio.sleep(0.5)
                continue
            conn = proto
        sent = time.monotonic_ns()
        counted = window.inside(sent)
        if counted:
            stats.started += 1
        try:
            async with asyncio.timeout(timeout_s):
                await conn.send(cls.request)
        except (ConnectionError, TimeoutError) as exc:
            if counted or window.start:
                stats.error(type(exc).__name__)
            if conn.transport is not None:
                conn.transport.close()
            conn = None
            continue
        ended = time.monotonic_ns()
        if conn.status != 200:
            stats.error(f"http_{conn.status}")
            continue
        times = conn.data_times
        if cls.stream and len(times) != cls.chunks:
            stats.error("short_stream")
        for i, (arrived, sent_at) in enumerate(times):
            if not window.inside(arrived):
                continue
            stats.chunks += 1
            stats.delay_ns.append(arrived - sent_at)
            if i:
                prev_arrived, prev_sent = times[i - 1]
                stats.gap_ns.append((arrived - prev_arrived) - (sent_at - prev_sent))
        if counted:
            stats.completed += 1
            stats.latency_ns.append(ended - sent)
            if conn.first_data:
                stats.ttft_ns.append(conn.first_data - sent)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    classes = []
    for c in spec["classes"]:
        host, port, request = _request(c["url"], c["body"], c.get("api_key", ""), c["stream"])
        classes.append(
            _Class(
                name=c["name"],
                host=host,
                port=port,
                request=request,
                slots=int(c["slots"]),
                stream=bool(c["stream"]),
                chunks=int(c.get("chunks", 0)),
                stagger_s=float(c.get("stagger_s", 0.0)),
                stats=ClassStats(c["name"]),
            )
        )
    window = Window()
    stopping = asyncio.Event()
    timeout_s = float(spec.get("timeout_s", 60.0))
    tasks = [
        asyncio.create_task(_slot(cls, i, window, stopping, timeout_s))
        for cls in classes
        for i in range(cls.slots)
    ]
    await asyncio.sleep(float(spec["warmup_s"]))
    window.start = time.monotonic_ns()
    print("MARK start", flush=True)
    await asyncio.sleep(float(spec["duration_s"]))
    window.end = time.monotonic_ns()
    print("MARK end", flush=True)
    stopping.set()
    _, pending = await asyncio.wait(tasks, timeout=float(spec.get("drain_s", 30.0)))
    for task in pending:
        task.cancel()
    for cls in classes:
        if pending:
            cls.stats.error("not_drained")
    seconds = (window.end - window.start) / 1e9
    return {
        "seconds": seconds,
        "classes": {cls.name: summary(cls.stats, seconds) for cls in classes},
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        result = runner(run(spec))
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
