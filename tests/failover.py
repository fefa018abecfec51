"""The failover suite: steady load on a 3-node local stack while one process at a time is killed.

Each scenario runs ``CLIENTS`` concurrent clients for a ``Timing``'s ``duration_s`` against a fake
provider that takes 50-200 ms per answer (half the requests stream), SIGKILLs one process at its
``kill_at_s`` and starts it again ``down_for_s`` later, as an orchestrator would: 30 s, 8 s and 8 s
for the table in docs/operations.md (``TABLE``); in the pytest suites (``SUITE``) killed at 3 s,
started again 6 s later, and loaded until ``after_s`` (3 s) past the moment the restarted
process is healthy again (at least 12 s in all): each scenario loads its restarted process for
the same time, however long picking its target or its restart took.
Every request is classified by what its client saw:

* **200**: a complete answer (a stream counts only with its ``[DONE]``);
* **clear error**: an error status, an error event in the stream, or the connection to a killed
  edge breaking, each at once;
* **lost**: no answer by the client's timeout, or a 504 (the request's own deadline passed).

Billing is checked per request from the ``USAGE`` stream (every usage event the model-proxies
stored) and against the spend counters accounting wrote: every answered request billed once with
the tokens its client saw, no request billed twice, and the counters equal the events. A client
whose edge refuses connections (the edge is down) goes to the other edge, as behind a load
balancer; a refused connection never reached a server and is not counted as a request.

Everything runs on loopback ports of this machine and every loop is bounded by time.
``python -m tests.failover`` runs every scenario and prints the table for docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.schemas.events import answer_of
from switchyard.stack.ports import listen_port
from tests import billing
from tests.portrange import worker_range
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

CLIENTS = 20
CLIENT_TIMEOUT_S = 30.0
# The server-side deadline of each request (X-Request-Timeout); a 504 counts as lost.
DEADLINE_S = 25.0
MODEL = "chat"
UPSTREAM_MODEL = "jitter:50-200"
SECRET = "failover-key"


@dataclass(frozen=True)
class Timing:
    """How long a scenario loads the stack, when its process is killed and for how long."""

    duration_s: float
    kill_at_s: float
    down_for_s: float
    # If set, the load goes on until this long after the kill-and-restart has ended (the
    # restarted process healthy), even past ``duration_s``; 0: it ends at ``duration_s``.
    after_s: float = 0.0


TABLE = Timing(duration_s=30.0, kill_at_s=8.0, down_for_s=8.0)
# Before, a fixed 20 s (killed at 5 s, started 6 s later): a restart takes 3-10 s to be
# healthy on a loaded 2-core VM (secrets and the tail the longest), so the load after the
# return was 9 s for none of them and ~1 s for secrets, while the baseline and the fast
# restarts loaded on for nothing. Now each gets 3 s after its own return.
SUITE = Timing(duration_s=12.0, kill_at_s=3.0, down_for_s=6.0, after_s=3.0)


@dataclass
class Outcome:
    request_id: str
    stream: bool
    edge: str
    started: float
    kind: str = "lost"  # ok | error | lost
    status: int = 0
    detail: str = ""
    tokens: tuple[int, int] | None = None
    latency: float = 0.0


@dataclass
class Result:
    scenario: str
    killed: str
    outcomes: list[Outcome]
    # Per client request id, from the USAGE stream: events as accounting counts them (once per
    # event id), their tokens, and every event stored (a request executed twice has two).
    billed: Counter[str] = field(default_factory=Counter)
    event_tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    executed: Counter[str] = field(default_factory=Counter)

    @property
    def executed_twice(self) -> int:
        return sum(1 for n in self.executed.values() if n > 1)

    def tally(self, snapshot: dict[str, Any]) -> None:
        """Take in :func:`tests.billing.snapshot`: events counted once per event id, as
        accounting counts them, and a stopped copy of a request whose answer came first not at
        all (:func:`switchyard.schemas.events.answer_of`), in the stream's order."""
        counted: set[str] = set()
        for event in snapshot["events"]:
            # The edge appends its own suffix to the client's X-Request-Id.
            request_id = event["request_id"].rsplit(".", 1)[0]
            self.executed[request_id] += 1
            answer = answer_of(event["id"])
            if event["id"] in counted or (answer != event["id"] and answer in counted):
                continue
            counted.add(event["id"])
            self.billed[request_id] += 1
            prompt, completion = self.event_tokens.get(request_id, (0, 0))
            self.event_tokens[request_id] = (
                prompt + event["tokens"][0],
                completion + event["tokens"][1],
            )
        prompt, completion, requests = snapshot["spend"]
        self.spend = (prompt, completion, requests)

    spend: tuple[int, int, int] = (0, 0, 0)
    # Seconds from the load's end until accounting had applied every usage event.
    settled_s: float = 0.0
    # Seconds into the load when the killed process was healthy again, and the load's length.
    back_s: float = 0.0
    loaded_s: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "ok"]

    @property
    def billed_twice(self) -> list[str]:
        return [rid for rid, n in self.billed.items() if n > 1]

    @property
    def unbilled(self) -> list[str]:
        return [o.request_id for o in self.answered if self.billed[o.request_id] == 0]

    @property
    def wrong_tokens(self) -> list[str]:
        return [
            o.request_id
            for o in self.answered
            if self.billed[o.request_id] == 1 and self.event_tokens.get(o.request_id) != o.tokens
        ]

    @property
    def billed_unanswered(self) -> int:
        answered = {o.request_id for o in self.answered}
        return sum(1 for rid in self.billed if rid not in answered)

    @property
    def counters_match_events(self) -> bool:
        prompt = sum(t[0] for t in self.event_tokens.values())
        completion = sum(t[1] for t in self.event_tokens.values())
        return self.spend == (prompt, completion, sum(self.billed.values()))

    def detail(self) -> str:
        """What the row does not show: latencies, the counters against the events."""
        latencies = sorted(o.latency for o in self.answered) or [0.0]
        prompt = sum(t[0] for t in self.event_tokens.values())
        completion = sum(t[1] for t in self.event_tokens.values())
        p50 = latencies[len(latencies) // 2]
        events = (prompt, completion, sum(self.billed.values()))
        lost = Counter(o.detail for o in self.outcomes if o.kind == "lost")
        lost_ids = [o.request_id for o in self.outcomes if o.kind == "lost"][:5]
        return (
            f"{self.scenario}: killed {self.killed or '-'}; p50 {p50:.2f} s; "
            f"{self.when_errors()}; "
            f"spend counters {self.spend}, events {events}; lost {dict(lost)} {lost_ids}; "
            f"unbilled {self.unbilled[:5]}; billed twice {self.billed_twice[:5]}; "
            f"wrong tokens {self.wrong_tokens[:5]}; executed twice {self.executed_twice}; "
            f"back {self.back_s:.1f} s into a {self.loaded_s:.1f} s load; "
            f"billing settled {self.settled_s:.1f} s after the load"
        )

    def when_errors(self) -> str:
        """When the errors began and ended (seconds into the load) and at which edges: an
        outage's length and place, which the counts alone do not tell."""
        errors = [o for o in self.outcomes if o.kind == "error"]
        if not errors:
            return "no errors"
        start = min(o.started for o in self.outcomes)
        first = min(o.started for o in errors) - start
        last = max(o.started + o.latency for o in errors) - start
        edges = Counter(o.edge for o in errors)
        return f"errors from {first:.1f} s to {last:.1f} s into the load, by edge {dict(edges)}"

    def row(self) -> str:
        worst = max((o.latency for o in self.answered), default=0.0)
        errors = Counter(o.detail for o in self.outcomes if o.kind == "error")
        why = ", ".join(f"{n} {d}" for d, n in errors.most_common(3))
        return (
            f"| {self.scenario} | {len(self.outcomes)} | {self.count('ok')} | "
            f"{self.count('error')} | {self.count('lost')} | {len(self.billed_twice)} | "
            f"{len(self.unbilled)} | {self.billed_unanswered} | {self.executed_twice} | "
            f"{'yes' if self.counters_match_events else 'NO'} | {worst:.1f} s | {why} |"
        )


HEADER = (
    "| Killed | Sent | 200 | Clear error | Lost | Billed twice | Answered, unbilled | "
    "Billed, unanswered | Executed twice | Spend = events | Slowest 200 | Errors |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"
)


async def _one(
    http: httpx.AsyncClient, edge: str, key: str, request_id: str, stream: bool, model: str
) -> Outcome:
    out = Outcome(request_id, stream, edge, time.monotonic())
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"tell me about {request_id}"}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    headers = {
        "Authorization": f"Bearer {key}",
        "X-Request-Id": request_id,
        "X-Request-Timeout": str(DEADLINE_S),
    }
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            if stream:
                await _stream(http, edge, body, headers, out)
            else:
                reply = await http.post(f"{edge}/v1/chat/completions", json=body, headers=headers)
                out.status = reply.status_code
                if reply.status_code == 200:
                    usage = reply.json()["usage"]
                    out.kind, out.tokens = (
                        "ok",
                        (usage["prompt_tokens"], usage["completion_tokens"]),
                    )
                else:
                    out.kind = "lost" if reply.status_code == 504 else "error"
                    out.detail = f"{reply.status_code} {_code(reply.content)}"
    except TimeoutError:
        out.kind, out.detail = "lost", "no answer in time"
    except httpx.ConnectError:
        raise  # the edge is down: not a request (the caller fails over)
    except httpx.HTTPError as exc:
        out.kind, out.detail = "error", f"connection broke ({type(exc).__name__})"
    out.latency = time.monotonic() - out.started
    return out


