"""Replicas started alike (compose, Kubernetes: ``switchyard serve head``, no ``--instance``)
report as one row each, on a real stack.

With the component's name as the default, every such replica heartbeated under ``head/head``:
the process table kept one row for all of them (the latest beat won), and their metrics,
NATS connection names and traces carried one name. Two processes on one host are the hardest
case (same host name), so that is what this starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from typing import Any

import httpx
import pytest

from switchyard.ingress.app import create_app
from switchyard.runtime.reporting import instance_name
from switchyard.stack import local
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _rows(stack: Stack, pids: set[int]) -> list[dict[str, Any]]:
    overview = (await stack.admin("GET", "/overview")).json()
    return [p for p in overview["processes"] if p["pid"] in pids]


async def test_two_replicas_started_without_instance_report_as_two_rows(stack: Stack) -> None:
    env = {**os.environ, **local.child_env(stack.settings, stack.config_file, {})}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "switchyard", "serve", "head"),  # no --instance, as compose and k8s run it
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    pids = {p.pid for p in procs}
    try:
        deadline = time.monotonic() + 45  # two Python processes starting on a busy machine
        rows = await _rows(stack, pids)
        while len(rows) < 2 or not all(r["healthy"] for r in rows):
            assert time.monotonic() < deadline, rows
            assert all(p.returncode is None for p in procs), "a head exited"
            await asyncio.sleep(0.5)
            rows = await _rows(stack, pids)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
    assert {r["component"] for r in rows} == {"head"}
    assert {r["host"] for r in rows} == {socket.gethostname()}
    assert sorted(r["instance"] for r in rows) == sorted(
        instance_name("head", pid=pid) for pid in pids
    )
    # Each said goodbye under its own name: both rows are gone, the stack's heads remain.
    deadline = time.monotonic() + 10
    while await _rows(stack, pids):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    overview = (await stack.admin("GET", "/overview")).json()
    assert {"head-1", "head-2"} <= {p["instance"] for p in overview["processes"]}


async def test_an_edge_names_its_nats_connection_after_its_instance(stack: Stack) -> None:
    """Like every worker, an edge's NATS connection carries its instance name, so two tails
    are told apart in the server's connection list (it carried the component's name)."""
    app = create_app(stack.settings, "tail", instance="tail-named-7")
    monitor = f"http://127.0.0.1:{stack.settings.stack.nats_monitor_port}/connz?limit=4096"
    async with app.router.lifespan_context(app), httpx.AsyncClient(timeout=10) as http:
        connections = (await http.get(monitor)).json()["connections"]
    assert "tail-named-7" in {c.get("name") for c in connections}
