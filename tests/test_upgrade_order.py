"""A rolling upgrade done out of order shows, on a real stack: a process beating a protocol level
that breaks the documented order (heads before model-proxies) makes the control service say so
in the admin overview and on ``/metrics``, and it clears when the mix is fixed. The odd processes
are heartbeats published under the model-proxy's and the head's own identities, one of them in
the shape a process older than the level field sends (no version, no level)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from prometheus_client.parser import text_string_to_metric_families

from switchyard.bus import subjects
from switchyard.runtime.semconv import UPGRADE_ORDER_VIOLATIONS
from switchyard.schemas.monitor import ENCODER, Heartbeat
from switchyard.schemas.protocol import PROTOCOL_LEVEL
from tests.stacks import Stack
from tests.support import beat_until

pytestmark = pytest.mark.integration


async def _gauge(stack: Stack) -> dict[str, float]:
    url = (stack.process("control").spec.health_url or "").replace("/ready", "/metrics")
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(url)).text
    return {
        sample.labels["component"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == UPGRADE_ORDER_VIOLATIONS
        for sample in family.samples
    }


async def _overview(stack: Stack) -> dict[str, Any]:
    resp = await stack.admin("GET", "/overview")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _say_goodbye(nc: NATS, beat: Heartbeat) -> None:
    """The last beat of a process stopping on purpose: it leaves the table at once (so the
    session stack's other tests never see it)."""
    last = ENCODER.encode(msgspec.structs.replace(beat, stopping=True))
    await nc.publish(subjects.process_stats(beat.component, beat.instance), last)
    await nc.flush()


async def test_a_model_proxy_newer_than_the_heads_is_reported_until_it_leaves(
    stack: Stack,
) -> None:
    instance = "modelproxy-too-new"
    beat = Heartbeat(
        component="modelproxy",
        instance=instance,
        host="elsewhere",
        pid=4242,
        started_at=time.time(),
        version="9.9.9",
        protocol=PROTOCOL_LEVEL + 1,
    )
    nc = await stack.connect("modelproxy")
    try:

        async def publish() -> None:
            await nc.publish(subjects.process_stats("modelproxy", instance), ENCODER.encode(beat))
            await nc.flush()

        async def reported() -> dict[str, Any] | None:
            found = (await _overview(stack))["upgrade_order"]
            return found[0] if found else None

        violation = await beat_until(reported, publish)
        assert violation["first"] == "head"
        assert [p["instance"] for p in violation["ahead"]] == [instance]
        assert {p["component"] for p in violation["behind"]} == {"head"}
        assert {p["protocol"] for p in violation["behind"]} == {PROTOCOL_LEVEL}
        assert instance in violation["summary"]

        async def counted() -> dict[str, float] | None:
            gauge = await _gauge(stack)
            return gauge if gauge.get("modelproxy") == 1 else None

        gauge = await beat_until(counted, publish)
        assert set(gauge) == {"modelproxy"}
        # The process table carries each process's version and level.
        rows = {p["instance"]: p for p in (await _overview(stack))["processes"]}
        assert (rows[instance]["version"], rows[instance]["protocol"]) == (
            "9.9.9",
            PROTOCOL_LEVEL + 1,
        )
        heads = [p for p in rows.values() if p["component"] == "head"]
        assert heads
        assert all(p["protocol"] == PROTOCOL_LEVEL and p["version"] for p in heads)
    finally:
        await _say_goodbye(nc, beat)
        await nc.close()

    async def cleared() -> bool | None:
        view = await _overview(stack)
        return (
            True if not view["upgrade_order"] and (await _gauge(stack))["modelproxy"] == 0 else None
        )

    async def nothing() -> None:
        return None

    await beat_until(cleared, nothing)


async def test_a_head_older_than_the_level_field_under_newer_model_proxies_is_reported(
    stack: Stack,
) -> None:
    """Its beat has neither field (the shape an older process sends): it reads as level 1, and
    the stack's model-proxies, beating this level, are ahead of it."""
    instance = "head-too-old"
    subject = subjects.process_stats("head", instance)
    old_beat = (
        b'{"component":"head","instance":"%s","host":"elsewhere","pid":7,'
        b'"ready":true,"started_at":1.0,"cpu_seconds":0.5,"rss_bytes":1048576}' % instance.encode()
    )
    nc = await stack.connect("head")
    try:

        async def publish() -> None:
            await nc.publish(subject, old_beat)
            await nc.flush()

        async def reported() -> dict[str, Any] | None:
            found = (await _overview(stack))["upgrade_order"]
            return found[0] if found else None

        violation = await beat_until(reported, publish)
        assert violation["first"] == "head"
        assert [(p["instance"], p["protocol"], p["version"]) for p in violation["behind"]] == [
            (instance, 1, "")
        ]
        ahead = violation["ahead"]
        assert ahead
        assert {(p["component"], p["protocol"]) for p in ahead} == {("modelproxy", PROTOCOL_LEVEL)}

        async def counted() -> dict[str, float] | None:
            gauge = await _gauge(stack)
            return gauge if gauge.get("modelproxy", 0) >= 1 else None

        assert (await beat_until(counted, publish))["modelproxy"] == len(ahead)
    finally:
        await _say_goodbye(
            nc,
            Heartbeat(component="head", instance=instance, host="elsewhere", pid=7, started_at=1.0),
        )
        await nc.close()

    async def cleared() -> bool | None:
        return True if not (await _overview(stack))["upgrade_order"] else None

    async def nothing() -> None:
        return None

    await beat_until(cleared, nothing)


async def test_a_heartbeat_naming_another_component_than_its_subject_is_ignored(
    stack: Stack,
) -> None:
    """Permissions bind a heartbeat's subject to its sender, not its body: an edge posing as
    a newer model-proxy would otherwise raise the upgrade-order alert from the client zone."""
    forged = Heartbeat(
        component="modelproxy",
        instance="modelproxy-forged",
        host="elsewhere",
        pid=66,
        started_at=time.time(),
        protocol=PROTOCOL_LEVEL + 5,
    )
    # Sent after the forgery on the same connection: once control shows it, it has read both.
    marker = Heartbeat(component="tail", instance="tail-marker", host="elsewhere", pid=67)
    nc = await stack.connect("tail")
    try:

        async def publish() -> None:
            await nc.publish(subjects.process_stats("tail", "tail-forged"), ENCODER.encode(forged))
            await nc.publish(subjects.process_stats("tail", "tail-marker"), ENCODER.encode(marker))
            await nc.flush()

        async def marked() -> dict[str, Any] | None:
            view = await _overview(stack)
            return view if any(p["instance"] == "tail-marker" for p in view["processes"]) else None

        view = await beat_until(marked, publish)
        assert not any(p["instance"].endswith("forged") for p in view["processes"])
        assert view["upgrade_order"] == []
    finally:
        await _say_goodbye(nc, marker)
        await nc.close()
