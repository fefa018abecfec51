"""What becomes of the spans a process exports: counted, and its exporter's complaints throttled.

With the collector down, OpenTelemetry's exporter logs every retry ("Transient error ...
retrying in ...") and every batch given up ("Failed to export spans batch ..."): about 45
lines a minute from each traced process, which drowned everything else, while nothing said
how many spans were lost. Here the spans are counted by what became of them
(``switchyard_trace_spans_total``), and the exporter's warnings and errors are said at most
once per :data:`EVERY_S` per process, each with how many were left out since the last one (the
rule :class:`~switchyard.runtime.throttle.Throttle` keeps for Switchyard's own repeated
failures, such as Redis being unreachable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.throttle import Throttle

EVERY_S = 10.0
# The loggers OpenTelemetry's OTLP/HTTP span export and its batch processor write to.
EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
# The batch processor's line for a span it could not queue (its queue full): a lost span.
_QUEUE_FULL = "Queue full, dropping"
RESULTS = ("exported", "failed", "dropped")


class ExportCounts:
    """Spans by what became of them: ``exported`` (the collector took them), ``failed`` (their
    batch was given up: the collector unreachable or refusing, after the exporter's retries),
    ``dropped`` (never exported: the export queue was full)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the exporter's own thread counts too
        self._counts = dict.fromkeys(RESULTS, 0)

    def add(self, result: str, spans: int) -> None:
        with self._lock:
            self._counts[result] += spans

    def get(self, result: str) -> int:
        return self._counts[result]


class CountingExporter(SpanExporter):
    """``exporter``, with its spans counted by result."""

    def __init__(self, exporter: SpanExporter, counts: ExportCounts) -> None:
        self._exporter = exporter
        self._counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:  # counted, then raised as it came: the SDK's batch processor logs it
            self._counts.add("failed", len(spans))
            raise
        ok = result is SpanExportResult.SUCCESS
        self._counts.add("exported" if ok else "failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class ThrottledExportLog(logging.Filter):
    """Lets one of the exporter's warnings or errors through per ``every_s`` seconds, with
    how many it left out since the last; counts the spans the full queue dropped. Lines below
    warning pass (they show only at debug level)."""

    def __init__(
        self,
        counts: ExportCounts,
        every_s: float = EVERY_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.counts = counts
        self._throttle = Throttle(every_s, clock=clock)
        self._every_s = every_s
        self._left_out = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if str(record.msg).startswith(_QUEUE_FULL):
            self.counts.add("dropped", 1)
        with self._lock:
            if not self._throttle.ready():
                self._left_out += 1
                return False
            left_out, self._left_out = self._left_out, 0
        if left_out:
            record.msg = (
                f"{record.getMessage()} ({left_out} more span export lines left out in the last"
                f" {self._every_s:.0f} s; switchyard_trace_spans_total counts the spans lost)"
            )
            record.args = None
        return True


def throttle_export_logs(counts: ExportCounts) -> ThrottledExportLog:
    """Put one :class:`ThrottledExportLog` on each of OpenTelemetry's export loggers, in place
    of any put there before (a process sets its tracing up once; tests do it many times)."""
    throttled = ThrottledExportLog(counts)
    for name in EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ThrottledExportLog)]:
            logger.removeFilter(old)
        logger.addFilter(throttled)
    return throttled


def count_trace_exports(metrics: Metrics, counts: ExportCounts | None) -> None:
    """Export ``counts`` (None: tracing is off, every count 0, so the series are there and
    dashboards read 0, not nothing)."""
    metrics.counter_callback(
        sc.TRACE_SPANS,
        "Spans by what became of them: exported to the collector, failed (their batch given "
        "up after the exporter's retries) or dropped (the export queue was full).",
        [sc.RESULT],
        lambda: [((r,), float(counts.get(r) if counts is not None else 0)) for r in RESULTS],
    )
