"""The compose deployment, for real, with Podman: image, zones as isolated networks, restarts.

Selected with ``pytest -m compose`` (``.ci/run`` does; plain ``pytest`` leaves it out, since it
needs root, Podman and a few minutes). The module builds the image from this checkout (the
Debian base is cached per machine), brings the deployment up under a project name of its own
on free host ports, and removes every container, network and volume it made at the end, also
when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from openai import OpenAI

from switchyard.stack import compose
from tests import failover
from tests.support import day_totals, free_port

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

CORE_WORKERS = ("secrets", "control", "accounting", "head", "modelproxy")
PROMPT = "how are you"
# The demo model's usage for PROMPT: 3 prompt words, "Hello from the Switchyard demo model. You
# said: how are you" = 11 completion words.
TOKENS = (3, 11)


@dataclass
class Deployment:
    project: compose.ComposeProject
    tail_port: int
    gateway_port: int
    demo_key: str
    admin_token: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.tail_port}/v1"

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            f"http://127.0.0.1:{self.gateway_port}/admin/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )

    def container(self, service: str, n: int = 1) -> str:
        return f"{self.project.name}_{service}_{n}"

    def logs(self, *services: str, lines: int | None = 40, since: float | None = None) -> str:
        """The last ``lines`` (None: all) each replica of ``services`` logged, since ``since``
        (a Unix time) if given (for a failure's message)."""
        window = ["--tail", str(lines)] if lines is not None else []
        window += ["--since", str(int(since))] if since is not None else []
        out = []
        for service in services:
            for n in (1, 2):
                name = self.container(service, n)
                done = subprocess.run(
                    ["podman", "logs", *window, name],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if done.returncode == 0:
                    out.append(f"--- {name}\n{done.stdout}{done.stderr}")
        return "\n".join(out)

    def ip(self, container: str, network: str) -> str:
        out = _podman("inspect", container, "--format", "{{json .NetworkSettings.Networks}}")
        return str(json.loads(out)[f"{self.project.name}_{network}"]["IPAddress"])

    def python(self, container: str, code: str) -> str:
        """Run Python in a running container (as its own user, with its own credentials)."""
        return _podman("exec", container, "python3", "-c", code)

    def probe(self, network: str, targets: list[str]) -> dict[str, bool]:
        """Which ``host:port`` a fresh container on ``network`` can open a TCP connection to."""
        out = _podman(
            "run", "--rm", "--network", f"{self.project.name}_{network}",
            "--entrypoint", "python3", self.project.image, "-c", _PROBE, *targets,
        )  # fmt: skip
        return {k: bool(v) for k, v in json.loads(out).items()}

    def queued(self) -> int:
        """Messages in the DISPATCH stream, from inside a NATS node (monitoring is loopback)."""
        out = self.python(
            self.container("nats-1"),
            "import json, urllib.request as u; d = json.load(u.urlopen("
            "'http://127.0.0.1:8222/jsz?accounts=true&streams=true', timeout=5)); "
            "print(sum(s['state']['messages'] for a in d['account_details'] "
            "for s in a.get('stream_detail', []) if s['name'] == 'DISPATCH'))",
        )
        return int(out.strip())


_PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def reach(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return True
    except OSError:
        return False
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(reach, sys.argv[1:])))))
"""


def _podman(*args: str) -> str:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"podman {args[0]} failed: {done.stderr[-2000:]}"
    return done.stdout


def _leftovers(name: str) -> list[str]:
    label = f"label=io.podman.compose.project={name}"
    found = []
    for kind in (("ps", "-a"), ("network", "ls"), ("volume", "ls")):
        found += _podman(*kind, "-q", "--filter", label).split()
    return found


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (see compose/README.md)")
    project = compose.ComposeProject(name=f"sytest-{uuid.uuid4().hex[:6]}")
    taken: set[int] = set()
    tail, gateway = free_port(taken), free_port(taken)
    project.variables.update({"SY_TAIL_PORT": str(tail), "SY_GATEWAY_PORT": str(gateway)})
    try:
        timings = compose.build_image(project, sys.stderr)
        timings.update(compose.up(project, sys.stderr, timeout=300))
        demo = compose.read_state_file(project, "demo-key")
        token = compose.read_state_file(project, "admin-token")
        assert demo
        assert token
        print(f"compose timings: {timings}", file=sys.stderr)
        yield Deployment(project, tail, gateway, demo, token, timings)
    finally:
        compose.down(project, volumes=True)
        assert _leftovers(project.name) == []


class Traffic:
    """Requests flowing through the tail in a thread while a test probes the zones."""

    def __init__(self, dep: Deployment) -> None:
        self.client = OpenAI(base_url=dep.api, api_key=dep.demo_key, max_retries=0, timeout=30)
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": PROMPT}]
                )
                assert reply.choices[0].message.content
                self.ok += 1
            except Exception as exc:
                self.failed.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def test_chat_and_streaming_through_the_published_tail(deployment: Deployment) -> None:
    client = OpenAI(base_url=deployment.api, api_key=deployment.demo_key, max_retries=0)
    with client:
        _chat_and_stream(client)


def _chat_and_stream(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": PROMPT}]
    )
    assert (
        reply.choices[0].message.content
        == f"Hello from the Switchyard demo model. You said: {PROMPT}"
    )
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == TOKENS
    words = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="demo", stream=True, messages=[{"role": "user", "content": PROMPT}]
        )
        if chunk.choices
    ]
    assert len(words) > 5
    assert "".join(words) == reply.choices[0].message.content
    assert [m.id for m in client.models.list()] == ["demo"]


def test_only_the_client_zone_http_ports_are_published(deployment: Deployment) -> None:
    published = {}
    for c in compose.containers(deployment.project):
        ports = c.get("Ports") or []
        if ports:
            labels: dict[str, str] = c.get("Labels") or {}  # type: ignore[assignment]
            service = labels.get("com.docker.compose.service", "")
            published[service] = sorted(int(p["host_port"]) for p in ports)  # type: ignore[attr-defined]
    assert published == {
        "tail": [deployment.tail_port],
        "gateway": [deployment.gateway_port],
    }


def test_client_network_cannot_reach_openbao_or_core_health_ports(deployment: Deployment) -> None:
    core = [deployment.container(name) for name in CORE_WORKERS]
    core += [deployment.container("head", 2), deployment.container("modelproxy", 2)]
    targets = [f"{deployment.ip(c, 'core')}:9090" for c in core]
    bao = deployment.ip(deployment.container("openbao"), "core")
    targets += [f"{bao}:8200", f"{bao}:8201"]
    with Traffic(deployment) as traffic:
        from_client = deployment.probe(
            "client", [*targets, "openbao:8200", "tail:8080", "nats-1:4222"]
        )
        from_core = deployment.probe("core", targets)
    # The probe works: the same ports are open from the core network, and the client zone
    # reaches what it must (the edge, NATS).
    assert all(from_core.values()), from_core
    assert from_client.pop("tail:8080")
    assert from_client.pop("nats-1:4222")
    assert not any(from_client.values()), from_client  # openbao:8200 does not even resolve
    assert traffic.failed == []
    assert traffic.ok > 0


def test_client_zone_valkey_credentials_touch_only_limit_keys(deployment: Deployment) -> None:
    tail = deployment.container("tail")
    files = deployment.python(tail, "import os; print(sorted(os.listdir('/run/switchyard/creds')))")
    # The tail holds its own certificate and the ingress password: no other key or password.
    assert files.strip() == str(["ca.pem", "ingress.password", "tail-key.pem", "tail.pem"])
    with Traffic(deployment) as traffic:
        out = deployment.python(tail, _VALKEY_PROBE)
    results = json.loads(out)
    allowed = {"write rate key", "read rate key", "read spend key"}
    assert {k for k, v in results.items() if v == "ok"} == allowed, results
    assert all(v == "denied" for k, v in results.items() if k not in allowed), results
    assert traffic.failed == []
    assert traffic.ok > 0


_VALKEY_PROBE = """
import json, redis
password = open("/run/switchyard/creds/ingress.password").read().strip()
r = redis.Redis(host="valkey", port=6379, username="ingress", password=password)
results = {}
def attempt(name, call):
    try:
        call()
        results[name] = "ok"
    except redis.exceptions.NoPermissionError:
        results[name] = "denied"
    except redis.exceptions.ResponseError as exc:
        results[name] = "denied" if "NOPERM" in str(exc) else f"error: {exc}"
