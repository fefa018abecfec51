"""The CLI against a stack started the way a user starts one: ``switchyard up --detach``.

Every ``stack.*_port`` is 0, so only the running stack knows its ports; commands find them in
its home (``run/state.json``), as ``status`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class CliStack:
    root: Path
    config: Path

    def run(
        self, *argv: str, stdin: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        return subprocess.run(
            [sys.executable, "-m", "switchyard", *argv, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def write_config(self, doc: dict[str, object]) -> None:
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def base_config(root: Path) -> dict[str, object]:
    return {
        "home": str(root / "home"),
        "stack": {
            "nats_port": 0,
            "nats_monitor_port": 0,
            "openbao_port": 0,
            "valkey_port": 0,
            "heads": 1,
            "modelproxies": 1,
        },
        "ingress": {
            "tail": {"port": free_port()},
            "gateway": {"port": free_port()},
        },
    }


@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    root = tmp_path_factory.mktemp("cli-stack")
    stack = CliStack(root, root / "switchyard.yaml")
    stack.write_config(base_config(root))
    up = stack.run("up", "--detach", timeout=240)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield stack
    finally:
        down = stack.run("down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def test_commands_use_the_ports_the_stack_chose(cli_stack: CliStack) -> None:
    status = json.loads(cli_stack.run("status", "--json").stdout)
    nats_url = status["endpoints"]["nats"]
    assert not nats_url.endswith(":0")
    created = cli_stack.run("keys", "create", "port-zero", "--json", timeout=20)
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["record"]["id"]
    listing = cli_stack.run("keys", "list", "--json", timeout=20)
    assert key_id in {k["id"] for k in json.loads(listing.stdout)}
    shown = cli_stack.run("keys", "show", key_id, "--json", timeout=20)  # Valkey, for spend
    assert shown.returncode == 0, shown.stderr
    stored = cli_stack.run("secrets", "put", "port-zero", "--from-stdin", stdin="v\n", timeout=20)
    assert stored.returncode == 0, stored.stderr
    provisioned = cli_stack.run("provision", timeout=30)
    assert provisioned.returncode == 0, provisioned.stderr
