"""The CLI against a stack started the way a user starts one: ``switchyard up --detach``.

Every ``stack.*_port`` is 0, so only the running stack knows its ports; commands find them in
its home (``run/state.json``), as ``status`` does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.portrange import worker_range
from tests.support import free_port, pause_now

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class CliStack:
    root: Path
    config: Path
    doc: dict[str, object]
    up_output: str = ""

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
    taken: set[int] = set()
    return {
        "home": str(root / "home"),
        "stack": {
            "nats_port": 0,
            "nats_monitor_port": 0,
            "openbao_port": 0,
            "valkey_port": 0,
            "heads": 1,
            "modelproxies": 1,
            "free_ports": list(worker_range()),
        },
        "ingress": {
            "tail": {"port": free_port(taken)},
            "gateway": {"port": free_port(taken)},
        },
    }


@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    root = tmp_path_factory.mktemp("cli-stack")
    stack = CliStack(root, root / "switchyard.yaml", base_config(root))
    stack.write_config(stack.doc)
    up = stack.run("up", "--detach", timeout=240)
    stack.up_output = up.stdout
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


def test_a_key_can_be_named_by_its_name_while_the_name_is_unique(cli_stack: CliStack) -> None:
    created = cli_stack.run("keys", "create", "by-name", "--json", timeout=20)
    first = json.loads(created.stdout)["record"]["id"]
    updated = cli_stack.run("keys", "update", "by-name", "--rpm", "7", timeout=20)
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.strip() == f"updated {first}"
    shown = json.loads(cli_stack.run("keys", "show", "by-name", "--json", timeout=20).stdout)
    assert (shown["id"], shown["rpm"]) == (first, 7)
    card = cli_stack.run("keys", "show", "by-name", timeout=20).stdout  # for people: no JSON
    assert card.startswith(f"{first}  by-name  (...")
    assert "  limits     rpm 7\n" in card
    assert "  spend      $0 this monthly period; $0 in all\n" in card
    assert "  expires    never" in card

    second = json.loads(cli_stack.run("keys", "create", "by-name", "--json", timeout=20).stdout)
    ambiguous = cli_stack.run("keys", "revoke", "by-name", timeout=20)
    assert ambiguous.returncode == 1
    assert "2 keys are named `by-name`" in ambiguous.stderr
    assert first in ambiguous.stderr
    assert second["record"]["id"] in ambiguous.stderr
    listing = json.loads(cli_stack.run("keys", "list", "--json", timeout=20).stdout)
    assert not any(k["disabled"] for k in listing if k["name"] == "by-name")  # nothing revoked

    missing = cli_stack.run("keys", "show", "no-such-key", timeout=20)
    assert missing.returncode == 1
    assert "no key with the id or name `no-such-key`" in missing.stderr
    assert "invalid config" not in missing.stderr
    unknown_id = cli_stack.run("keys", "revoke", "key_0123456789abcdef", timeout=20)
    assert unknown_id.returncode == 1
    assert "no key with id `key_0123456789abcdef`" in unknown_id.stderr


def test_the_demo_key_is_shown_to_the_user_but_kept_out_of_the_log(cli_stack: CliStack) -> None:
    """`up --detach` prints the demo key on the terminal; the supervisor it starts printed the
    same summary into logs/supervisor.log, so the key sat in a log file (a file people attach
    to bug reports). The log now names the key's file instead."""
    home = cli_stack.root / "home"
    key = (home / "demo-key").read_text(encoding="utf-8").strip()
    assert key.startswith("sk-")
    assert f"Demo client key: {key}" in cli_stack.up_output
    log = (home / "logs" / "supervisor.log").read_text(encoding="utf-8")
    assert "Switchyard is up" in log  # the summary is there...
    assert key not in log  # ...without the key
    assert f"$(cat {home / 'demo-key'})" in log


