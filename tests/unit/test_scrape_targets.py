"""The targets file `switchyard up` writes for Prometheus: one group per Switchyard process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.stack.home import StackHome
from switchyard.stack.process import ProcessSpec
from switchyard.stack.scrape_targets import TARGETS_FILE, scrape_targets, write_scrape_targets

pytestmark = pytest.mark.unit


async def _healthy() -> bool:
    return True


def _component(component: str, instance: str, port: int) -> ProcessSpec:
    argv = ["python", "-m", "switchyard", "serve", component, "--instance", instance]
    return ProcessSpec(
        name=instance, argv=argv, health=_healthy, health_url=f"http://127.0.0.1:{port}/ready"
    )


SPECS = [
    ProcessSpec(
        name="nats-server",
        argv=["nats-server", "-c", "x.conf"],
        health=_healthy,
        kind="server",
        health_url="http://127.0.0.1:8222/healthz",
    ),
    _component("head", "head-1", 4101),
    _component("tail", "tail", 8080),
]


def test_components_become_targets_and_servers_do_not() -> None:
    assert scrape_targets(SPECS) == [
        {"targets": ["127.0.0.1:4101"], "labels": {"component": "head", "instance": "head-1"}},
        {"targets": ["127.0.0.1:8080"], "labels": {"component": "tail", "instance": "tail"}},
    ]


def test_every_up_rewrites_the_file_whole(tmp_path: Path) -> None:
    home = StackHome(tmp_path / "home")
    path = write_scrape_targets(home, SPECS)
    assert path == home.root / TARGETS_FILE
    assert len(json.loads(path.read_text())) == 2
    write_scrape_targets(home, SPECS[:2])  # the next start, other ports
    assert [g["labels"]["instance"] for g in json.loads(path.read_text())] == ["head-1"]
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary left
