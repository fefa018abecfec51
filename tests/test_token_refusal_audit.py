"""Wrong admin tokens on /admin/v1 reach the audit stream (a real nats-server): the first at
once, the rest of its minute in one entry once the minute is over, without another call."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from switchyard.admin.audit import AuditLog, AuditQuery
from switchyard.admin.token_audit import RefusalAudit, RefusalCounts
from switchyard.bus import subjects
from switchyard.bus.audit import AuditWriter
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration


async def test_a_minutes_refusals_are_said_in_one_entry_once_it_is_over(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        await nc.jetstream().add_stream(
            StreamConfig(name=subjects.AUDIT_STREAM, subjects=[subjects.AUDIT_ALL])
        )
        log = AuditLog(nc)
        await log.start()
        refusals = RefusalAudit(AuditWriter(nc, "api"), RefusalCounts(interval_s=0.5))
        try:
            for _ in range(4):
                await refusals.refused("203.0.113.9")
            await until(lambda: log.query(AuditQuery(kind="token")).total == 2, timeout=10)
        finally:
            await refusals.stop()
            await log.stop()
        newest, first = [r.entry for r in log.query(AuditQuery(kind="token")).entries]
        assert (first.detail, first.source, first.ok, first.via) == (
            "wrong admin token",
            "203.0.113.9",
            False,
            "api",
        )
        assert newest.detail.startswith("3 wrong admin tokens since ")
        assert newest.source == "203.0.113.9"