def test_the_printed_commands_find_the_stack_from_anywhere(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    """`up` printed plain `switchyard status`/`down` for a stack in another home: run as printed,
    `down` found no stack (exit 0) and left it running."""
    printed = re.search(
        r"Status: `switchyard(.*) status`   Stop: `switchyard(.*) down`", cli_stack.up_output
    )
    assert printed, cli_stack.up_output
    # The settings file too, though it is ./switchyard.yaml where `up` ran (it was left out).
    flags = f" --config {cli_stack.config} --home {cli_stack.root / 'home'}"
    assert printed[1] == printed[2] == flags
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    status = subprocess.run(
        [sys.executable, "-m", "switchyard", *shlex.split(printed[1]), "status"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # neither the config nor the home is here
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("stack: healthy")


def test_status_names_a_server_that_stopped_answering(cli_stack: CliStack) -> None:
    """The headline said `healthy` (JSON: "status": "healthy", "healthy": false) while the
    process table below showed Valkey unhealthy."""
    state = json.loads((cli_stack.root / "home" / "run" / "state.json").read_text())
    valkey = next(p["pid"] for p in state["processes"] if p["name"] == "valkey")
    pause_now(valkey)
    try:
        shown = cli_stack.run("status", "--json")
        text = cli_stack.run("status")
    finally:
        os.kill(valkey, signal.SIGCONT)
    doc = json.loads(shown.stdout)
    assert shown.returncode == 1
    assert (doc["status"], doc["healthy"]) == ("unhealthy", False)
    assert any(line.startswith("valkey is unhealthy") for line in doc["problems"]), doc
    assert text.stdout.splitlines()[:2] == [
        f"stack: unhealthy (home: {cli_stack.root / 'home'})",
        f"  ! {doc['problems'][0]}",
    ]


def test_status_names_the_deployments_cooling_down_beside_healthy_processes(
    cli_stack: CliStack,
) -> None:
    """An SRE's repro: every deployment of a route cooling down (its requests failing at
    once) while `switchyard status` said "stack: healthy" and listed processes only."""
    gateway = cli_stack.doc["ingress"]["gateway"]["port"]  # type: ignore[index]
    tail = cli_stack.doc["ingress"]["tail"]["port"]  # type: ignore[index]
    token = (cli_stack.root / "home" / "admin-token").read_text(encoding="utf-8").strip()
    admin = f"http://127.0.0.1:{gateway}/admin/v1"
    auth = {"Authorization": f"Bearer {token}"}
    dead = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"}  # refused
    try:
        assert httpx.put(f"{admin}/providers/gone", json=dead, headers=auth, timeout=10).is_success
        route = {"deployments": [{"provider": "gone", "model": "m"}]}
        assert httpx.put(
            f"{admin}/routes/dead-end", json=route, headers=auth, timeout=10
        ).is_success
        created = cli_stack.run("keys", "create", "status-cooling", "--json", timeout=20)
        key = json.loads(created.stdout)["key"]
        chat = {"model": "dead-end", "messages": [{"role": "user", "content": "hi"}]}
        url = f"http://127.0.0.1:{tail}/v1/chat/completions"
        client = {"Authorization": f"Bearer {key}"}
        for _ in range(20):  # it cools for routing.cooldown_s (5 s) after each failed call
            # Until a head and a model-proxy know the route and the provider is called.
            answer = httpx.post(url, json=chat, headers=client, timeout=30)
            if "unreachable" not in answer.text and "cooling down" not in answer.text:
                time.sleep(0.2)
                continue
            time.sleep(1.0)  # the control service reads the cooldowns every second
            shown = cli_stack.run("status", "--json")
            text = cli_stack.run("status")
            assert shown.returncode == 0, shown.stdout + shown.stderr  # the processes are healthy
            doc = json.loads(shown.stdout)
            if doc["routing"]["cooling_down"] and "cooling down: " in text.stdout:
                break
        else:
            pytest.fail(f"no cooldown seen: {answer.status_code} {answer.text}")
    finally:  # the later tests compare the live table with the file
        httpx.delete(f"{admin}/routes/dead-end", headers=auth, timeout=10)
        httpx.delete(f"{admin}/providers/gone", headers=auth, timeout=10)
    assert doc["status"] == "healthy"
    routing = doc["routing"]
    assert routing["read"] is True, routing
    assert [d["deployment"] for d in routing["cooling_down"]] == ["gone--m"]
    assert routing["routes_down"] == ["dead-end"]
    lines = text.stdout.splitlines()
    assert lines[0].startswith("stack: healthy")
    (line,) = [x for x in lines if "routing:" in x]
    assert line.startswith("  ! routing: 1 deployment cooling down: gone--m ("), line
    assert "every deployment cooling down for 1 route: dead-end" in line
    assert line.endswith("see `switchyard top`")


EXTRA_ROUTE = {"extra": {"deployments": [{"provider": "local-demo", "model": "demo"}]}}
LOCAL_DEMO = {"local-demo": {"kind": "demo"}}


def test_an_edited_config_is_reported_and_applied_on_request(cli_stack: CliStack) -> None:
    """Routes are seeded into KV once; an edit to the file used to be ignored silently."""
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": EXTRA_ROUTE})
    shown = cli_stack.run("config", timeout=30)
    assert shown.returncode == 0, shown.stderr
    json.loads(shown.stdout)  # stdout stays the settings as JSON
    assert "differ from the live route table" in shown.stderr
    assert "+ route extra: only in switchyard.yaml" in shown.stderr
    assert "switchyard routes sync" in shown.stderr

    preview = cli_stack.run("routes", "sync", timeout=30)
    assert preview.returncode == 0, preview.stderr
    assert "+ route extra: added" in preview.stdout
    assert "nothing written" in preview.stdout
    listing = cli_stack.run("config", timeout=30)
    assert "+ route extra" in listing.stderr, "a preview must not write"

    applied = cli_stack.run("routes", "sync", "--apply", timeout=30)
    assert applied.returncode == 0, applied.stderr
    assert "applied: route table revision" in applied.stdout
    # Audited, like every change through the UI, the API and the other CLI commands.
    gateway = cli_stack.doc["ingress"]["gateway"]["port"]  # type: ignore[index]
    token = (cli_stack.root / "home" / "admin-token").read_text(encoding="utf-8").strip()
    audit = httpx.get(
        f"http://127.0.0.1:{gateway}/admin/v1/audit",
        params={"kind": "route"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert audit.status_code == 200, audit.text
    synced = [e for e in audit.json()["entries"] if e["action"] == "route.sync"]
    assert synced, audit.json()
    assert synced[0]["via"] == "cli"
    assert "from switchyard.yaml" in synced[0]["detail"]
    assert cli_stack.run("config", timeout=30).stderr == ""
    again = cli_stack.run("routes", "sync", "--exit-code", timeout=30)
    assert "already matches switchyard.yaml" in again.stdout
    assert again.returncode == 0, again.stdout + again.stderr  # no drift


def test_sync_never_applies_a_file_without_routes_as_the_whole_table(cli_stack: CliStack) -> None:
    """A cron job run where no settings file is found, or with a file that lost its routes:
    block, replaced the live table with the defaults (every route but demo gone), exit 0."""
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": EXTRA_ROUTE})
    assert cli_stack.run("routes", "sync", "--apply", timeout=30).returncode == 0
    bare = {k: v for k, v in cli_stack.doc.items() if k not in ("routes", "providers")}
    cli_stack.write_config(bare)
    preview = cli_stack.run("routes", "sync", timeout=30)
    assert "--apply would refuse" in preview.stdout, preview.stdout
    assert "--expected-revision" not in preview.stdout
    refused = cli_stack.run("routes", "sync", "--apply", timeout=30)
    assert refused.returncode != 0, refused.stdout
    assert "defines no routes and no providers" in refused.stderr
    assert "applied" not in refused.stdout
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": EXTRA_ROUTE})
    kept = cli_stack.run("routes", "sync", timeout=30)
    assert "already matches" in kept.stdout, kept.stdout + kept.stderr


def _live_revision(preview: str) -> int:
    found = re.search(r"\(live revision (\d+)\):", preview)
    assert found, preview
    return int(found[1])


def test_sync_applies_only_the_revision_its_preview_showed(cli_stack: CliStack) -> None:
    """A preview and its --apply were separate runs with nothing tying them: a route added
    between the approved preview and the apply was removed without being shown. A job that
    only checks for drift had to parse the text to know."""
    checked = {"checked": {"deployments": [{"provider": "local-demo", "model": "demo"}]}}
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": checked})
    preview = cli_stack.run("routes", "sync", "--exit-code", timeout=30)
    # Drift has its own code: 1 is a check that failed (tests/test_connect_refused.py).
    assert preview.returncode == 4, preview.stdout + preview.stderr
    assert "+ route checked: added" in preview.stdout
    approved = _live_revision(preview.stdout)
    assert f"--apply --expected-revision {approved}" in preview.stdout

    gateway = cli_stack.doc["ingress"]["gateway"]["port"]  # type: ignore[index]
    token = (cli_stack.root / "home" / "admin-token").read_text(encoding="utf-8").strip()
    admin = f"http://127.0.0.1:{gateway}/admin/v1"
    auth = {"Authorization": f"Bearer {token}"}
    late = {"deployments": [{"provider": "demo", "model": "demo"}]}
    added = httpx.put(f"{admin}/routes/added-meanwhile", json=late, headers=auth, timeout=10)
    assert added.status_code == 200, added.text

    refused = cli_stack.run(
        "routes", "sync", "--apply", "--expected-revision", str(approved), timeout=30
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"not {approved}: it changed since the preview you approved" in refused.stderr
    assert "applied" not in refused.stdout
    live = httpx.get(f"{admin}/routes", headers=auth, timeout=10).json()["table"]["routes"]
    assert "added-meanwhile" in live
    assert "checked" not in live

    again = cli_stack.run("routes", "sync", timeout=30)
    assert "- route added-meanwhile: removed" in again.stdout, again.stdout
    revision = _live_revision(again.stdout)
    applied = cli_stack.run(
        "routes", "sync", "--apply", "--expected-revision", str(revision), timeout=30
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    clean = cli_stack.run("routes", "sync", "--exit-code", timeout=30)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "already matches" in clean.stdout
    mixed = cli_stack.run("routes", "sync", "--exit-code", "--apply", timeout=30)
    assert mixed.returncode == 2, mixed.stdout + mixed.stderr
    # The live table as the tests after this one expect it.
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": EXTRA_ROUTE})
    assert cli_stack.run("routes", "sync", "--apply", timeout=30).returncode == 0


def test_up_reports_a_config_that_differs_from_the_live_table(cli_stack: CliStack) -> None:
    changed = {"extra": {"deployments": [{"provider": "local-demo", "model": "demo-2"}]}}
    cli_stack.write_config({**cli_stack.doc, "providers": LOCAL_DEMO, "routes": changed})
    down = cli_stack.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
    up = cli_stack.run("up", "--detach", timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "note: the routes/providers in switchyard.yaml differ" in up.stdout
    assert "~ route extra: deployments changed" in up.stdout
