"""Wrong-token counts waiting to be written to the audit log are written when the gateway
stops (a real gateway process, stopped with SIGTERM as a rollout does), not lost with its
memory: the API's per-address minute and the sign-in's unrecorded rest of the hour."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from switchyard.admin.audit import AuditLog, AuditQuery, AuditRow
from switchyard.admin.ui.signin_guard import LIMIT as SIGNIN_LIMIT
from switchyard.admin.ui.signin_guard import UNRECORDED_ACTOR
from switchyard.bus import identities
from tests.stacks import Stack, start_stack
from tests.support import until
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_ADDRESS = "127.0.71.1"
SIGNIN_ADDRESS = "127.0.72.1"
WRONG = "sy-admin-" + "w" * 40


@pytest_asyncio.fixture(loop_scope="session")
async def own_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"chat": {"deployments": [{"provider": "fake", "model": "echo"}]}},
    }
    stack = await start_stack(tmp_path_factory.mktemp("stopaudit"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _client(stack: Stack, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.gateway_url,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        headers={"Origin": stack.gateway_url},
        timeout=30,
    )


def _from(rows: list[AuditRow], source: str) -> list[str]:
    return [r.entry.detail for r in rows if r.entry.source == source]


async def test_counts_waiting_for_the_audit_log_are_written_at_the_stop(own_stack: Stack) -> None:
    stack = own_stack
    async with _client(stack, API_ADDRESS) as api:
        for _ in range(3):  # the first has its entry at once; two wait for the minute's end
            answer = await api.get("/admin/v1/routes", headers={"Authorization": f"Bearer {WRONG}"})
            assert answer.status_code == 401
    async with _client(stack, SIGNIN_ADDRESS) as web:
        statuses = []
        for i in range(SIGNIN_LIMIT + 2):  # the last two wait (429): no entry of their own
            form = {"name": f"stop-audit-{i}", "token": WRONG}
            statuses.append((await web.post("/ui/signin", data=form)).status_code)
    assert statuses == [401] * SIGNIN_LIMIT + [429] * 2

    nc = await stack.connect(identities.ADMIN.name)
    log = AuditLog(nc)
    await log.start()
    try:
        token = AuditQuery(kind="token", limit=100)
        await until(lambda: _from(log.query(token).entries, API_ADDRESS) != [], timeout=15)
        await stack.process("gateway").stop(timeout=30)  # SIGTERM, as a rollout stops it

        def said() -> bool:
            sessions = log.query(AuditQuery(kind="session", limit=500)).entries
            unrecorded = [r for r in sessions if r.entry.actor == UNRECORDED_ACTOR]
            return len(_from(log.query(token).entries, API_ADDRESS)) == 2 and bool(unrecorded)

        await until(said, timeout=15)
        details = _from(log.query(token).entries, API_ADDRESS)  # newest first
        assert details[1] == "wrong admin token"
        assert details[0].startswith("2 wrong admin tokens since "), details
        sessions = log.query(AuditQuery(kind="session", limit=500)).entries
        (summary,) = [r.entry for r in sessions if r.entry.actor == UNRECORDED_ACTOR]
        assert summary.detail.startswith("2 more wrong admin tokens, not recorded one by one")
        assert summary.detail.endswith("(written as the gateway stopped)")
        assert not summary.ok
    finally:
        await log.stop()
        await nc.close()
