"""Bus fuzzing: generated headers and bodies on every subject each identity may publish to.

Property-based (Hypothesis) against the session stack, identity by identity:

* CLIENT ``tail``/``gateway`` (passing a key hash, as edges do) and the internal client
  ``app`` (presenting a key) on every ``llm.v1`` subject: every request gets an answer or a
  clear error (a final or error message with ``Sy-Status``) within its budget (``cancel``,
  which nobody answers, must only leave every model-proxy serving);
* CLIENT ``admin`` on ``control.v1.admin.*`` and ``secrets.v1.admin.*``: every request is
  answered with a status; generated key records written into ``sy_keys`` do not stop the
  edges following the bucket;
* CORE ``modelproxy`` on ``llm.v1.usage`` and ``llm.v1.reroute``, and ``head`` on a dispatch
  queue: the consumers (accounting, heads, model-proxies) drop what they cannot read.

Afterwards no process died or was restarted (same pids, ``/health`` answers, the overview
lists every process) and the dispatch queues hold nothing: no generated message is left
pending or unacknowledged. ``SY_FUZZ_EXAMPLES`` sets the cases per subject (default 25).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import nats.js.errors
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.schemas.routing import deployment_id
from tests.conftest import SESSION_ROUTES
from tests.stacks import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

T = TypeVar("T")
EXAMPLES = int(os.environ.get("SY_FUZZ_EXAMPLES", "25"))
ANSWER_WITHIN_S = 12.0
COUNTS: collections.Counter[str] = collections.Counter()

HEADER_NAMES = [
    h.REQUEST_ID, h.ATTEMPT, h.DEADLINE, h.KEY_ID, h.TENANT, h.KEY_HASH, h.BUDGET_PERIOD,
    h.AUTHORIZATION, h.OP, h.ALIAS, h.REPLY, h.DEPLOYMENT, h.PIN, h.TRIED, h.ERRORS,
    h.LAST_STATUS, h.RETRY_AFTER, h.STREAM, h.STATUS, h.KIND, h.SEQ, h.USAGE,
    h.TRACEPARENT, h.TRACESTATE, h.REQUEST_INFO, h.NATS_MSG_ID, "Nats-Expected-Stream",
    h.ACCEPT_BY,
]  # fmt: skip
# Header values NATS can carry (no CR/LF, no control characters).
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"))
VALUES = st.one_of(
    TEXT.map(lambda t: t[:300]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", "0", "1", "-1", "nan", "inf", "1e309", "ff-" + "0" * 50, "a" * 2000]),
    st.just(str(int(time.time() * 1000) + 60_000)),  # a valid deadline
    st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"),  # a valid traceparent
)
HEADERS = st.dictionaries(
    st.one_of(st.sampled_from(HEADER_NAMES), st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z")),
    VALUES,
    max_size=8,
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
MODELS = st.sampled_from([*SESSION_ROUTES, "hang", "no-such-model", ""]) | TEXT
REQUEST_BODIES = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {"model": MODELS},
        optional={
            "messages": st.just([{"role": "user", "content": "fuzz"}]) | JSONISH,
            "prompt": JSONISH,
            "input": JSONISH,
            "stream": st.booleans() | JSONISH,
            "stream_options": JSONISH,
            "max_tokens": JSONISH,
        },
    ).map(lambda d: json.dumps(d).encode()),
    JSONISH.map(lambda d: json.dumps(d).encode()),
)


class Bus:
    """A private event loop (the session loop is idle during a sync test) and connections."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.loop = asyncio.new_event_loop()
        self.conns: dict[str, NATS] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def nc(self, identity: str) -> NATS:
        if identity not in self.conns:
            settings = self.stack.settings
            self.conns[identity] = self.run(
                connect(
                    settings.nats_servers, settings.certs_dir, identity, name=f"fuzz-{identity}"
                )
            )
        return self.conns[identity]

    def close(self) -> None:
        for nc in self.conns.values():
            self.run(nc.close())
        self.loop.close()


