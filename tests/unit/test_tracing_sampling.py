"""Sampling: a request the sampler leaves out is served, records nothing, and tells later hops.

Found by the benchmark at ``--trace-sample 0.1``: every unsampled request failed with 500,
because the edge expected a recording span from the tracer.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from switchyard.errors import InvalidRequest
from switchyard.runtime.tracing import Tracing

pytestmark = pytest.mark.unit

PARENT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_LEFT_OUT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _tracing(sampler: object) -> tuple[Tracing, Kept]:
    kept = Kept()
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return Tracing(provider), kept


def test_a_request_the_sampler_leaves_out_still_carries_its_context_on() -> None:
    tracing, kept = _tracing(ParentBased(ALWAYS_OFF))
    hop = tracing.start("chat m")
    hop.set({"gen_ai.request.model": "m"})
    hop.end(InvalidRequest("bad"))
    version, trace_id, span_id, flags = hop.traceparent.split("-")
    assert version == "00"
    assert int(flags, 16) & 1 == 0  # the sampled bit is off: the next hop learns it
    assert int(trace_id, 16) != 0
    assert int(span_id, 16) != 0
    assert kept.spans == []


def test_later_hops_follow_the_first_hops_decision() -> None:
    tracing, kept = _tracing(ParentBased(ALWAYS_ON))
    tracing.start("route", traceparent=PARENT_LEFT_OUT).end()
    assert kept.spans == []
    hop = tracing.start("route", traceparent=PARENT_SAMPLED)
    hop.end()
    assert hop.traceparent.endswith("-01")
    assert [format(s.context.trace_id, "032x") for s in kept.spans] == [
        PARENT_SAMPLED.split("-")[1]
    ]
