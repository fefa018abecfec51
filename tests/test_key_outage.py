"""Provider keys while Vault or a model-proxy's NATS connection is gone (an explorer's finds).

* A model-proxy started during a Vault outage has no keys, while the one that ran before serves
  from its cache: requests it pulls go back to the queue for the other one, instead of 503s
  (235 of 564 before), and it stops pulling that deployment a while, so under load the
  requests go to the other one rather than back to it (about one in seven still ended in a
  503 before). When no model-proxy has the key, the client gets a 503 with ``Retry-After``,
  not a wait until its deadline.
* A rotation made while a model-proxy's connection was down (its change event lost) applies
  once it reconnects, not at the next refresh; a Vault outage at that moment leaves the cached
  key serving.
* The secrets service logs losing Vault and getting it back, an AppRole login refused
  included (it was a `secrets_error`, logged nowhere).

Its own stack: a long key TTL (120 s) so that cached keys outlive the outage, where the session
stack's 3 s would expire while a model-proxy restarts. The `keyed` deployment has one slot, so
each model-proxy has at most one pull request waiting and JetStream, which serves them in
order, gives a request handed back to the other model-proxy: the test is deterministic. The
`loaded` deployment has 8 slots: under concurrent load a hand-back would reach another
model-proxy only by chance (about one in two with two of them), but for the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio

from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.errors import ServiceUnavailable, VaultUnavailable
from switchyard.runtime.shutdown import disconnect
from switchyard.secrets.vault import Vault
from switchyard.stack.process import ManagedProcess
from switchyard.workers.modelproxy.service import ModelProxy
from tests.relay import Relay
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVED = "outage-key"  # the `keyed` route's provider key
ROTATED = "rotated-key"  # the `rotated` route's
LOADED = "loaded-key"  # the `loaded` route's
LOST = "provider keys cannot be read or changed"  # the secrets service's log lines
BACK = "Vault/OpenBao answers again"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def keyed(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    def provider(secret: str, concurrency: int) -> dict[str, object]:
        return {
            "kind": "openai-compatible",
            "api_base": upstream.base_url,
            "secret": secret,
            "concurrency": concurrency,
        }

    extra = {
        "providers": {
            "keyed": provider(SERVED, 1),
            "rotated": provider(ROTATED, 8),
            "loaded": provider(LOADED, 8),
        },
        "routes": {
            "keyed": {"deployments": [{"provider": "keyed", "model": "echo:keyed"}]},
            "rotated": {"deployments": [{"provider": "rotated", "model": "echo:rotated"}]},
            "loaded": {"deployments": [{"provider": "loaded", "model": "jitter:20-150"}]},
        },
        "modelproxy": {"secret_ttl_s": 120, "ack_wait_s": 4, "keepalive_s": 1},
    }
    stack = await start_stack(tmp_path_factory.mktemp("keyoutage"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _chat(stack: Stack, model: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )


async def _store(stack: Stack, name: str, value: str, *, rotate: bool = False) -> int:
    nc = await stack.connect("admin")
    try:
        admin = SecretsAdmin(nc, actor="test")
        info = await (admin.rotate(name, value) if rotate else admin.put(name, value))
        return info.version
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _vault_down(stack: Stack) -> AsyncIterator[None]:
    bao = stack.process("openbao")
    assert bao.proc is not None
    bao.proc.kill()
    await bao.proc.wait()
    try:
        yield
    finally:
        await bao.start()
        assert await bao.wait_healthy(60), bao.tail_log()


async def _vault_answers(stack: Stack) -> None:
    """Wait until the secrets service reads Vault again (it notices on its next request)."""
    nc = await stack.connect("admin")
    try:
        admin = SecretsAdmin(nc, actor="test")
        deadline = time.monotonic() + 30
        while True:
            try:
                await admin.list()
                return
            except ServiceUnavailable:
                assert time.monotonic() < deadline, "the secrets service does not read Vault"
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def _restart(proc: ManagedProcess) -> None:
    """kill -9, then start again: a model-proxy with an empty key cache."""
    assert proc.proc is not None
    proc.proc.kill()
    await proc.proc.wait()
    await proc.start()
    assert await proc.wait_healthy(60), proc.tail_log()


def _log_lines(proc: ManagedProcess, text: str) -> list[str]:
    log = proc.log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in log.splitlines() if text in line]


async def test_a_model_proxy_started_in_a_vault_outage_hands_requests_to_one_with_the_key(
    keyed: Stack, upstream: FakeOpenAI
) -> None:
    value = "sk-outage-" + secrets.token_hex(12)
    await _store(keyed, SERVED, value)
    await asyncio.sleep(0.5)  # both model-proxies fetched it (change event)
    for _ in range(4):
        assert (await _chat(keyed, "keyed")).status_code == 200
    first, second = keyed.process("modelproxy-1"), keyed.process("modelproxy-2")
    vault = keyed.process("secrets")
    lost_before = len(_log_lines(vault, LOST))
    back_before = len(_log_lines(vault, BACK))
    async with _vault_down(keyed):
        await _restart(first)  # no key, and none to be had
        statuses = [(await _chat(keyed, "keyed")).status_code for _ in range(20)]
        assert statuses == [200] * 20
        assert upstream.calls_for("echo:keyed")[-1].headers["Authorization"] == f"Bearer {value}"
        # The restarted one did pull some of them, and handed them back.
        assert _log_lines(first, "back to the queue for another model-proxy")

        # No model-proxy has the key: a 503 that says when to retry, after a bounded number
        # of hand-backs (not a wait until the deadline: that would be a 504).
        await _restart(second)
        resp = await _chat(keyed, "keyed")
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "secret_unavailable"
        assert SERVED in resp.json()["error"]["message"]
        assert float(resp.headers["Retry-After"]) > 0
        assert value not in resp.text
    # Vault is back: keys are fetched again, by the model-proxies that had none.
    deadline = time.monotonic() + 15
    while (resp := await _chat(keyed, "keyed")).status_code != 200:
        assert time.monotonic() < deadline, resp.text
        await asyncio.sleep(0.25)
    # The secrets service said it lost Vault (a few times at most, not once per request) and
    # that it came back; never with the key.
    lost = _log_lines(vault, LOST)[lost_before:]
    assert 1 <= len(lost) <= 3, lost
    assert len(_log_lines(vault, BACK)) > back_before
    assert not _log_lines(vault, value)


async def test_under_load_a_model_proxy_without_the_key_leaves_the_requests_to_one_with_it(
    keyed: Stack, upstream: FakeOpenAI
) -> None:
    """Many requests at once, each model-proxy pulling several: a request handed back went to
    whichever pulled next, as likely the one without the key, and some used every delivery
    there and ended in a 503 (about one in seven at 20 a second). The one without the key now
    stops pulling the deployment after a hand-back, so the other one gets its requests."""
    value = "sk-loaded-" + secrets.token_hex(12)
    await _store(keyed, LOADED, value)
    await asyncio.sleep(0.5)  # both model-proxies fetched it (change event)
    for _ in range(4):
        assert (await _chat(keyed, "loaded")).status_code == 200
    first = keyed.process("modelproxy-1")
    async with _vault_down(keyed):
        await _restart(first)  # no key, and none to be had
        async with httpx.AsyncClient(timeout=60) as http:

            async def one() -> int:
                resp = await http.post(
                    f"{keyed.tail_url}/v1/chat/completions",
                    json={"model": "loaded", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {keyed.api_key}"},
                )
                return resp.status_code

            calls = []
            for _ in range(60):  # about 20 a second
                calls.append(asyncio.create_task(one()))
                await asyncio.sleep(0.05)
            statuses = await asyncio.gather(*calls)
        assert statuses.count(200) == 60, Counter(statuses)
        assert upstream.calls_for("jitter:20-150")[-1].headers["Authorization"] == (
            f"Bearer {value}"
        )
        # The restarted one did pull some of them, handed them back and paused the deployment.
        assert _log_lines(first, "back to the queue for another model-proxy")
        assert _log_lines(first, "not pulling requests for")
    await _vault_answers(keyed)


async def test_a_rotation_missed_while_disconnected_applies_on_reconnect(keyed: Stack) -> None:
    before = await _store(keyed, ROTATED, "sk-before-" + secrets.token_hex(12))
    relay = Relay(keyed.settings.stack.nats_port)
    await relay.open()
    reconnects = asyncio.Queue[None]()
    proxy: ModelProxy | None = None

    async def reconnected() -> None:  # as serve_worker wires it
        if proxy is not None:
            proxy.on_reconnect()
        reconnects.put_nowait(None)

    nc = await connect(
        [f"tls://127.0.0.1:{relay.port}"],
        keyed.settings.certs_dir,
        identities.MODELPROXY.name,
        name="modelproxy-relayed",
        reconnected_cb=reconnected,
    )
    proxy = ModelProxy(nc, keyed.settings)
    try:
        await proxy.start()
        assert (await proxy.keys.get(ROTATED)).version == before

        async def cut_while(change: Callable[[], Awaitable[int]] | None = None) -> int:
            """Cut the model-proxy's connection, make ``change`` meanwhile, reconnect."""
            relay.cut()
            while nc.is_connected:
                await asyncio.sleep(0.02)
            done = await change() if change is not None else 0
            await relay.open()
            await asyncio.wait_for(reconnects.get(), 30)
            return done

        after = await cut_while(
            lambda: _store(keyed, ROTATED, "sk-after-" + secrets.token_hex(12), rotate=True)
        )
        assert after > before
        # Well before the next refresh (ttl / 5 = 24 s): the new key.
        deadline = time.monotonic() + 10
        while (await proxy.keys.get(ROTATED)).version != after:
            assert time.monotonic() < deadline, "the rotation was missed after the reconnect"
            await asyncio.sleep(0.05)

        # Reconnected in a Vault outage: the key cannot be fetched again, the cached one serves.
        async with _vault_down(keyed):
            await cut_while()
            for _ in range(3):
                assert (await proxy.keys.get(ROTATED)).version == after
    finally:
        await proxy.stop(2)
        await disconnect(nc)
        relay.cut()


async def test_a_refused_approle_login_is_logged_as_vault_unavailable_and_its_end_too(
    keyed: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.secrets.vault")
    settings = keyed.settings
    real = settings.openbao_file(settings.openbao.secret_id_file, "secret-id").read_text()
    wrong = "00000000-0000-4000-8000-" + secrets.token_hex(6)
    secret_id = tmp_path / "secret-id"
    secret_id.write_text(wrong, encoding="utf-8")
    openbao = msgspec.structs.replace(settings.openbao, secret_id_file=str(secret_id))
    vault = Vault(msgspec.structs.replace(settings, openbao=openbao))
    for _ in range(3):
        with pytest.raises(VaultUnavailable, match="refused the secrets service's credentials"):
            await vault.run(lambda: None)
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refused) == 1, refused  # not once per request
    assert "check its AppRole and policy" in refused[0].getMessage()

    secret_id.write_text(real, encoding="utf-8")  # the orchestrator delivers the right one
    await vault.run(lambda: None)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert wrong not in caplog.text
    assert real.strip() not in caplog.text