attempt("write rate key", lambda: r.set("sy:rl:probe", 1, ex=30))
attempt("read rate key", lambda: r.get("sy:rl:probe"))
attempt("read spend key", lambda: r.get("sy:spend:key:probe:total"))
attempt("write spend key", lambda: r.incr("sy:spend:key:probe:total"))
incr = "return redis.call('INCR', KEYS[1])"
attempt("write spend by script", lambda: r.eval(incr, 1, "sy:spend:key:probe:total"))
attempt("read usage key", lambda: r.get("sy:usage:seen:probe"))
attempt("write other key", lambda: r.set("other", 1))
attempt("read other key", lambda: r.get("other"))
attempt("list keys (SCAN)", lambda: r.scan(0))
attempt("list keys (KEYS)", lambda: r.keys("*"))
attempt("RANDOMKEY", lambda: r.randomkey())
attempt("CONFIG GET", lambda: r.config_get("*"))
attempt("FLUSHALL", lambda: r.flushall())
attempt("ACL LIST", lambda: r.acl_list())
print(json.dumps(results))
"""


def _spend_tokens(dep: Deployment, key_id: str) -> tuple[int, int, int]:
    row = day_totals(dep.admin("GET", "/spend?days=2").json()["days"], "key", key_id)
    return (
        int(row.get("prompt_tokens", 0)),
        int(row.get("completion_tokens", 0)),
        int(row.get("requests", 0)),
    )


def _wait(
    predicate: Any, timeout: float, what: str, explain: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}\n{explain() if explain else ''}")
        time.sleep(0.5)


def _billing_state(dep: Deployment, key_id: str) -> Callable[[], str]:
    """What a spend wait that timed out saw, and what billing's processes logged."""

    def explain() -> str:
        spend = _spend_tokens(dep, key_id)
        return (
            f"spend (prompt, completion, requests): {spend}\n"
            + _valkey_from(dep.container("accounting"))
            + dep.logs("accounting", "modelproxy", "valkey")
        )

    return explain


