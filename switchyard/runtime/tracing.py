"""OpenTelemetry traces: one trace per request across edge -> head -> model-proxy -> provider.

The W3C ``traceparent`` travels in the request envelope (NATS headers, DESIGN §4). Each hop
starts its span as a child of the envelope's context and puts its own span's context back in the
envelope for the next hop, so the edge's span, the head's routing span, the model-proxy's queue
wait and its provider call share one trace id; a client's own ``traceparent`` becomes the edge
span's parent. Spans are exported over OTLP/HTTP in batches from a background thread.

Off (no ``telemetry.otlp_endpoint``) it costs one attribute check per hop: :data:`OFF` creates
nothing, and the envelope's trace context passes through unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from switchyard import __version__
from switchyard.config import TelemetrySettings
from switchyard.errors import ApiError
from switchyard.runtime.error_labels import error_class
from switchyard.runtime.trace_export import (
    BoundedSpanQueue,
    CountingExporter,
    ExportCounts,
    throttle_export_logs,
)

log = logging.getLogger("switchyard.tracing")

SCOPE = "switchyard"
Attributes = Mapping[str, str | int | float | bool]


def parse_traceparent(traceparent: str, tracestate: str = "") -> Context | None:
    """The remote parent context of a (validated) W3C ``traceparent``, or None."""
    if not traceparent:
        return None
    try:
        _, trace_id, span_id, flags = traceparent.split("-")
        state = TraceState.from_header([tracestate]) if tracestate else None
        ctx = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
            trace_state=state,
        )
    except ValueError:
        return None
    if not ctx.is_valid:
        return None
    return set_span_in_context(NonRecordingSpan(ctx))


def traceparent_of(span: Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@dataclass(frozen=True, slots=True)
class Hop:
    """One span in flight; :meth:`end` it exactly once."""

    span: Span | None

    @property
    def traceparent(self) -> str:
        """The context to carry to the next hop ("" when tracing is off)."""
        return traceparent_of(self.span) if self.span is not None else ""

    def set(self, attributes: Attributes) -> None:
        if self.span is not None:
            self.span.set_attributes(attributes)

    def end(
        self,
        error: BaseException | None = None,
        end_time: float | None = None,
        *,
        status: int | None = None,
        peer: bool = False,
    ) -> None:
        """End the span; ``status``: the HTTP status the client got, when one was sent (a
        stream that failed after its 200 keeps it: ``error.type`` says what failed).

        ``peer``: the span is a call to another server (a provider), and ``status`` is that
        server's answer (None: it gave none, a timeout or a refused connection); the error's
        own status, what Switchyard answered its caller, is never put in its place."""
        span = self.span
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            # The class the metrics' error_type gives it, so a span and a dashboard agree; a
            # provider's own code (unbounded, fine in a span) goes beside it.
            if isinstance(error, ApiError):
                kind = error_class(error, error.status)
                if error.code and error.code != kind:
                    span.set_attribute("switchyard.error.code", error.code)
            else:
                kind = type(error).__name__
            span.set_attribute("error.type", kind)
            if isinstance(error, ApiError) and status is None and not peer:
                span.set_attribute("http.response.status_code", error.status)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(int(end_time * 1e9) if end_time is not None else None)


NO_HOP = Hop(None)


class Tracing:
    """A process's tracer; :data:`OFF` when no OTLP endpoint is configured."""

    def __init__(
        self, provider: TracerProvider | None, exports: ExportCounts | None = None
    ) -> None:
        self._provider = provider
        self.exports = exports  # what became of the spans exported (None: off)
        self._tracer = provider.get_tracer(SCOPE, __version__) if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self,
        name: str,
        *,
        traceparent: str = "",
        tracestate: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        start_time: float | None = None,
    ) -> Hop:
        """Start a span, a child of ``traceparent`` when given (else a new trace)."""
        if self._tracer is None:
            return NO_HOP
        span = self._tracer.start_span(
            name,
            context=parse_traceparent(traceparent, tracestate),
            kind=kind,
            attributes=attributes,
            start_time=int(start_time * 1e9) if start_time is not None else None,
        )
        # A request the sampler left out gets a non-recording span: it records nothing, and
        # its context (sampled flag off) still travels on, so later hops leave it out too.
        return Hop(span)

    def shutdown(self) -> None:
        """Export what is buffered, then stop. Idempotent."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            try:
                provider.shutdown()
            except Exception:  # an unreachable collector must not fail a clean stop
                log.warning("could not flush the last spans", exc_info=True)


OFF = Tracing(None)


def setup_tracing(settings: TelemetrySettings, component: str, instance: str) -> Tracing:
    """The process's tracing, from its settings (OFF without an OTLP endpoint)."""
    if not settings.otlp_endpoint:
        return OFF
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,  # imported only when tracing is on: it pulls in requests/protobuf
    )

    resource = Resource.create(
        {
            "service.name": component,
            "service.namespace": settings.service_namespace,
            "service.instance.id": instance,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        resource=resource,
        shutdown_on_exit=False,
    )
    exports = ExportCounts()
    exporter = CountingExporter(
        OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint), timeout=5), exports
    )
    throttle_export_logs()  # a collector down: a line per 10 s, not ~45 a minute
    provider.add_span_processor(
        BoundedSpanQueue(
            exporter,
            exports,
            schedule_delay_millis=settings.export_delay_ms,
            room=settings.export_queue_spans,
        )
    )
    log.info(
        "exporting traces to %s (sampling %.0f%%)",
        settings.otlp_endpoint,
        100 * settings.sample_ratio,
    )
    return Tracing(provider, exports)


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL for a collector base URL (``http://collector:4318``)."""
    return (
        endpoint
        if urlparse(endpoint).path not in ("", "/")
        else endpoint.rstrip("/") + "/v1/traces"
    )


def now() -> float:
    return time.time()


def span_name(operation: str, model: str) -> str:
    """GenAI span name: ``{gen_ai.operation.name} {gen_ai.request.model}``."""
    return f"{operation} {model}".strip()


def genai(operation: str, provider: str, model: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
