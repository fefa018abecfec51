"""Time to first token of a streamed answer, which wrk cannot see.

wrk times whole responses; for streaming what a user feels is the first ``data:`` line. This
client sends sequential requests over one keep-alive connection per target, alternating direct
and via Switchyard so both see the same machine state, and times the first ``data:`` line and
the end of the stream. The client's own overhead is the same on both sides, so the difference of
the medians is what Switchyard adds.
"""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class TtftSeries:
    """Per-request timings of one target, in milliseconds."""

    first_token_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        return {
            "count": len(self.first_token_ms),
            "errors": self.errors,
            "first_error": self.first_error,
            "ttft_p50_ms": pct(self.first_token_ms, 0.5),
            "ttft_p90_ms": pct(self.first_token_ms, 0.9),
            "ttft_p99_ms": pct(self.first_token_ms, 0.99),
            "ttft_mean_ms": statistics.fmean(self.first_token_ms) if self.first_token_ms else 0,
            "total_p50_ms": pct(self.total_ms, 0.5),
        }


class _Target:
    """One keep-alive connection to one URL, reconnecting after an error."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path
        self.headers = headers
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.connect()
        return self.conn

    def _timed(self, body: bytes) -> tuple[float, float]:
        """One streamed request: (seconds to the first ``data:`` line, seconds to the end)."""
        conn = self._connection()
        start = time.perf_counter()
        conn.request("POST", self.path, body=body, headers=self.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        while line := resp.readline():
            if line.startswith(b"data:"):
                first = time.perf_counter()
                resp.read()  # the rest of the stream, so the connection can be reused
                return first - start, time.perf_counter() - start
        raise RuntimeError("the stream ended without a data: line")

    def once(self, body: bytes, into: TtftSeries, *, record: bool) -> None:
        """Time one request into ``into``; failures are counted, never raised."""
        try:
            first, total = self._timed(body)
        except Exception as exc:
            self.close()
            into.errors += 1
            into.first_error = into.first_error or f"{type(exc).__name__}: {exc}"
            return
        if record:
            into.first_token_ms.append(first * 1000)
            into.total_ms.append(total * 1000)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def measure_ttft(
    direct_url: str,
    direct_body: bytes,
    switchyard_url: str,
    switchyard_body: bytes,
    api_key: str,
    *,
    requests: int,
    warmup: int = 20,
) -> dict[str, TtftSeries]:
    """Alternate ``requests`` streamed calls to each target; returns the series by target."""
    base = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    targets = {
        "direct": (_Target(direct_url, base), direct_body),
        "switchyard": (
            _Target(switchyard_url, {**base, "Authorization": f"Bearer {api_key}"}),
            switchyard_body,
        ),
    }
    series = {name: TtftSeries() for name in targets}
    try:
        for i in range(warmup + requests):
            for name, (target, body) in targets.items():
                target.once(body, series[name], record=i >= warmup)
    finally:
        for target, _ in targets.values():
            target.close()
    return series