async def _stream(
    http: httpx.AsyncClient, edge: str, body: dict[str, Any], headers: dict[str, str], out: Outcome
) -> None:
    async with http.stream(
        "POST", f"{edge}/v1/chat/completions", json=body, headers=headers
    ) as reply:
        out.status = reply.status_code
        if reply.status_code != 200:
            out.kind = "lost" if reply.status_code == 504 else "error"
            out.detail = f"{reply.status_code} {_code(await reply.aread())}"
            return
        usage = None
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                out.kind, out.tokens = "ok", usage
                return
            event = json.loads(data)
            if "error" in event:
                code = event["error"].get("code") or event["error"].get("type")
                out.kind, out.detail = "error", f"mid-stream {code}"
                if code == "deadline_exceeded":
                    out.kind = "lost"
                return
            if event.get("usage"):
                usage = (event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"])
        out.kind, out.detail = "error", "stream ended without [DONE]"


def _code(data: bytes) -> str:
    try:
        error = json.loads(data)["error"]
        return str(error.get("code") or error.get("type"))
    except (ValueError, KeyError, TypeError):
        return "?"


async def load(
    edges: list[str],
    key: str,
    tag: str,
    *,
    model: str = MODEL,
    duration: float = TABLE.duration_s,
    clients: int = CLIENTS,
    during: Callable[[], Awaitable[None]] | None = None,
    after: float = 0.0,
) -> list[Outcome]:
    """Run the clients for ``duration`` seconds (and ``during`` alongside); with ``after``, also
    until ``after`` seconds past the end of ``during``. Every outcome."""
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + duration
    holding = during is not None and after > 0  # the clients go on until ``during`` ends

    async def then_after() -> None:
        nonlocal stop_at, holding
        assert during is not None
        try:
            await during()
        finally:
            stop_at = max(stop_at, time.monotonic() + after)
            holding = False

    async def client(n: int) -> None:
        rng = random.Random(n)
        edge = n % len(edges)
        seq = 0
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
            while holding or time.monotonic() < stop_at:
                seq += 1
                request_id = f"{tag}-{n}-{seq}"
                stream = rng.random() < 0.5
                for _ in range(len(edges) * 20):  # bounded: every edge refusing for ~10 s
                    try:
                        outcomes.append(
                            await _one(http, edges[edge], key, request_id, stream, model)
                        )
                        break
                    except httpx.ConnectError:
                        edge = (edge + 1) % len(edges)
                        await asyncio.sleep(0.25)

    tasks: list[Awaitable[None]] = [client(n) for n in range(clients)]
    if during is not None:
        tasks.append(then_after() if holding else during())
    await asyncio.gather(*tasks)
    return outcomes


# ---- platforms: where the load goes and how processes die ----


class Platform(Protocol):
    """A running deployment the suite can load, kill pieces of, and read billing from."""

    edges: list[str]
    model: str

    async def new_key(self, name: str) -> tuple[str, str]:
        """A fresh client key: (key, key id)."""
        ...

    async def usage_seq(self) -> int: ...

    async def billing(self, key_id: str, first_seq: int) -> dict[str, Any]:
        """:func:`tests.billing.snapshot` of the deployment."""
        ...

    async def kill(self, name: str) -> None: ...

    async def restart(self, name: str) -> None: ...

    async def monitor(self, path: str) -> list[tuple[int, Any]]:
        """``path`` of every live NATS node's monitoring endpoint, by node number."""
        ...


class LocalPlatform:
    """A local stack (``switchyard up``'s supervisor and processes)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.edges = [stack.tail_url, stack.gateway_url]
        self.model = MODEL

    async def new_key(self, name: str) -> tuple[str, str]:
        key, record = await self.stack.new_key(name)
        return key, record.id

    async def usage_seq(self) -> int:
        return await billing.last_seq(self.stack.settings)

    async def billing(self, key_id: str, first_seq: int) -> dict[str, Any]:
        return await billing.snapshot(self.stack.settings, key_id, first_seq)

    async def kill(self, name: str) -> None:
        self.stack.kill(name)

    async def restart(self, name: str) -> None:
        proc = self.stack.process(name)
        await proc.start()
        if not await proc.wait_healthy(60):
            raise AssertionError(f"{name} did not come back")

    def log_lines(self, needles: list[str], limit: int = 60) -> list[str]:
        """Lines of the stack's logs that mention any of ``needles`` (request ids)."""
        found = []
        for path in sorted(self.stack.home.logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(n in line for n in needles):
                    found.append(f"{path.stem}: {line}")
        return found[:limit]

    def cpu_seconds(self, name: str) -> float:
        """CPU time a process has used so far (user + system, from /proc)."""
        pid = self.stack.process(name).pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def monitor(self, path: str) -> list[tuple[int, Any]]:
        found = []
        port = self.stack.settings.stack.nats_monitor_port
        async with httpx.AsyncClient(timeout=2) as http:
            for n in range(self.stack.settings.stack.nats_nodes):
                with contextlib.suppress(httpx.HTTPError):
                    reply = await http.get(f"http://127.0.0.1:{port + n}{path}")
                    found.append((n + 1, reply.json()))
        return found


async def failover_stack(root: Path, upstream: FakeOpenAI) -> Stack:
    """A local stack with 3 NATS nodes, 2 heads, 2 model-proxies, tail and gateway."""
    taken: set[int] = set()  # none is bound before the stack starts: keep the spans apart
    extra = {
        "stack": {
            "nats_nodes": 3,
            "nats_port": listen_port(span=3, avoid=taken, within=worker_range()),
            "nats_monitor_port": listen_port(span=3, avoid=taken, within=worker_range()),
            "nats_cluster_port": listen_port(span=3, avoid=taken, within=worker_range()),
            "start_timeout_s": 120,
        },
        "providers": {
            "fake": {
                "kind": "openai-compatible",
                "api_base": upstream.base_url,
                "concurrency": 64,
                "secret": SECRET,
            }
        },
        "routes": {MODEL: {"deployments": [{"provider": "fake", "model": UPSTREAM_MODEL}]}},
        "logging": {"level": "info"},
    }
    stack = await start_stack(root, extra)
    put = await stack.admin("PUT", f"/secrets/{SECRET}", {"value": "sk-failover-0123456789"})
    assert put.status_code in (200, 201), put.text
    return stack


# ---- what to kill ----


async def stream_details(platform: Platform, *flags: str) -> list[dict[str, Any]]:
    """Every live node's report of every stream in every account (``/jsz``; ``flags`` such as
    ``consumers=true`` add detail)."""
    query = "&".join(("accounts=true", "streams=true", *flags))
    return [
        info
        for _, doc in await platform.monitor(f"/jsz?{query}")
        for account in doc.get("account_details", [])
        for info in account.get("stream_detail", [])
    ]


async def stream_leader(platform: Platform, stream: str = subjects.DISPATCH_STREAM) -> str:
    """The node (``nats-<n>``) leading ``stream``."""
    for info in await stream_details(platform):
        leader = info.get("cluster", {}).get("leader")
        if info["name"] == stream and leader:
            return "nats-" + leader.rsplit("-", 1)[1]
    raise AssertionError(f"no leader for {stream}")


async def node_of(platform: Platform, connection: str) -> str:
    """The node (``nats-<n>``) a named connection is on."""
    for n, doc in await platform.monitor("/connz?limit=1024"):
        if any(c.get("name") == connection for c in doc.get("connections", [])):
            return f"nats-{n}"
    raise AssertionError(f"no node has a connection named {connection}")


async def consumer_leaders(platform: Platform, stream: str) -> dict[str, str]:
    """Consumer name to the server (``switchyard-<n>``) leading it, for ``stream``."""
    leaders: dict[str, str] = {}
    for info in await stream_details(platform, "consumers=true"):
        if info["name"] != stream:
            continue
        for consumer in info.get("consumer_detail") or []:
            leader = consumer.get("cluster", {}).get("leader")
            if leader:
                leaders[consumer["name"]] = leader
    return leaders


def consumer_leader_away_from(
    stream: str, connections: tuple[str, ...]
) -> Callable[[Platform], Awaitable[str]]:
    """A target: move the leaders of ``stream``'s consumers to a node none of ``connections``
    is on (JetStream answers the pull requests out with 409s and they are issued again to the
    new leader), then kill that node: the pull requests are now on the node that dies, away
    from their owners. They must be issued again to the next leader before clients give up.
    With this nats-server some of them get a 409 for the second change too; the pullers also
    follow JetStream's ``LEADER_ELECTED`` advisory, which the compose run needed (it lost
    requests without it), so this guards the outcome, not one mechanism."""

    async def pick(platform: Platform) -> str:
        assert isinstance(platform, LocalPlatform), "needs the provisioner's JetStream API"
        taken = {await node_of(platform, name) for name in connections}
        node = sorted({f"nats-{n}" for n in (1, 2, 3)} - taken)[0]
        server = "switchyard-" + node.rsplit("-", 1)[1]
        settings = platform.stack.settings
        nc = await connect(settings.nats_servers, settings.certs_dir, "provisioner")
        try:
            for consumer, leader in (await consumer_leaders(platform, stream)).items():
                if leader == server:
                    continue
                body = json.dumps({"placement": {"preferred": server}}).encode()
                api = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"
                reply = json.loads((await nc.request(api, body, timeout=10)).data)
                assert reply.get("success"), reply
        finally:
            await nc.close()
        for _ in range(100):
            leaders = await consumer_leaders(platform, stream)
            if leaders and set(leaders.values()) == {server}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{stream}'s consumers did not move to {server}: {leaders}")
        await asyncio.sleep(2.0)  # the 409s reach the pullers; their new pulls reach the leader
        return node

    return pick


@dataclass(frozen=True)
class Scenario:
    name: str
    target: Callable[[Platform], Awaitable[str]]


def fixed(name: str) -> Callable[[Platform], Awaitable[str]]:
    async def pick(platform: Platform) -> str:
        return name

    return pick


SCENARIOS = [
    Scenario("none (baseline)", fixed("")),
    Scenario("NATS node: the DISPATCH stream leader", stream_leader),
    # Some 3-5% of this load waits in HOLD (each head's burst cap), so held requests are there.
    Scenario(
        "NATS node: the HOLD stream leader",
        lambda platform: stream_leader(platform, subjects.HOLD_STREAM),
    ),
    Scenario("NATS node: the tail's", lambda platform: node_of(platform, "tail")),
    Scenario(
        "NATS node: leading the queue's consumer, no model-proxy on it",
        consumer_leader_away_from(subjects.DISPATCH_STREAM, ("modelproxy-1", "modelproxy-2")),
    ),
    Scenario(
        "NATS node: leading accounting's consumer, accounting not on it",
        consumer_leader_away_from(subjects.USAGE_STREAM, ("accounting",)),
    ),
    Scenario("one head", fixed("head-1")),
    Scenario("one model-proxy, mid-stream", fixed("modelproxy-1")),
    Scenario("secrets", fixed("secrets")),
    Scenario("accounting", fixed("accounting")),
    Scenario("one edge (tail)", fixed("tail")),
]


async def run_scenario(
    platform: Platform, scenario: Scenario, tag: str, timing: Timing = SUITE
) -> Result:
    key, key_id = await platform.new_key(f"failover-{tag}")
    first_seq = await platform.usage_seq()
    killed = ""
    started = time.monotonic()
    back = 0.0

    async def kill_and_restart() -> None:
        nonlocal killed, back
        await asyncio.sleep(timing.kill_at_s)
        killed = await scenario.target(platform)
        if not killed:
            return
        await platform.kill(killed)
        await asyncio.sleep(timing.down_for_s)
        await platform.restart(killed)
        back = time.monotonic() - started

    outcomes = await load(
        platform.edges,
        key,
        tag,
        model=platform.model,
        duration=timing.duration_s,
        during=kill_and_restart,
        after=timing.after_s,
    )
    result = Result(scenario.name, killed, outcomes)
    result.back_s, result.loaded_s = back, time.monotonic() - started
    began = time.monotonic()
    result.tally(await platform.billing(key_id, first_seq))
    result.settled_s = time.monotonic() - began
    return result


async def _measured_baseline(platform: LocalPlatform, scenario: Scenario, tag: str) -> Result:
    """The baseline, printing each NATS node's CPU per request under load (for sizing): its
    CPU during the run less what it uses idle, per request sent."""
    nodes = [f"nats-{n}" for n in (1, 2, 3)]
    idle = {n: platform.cpu_seconds(n) for n in nodes}
    await asyncio.sleep(10)
    idle_rate = {n: (platform.cpu_seconds(n) - idle[n]) / 10 for n in nodes}
    before = {n: platform.cpu_seconds(n) for n in nodes}
    began = time.monotonic()
    key, key_id = await platform.new_key(f"failover-{tag}")
    first_seq = await platform.usage_seq()
    outcomes = await load(platform.edges, key, tag, model=platform.model)
    spent = time.monotonic() - began
    per = {
        n: round((platform.cpu_seconds(n) - before[n] - idle_rate[n] * spent) / len(outcomes) * 1e6)
        for n in nodes
    }
    print(
        f"NATS CPU per request under load (us): {per}; idle: "
        f"{ {n: round(r * 100, 1) for n, r in idle_rate.items()} } % of a core",
        file=sys.stderr,
        flush=True,
    )
    result = Result(scenario.name, "", outcomes)
    result.tally(await platform.billing(key_id, first_seq))
    return result


async def main(names: list[str], keep: Path | None = None) -> int:
    """Run the scenarios whose names contain one of ``names`` (all if none); ``keep``: run the
    stack in this directory and leave it (logs) instead of a temporary one."""
    upstream = FakeOpenAI()
    upstream.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="switchyard-failover-") as tmp:
            stack = await failover_stack(keep or Path(tmp), upstream)
            try:
                platform = LocalPlatform(stack)
                for i, scenario in enumerate(SCENARIOS):
                    if names and not any(n in scenario.name for n in names):
                        continue
                    if not scenario.name.startswith("none"):
                        result = await run_scenario(platform, scenario, f"s{i}", TABLE)
                    else:
                        result = await _measured_baseline(platform, scenario, f"s{i}")
                    results.append(result)
                    print(result.row(), file=sys.stderr, flush=True)
                    print(result.detail(), file=sys.stderr, flush=True)
            finally:
                await stack.supervisor.stop()
    finally:
        upstream.stop()
    print(HEADER)
    for result in results:
        print(result.row())
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    kept = Path(args.pop(args.index("--keep") + 1)) if "--keep" in args else None
    sys.exit(asyncio.run(main([a for a in args if a != "--keep"], kept)))
