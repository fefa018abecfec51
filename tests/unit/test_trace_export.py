"""A collector that is down: the spans lost are counted, and the exporter's complaints are said
once per 10 s, not ~45 lines a minute per process (an SRE explorer's count).

The exporter is OpenTelemetry's own, exporting over HTTP to a local port nothing listens on.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switchyard.config import TelemetrySettings
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.trace_export import (
    EXPORT_LOGGERS,
    ExportCounts,
    ThrottledExportLog,
    count_trace_exports,
)
from switchyard.runtime.tracing import OFF, setup_tracing

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(metrics: Metrics) -> dict[str, float]:
    found = {}
    for line in metrics.render().decode().splitlines():
        if line.startswith(f"{sc.TRACE_SPANS}{{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


def _record(logger: str, msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, ("x",), None)


def test_with_the_collector_down_spans_are_counted_failed_and_the_log_says_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = TelemetrySettings(
        otlp_endpoint=f"http://127.0.0.1:{_closed_port()}", export_delay_ms=50
    )
    tracing = setup_tracing(settings, "head", "head-1")
    metrics = Metrics("head")
    count_trace_exports(metrics, tracing.exports)
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(5):  # one batch, given up after the exporter's retries (~3 s)
                tracing.start(f"span {i}").end()
            assert tracing._provider is not None
            tracing._provider.force_flush()
    finally:
        tracing.shutdown()
    assert _samples(metrics) == {"exported": 0.0, "failed": 5.0, "dropped": 0.0}
    lines = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    # Unthrottled: a "Transient error ... retrying" per retry and a "Failed to export" per
    # batch (three lines here). Throttled: the first one only, within these few seconds.
    assert len(lines) == 1, [r.getMessage() for r in lines]


def test_tracing_off_exports_the_counts_at_zero() -> None:
    metrics = Metrics("tail")
    count_trace_exports(metrics, OFF.exports)
    assert _samples(metrics) == {"exported": 0.0, "failed": 0.0, "dropped": 0.0}


def test_one_line_per_period_naming_how_many_were_left_out() -> None:
    clock = Clock(100.0)
    throttled = ThrottledExportLog(10.0, clock=clock)
    name = EXPORT_LOGGERS[0]
    said = [throttled.filter(_record(name, "Transient error %s")) for _ in range(45)]
    assert said == [True] + [False] * 44
    clock.now += 10.0
    record = _record(name, "Failed to export %s", logging.ERROR)
    assert throttled.filter(record)
    message = record.getMessage()
    assert message.startswith("Failed to export x (44 more span export lines left out")
    assert sc.TRACE_SPANS in message
    # Below warning nothing is held back (debug lines show only when asked for).
    assert throttled.filter(_record(name, "debug", logging.DEBUG))


class HeldCollector:
    """An OTLP/HTTP collector on a local port that holds every export until released, then
    takes it (200): the export queue fills behind the first batch."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held.arrived.set()
                held.release.wait(10)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_spans_a_full_queue_refused_are_counted_dropped_whatever_the_log_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue holds 4 spans; the first 4 go out in one export the collector holds, the next
    4 wait in the queue, the 3 after them find it full. They were counted from the SDK's
    "Queue full, dropping" warning: with OpenTelemetry's loggers set to errors only (or
    another wording in another release) 0 were."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    for name in EXPORT_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.ERROR)
    collector = HeldCollector()
    settings = TelemetrySettings(
        otlp_endpoint=collector.url, export_delay_ms=50, export_queue_spans=4
    )
    tracing = setup_tracing(settings, "head", "head-1")
    metrics = Metrics("head")
    count_trace_exports(metrics, tracing.exports)
    try:
        for i in range(4):  # a full batch: exported at once, held by the collector
            tracing.start(f"span {i}").end()
        assert collector.arrived.wait(10)
        for i in range(7):
            tracing.start(f"span {4 + i}").end()
        assert _samples(metrics)["dropped"] == 3.0
        collector.release.set()
    finally:
        tracing.shutdown()  # the 4 queued go out
        collector.close()
    assert _samples(metrics) == {"exported": 8.0, "failed": 0.0, "dropped": 3.0}


def test_the_queue_count_refuses_past_its_room_and_makes_room_as_spans_are_taken() -> None:
    counts = ExportCounts()
    assert counts.admit(1)
    assert not counts.admit(1)
    counts.taken(1)
    assert counts.admit(1)
    assert (counts.get("dropped"), counts.get("exported")) == (1, 0)
