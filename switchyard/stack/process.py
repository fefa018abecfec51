"""Child processes of the local stack: spawn, health-check, stop, and never leave orphans.

Children run in their own session (a terminal's Ctrl-C reaches only the supervisor, which stops
them in reverse dependency order) and ask the kernel to SIGTERM them if the supervisor dies
(``PR_SET_PDEATHSIG``), so even a SIGKILLed supervisor leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from switchyard.config import inherited_environment

log = logging.getLogger("switchyard.stack")

HealthCheck = Callable[[], Awaitable[bool]]
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: fall back to the supervisor's own cleanup
        return
    if os.getppid() != parent:  # the supervisor died before the request: nobody would signal
        os._exit(1)


@dataclass(slots=True)
class ProcessSpec:
    """How to run and check one process.

    Attributes:
        name: unique name (``nats-server``, ``head-1``...), also its log file name.
        argv: the command.
        health: returns True when the process serves.
        kind: ``server`` (infrastructure) or ``component`` (a Switchyard service).
        endpoint: what to show users (a URL), if any.
        health_url: the URL behind ``health``, recorded for ``switchyard status``.
        env: extra environment variables.
        restart: restart it if it exits while the stack runs.
    """

    name: str
    argv: list[str]
    health: HealthCheck
    kind: str = "component"
    endpoint: str | None = None
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True


class ManagedProcess:
    """One running child and its log file."""

    def __init__(self, spec: ProcessSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0  # monotonic, of the last start: how long it has run since

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        env = {**inherited_environment(), **self.spec.env}
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        self.started_at = time.monotonic()
        log.debug("started %s pid %s", self.spec.name, self.proc.pid)

    async def wait_healthy(self, timeout: float, check: HealthCheck | None = None) -> bool:
        """Poll ``check`` (default: the spec's health check) until it passes, the process
        exits, or ``timeout`` passes."""
        check = check or self.spec.health
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if not self.running:
                return False
            if await check():
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        return False

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Idempotent."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs; killing it", self.spec.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def tail_log(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def http_status(
    url: str, ssl_context: ssl.SSLContext | None = None, timeout: float = 2.0
) -> int:
    """GET ``url`` and return the status code (0 when unreachable). Small and dependency-free."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context if parts.scheme == "https" else None
            )
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        return 0
    fields = status_line.split()
    return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0


def http_check(url: str, ssl_context: ssl.SSLContext | None = None) -> HealthCheck:
    async def check() -> bool:
        return await http_status(url, ssl_context) == 200

    return check


def redis_ping_check(host: str, port: int) -> HealthCheck:
    """Alive if the server answers PING, with PONG or with an authentication demand."""

    async def check() -> bool:
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        return line.startswith((b"+PONG", b"-NOAUTH"))

    return check


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
