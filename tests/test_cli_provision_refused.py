"""`switchyard provision` against a nats-server whose JetStream does not serve the accounts
(a NATS config rendered by hand, JetStream not enabled for them): a JetStream error other than
a timeout printed a traceback; it is one line and exit code 1."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from switchyard.stack.binaries import nats_server
from switchyard.stack.certs import init_certificates
from switchyard.stack.natsconf import NatsServerLayout, nats_config, render
from switchyard.stack.process import ManagedProcess, ProcessSpec, http_check
from tests.support import write_settings

pytestmark = pytest.mark.integration


async def test_a_jetstream_refusal_is_one_line_and_exit_1(tmp_path: Path) -> None:
    settings, config = write_settings(tmp_path)
    init_certificates(
        settings.certs_dir,
        organization="Switchyard",
        validity_days=30,
        clients=[("provisioner", "core"), ("admin", "client")],
    )
    layout = NatsServerLayout(
        port=settings.stack.nats_port,
        monitor_port=settings.stack.nats_monitor_port,
        store_dir=tmp_path / "js",
        cert_dir=settings.certs_dir,
        organization="Switchyard",
        response_threshold_s=60,
    )
    doc = nats_config(layout)
    for account in doc["accounts"].values():
        account.pop("jetstream", None)  # JetStream runs, for none of the accounts
    conf = tmp_path / "nats.conf"
    conf.write_text(render(doc))
    health = f"http://127.0.0.1:{layout.monitor_port}/healthz"
    proc = ManagedProcess(
        ProcessSpec("nats-no-js", [str(nats_server()), "-c", str(conf)], http_check(health)),
        tmp_path,
    )
    await proc.start()
    try:
        assert await proc.wait_healthy(30), proc.tail_log()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        run = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "switchyard", "provision", "--config", str(config)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        _, err = await asyncio.wait_for(run.communicate(), 120)
    finally:
        await proc.stop(5)
    stderr = err.decode()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: NATS JetStream did not provision ("), lines
