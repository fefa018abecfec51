"""OpenBao's audit log on a real local stack: rotated like the other logs, OpenBao writing on.

OpenBao writes two lines to ``<home>/openbao/audit.log`` for every request it answers, and
``up`` rotated only ``<home>/logs/*.log``: an admin overview left open (a secrets list every
5 s) grew the audit log by ~600 MB a day, for as long as the stack ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest

from tests.stacks import Stack, start_stack

pytestmark = pytest.mark.integration


def _root_client(stack: Stack) -> hvac.Client:
    settings = stack.settings
    client = hvac.Client(
        url=f"https://127.0.0.1:{settings.stack.openbao_port}",
        verify=str(settings.certs_dir / "ca.pem"),
        timeout=10,
    )
    client.token = (stack.home.openbao / "root-token").read_text(encoding="utf-8").strip()
    return client


def _json_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    assert "\0" not in text  # OpenBao appends at the new end: no hole where the old bytes were
    return [json.loads(line) for line in text.splitlines()]


async def _traffic_until(client: hvac.Client, mount: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, "the audit log was not rotated in 30 s"
        await asyncio.to_thread(
            client.secrets.kv.v2.create_or_update_secret,
            path="providers/audit-probe",
            secret={"value": "sk-not-a-real-key"},
            mount_point=mount,
        )


async def test_the_openbao_audit_log_is_rotated_at_the_log_cap(tmp_path: Path) -> None:
    stack = await start_stack(
        tmp_path, {"stack": {"log_max_mb": 0.02, "log_keep": 2}}, components=[], wait_ready=False
    )
    stack.supervisor.rotate_every_s = 0.1
    stop = asyncio.Event()
    watcher = asyncio.create_task(stack.supervisor.watch(stop))
    audit = stack.home.openbao / "audit.log"
    client = _root_client(stack)
    mount = stack.settings.openbao.mount
    try:
        await _traffic_until(client, mount, audit.with_name("audit.log.2").exists)
        before = audit.stat().st_size
        await _traffic_until(client, mount, lambda: audit.stat().st_size > before)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await watcher
        await stack.supervisor.stop()
    names = sorted(p.name for p in audit.parent.iterdir() if p.name.startswith("audit.log"))
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]  # log_keep=2: no .3
    for path in (audit, audit.with_name("audit.log.1"), audit.with_name("audit.log.2")):
        lines = _json_lines(path)
        assert lines
        assert {line["type"] for line in lines} <= {"request", "response"}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # copies stay their owner's only