@pytest.fixture(scope="module")
def bus(stack: Stack) -> Iterator[Bus]:
    pids = _pids(stack)
    fuzz = Bus(stack)
    try:
        yield fuzz
    finally:
        fuzz.close()
        total = sum(COUNTS.values())
        lines = "\n".join(f"  {name}: {count}" for name, count in sorted(COUNTS.items()))
        print(f"\nBus fuzz cases per interface ({total} in all):\n{lines}")
    assert _pids(stack) == pids, "a process died and was restarted during bus fuzzing"


def _pids(stack: Stack) -> dict[str, int | None]:
    return {p.spec.name: p.pid for phase in stack.supervisor.procs for p in phase}


async def _answers(nc: NATS, subject: str, body: bytes, headers: dict[str, str]) -> list[Msg]:
    """Publish a request and collect its reply messages until a final or error message, the
    terminator, or ``ANSWER_WITHIN_S``."""
    inbox = nc.new_inbox()
    got: list[Msg] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg)
        kind = (msg.headers or {}).get(h.KIND, "")
        status = (msg.headers or {}).get(h.STATUS)
        if (
            (not msg.headers and not msg.data)
            or kind in ("final", "error")
            or (status and not kind)
        ):
            done.set()

    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(subject, body, reply=inbox, headers=headers or None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), ANSWER_WITHIN_S)
    finally:
        await sub.unsubscribe()
    return got


def _clear_answer(got: list[Msg]) -> bool:
    """A final or error message with a status (what every request must end with)."""
    for msg in got:
        hdrs = msg.headers or {}
        if hdrs.get(h.KIND) in ("final", "error") or h.STATUS in hdrs:
            return True
        if hdrs.get("Status") == "503" and not msg.data:  # NATS: no responders
            return True
    return False


def _settings() -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.parametrize("identity", ["tail", "gateway", "app"])
@pytest.mark.parametrize("subject", subjects.LLM_API)
def test_llm_api_answers_every_generated_request(bus: Bus, identity: str, subject: str) -> None:
    key_hash = hashlib.sha256(bus.stack.api_key.encode()).hexdigest()
    bearer = {h.AUTHORIZATION: f"Bearer {bus.stack.api_key}"}
    credential = {h.KEY_HASH: key_hash} if identity != "app" else bearer
    failures: list[str] = []

    @_settings()
    @given(headers=HEADERS, body=REQUEST_BODIES, authenticated=st.booleans())
    def case(headers: dict[str, str], body: bytes, authenticated: bool) -> None:
        COUNTS[f"{identity} -> llm.v1.*"] += 1
        sent = {**headers, **credential} if authenticated else headers
        if subject == subjects.CANCEL:  # answered by nobody, by design: only survival counts
            bus.run(bus.nc(identity).publish(subject, body, headers=sent or None))
            return
        got = bus.run(_answers(bus.nc(identity), subject, body, sent))
        if not _clear_answer(got):
            failures.append(f"{sent!r} {body[:120]!r}: {[m.headers for m in got]}")

    case()
    assert failures == [], "\n".join(failures[:5])


ADMIN_OPS = [
    *(subjects.control_admin(op) for op in ("routes.get", "routes.put", "deployments",
                                            "overview", "history", "cooldowns.clear")),
    *(subjects.secrets_admin(op) for op in ("list", "info", "put", "rotate", "delete")),
]  # fmt: skip


@pytest.mark.parametrize("subject", ADMIN_OPS)
def test_admin_services_answer_every_generated_request(bus: Bus, subject: str) -> None:
    failures: list[str] = []

    @_settings()
    @given(
        headers=HEADERS,
        body=st.binary(max_size=200) | JSONISH.map(lambda d: json.dumps(d).encode()),
    )
    def case(headers: dict[str, str], body: bytes) -> None:
        COUNTS["admin -> control/secrets admin"] += 1
        got = bus.run(_answers(bus.nc("admin"), subject, body, headers))
        if not _clear_answer(got):
            failures.append(f"{headers!r} {body[:120]!r}: {[m.headers for m in got]}")

    case()
    assert failures == [], "\n".join(failures[:5])


