"""Leak canary: a unique provider key must never show up anywhere a client or an operator looks.

One stack with DEBUG logging everywhere. A canary key is stored, then chat, streaming, several
error paths (including a provider that echoes the key back in its 401 message) and admin calls
run, while an unrestricted CLIENT-zone subscriber (``probe``, added to the running server by a
config reload) records every message it can see. Then every log file, HTTP response (body and
headers), ``/metrics`` answer and recorded NATS message is searched for the canary and its
base64 forms. The only place it may appear is the provider's own request.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.stack.certs import CertificateAuthority
from switchyard.stack.natsconf import NatsServerLayout, nats_config, render
from tests.otlp import OtlpReceiver
from tests.stacks import Stack, start_stack
from tests.support import flushed
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARY = "sk-canary-" + secrets.token_hex(20)


def _forms(value: str) -> list[bytes]:
    raw = value.encode()
    forms = [raw]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw)
        forms += [text, text.rstrip(b"=")]
    return forms


@pytest.fixture(scope="module")
def spans() -> Iterator[OtlpReceiver]:
    """Every span the canary stack exports (tracing on, every trace sampled)."""
    otlp = OtlpReceiver()
    otlp.start()
    try:
        yield otlp
    finally:
        otlp.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def canary_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, spans: OtlpReceiver
) -> AsyncIterator[Stack]:
    provider = {"kind": "openai-compatible", "api_base": upstream.base_url, "secret": "canary"}
    routes = {
        "ok": {"deployments": [{"provider": "leaky", "model": "echo:canary"}]},
        "echo401": {"deployments": [{"provider": "leaky", "model": "authecho"}]},
        "broken": {"deployments": [{"provider": "leaky", "model": "status:500"}]},
        "limited": {"deployments": [{"provider": "leaky", "model": "status:429"}]},
    }
    extra = {
        "providers": {"leaky": provider},
        "routes": routes,
        "logging": {"level": "debug"},
        "telemetry": {"otlp_endpoint": spans.endpoint, "export_delay_ms": 100},
    }
    stack = await start_stack(tmp_path_factory.mktemp("canary"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _add_probe_user(stack: Stack) -> None:
    """Render the server config again with an unrestricted CLIENT user and reload it."""
    settings = stack.settings
    org = settings.certs.organization
    ca, _ = CertificateAuthority.load_or_create(settings.certs_dir, org, 30)
    ca.issue(
        settings.certs_dir, "probe", cn="probe", ou="client", organization=org, validity_days=30
    )
    layout = NatsServerLayout(
        port=settings.stack.nats_port,
        monitor_port=settings.stack.nats_monitor_port,
        store_dir=stack.home.nats_store,
        cert_dir=settings.certs_dir,
        organization=org,
        response_threshold_s=settings.nats.response_threshold_s,
        internal_clients=settings.nats.internal_clients,
    )
    doc = nats_config(layout)
    doc["accounts"]["CLIENT"]["users"].append({"user": f"CN=probe,OU=client,O={org}"})
    stack.home.nats_config.write_text(render(doc))
    proc = stack.process("nats-server").proc
    assert proc is not None
    proc.send_signal(signal.SIGHUP)


async def test_canary_never_leaks(
    canary_stack: Stack, upstream: FakeOpenAI, spans: OtlpReceiver
) -> None:
    stack = canary_stack
    _add_probe_user(stack)
    await asyncio.sleep(1.0)  # let the reload settle before anything is in flight
    admin_nc = await stack.connect("admin")
    admin = SecretsAdmin(admin_nc, actor="canary-test")
    # The put itself carries the value from the admin into the server zone; the spy starts
    # after it (no CLIENT identity may subscribe to secrets.v1.admin.>: see test_zones).
    await admin.put("canary", CANARY, provider="openai")
    await asyncio.sleep(0.5)
    probe = await stack.connect("probe")
    seen: list[Msg] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg)

    await probe.subscribe(">", cb=spy)
    await flushed(probe)

    responses: list[httpx.Response] = []
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for base in (stack.tail_url, stack.gateway_url):
                url = f"{base}/v1/chat/completions"
                responses.append(await http.post(url, json={**chat, "model": "ok"}, headers=auth))
                responses.append(
                    await http.post(url, json={**chat, "model": "ok", "stream": True}, headers=auth)
                )
                for model in ("echo401", "broken", "limited", "no-such-model"):
                    responses.append(
                        await http.post(url, json={**chat, "model": model}, headers=auth)
                    )
                responses.append(
                    await http.post(
                        url, json={**chat, "model": "echo401", "stream": True}, headers=auth
                    )
                )
                responses.append(
                    await http.post(
                        url,
                        json={**chat, "model": "ok"},
                        headers={"Authorization": "Bearer sk-sy-wrong"},
                    )
                )
                responses.append(await http.get(f"{base}/v1/models", headers=auth))
                responses.append(await http.get(f"{base}/metrics"))
            for phase in stack.supervisor.procs:  # every component's /metrics
                for proc in phase:
                    health = proc.spec.health_url or ""
                    if proc.spec.kind == "component" and health.startswith("http"):
                        responses.append(await http.get(health.replace("/ready", "/metrics")))
        listing = await admin.list()
        info = await admin.info("canary")
        await asyncio.sleep(1.0)  # let every process flush its logs
    finally:
        await probe.close()
        await admin_nc.close()

    # The provider did receive it (the point of storing it), from the model-proxy.
    assert upstream.calls_for("echo:canary")[-1].headers["Authorization"] == f"Bearer {CANARY}"
    assert [r.status_code for r in responses[:2]] == [200, 200], responses[0].text
    assert responses[2].status_code in (502, 401, 400)

    forms = _forms(CANARY)
    hits: list[str] = []
    for response in responses:
        blob = response.content + repr(dict(response.headers)).encode()
        hits += [f"HTTP {response.request.url}" for f in forms if f in blob]
    for msg in seen:
        blob = msg.data + repr(msg.headers).encode() + msg.subject.encode()
        hits += [f"NATS {msg.subject}" for f in forms if f in blob]
    logs = [*sorted(Path(stack.home.logs).glob("*.log")), stack.home.openbao / "audit.log"]  # noqa: ASYNC240
    assert len(logs) >= 10
    for path in logs:
        data = path.read_bytes()
        hits += [f"log {path.name}" for f in forms if f in data]
    for item in (*listing, info):
        hits += ["admin reply" for f in forms if f.decode() in repr(item)]
    exported = b"".join(spans.bodies)
    hits += ["exported spans" for f in forms if f in exported]
    assert hits == []
    # Positive controls: spans really were exported, and every process served its metrics.
    assert {s.service for s in spans.snapshot()} >= {"tail", "head", "modelproxy"}
    scraped = [r for r in responses if r.request.url.path == "/metrics"]
    assert len(scraped) >= 8
    assert all(r.status_code == 200 and b"switchyard_build_info" in r.content for r in scraped)
    assert len(seen) > 10  # the spy really saw the CLIENT-side traffic
    debug_lines = sum(p.read_text(errors="replace").count(" DEBU ") for p in logs)
    assert debug_lines > 0  # logging really was at DEBUG
