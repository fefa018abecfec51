"""Routing cost: CPU of the head's per-request decision, measured in process.

``decide.choose`` runs once per attempt in a head. We time it on a realistic table (20 aliases,
2-4 weighted deployments each, fallback chains, a few deployments cooling down, one alias whose
every deployment cools so it falls back) with a fixed ``Cooldowns`` (what the KV-fed book
extends), using ``time.process_time_ns`` (CPU, not wall time), best of 5. Building
``Router(table)`` happens only when the route table changes; it is reported separately.

``python -m bench.routing`` prints ns per call; ``python -m bench`` also relates it to the
pipeline's CPU per request of ``nonstream_c64``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from switchyard.bus.envelope import Deadline, Envelope
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.schemas.health import Cooldown
from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable
from switchyard.workers.head import decide
from switchyard.workers.head.router import Router

ALIASES = 20
PROVIDERS = 6
CALLS = 200_000
REPEATS = 5
BUILDS = 2_000
TARGET_SHARE_PCT = 5.0
RETRY_EVERY = 10  # one call in ten is a reroute (one deployment already tried)


def build_table() -> RouteTable:
    """20 aliases with 2-4 weighted deployments over 6 providers, fallback chains of <= 4."""
    providers = {
        f"prov-{p}": Provider(kind="openai-compatible", api_base=f"http://up-{p}.test/v1")
        for p in range(PROVIDERS)
    }
    routes = {}
    for a in range(ALIASES):
        deployments = tuple(
            Deployment(
                provider=f"prov-{(a + d) % PROVIDERS}", model=f"model-{a}-{d}", weight=1.0 + d
            )
            for d in range(2 + a % 3)
        )
        # Families of 4 (big -> medium -> small -> tiny): each falls back to the next ones.
        tier = a % 4
        fallbacks = tuple(f"alias-{a + k}" for k in range(1, min(3, 4 - tier)))
        routes[f"alias-{a}"] = Route(deployments=deployments, fallbacks=fallbacks)
    return RouteTable(providers=providers, routes=routes)


def build_cooldowns(table: RouteTable) -> Cooldowns:
    """The first deployment of every 4th alias cools down; all of alias-4's do (it falls back)."""
    until = time.time() + 3600
    cooling = {
        r.deployments[0].id: until for i, r in enumerate(table.routes.values()) if i % 4 == 0
    }
    cooling |= {d.id: until for d in table.routes["alias-4"].deployments}
    return Cooldowns({d: Cooldown(deployment=d, until=u, status=429) for d, u in cooling.items()})


def _requests(table: RouteTable) -> list[Envelope]:
    """Aliases round robin, with envelopes like a head's; every 10th is a reroute."""
    out = []
    aliases = sorted(table.routes)
    for i in range(len(aliases) * RETRY_EVERY):
        alias = aliases[i % len(aliases)]
        env = Envelope(
            request_id=f"req-{i}",
            deadline=Deadline(1999999999999),
            op="chat",
            alias=alias,
            reply=f"_INBOX.x.{i}",
        )
        if i % RETRY_EVERY == RETRY_EVERY - 1:
            env = env.with_(tried=(table.routes[alias].deployments[-1].id,))
        out.append(env)
    return out


@dataclass(frozen=True)
class RoutingResult:
    ns_per_call: float  # best of REPEATS
    router_build_us: float
    calls: int
    deployments: int
    cooling: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ns_per_call": self.ns_per_call,
            "router_build_us": self.router_build_us,
            "calls": self.calls,
            "repeats": REPEATS,
            "aliases": ALIASES,
            "deployments": self.deployments,
            "cooling": self.cooling,
        }


def measure(calls: int = CALLS) -> RoutingResult:
    table = build_table()
    book = build_cooldowns(table)
    router = Router(table)
    requests = _requests(table)
    choose, n = decide.choose, len(requests)
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.process_time_ns()
        for i in range(calls):
            choose(router, book, requests[i % n], pinned=None)
        best = min(best, (time.process_time_ns() - t0) / calls)
    t0 = time.process_time_ns()
    for _ in range(BUILDS):
        Router(table)
    build_us = (time.process_time_ns() - t0) / BUILDS / 1000
    return RoutingResult(best, build_us, calls, len(table.deployments()), len(book.active()))


def main() -> None:
    r = measure()
    print(
        f"routing: decide.choose {r.ns_per_call:.0f} ns/call (CPU, best of {REPEATS} x "
        f"{r.calls} calls; {ALIASES} aliases, {r.deployments} deployments, {r.cooling} cooling); "
        f"Router(table) {r.router_build_us:.1f} us per build (only on route changes)"
    )


if __name__ == "__main__":
    main()