def test_generated_key_records_do_not_stop_the_edges(bus: Bus) -> None:
    written: list[str] = []
    admin = bus.nc("admin")

    @_settings()
    @given(value=st.binary(max_size=200) | JSONISH.map(lambda d: json.dumps(d).encode()))
    def case(value: bytes) -> None:
        COUNTS["admin -> $KV.sy_keys"] += 1
        name = f"k.fuzz{len(written)}"
        written.append(name)
        bus.run(bus.nc("admin").publish(f"$KV.{subjects.KEYS_BUCKET}.{name}", value))

    case()

    async def check() -> tuple[int, int]:
        nc = admin
        await nc.flush()
        kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
        for name in written:
            await kv.purge(name)
        await asyncio.sleep(0.5)
        new_key, _ = await bus.stack.new_key("after-fuzz")  # the edges still follow the bucket
        auth = {"Authorization": f"Bearer {new_key}"}
        codes = []
        async with httpx.AsyncClient(timeout=10) as http:
            for edge in (bus.stack.tail_url, bus.stack.gateway_url):
                # Asked until it knows the key: an edge still reading the fuzzed entries (on a
                # loaded machine) learns it later than a fixed wait; one that stopped following
                # the bucket never does. (Every 0.5 s: each 401 counts against this address.)
                deadline = time.monotonic() + 10
                while (got := await http.get(f"{edge}/v1/models", headers=auth)).status_code == 401:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                codes.append(got.status_code)
        return codes[0], codes[1]

    assert bus.run(check()) == (200, 200)


@pytest.mark.parametrize("target", ["usage", "reroute", "dispatch"])
def test_core_consumers_drop_what_they_cannot_read(bus: Bus, target: str) -> None:
    deployment = deployment_id("fake", "echo")
    queue = subjects.dispatch(deployment)
    inbox = "_INBOX_head.fuzz"
    # Connected before the loop runs (a connection is made on the private loop).
    proxy, head, provisioner = bus.nc("modelproxy"), bus.nc("head"), bus.nc("provisioner")

    @_settings()
    @given(headers=HEADERS, body=REQUEST_BODIES)
    def case(headers: dict[str, str], body: bytes) -> None:
        COUNTS[f"CORE -> {target}"] += 1

        async def send() -> None:
            if target == "usage":
                await proxy.jetstream().publish(subjects.USAGE, body, headers=headers)
            elif target == "reroute":
                with_reply = {**headers, h.REPLY: inbox}
                # A head confirms receipt (or drops what it cannot read): survival is the property.
                await proxy.publish(subjects.REROUTE, body, reply=inbox, headers=with_reply)
            else:
                await head.jetstream().publish(queue, body, headers=headers)

        with contextlib.suppress(nats.js.errors.APIError):  # JetStream refused it: fine
            bus.run(send())

    case()

    async def queues_empty() -> list[tuple[str, int, int]]:
        js = provisioner.jetstream()
        left: list[tuple[str, int, int]] = []
        for _ in range(40):  # generated requests with valid headers are served; give them time
            left = []
            for info in await js.consumers_info(subjects.DISPATCH_STREAM):
                pending = info.num_pending or 0
                if pending or info.num_ack_pending:
                    left.append((info.name, pending, info.num_ack_pending or 0))
            if not left:
                return []
            await asyncio.sleep(0.5)
        return left

    assert bus.run(queues_empty()) == []


def test_every_process_still_serves(bus: Bus) -> None:
    """Runs last in this module: every process answers /health and the overview lists it."""

    async def check() -> tuple[list[str], dict[str, int]]:
        async with httpx.AsyncClient(timeout=10) as http:
            bad = []
            for phase in bus.stack.supervisor.procs:
                for proc in phase:
                    url = proc.spec.health_url or ""
                    if proc.spec.kind == "component" and url.startswith("http"):
                        got = await http.get(url.replace("/ready", "/health"))
                        if got.status_code != 200:
                            bad.append(proc.spec.name)
            overview = (await bus.stack.admin("GET", "/overview")).json()
        components = collections.Counter(p["component"] for p in overview["processes"])
        return bad, dict(components)

    bad, components = bus.run(check())
    assert bad == []
    assert components["head"] == bus.stack.settings.stack.heads
    assert components["modelproxy"] == bus.stack.settings.stack.modelproxies
    assert {"tail", "gateway", "secrets", "control", "accounting"} <= set(components)
