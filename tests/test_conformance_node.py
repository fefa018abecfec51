"""The NATS API contract, driven by a client that is not ours: nats.js under Node.

``docs/nats-api.md`` is written for callers in any language; ``switchyard.client.LLMClient``
hides the protocol (it always sets ``Sy-Request-Id``, for one), so Python tests alone cannot
show that the document is what is served. ``tests/conformance/node/conformance.test.mjs`` drives
it with the npm ``nats`` package over TLS as an internal-client identity: chat, stream, the
other subjects, every documented error, every optional header left out.

Needs Node.js >= 18 and npm; the npm package is installed into ``tests/conformance/node`` with
``npm ci`` (from the committed lock file) when missing or stale. Without Node the test is skipped
locally and fails under CI (``CI`` set), so the contract is always checked there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).parent / "conformance" / "node"
SCRIPT = "conformance.test.mjs"
HOLD_LIMIT = 2  # requests one tenant may have waiting for a saturated deployment
MISSING_SECRET = "conformance-missing-key"
ALIASES = {
    "echo": "echo",
    "slow": "slow:2500",
    "reject400": "status:400",
    "limited429": "status:429",
    "fail500": "status:500",
}


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "the NATS conformance test needs Node.js >= 18 and npm on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node, npm


async def _run(*argv: str, env: dict[str, str] | None = None, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(killed after {timeout:.0f}s)"
    return proc.returncode or 0, out.decode(errors="replace")


async def _install(npm: str) -> None:
    """``npm ci`` from the lock file, only when ``node_modules`` does not match it."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    code, out = await _run(npm, "ci", "--no-audit", "--no-fund", timeout=300)
    assert code == 0, f"npm ci in {NODE_DIR} failed:\n{out}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def conformance_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    routes = {
        alias: {"deployments": [{"provider": "fake", "model": model}]}
        for alias, model in ALIASES.items()
    }
    routes["narrow"] = {"deployments": [{"provider": "fake-narrow", "model": "slow:1500"}]}
    routes["nokey"] = {"deployments": [{"provider": "fake-locked", "model": "echo"}]}
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url}
    extra = {
        "providers": {
            "fake": {**fake, "concurrency": 16},
            "fake-narrow": {**fake, "concurrency": 1},
            "fake-locked": {**fake, "secret": MISSING_SECRET},
        },
        "routes": routes,
        "streams": {"hold_tenant_limit": HOLD_LIMIT},
        "modelproxy": {"keepalive_s": 1},
        "stack": {"heads": 1, "modelproxies": 1},
    }
    stack = await start_stack(tmp_path_factory.mktemp("conformance"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@pytest.mark.slow
async def test_nodejs_client_follows_the_documented_protocol(conformance_stack: Stack) -> None:
    node, npm = _tools()
    await _install(npm)
    stack = conformance_stack
    restricted, _ = await stack.new_key("conformance-restricted", models=("other-model",))
    config = {
        "servers": list(stack.settings.nats_servers),
        "certDir": str(stack.settings.certs_dir),
        "identity": "app",
        "apiKey": stack.api_key,
        "restrictedKey": restricted,
        "aliases": {**{name: name for name in ALIASES}, "narrow": "narrow", "noKey": "nokey"},
        "maxBodyBytes": stack.settings.ingress.max_body_bytes,
        "holdLimit": HOLD_LIMIT,
        "missingSecret": MISSING_SECRET,
    }
    code, out = await _conformance(node, {**config, "phase": "main"})
    assert code == 0, f"nats.js conformance run failed:\n{out}"
    # Last, as it breaks the stack: what a caller sees when no head is running.
    await stack.process("head").stop(10)
    code, out = await _conformance(node, {**config, "phase": "no-head"})
    assert code == 0, f"nats.js conformance run (no head) failed:\n{out}"


async def _conformance(node: str, config: dict[str, object]) -> tuple[int, str]:
    env = {**os.environ, "CONFORMANCE_STACK": json.dumps(config)}
    code, out = await _run(node, "--test", "--test-reporter=spec", SCRIPT, env=env, timeout=100)
    if code == 0 and not re.search(r"^\S+ pass [1-9]", out, re.MULTILINE):
        return 1, f"no case ran:\n{out}"
    return code, out
