"""What `switchyard status` headlines and what `up`/`down` tell the user to type next."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from switchyard.config import Settings
from switchyard.stack import commands
from switchyard.stack.home import StackHome

pytestmark = pytest.mark.unit

NOW = 1_000_000.0


def _proc(name: str, kind: str = "component", **extra: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "kind": kind,
        "pid": 10,
        "alive": True,
        "healthy": True,
        "health_url": f"http://127.0.0.1:1/{name}",
        "log": f"/h/logs/{name}.log",
        "crashes": 0,
        "crash_looping": False,
        "last_exit": None,
        "restart_at": None,
    }
    return {**base, **extra}


def _assess(report: list[dict[str, Any]], **state: Any) -> tuple[str, list[str]]:
    doc = {"status": "healthy", "supervisor_pid": 1, **state}
    alive = doc.pop("alive", True)
    return commands.assess(doc, report, supervisor_alive=alive, now=NOW)


def test_all_healthy_is_healthy() -> None:
    assert _assess([_proc("nats-server", "server"), _proc("head-1")]) == ("healthy", [])


def test_a_stopped_server_makes_the_headline_unhealthy_and_names_it() -> None:
    report = [_proc("openbao", "server", healthy=False), _proc("head-1")]
    overall, problems = _assess(report)
    assert overall == "unhealthy"
    assert len(problems) == 1
    assert problems[0].startswith("openbao is unhealthy")


def test_a_component_down_is_degraded() -> None:
    report = [_proc("valkey", "server"), _proc("head-2", alive=False, healthy=False)]
    assert _assess(report) == ("degraded", ["head-2 is not running"])


def test_a_crash_looping_component_is_named_with_its_exit_and_next_try() -> None:
    looping = _proc(
        "head-2",
        alive=False,
        healthy=False,
        crashes=6,
        crash_looping=True,
        last_exit=-9,
        restart_at=NOW + 16.2,
    )
    overall, problems = _assess([_proc("head-1"), looping])
    assert overall == "degraded"
    assert problems == [
        "head-2 is crash-looping: 6 exits in a row, the last with code -9 "
        "(down; next try in 16s; log: /h/logs/head-2.log)"
    ]


def test_crash_looping_stays_visible_while_it_is_briefly_up_again() -> None:
    looping = _proc("head-2", crashes=3, crash_looping=True, last_exit=1)
    overall, problems = _assess([looping])
    assert overall == "degraded"
    assert "up again" in problems[0]


def test_a_failed_stack_says_why() -> None:
    overall, problems = _assess(
        [], status="failed", alive=False, error="head-2 exited (code 1) and is not restartable\nx"
    )
    assert overall == "not running"
    assert problems == ["it failed: head-2 exited (code 1) and is not restartable"]


def test_a_vanished_supervisor_is_pointed_out() -> None:
    overall, problems = _assess([], alive=False)
    assert overall == "not running"
    assert "ended without stopping it" in problems[0]


def test_a_stack_stopped_by_down_needs_no_explanation() -> None:
    assert _assess([], status="stopped", alive=False) == ("not running", [])


def test_starting_is_reported_as_is() -> None:
    assert _assess([_proc("head-1", healthy=False)], status="starting") == ("starting", [])


def test_default_paths_are_spelled_out_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up --config switchyard.yaml` printed a bare `switchyard status`, which from another
    directory looked in that directory's home and found no stack."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWITCHYARD_HOME", raising=False)
    (tmp_path / "switchyard.yaml").write_text("{}\n")
    home = tmp_path / ".switchyard"
    assert commands.command_flags(Settings(), None) == f" --home {home}"
    flags = commands.command_flags(Settings(), Path("switchyard.yaml"))
    assert flags == f" --config {tmp_path / 'switchyard.yaml'} --home {home}"


def test_a_chosen_home_and_config_are_repeated_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "my conf.yaml"
    config.write_text("{}\n")
    settings = Settings(home="elsewhere")
    flags = commands.command_flags(settings, Path("my conf.yaml"))
    assert flags == f" --config '{config}' --home {tmp_path / 'elsewhere'}"


def test_the_summary_prints_status_and_down_with_the_flags(tmp_path: Path) -> None:
    home = StackHome(tmp_path / "h")
    urls = commands.endpoints(Settings())
    detached = commands.summary(urls, None, [], home, 1.0, detached=True, flags=" --home /x")
    assert "Status: `switchyard --home /x status`   Stop: `switchyard --home /x down`" in detached
    foreground = commands.summary(urls, None, [], home, 1.0, flags=" --home /x")
    assert "or `switchyard --home /x down`" in foreground


def test_down_without_a_stack_names_the_home_it_looked_in(tmp_path: Path) -> None:
    out = io.StringIO()
    assert commands.down(Settings(home=str(tmp_path / "nothing")), out=out) == 0
    assert str(tmp_path / "nothing") in out.getvalue()
    assert "--home" in out.getvalue()
