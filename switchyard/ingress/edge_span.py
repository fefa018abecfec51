"""The edge's span of one LLM request: the root of its trace (or a child of the client's).

Every request is one trace, found by its ``x-request-id`` (``switchyard.request_id``). A
request the edge refuses itself (a bad key, an invalid body, a key's rate limit or budget)
is answered before it has an envelope to carry a trace on; its span is started when it is
answered, dated from the request's arrival, sampled as any other (the sampler decides by
its trace id, or by the client's ``traceparent``).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.trace import SpanKind

from switchyard.bus.envelope import trace_context
from switchyard.runtime import semconv as sc
from switchyard.runtime.tracing import Hop, Tracing, span_name


def edge_span(
    tracing: Tracing,
    *,
    op: str,
    model: str,
    route: str,
    request_id: str,
    traceparent: str,
    tracestate: str,
    start_time: float | None = None,
) -> Hop:
    """The edge's span (``traceparent``: the client's, already validated, or "")."""
    operation = sc.OPERATIONS.get(op, sc.OTHER)
    return tracing.start(
        span_name(operation, model),
        traceparent=traceparent,
        tracestate=tracestate,
        kind=SpanKind.SERVER,
        attributes={
            "http.route": route,
            "http.request.method": "POST",
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "switchyard.request_id": request_id,
        },
        start_time=start_time,
    )


def refused_span(
    tracing: Tracing,
    headers: Mapping[bytes, bytes],
    *,
    op: str,
    model: str,
    route: str,
    request_id: str,
    arrived: float,
) -> Hop:
    """The span of a request answered before its span began; ``headers``: the request's
    (lowercased names), ``arrived``: when it came (unix seconds)."""
    traceparent, tracestate = trace_context(
        headers.get(b"traceparent", b"").decode("latin-1"),
        headers.get(b"tracestate", b"").decode("latin-1"),
    )
    return edge_span(
        tracing,
        op=op,
        model=model,
        route=route,
        request_id=request_id,
        traceparent=traceparent,
        tracestate=tracestate,
        start_time=arrived,
    )
