"""Start a whole Switchyard stack for tests: servers plus components, as real processes.

The same supervisor, configs and ``switchyard serve`` processes that ``switchyard up`` runs, on
free loopback ports under a temporary home, with extra settings per test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from nats.js.errors import NoKeysError, ObjectNotFoundError
from prometheus_client.parser import text_string_to_metric_families

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.schemas.events import UsageEvent
from switchyard.stack import local
from switchyard.stack.home import StackHome
from switchyard.stack.process import ManagedProcess, http_check
from switchyard.stack.supervisor import Supervisor
from tests.support import free_port, merged, ports_in, usage_of, write_settings


@dataclass
class Stack:
    settings: Settings
    config_file: Path
    home: StackHome
    supervisor: Supervisor
    api_key: str

    @property
    def tail_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingress.tail.port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingress.gateway.port}"

    def admin_headers(self) -> dict[str, str]:
        """The gateway management API's credential (the token ``up`` wrote)."""
        token = self.settings.admin_token_file.read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}"}

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """One ``switchyard`` CLI command against this stack (its settings file)."""
        return subprocess.run(
            [sys.executable, "-m", "switchyard", "--config", str(self.config_file), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def listed_keys(
        self, query: str, settled: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        """``GET /admin/v1/keys?<query>`` once ``settled`` holds for its keys: the list comes
        from the gateway's index, which follows the bucket a moment behind a write."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            listed = await self.admin("GET", f"/keys?{query}")
            assert listed.status_code == 200, listed.text
            keys: list[dict[str, Any]] = listed.json()["keys"]
            if settled(keys) or asyncio.get_running_loop().time() > deadline:
                return keys
            await asyncio.sleep(0.1)

    async def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One call to the gateway's ``/admin/v1`` API."""
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.request(
                method,
                f"{self.gateway_url}/admin/v1{path}",
                json=body,
                headers=self.admin_headers(),
            )

    @contextlib.asynccontextmanager
    async def live_routes(
        self,
        routes: dict[str, Any],
        providers: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> AsyncIterator[None]:
        """``secrets``, ``providers`` and ``routes`` put in the live table through the admin
        API (each put must succeed), and removed again on the way out."""
        try:
            for name, value in (secrets or {}).items():
                put = await self.admin("PUT", f"/secrets/{name}", {"value": value})
                assert put.status_code in (200, 201), put.text
            for name, provider in (providers or {}).items():
                put = await self.admin("PUT", f"/providers/{name}", provider)
                assert put.status_code == 200, put.text
            for alias, route in routes.items():
                put = await self.admin("PUT", f"/routes/{alias}", route)
                assert put.status_code == 200, put.text
            yield
        finally:
            for alias in routes:
                await self.admin("DELETE", f"/routes/{alias}")
            for name in providers or {}:
                await self.admin("DELETE", f"/providers/{name}")
            for name in secrets or {}:
                await self.admin("DELETE", f"/secrets/{name}?force=true")

    def process(self, name: str) -> ManagedProcess:
        for phase in self.supervisor.procs:
            for proc in phase:
                if proc.spec.name == name:
                    return proc
        raise KeyError(name)

    async def modelproxy_samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of every model-proxy's ``/metrics``: (name, labels, value)."""
        return await self.samples("modelproxy")

    async def samples(self, prefix: str) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of the ``/metrics`` of every process named ``prefix``...: (name,
        labels, value)."""
        out: list[tuple[str, dict[str, str], float]] = []
        async with httpx.AsyncClient(timeout=10) as http:
            for phase in self.supervisor.procs:
                for proc in phase:
                    url = proc.spec.health_url or ""
                    if not proc.spec.name.startswith(prefix) or not url.startswith("http"):
                        continue
                    text = (await http.get(url.rsplit("/", 1)[0] + "/metrics")).text
                    out += [
                        (sample.name, dict(sample.labels), sample.value)
                        for family in text_string_to_metric_families(text)
                        for sample in family.samples
                    ]
        return out

    async def modelproxy_total(self, name: str, **labels: str) -> float:
        """The sum of sample ``name`` with ``labels`` over every model-proxy."""
        return sum(
            value
            for sample, found, value in await self.modelproxy_samples()
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        )

    def kill(self, name: str) -> int:
        proc = self.process(name)
        pid = proc.pid
        assert pid is not None
        proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        return pid

    async def connect(self, identity: str, **kwargs: Any) -> NATS:
        return await connect(
            self.settings.nats_servers, self.settings.certs_dir, identity, **kwargs
        )

    async def usage_of(self, request_id: str) -> UsageEvent | None:
        """:func:`tests.support.usage_of`, read as the provisioner."""
        nc = await self.connect("provisioner")
        try:
            return await usage_of(nc, request_id)
        finally:
            await nc.close()

    async def new_key(self, name: str = "test", **fields: Any) -> tuple[str, Any]:
        nc = await self.connect("admin")
        try:
            return await KeyAdmin(nc.jetstream(timeout=10)).create(name, **fields)
        finally:
            await nc.close()

    async def bucket_traces(self, keys: list[str]) -> list[str]:
        """The ``keys`` of ``sy_batches`` that still have an entry, a delete marker included."""
        nc = await self.connect("batch")
        try:
            kv = await nc.jetstream().key_value(subjects.BATCHES_BUCKET)
            kept = []
            for key in keys:
                with contextlib.suppress(NoKeysError):
                    if await kv.history(key):
                        kept.append(key)
            return kept
        finally:
            await nc.close()

    async def object_traces(self, file_ids: list[str]) -> list[str]:
        """The Batch API files of ``file_ids`` that the object store still has an entry for
        (even one that only says "deleted")."""
        nc = await self.connect("tail")
        try:
            store = await nc.jetstream().object_store(subjects.FILES_BUCKET)
            kept = []
            for file_id in file_ids:
                with contextlib.suppress(ObjectNotFoundError):
                    await store.get_info(file_id, show_deleted=True)
                    kept.append(file_id)
            return kept
        finally:
            await nc.close()


def batch_config(api_base: str) -> dict[str, Any]:
    """The batch tests' stack: one deployment of concurrency 4 in front of a provider that
    takes 50 ms (``bulk``; ``bulk-slow`` takes 400 ms, for batches a test must catch running),
    a runner that sweeps every second and takes file chunks nobody named for
    ten seconds as a killed writer's, and files of at most 2 MiB."""
    return {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": api_base, "concurrency": 4}
        },
        "routes": {
            "bulk": {"deployments": [{"provider": "fake", "model": "slow:50"}]},
            "bulk-slow": {"deployments": [{"provider": "fake", "model": "slow:400"}]},
        },
        "batch": {"sweep_s": 1, "dead_chunks_after_s": 10, "max_file_bytes": 2 * 1024 * 1024},
        "logging": {"level": "info"},
    }


async def start_stack(
    root: Path,
    extra: dict[str, Any] | None = None,
    components: list[str] | None = None,
    *,
    wait_ready: bool = True,
) -> Stack:
    """Servers, then the named components (default: everything ``up`` runs).

    Args:
        wait_ready: wait for ``/ready`` (a head answers); False waits for liveness only, for
            stacks deliberately started without heads.
    """
    taken = ports_in(extra)
    doc: dict[str, Any] = {
        "ingress": {
            "tail": {"host": "127.0.0.1", "port": free_port(taken)},
            "gateway": {"host": "127.0.0.1", "port": free_port(taken)},
        },
        "nats": {"internal_clients": ["app"]},
    }
    settings, path = write_settings(root, merged(doc, extra))
    local.prepare_home(settings)
    home = StackHome(settings.home_dir)
    home.ensure()
    specs = local.component_specs(settings)
    if components is not None:
        specs = [s for s in specs if s.component in components]
    env = local.child_env(settings, path, {})
    steps = local.components(settings, env, specs)
    if not wait_ready:
        for step in steps:
            url = (step.spec.health_url or "").replace("/ready", "/health")
            step.spec.health = http_check(url)
    supervisor = local.stack_supervisor(settings, home, steps)
    await supervisor.start()
    stack = Stack(settings, path, home, supervisor, api_key="")
    stack.api_key, _ = await stack.new_key("session")
    return stack
