"""Session fixtures: a fake provider over HTTP and one whole Switchyard stack.

The stack runs real nats-server, OpenBao and Valkey on free loopback ports plus every component
as its own process (the same supervisor and configs ``switchyard up`` uses). At the end of the
session no process that mentions pytest's temporary directory may still be running.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from switchyard.limits.store import connect_redis
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.responses import FakeResponses
from tests.fakes.server import InThread
from tests.stacks import Stack, start_stack
from tests.support import describe_processes, processes_mentioning
from tests.upstream import FakeOpenAI

# Aliases of the session stack, each backed by one fake-provider behaviour (see tests/upstream.py).
CORS_ORIGIN = "https://playground.example"
# The edges' whole-answer cap on the session stack (``ingress.max_answer_bytes``): parts are
# opt-in (default 0), so set here for tests/test_answer_parts.py; small, so answers past it
# (tests/test_large_answers.py) cost little to make.
SESSION_MAX_ANSWER_BYTES = 24 * 2**20
SESSION_ROUTES = {
    "gpt-4o-mini": "echo",
    "paced": "paced:20",
    "slow": "slow:1500",
    "err500": "status:500",
    "err429": "status:429",
    "err400": "status:400",
    "text-embedding-3-small": "echo",
    "queued": "echo:queued",
}


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def claude_fake() -> Iterator[tuple[FakeAnthropic, str]]:
    """A fake Anthropic Messages API over HTTP, and its base URL. It runs on a thread of its
    own: tests that drive a synchronous SDK block their own loop."""
    fake = FakeAnthropic()
    runner = InThread(fake)
    try:
        yield fake, runner.start(fake.start)
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def responses_fake() -> Iterator[tuple[FakeResponses, str]]:
    """A fake OpenAI Responses API over HTTP (on a thread of its own), and its base URL."""
    fake = FakeResponses()
    runner = InThread(fake)
    try:
        yield fake, runner.start(fake.start)
    finally:
        runner.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes: dict[str, Any] = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in SESSION_ROUTES.items()
    }
    routes["hang"] = {
        "deployments": [
            {
                "provider": "fake",
                "model": "hang",
                "timeouts": {"first_token_s": 1, "request_s": 1, "stream_s": 1},
            }
        ]
    }
    routes["nokey"] = {"deployments": [{"provider": "fake-locked", "model": "echo"}]}
    routes["vaulted"] = {"deployments": [{"provider": "fake-vault", "model": "echo:vaulted"}]}
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 32},
            "fake-locked": {
                "kind": "openai-compatible",
                "api_base": upstream.base_url,
                "secret": "missing-secret",
            },
            "fake-vault": {
                "kind": "openai-compatible",
                "api_base": upstream.base_url,
                "secret": "openai-test",
            },
        },
        "routes": routes,
        # Short redelivery so a killed worker's request is picked up quickly in tests.
        "modelproxy": {"ack_wait_s": 4, "keepalive_s": 1, "secret_ttl_s": 3},
        # A browser front end's origin (tests/test_http_clients.py); requests without an
        # Origin header, every other test's, are answered as without the setting.
        "ingress": {"cors_origins": [CORS_ORIGIN], "max_answer_bytes": SESSION_MAX_ANSWER_BYTES},
    }
    stack = await start_stack(tmp_path_factory.mktemp("stack"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def signed_in(
    stack: Stack, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A web app session on the session stack, signed in with the admin token, and its CSRF
    token: what a browser's forms send. The sign-in name (the audit log's actor) is the test
    module's, so an entry says which tests made it."""
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    actor = request.module.__name__.rpartition(".")[2]
    origin = {"Origin": stack.gateway_url}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=origin) as web:
        signin = await web.post("/ui/signin", data={"name": actor, "token": token})
        assert signin.status_code == 303, signin.text
        found = re.search(r'name="csrf" value="([^"]+)"', (await web.get("/ui/keys/new")).text)
        assert found is not None
        yield web, found.group(1)


@pytest_asyncio.fixture
async def counters(stack: Stack) -> AsyncIterator[Redis]:
    """Write access to the session stack's Valkey as the ops role, for tests that write spend
    counters as accounting would (each test removes what it wrote)."""
    redis = connect_redis(stack.settings, "ops")
    try:
        yield redis
    finally:
        await redis.aclose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any server or component outlived its test."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = str(factory.getbasetemp())
    leaked = processes_mentioning(base)
    if leaked:
        print(f"\nleaked processes mentioning {base}:", *describe_processes(leaked), sep="\n  ")
        session.exitstatus = 1
