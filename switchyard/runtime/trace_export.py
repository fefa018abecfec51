"""What becomes of the spans a process exports: counted, and its exporter's complaints throttled.

With the collector down, OpenTelemetry's exporter logs every retry ("Transient error ...
retrying in ...") and every batch given up ("Failed to export spans batch ..."): about 45
lines a minute from each traced process, which drowned everything else, while nothing said
how many spans were lost. Here the spans are counted by what became of them
(``switchyard_trace_spans_total``), and the exporter's warnings and errors are said at most
once per :data:`EVERY_S` per process, each with how many were left out since the last one (the
rule :class:`~switchyard.runtime.throttle.Throttle` keeps for Switchyard's own repeated
failures, such as Redis being unreachable).

Spans lost to a full export queue are counted by :class:`BoundedSpanQueue`, in front of the
SDK's batch processor: it keeps its own count of the spans queued (each span handed on, less
those the exporter took) and refuses, counted, a span that finds it full, so the SDK's queue
never fills. The count once read the SDK's "Queue full, dropping" log line: another wording
in an OpenTelemetry release, or those loggers set above warning, and nothing was counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

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
RESULTS = ("exported", "failed", "dropped")


class ExportCounts:
    """Spans by what became of them: ``exported`` (the collector took them), ``failed`` (their
    batch was given up: the collector unreachable or refusing, after the exporter's retries),
    ``dropped`` (never exported: the export queue was full)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the exporter's own thread counts too
        self._counts = dict.fromkeys(RESULTS, 0)
        self._queued = 0  # handed to the batch processor, not yet taken by the exporter

    def add(self, result: str, spans: int) -> None:
        with self._lock:
            self._counts[result] += spans

    def admit(self, room: int) -> bool:
        """A span is to be queued: True when fewer than ``room`` are; else it is counted
        ``dropped`` and False."""
        with self._lock:
            if self._queued >= room:
                self._counts["dropped"] += 1
                return False
            self._queued += 1
            return True

    def taken(self, spans: int) -> None:
        """The exporter took ``spans`` off the queue (to export them, whatever comes of it)."""
        with self._lock:
            self._queued = max(0, self._queued - spans)

    def get(self, result: str) -> int:
        return self._counts[result]


class CountingExporter(SpanExporter):
    """``exporter``, with its spans counted by result."""

    def __init__(self, exporter: SpanExporter, counts: ExportCounts) -> None:
        self._exporter = exporter
        self._counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._counts.taken(len(spans))
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


class BoundedSpanQueue(SpanProcessor):
    """OpenTelemetry's batch processor behind a queue bound of our own: a sampled span that
    finds ``room`` spans queued (handed on, not yet taken by the :class:`CountingExporter`)
    is counted ``dropped`` and not handed on. The SDK's queue, as large, never fills: a span
    it would have dropped is refused here, counted whatever its log says."""

    def __init__(
        self,
        exporter: CountingExporter,
        counts: ExportCounts,
        *,
        schedule_delay_millis: float,
        room: int,
    ) -> None:
        self._room = room
        self._counts = counts
        self._batch = BatchSpanProcessor(
            exporter, max_queue_size=self._room, schedule_delay_millis=schedule_delay_millis
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return  # never exported (the batch processor skips it too)
        if self._counts.admit(self._room):
            self._batch.on_end(span)

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]  # (untyped in the SDK)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


class ThrottledExportLog(logging.Filter):
    """Lets one of the exporter's warnings or errors through per ``every_s`` seconds, with
    how many it left out since the last. Lines below warning pass (they show only at debug
    level)."""

    def __init__(
        self, every_s: float = EVERY_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._throttle = Throttle(every_s, clock=clock)
        self._every_s = every_s
        self._left_out = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
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


def throttle_export_logs() -> ThrottledExportLog:
    """Put one :class:`ThrottledExportLog` on each of OpenTelemetry's export loggers, in place
    of any put there before (a process sets its tracing up once; tests do it many times)."""
    throttled = ThrottledExportLog()
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
