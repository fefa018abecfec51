"""A full local Switchyard stack for the benchmark, driven only through the public CLI.

We generate a settings file (temp home, free ports, providers pointing at the nginx upstream) and
run ``switchyard up --detach`` / ``status --json`` / ``down`` as a user would, so the benchmark
measures exactly what ``switchyard up`` runs. ``SWITCHYARD_*`` variables are removed from the
children's environment: the generated file alone decides the settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.upstream import MODEL, PacedUpstream, Upstream
from switchyard.stack.ports import listen_port

# A key whose every limit is far above what a benchmark can reach: each request runs the limits
# (one Valkey Lua admission script, a batched settle) but none is refused.
LIMITED_KEY_ARGS = (
    "--rpm",
    "100000000",
    "--tpm",
    "1000000000000",
    "--max-parallel",
    "1000000",
    "--budget",
    "1000000000",
)

# Client-facing route alias -> nginx path prefix (see bench.upstream).
ROUTES = {"fast": "fast", "sse": "sse", "delay50": "delay50", "delay500": "delay500"}
# Route alias -> bench.paced path prefix: streams paced like a model, a slow JSON answer.
PACED_ROUTES = {"pace20": "pace/100x20", "pace100": "pace/20x100", "slow500": "delay/500"}
# The paced deployments hold 1,000 concurrent streams: more slots per model-proxy than the
# default 128, and room in the dispatch queue for them (queued plus in flight).
PACED_CONCURRENCY = 2048
MAX_WORKERS_PER_DEPLOYMENT = 1024
DISPATCH_QUEUE_LIMIT = 4096


class StackStartError(RuntimeError):
    """``switchyard up`` failed; the message includes where to read the logs."""


@dataclass(frozen=True)
class StackProcess:
    """One process of the stack, as reported by ``switchyard status --json``."""

    name: str
    pid: int


@dataclass
class BenchStack:
    """A generated config and the stack started from it."""

    config_file: Path
    home: Path
    tail_port: int
    gateway_port: int
    nats_monitor_port: int = 0
    started: bool = False

    @property
    def tail_url(self) -> str:
        return f"http://127.0.0.1:{self.tail_port}/v1/chat/completions"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        return subprocess.run(
            [sys.executable, "-m", "switchyard", *args, "--config", str(self.config_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        """Start the stack and wait until every process is healthy."""
        self.started = True  # even a failed start may leave processes for ``down`` to stop
        result = self._cli("up", "--detach", timeout=300)
        if result.returncode != 0:
            raise StackStartError(
                f"`switchyard up` failed (exit {result.returncode}):\n{result.stderr.strip()}\n"
                f"logs: {self.logs}/"
            )

    def down(self) -> None:
        """Stop the stack; safe to call more than once."""
        if not self.started:
            return
        result = self._cli("down", timeout=120)
        if result.returncode != 0:
            print(f"bench: warning: `switchyard down` failed: {result.stderr.strip()}", flush=True)
        self.started = False

    def status(self) -> dict[str, Any]:
        result = self._cli("status", "--json", timeout=60)
        try:
            doc: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise StackStartError(
                f"`switchyard status --json` printed no JSON: {result.stderr}"
            ) from exc
        return doc

    def processes(self) -> tuple[list[StackProcess], int | None]:
        """Every process with a pid, and the supervisor's pid."""
        doc = self.status()
        procs = [
            StackProcess(name=str(p["name"]), pid=int(p["pid"]))
            for p in doc.get("processes", [])
            if isinstance(p.get("pid"), int)
        ]
        supervisor = doc.get("supervisor_pid")
        return procs, supervisor if isinstance(supervisor, int) else None

    def api_key(self) -> str:
        """A client key for every model and without limits, made once per home (the demo key
        is for the `demo` model only)."""
        path = self.home / "bench-key"
        if not path.is_file():
            path.write_text(self._create_key("bench", "--models", "*"), encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def create_limited_key(self, name: str = "bench-limited") -> str:
        """A client key with every limit set (see ``LIMITED_KEY_ARGS``), via the CLI."""
        return self._create_key(name, *LIMITED_KEY_ARGS)

    def _create_key(self, name: str, *options: str) -> str:
        result = self._cli("keys", "create", name, *options, "--json", timeout=60)
        try:
            return str(json.loads(result.stdout)["key"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise StackStartError(
                f"`switchyard keys create` failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            ) from exc

    def wait_for_key(self, api_key: str, body: str, timeout_s: float = 15.0) -> None:
        """Until the tail accepts ``api_key`` (keys reach every ingress through NATS KV)."""
        deadline = time.monotonic() + timeout_s
        while True:
            request = urllib.request.Request(  # noqa: S310  (our own http://127.0.0.1 URL)
                self.tail_url,
                data=body.encode(),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                    resp.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise StackStartError(f"the tail does not accept the new key: {exc}") from exc
            time.sleep(0.2)


def write_stack_config(
    workdir: Path,
    ports: set[int],
    upstream: Upstream,
    *,
    heads: int,
    modelproxies: int,
    paced: PacedUpstream | None = None,
    trace_sample: float | None = None,
) -> BenchStack:
    """Write ``switchyard.yaml`` for a stack on free ports whose routes lead to nginx (and to
    the paced upstream, when given)."""
    home = workdir / "home"
    tail_port, gateway_port = listen_port(avoid=ports), listen_port(avoid=ports)
    bases = {alias: (upstream.base(path), 256) for alias, path in ROUTES.items()}
    if paced is not None:
        bases |= {a: (paced.base(p), PACED_CONCURRENCY) for a, p in PACED_ROUTES.items()}
    providers = {
        f"bench-{alias}": {
            "kind": "openai-compatible",
            "api_base": base,
            "concurrency": concurrency,
        }
        for alias, (base, concurrency) in bases.items()
    }
    routes = {
        alias: {"deployments": [{"provider": f"bench-{alias}", "model": MODEL}]} for alias in bases
    }
    monitor_port = listen_port(avoid=ports)
    doc: dict[str, Any] = {
        "home": str(home),
        "stack": {
            "nats_port": listen_port(avoid=ports),
            "nats_monitor_port": monitor_port,
            "openbao_port": listen_port(span=2, avoid=ports),
            "valkey_port": listen_port(avoid=ports),
            "heads": heads,
            "modelproxies": modelproxies,
        },
        "ingress": {
            "tail": {"host": "127.0.0.1", "port": tail_port},
            "gateway": {"host": "127.0.0.1", "port": gateway_port},
        },
        "modelproxy": {"max_workers_per_deployment": MAX_WORKERS_PER_DEPLOYMENT},
        "streams": {"dispatch_queue_limit": DISPATCH_QUEUE_LIMIT},
        "logging": {"level": "warning"},
        "demo_model": True,  # the stack then issues a client key into <home>/demo-key
        "providers": providers,
        "routes": routes,
    }
    if trace_sample is not None:  # spans exported to nginx, which discards them
        doc["telemetry"] = {"otlp_endpoint": upstream.otlp, "sample_ratio": trace_sample}
    config_file = workdir / "switchyard.yaml"
    config_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return BenchStack(
        config_file=config_file,
        home=home,
        tail_port=tail_port,
        gateway_port=gateway_port,
        nats_monitor_port=monitor_port,
    )
