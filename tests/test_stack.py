"""`switchyard up --detach`, `status`, `down`, and a second `up` that keeps all data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hvac
import pytest
import redis

from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.limits.credentials import read_password
from tests.support import describe_processes, processes_mentioning, write_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(config: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def _stream_names(settings: Settings) -> list[str]:
    nc = await connect(settings.nats_servers, settings.certs_dir, "provisioner")
    try:
        js = nc.jetstream()
        return sorted(str(s.config.name) for s in await js.streams_info())
    finally:
        await nc.close()


async def _publish_usage(settings: Settings) -> int:
    nc = await connect(settings.nats_servers, settings.certs_dir, "modelproxy")
    try:
        ack = await nc.jetstream().publish("llm.v1.usage", b'{"probe":1}')
        return ack.seq
    finally:
        await nc.close()


async def _usage_count(settings: Settings) -> int:
    nc = await connect(settings.nats_servers, settings.certs_dir, "provisioner")
    try:
        return (await nc.jetstream().stream_info("USAGE")).state.messages
    finally:
        await nc.close()


def test_up_status_down_and_data_survives(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings, config = write_settings(home)
    began = time.monotonic()
    up = _cli(config, "up", "--detach")
    took = time.monotonic() - began
    assert up.returncode == 0, up.stderr + up.stdout
    assert took < 60, f"up took {took:.1f}s"
    assert "Switchyard is up" in up.stdout
    try:
        status = _cli(config, "status", "--json")
        assert status.returncode == 0, status.stdout
        doc = json.loads(status.stdout)
        by_name = {p["name"]: p for p in doc["processes"]}
        for name in ("nats-server", "openbao", "valkey", "secrets", "head-1", "head-2"):
            assert by_name[name]["healthy"], by_name[name]
        for name in ("modelproxy-1", "modelproxy-2", "tail", "gateway"):
            assert by_name[name]["healthy"], by_name[name]
        pids = [p["pid"] for p in doc["processes"]]

        # Leave data in every store.
        ca = str(settings.certs_dir / "ca.pem")
        root_token = (home / "openbao" / "root-token").read_text().strip()
        bao = hvac.Client(url=settings.openbao_addr, token=root_token, verify=ca)
        bao.secrets.kv.v2.create_or_update_secret(
            path="survivor", secret={"value": "kept"}, mount_point="switchyard"
        )
        r = redis.Redis(
            port=settings.stack.valkey_port,
            username="ops",
            password=read_password(home / "valkey", "ops"),
        )
        r.set("sy:survivor", "1")
        r.close()
        assert asyncio.run(_stream_names(settings)) == [
            "CANCELS",
            "DISPATCH",
            "HOLD",
            "KV_sy_health",
            "KV_sy_key_spent",
            "KV_sy_response_items",
            "KV_sy_response_owners",
            "KV_sy_routes",
            "KV_sy_sched",
            "USAGE",
        ]
        asyncio.run(_publish_usage(settings))
        usage_before = asyncio.run(_usage_count(settings))
        # The root token is never printed.
        assert root_token not in up.stdout + up.stderr + status.stdout
    finally:
        down = _cli(config, "down")
    assert down.returncode == 0, down.stderr
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert processes_mentioning(str(home)) == []
    assert json.loads(_cli(config, "status", "--json").stdout)["status"] != "healthy"
    assert "no stack was running" in _cli(config, "down").stdout  # not "stopped." again

    again = _cli(config, "up", "--detach")
    assert again.returncode == 0, again.stderr + again.stdout
    try:
        bao = hvac.Client(url=settings.openbao_addr, token=root_token, verify=ca)
        secret = bao.secrets.kv.v2.read_secret_version(
            path="survivor", mount_point="switchyard", raise_on_deleted_version=True
        )
        assert secret["data"]["data"] == {"value": "kept"}
        r = redis.Redis(
            port=settings.stack.valkey_port,
            username="ops",
            password=read_password(home / "valkey", "ops"),
        )
        assert r.get("sy:survivor") == b"1"
        r.close()
        assert asyncio.run(_usage_count(settings)) == usage_before
    finally:
        assert _cli(config, "down").returncode == 0
    assert processes_mentioning(str(home)) == []


def test_second_up_is_refused_and_a_killed_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    # One running stack for both (each `up` costs CI some 15 s of CPU).
    home = tmp_path / "home"
    _, config = write_settings(home)
    assert _cli(config, "up", "--detach").returncode == 0
    try:
        second = _cli(config, "up", "--detach")
        assert second.returncode == 1
        assert "already running" in second.stderr
    except BaseException:
        _cli(config, "down")
        raise
    state = json.loads((home / "run" / "state.json").read_text())
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while processes_mentioning(str(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert describe_processes(processes_mentioning(str(home))) == []


def test_foreground_up_stops_everything_on_sigint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, config = write_settings(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard", "--config", str(config), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Stop: Ctrl-C" in line:
            break
    assert any("Switchyard is up" in line for line in lines), "".join(lines)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    assert processes_mentioning(str(home)) == []


def test_port_in_use_gives_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings, config = write_settings(home)
    with socket.socket() as sock:
        # The port was picked free, but may still hold a closed connection in TIME_WAIT (CI
        # once failed here with EADDRINUSE); a listener bound over it still blocks Valkey.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", settings.stack.valkey_port))
        sock.listen()
        out = _cli(config, "up", "--detach")
    assert out.returncode == 1
    assert f"port {settings.stack.valkey_port}" in out.stderr
    assert "SWITCHYARD_STACK__VALKEY_PORT" in out.stderr