_PING = """
import socket, time
began = time.monotonic()
try:
    with socket.create_connection(("valkey", 6379), 5) as s:
        s.settimeout(5)
        s.sendall(b"PING\\r\\n")
        print("valkey answered", s.recv(64), "in", round(time.monotonic() - began, 3), "s")
except OSError as exc:
    print("valkey unreachable:", repr(exc), "after", round(time.monotonic() - began, 3), "s")
"""


def _valkey_from(container: str) -> str:
    """Whether ``container`` reaches Valkey now, and how fast (a failed spend wait's clue:
    once, accounting's calls to it timed out for a whole test)."""
    done = subprocess.run(
        ["podman", "exec", container, "python3", "-c", _PING],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return f"--- from {container}: {(done.stdout + done.stderr).strip()}\n"


def test_full_restart_keeps_secrets_keys_routes_queued_requests_and_spend(
    deployment: Deployment,
) -> None:
    dep = deployment
    assert dep.admin(
        "PUT", "/secrets/restart-check", {"value": "sk-not-real-0123456789"}
    ).status_code in (200, 201)
    created = dep.admin("POST", "/keys", {"name": "restart-check", "models": ["demo", "kept"]})
    assert created.status_code in (200, 201), created.text
    key, key_id = created.json()["key"], created.json()["record"]["id"]
    route = {"deployments": [{"provider": "demo", "model": "demo"}], "description": "kept"}
    assert dep.admin("PUT", "/routes/kept", route).status_code in (200, 201)
    client = OpenAI(base_url=dep.api, api_key=key, max_retries=0, timeout=30)
    impatient = OpenAI(base_url=dep.api, api_key=key, max_retries=0, timeout=2)
    with client, impatient:
        _restart(dep, client, impatient, key_id)


def _restart(dep: Deployment, client: OpenAI, impatient: OpenAI, key_id: str) -> None:
    client.chat.completions.create(model="kept", messages=[{"role": "user", "content": PROMPT}])
    billing = _billing_state(dep, key_id)
    _wait(lambda: _spend_tokens(dep, key_id)[2] == 1, 30, "the first request's spend", billing)

    # While no model-proxy runs: two HTTP requests whose callers give up (the edge cancels
    # them; the server keeps the cancels in CANCELS, so no model-proxy serves or bills them
    # after the restart), and a batch of three lines, whose caller (the batch runner) is
    # durable: its lines wait in the DISPATCH stream through the restart and are served.
    for n in (1, 2):
        _podman("stop", "-t", "10", dep.container("modelproxy", n))
    abandoned = 2
    for _ in range(abandoned):
        with pytest.raises(Exception):  # noqa: B017, PT011  (the client's own timeout)
            impatient.chat.completions.create(
                model="kept",
                messages=[{"role": "user", "content": PROMPT}],
                extra_headers={"X-Request-Timeout": "600"},
            )
    lines = 3
    rows = [
        {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "kept", "messages": [{"role": "user", "content": PROMPT}]},
        }
        for n in range(lines)
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    file = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _wait(lambda: dep.queued() == abandoned + lines, 60, "the batch's lines in the queue")

    compose.down(dep.project)
    assert (
        _podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={dep.project.name}")
        == ""
    )
    began = time.monotonic()
    compose.up(dep.project, sys.stderr, timeout=300)
    print(f"restart: up again in {time.monotonic() - began:.0f}s", file=sys.stderr)

    names = [s["name"] for s in dep.admin("GET", "/secrets").json()["secrets"]]
    assert "restart-check" in names
    assert dep.admin("GET", "/routes/kept").status_code == 200
    assert compose.read_state_file(dep.project, "demo-key") == dep.demo_key
    reply = client.chat.completions.create(
        model="kept", messages=[{"role": "user", "content": PROMPT}]
    )
    assert reply.choices[0].message.content
    # The batch's queued lines were served after the restart and billed once each (a line the
    # runner sent again may run twice, its result is kept once); the abandoned requests were
    # neither: spend counts the first and the last request and the batch's lines.
    _wait(lambda: client.batches.retrieve(batch.id).status == "completed", 120, "the batch to end")
    done = client.batches.retrieve(batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (lines, 0)
    output = client.files.content(done.output_file_id or "").text.splitlines()
    assert sorted(json.loads(row)["custom_id"] for row in output) == [r["custom_id"] for r in rows]
    _wait(lambda: dep.queued() == 0, 60, "the queue to drain")
    want = 2 + lines
    _wait(lambda: _spend_tokens(dep, key_id)[2] == want, 60, f"{want} billed requests", billing)
    time.sleep(3)  # a late bill of an abandoned request or a line's second run would show now
    assert _spend_tokens(dep, key_id) == (TOKENS[0] * want, TOKENS[1] * want, want)


# ---- the failover suite against the containers ----


_CONNECTION_EVENT = re.compile(r"NATS connection to|reconnected to NATS at|nats error for")


class ComposePlatform:
    """The compose deployment as a :class:`tests.failover.Platform`: kills are ``podman kill``,
    billing is read by :mod:`tests.billing` in a container on the core network."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.edges = [f"http://127.0.0.1:{dep.tail_port}", f"http://127.0.0.1:{dep.gateway_port}"]
        self.model = "demo"

    def _container(self, name: str) -> str:
        if name.startswith("nats-"):
            return self.dep.container(name)
        service, _, n = name.rpartition("-")
        return self.dep.container(service, int(n)) if n.isdigit() else self.dep.container(name)

    async def new_key(self, name: str) -> tuple[str, str]:
        created = await asyncio.to_thread(self.dep.admin, "POST", "/keys", {"name": name})
        assert created.status_code == 201, created.text
        await asyncio.sleep(0.5)  # every edge follows the key bucket
        return created.json()["key"], created.json()["record"]["id"]

    def _billing(self, *args: str) -> str:
        p = self.dep.project
        return _podman(
            "run", "--rm", "--network", f"{p.name}_core",
            "-v", f"{p.volume('state')}:/deploy/state:ro",
            "-v", f"{p.root / 'tests'}:/src/tests:ro",
            "-e", "PYTHONPATH=/src",
            "-e", "SWITCHYARD_HOME=/deploy/state",
            "-e", "SWITCHYARD_CERTS__DIR=/deploy/state/certs",
            "-e", 'SWITCHYARD_NATS__SERVERS=["tls://nats-1:4222","tls://nats-2:4222","tls://nats-3:4222"]',
            "-e", "SWITCHYARD_REDIS__URL=redis://valkey:6379/0",
            "-e", "SWITCHYARD_REDIS__PASSWORD_DIR=/deploy/state/valkey",
            "-e", "SWITCHYARD_LOGGING__LEVEL=warning",
            "--entrypoint", "python3", p.image, "-m", "tests.billing", *args,
        )  # fmt: skip

    async def usage_seq(self) -> int:
        return int((await asyncio.to_thread(self._billing, "last-seq")).strip())

    async def billing(self, key_id: str, first_seq: int) -> dict[str, Any]:
        out = await asyncio.to_thread(self._billing, "snapshot", key_id, str(first_seq))
        doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return doc

    async def kill(self, name: str) -> None:
        await asyncio.to_thread(_podman, "kill", self._container(name))

    async def restart(self, name: str) -> None:
        container = self._container(name)
        await asyncio.to_thread(_podman, "start", container)
        check = ["podman", "healthcheck", "run", container]
        for _ in range(120):
            done = await asyncio.to_thread(subprocess.run, check, capture_output=True, check=False)
            if done.returncode == 0:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{container} did not become healthy again")

    def connection_events(self, since: float) -> list[str]:
        """What the workers and edges logged about their NATS connections since ``since`` (a
        Unix time): who lost which node, and when and where each came back (under each
        container's ``---`` header)."""
        text = self.dep.logs("head", "modelproxy", "tail", "gateway", lines=None, since=since)
        lines = text.splitlines()
        return [x for x in lines if x.startswith("--- ") or _CONNECTION_EVENT.search(x)][:200]

    def log_lines(self, needles: list[str], since: float, limit: int = 60) -> list[str]:
        """What the workers and edges logged since ``since`` that mentions any of ``needles``
        (request ids), under each container's ``---`` header."""
        text = self.dep.logs("head", "modelproxy", "tail", "gateway", lines=None, since=since)
        lines = text.splitlines()
        return [x for x in lines if x.startswith("--- ") or any(n in x for n in needles)][:limit]

    async def monitor(self, path: str) -> list[tuple[int, Any]]:
        found = []
        for n in (1, 2, 3):
            code = (
                "import urllib.request as u; "
                f"print(u.urlopen('http://127.0.0.1:8222{path}', timeout=2).read().decode())"
            )
            done = await asyncio.to_thread(
                subprocess.run,
                ["podman", "exec", self.dep.container(f"nats-{n}"), "python3", "-c", code],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                found.append((n, json.loads(done.stdout)))
        return found


COMPOSE_SCENARIOS = [
    s for s in failover.SCENARIOS if re.match(r"NATS node: the DISPATCH|one model-proxy", s.name)
]


@pytest.mark.parametrize("scenario", COMPOSE_SCENARIOS, ids=[s.name for s in COMPOSE_SCENARIOS])
def test_failover_in_containers(deployment: Deployment, scenario: failover.Scenario) -> None:
    from tests.test_failover import ALLOWED_ERRORS, assert_bar

    platform = ComposePlatform(deployment)
    tag = f"c{COMPOSE_SCENARIOS.index(scenario)}"
    began = time.time()
    # The containers' timing (30 s, killed at 8 s, back 8 s later): a restarted container
    # takes seconds to serve again, and the shorter suite timing saw 3 requests billed twice
    # (a redelivered copy stopped after its caller left) that this timing never showed.
    result = asyncio.run(failover.run_scenario(platform, scenario, tag, failover.TABLE))
    print(result.row(), result.detail(), sep="\n", file=sys.stderr)
    # For a failure's report: when each process lost and regained its NATS connection.
    print(*platform.connection_events(began), sep="\n", file=sys.stderr)
    if lost := [f"{o.request_id}." for o in result.outcomes if o.kind == "lost"]:
        print(*platform.log_lines(lost, began), sep="\n", file=sys.stderr)
    assert_bar(result, ALLOWED_ERRORS.get(scenario.name, ()))
