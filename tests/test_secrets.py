"""Provider keys in a real OpenBao: CLI in, provider header out, rotation and outages live."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time

import httpx
import msgspec
import pytest

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.envelope import Deadline
from switchyard.bus.replies import ReplyKind, decode_reply, error_from_reply
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.errors import NotFound
from switchyard.schemas.secrets import PutSecret
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY = {"model": "vaulted", "messages": [{"role": "user", "content": "hi"}]}
NAME = "openai-test"


def _cli(stack: Stack, *args: str, value: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "--config", str(stack.config_file), "secrets", *args],
        input=value,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _chat(stack: Stack) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )


def _last_auth(upstream: FakeOpenAI) -> str:
    return upstream.calls_for("echo:vaulted")[-1].headers["Authorization"]


async def test_put_use_rotate_delete(stack: Stack, upstream: FakeOpenAI) -> None:
    first = "sk-first-" + secrets.token_hex(12)
    put = _cli(stack, "put", NAME, "--from-stdin", "--provider", "openai", value=first)
    assert put.returncode == 0, put.stderr
    assert first not in put.stdout + put.stderr
    assert first[-4:] in put.stdout  # only the last four are ever shown
    resp = await _chat(stack)
    assert resp.status_code == 200, resp.text
    assert _last_auth(upstream) == f"Bearer {first}"

    second = "sk-second-" + secrets.token_hex(12)
    rotated = _cli(stack, "rotate", NAME, "--from-stdin", value=second)
    assert rotated.returncode == 0, rotated.stderr
    began = time.monotonic()
    while True:
        resp = await _chat(stack)
        assert resp.status_code == 200
        if _last_auth(upstream) == f"Bearer {second}":
            break
        assert time.monotonic() - began < 1.0, "rotation did not apply within 1 s"
        await asyncio.sleep(0.05)
    took = time.monotonic() - began
    assert took < 1.0

    listed = _cli(stack, "list", "--json")
    assert NAME in listed.stdout
    assert second not in listed.stdout
    assert first not in listed.stdout

    removed = _cli(stack, "rm", NAME, "--force")  # the `vaulted` route uses it
    assert removed.returncode == 0, removed.stderr
    # Each model-proxy drops the key when the change event reaches it, which a loaded
    # machine may delay past a fixed wait: until then a request still gets the cached key.
    deadline = time.monotonic() + 10
    while (resp := await _chat(stack)).status_code == 200:
        assert time.monotonic() < deadline, "the removed key is still used"
        await asyncio.sleep(0.1)
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert NAME in error["message"]
    assert "Traceback" not in resp.text
    assert second not in resp.text


async def test_vault_outage_serves_cached_key_then_fails_clearly_then_recovers(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    value = "sk-outage-" + secrets.token_hex(12)
    assert _cli(stack, "put", NAME, "--from-stdin", value=value).returncode == 0
    await asyncio.sleep(0.5)  # both model-proxies fetched it (change event)
    for _ in range(4):
        assert (await _chat(stack)).status_code == 200
    bao = stack.process("openbao")
    assert bao.proc is not None
    bao.proc.kill()  # Vault dies mid-run
    await bao.proc.wait()
    try:
        stopped_at = time.monotonic()
        # Within the TTL (3 s here): every request still works with the cached key.
        while time.monotonic() - stopped_at < 1.5:
            resp = await _chat(stack)
            assert resp.status_code == 200, resp.text
            assert _last_auth(upstream) == f"Bearer {value}"
            await asyncio.sleep(0.1)
        # After the TTL: a clear 503 that names the secret, no stack trace.
        await asyncio.sleep(max(0.0, 3.5 - (time.monotonic() - stopped_at)))
        resp = await _chat(stack)
        assert resp.status_code == 503, resp.text
        message = resp.json()["error"]["message"]
        assert NAME in message
        assert "unreachable" in message.lower() or "sealed" in message.lower()
        assert "Traceback" not in resp.text
    finally:
        await bao.start()
        assert await bao.wait_healthy(60), bao.tail_log()
    # Vault is back: requests recover with no restart of any Switchyard process.
    deadline = time.monotonic() + 15
    while True:
        resp = await _chat(stack)
        if resp.status_code == 200:
            break
        assert time.monotonic() < deadline, resp.text
        await asyncio.sleep(0.25)
    assert _last_auth(upstream) == f"Bearer {value}"
    deadline = time.monotonic() + 10
    while _cli(stack, "rm", NAME, "--force").returncode != 0:  # the admin path recovers too
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)


async def test_admin_api_never_returns_a_value(stack: Stack) -> None:
    value = "sk-meta-" + secrets.token_hex(12)
    nc = await stack.connect("admin")
    try:
        admin = SecretsAdmin(nc, actor="test")
        info = await admin.put("meta-only", value, provider="openai")
        listing = await admin.list()
        shown = await admin.info("meta-only")
        rotated = await admin.rotate("meta-only", value + "x")
        for item in (info, shown, rotated, *listing):
            assert value not in repr(item)
        assert shown.last4 == value[-4:]
        assert shown.updated_by == "test via admin"
        assert rotated.version == info.version + 1
        await admin.delete("meta-only")
    finally:
        await nc.close()


def test_cli_refuses_an_empty_value(stack: Stack) -> None:
    out = _cli(stack, "put", "empty-one", "--from-stdin", value="")
    assert out.returncode != 0
    assert "empty" in out.stderr


async def test_a_change_that_reaches_the_service_after_its_caller_gave_up_is_not_applied(
    stack: Stack,
) -> None:
    """An explorer paused the secrets service for 11 s during `secrets put`: the CLI said
    "did not answer" and exited 1, and the new key went live when the service resumed (an
    operator told the rotation failed may roll it back at the provider). A change whose
    `Sy-Deadline` passed before the service read it is refused, and nothing is stored."""
    name = "late-" + secrets.token_hex(4)
    nc = await stack.connect("admin")
    try:
        late = {h.DEADLINE: Deadline.after(-1).header(), "Sy-Actor": "test"}
        body = msgspec.json.encode(PutSecret(name=name, value="sk-late-" + secrets.token_hex(8)))
        for op in ("put", "delete"):
            payload = body if op == "put" else msgspec.json.encode({"name": name})
            msg = await nc.request(subjects.secrets_admin(op), payload, timeout=10, headers=late)
            reply = decode_reply(msg.data, msg.headers)
            assert reply.kind is ReplyKind.ERROR
            error = error_from_reply(reply)
            assert (error.status, error.code) == (504, "deadline_exceeded")
            assert "nothing was changed" in error.message
        with pytest.raises(NotFound):
            await SecretsAdmin(nc, actor="test").info(name)
        # The same change in time is applied (the deadline is what refused it).
        stored = await SecretsAdmin(nc, actor="test").put(
            name, "sk-in-time-" + secrets.token_hex(8)
        )
        assert stored.version == 1
        await SecretsAdmin(nc, actor="test").delete(name)
    finally:
        await nc.close()


async def test_the_admin_api_deletes_a_secret_in_use_only_when_forced(stack: Stack) -> None:
    """An explorer's find: `DELETE /admin/v1/secrets/{name}` deleted the key of a live
    provider at once, while the CLI asks for `--force` and the UI for the typed name. The API
    answers 409 naming the provider and the routes left with nothing, and deletes nothing."""
    name = "in-use-" + secrets.token_hex(4)
    provider, alias = f"p-{name}", f"r-{name}"
    put = await stack.admin("PUT", f"/secrets/{name}", {"value": "sk-" + secrets.token_hex(8)})
    assert put.status_code == 200, put.text
    body = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1", "secret": name}
    assert (await stack.admin("PUT", f"/providers/{provider}", body)).status_code == 200
    route = {"deployments": [{"provider": provider, "model": "m"}]}
    assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
    try:
        refused = await stack.admin("DELETE", f"/secrets/{name}")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "secret_in_use"
        assert provider in error["message"]
        assert alias in error["message"]
        assert name in (await stack.admin("GET", "/secrets")).text
        forced = await stack.admin("DELETE", f"/secrets/{name}?force=true")
        assert forced.status_code == 200, forced.text
        assert name not in (await stack.admin("GET", "/secrets")).text
    finally:
        await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", f"/providers/{provider}")
