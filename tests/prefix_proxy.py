"""A gateway served under a path prefix (``ingress.gateway.root_path``) behind a real nginx.

:func:`prefixed_gateway` runs a gateway of a test stack in this process (as ``switchyard
serve gateway`` does: the edge, the admin API and web app) with ``ingress.gateway.root_path`` set;
:func:`nginx_in_front` puts nginx before it on two ports under the prefix: one strips it
(``proxy_pass http://gw/;``, the snippet docs/admin-ui.md gives), one keeps it
(``proxy_pass http://gw;``). Tests skip where nginx is not installed (``apt-get install
nginx``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from switchyard.admin.plugin import AdminPlugin
from switchyard.ingress.server import run_edge
from tests.stacks import Stack
from tests.support import free_port

PREFIX = "/sy"

_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{strip};
    location {prefix}/ {{
      proxy_pass http://127.0.0.1:{gateway}/;
{common}
    }}
  }}
  server {{
    listen 127.0.0.1:{keep};
    location {prefix}/ {{
      proxy_pass http://127.0.0.1:{gateway};
{common}
    }}
  }}
}}
"""
_COMMON = """      proxy_http_version 1.1;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;"""


@dataclass(frozen=True)
class Fronted:
    """nginx's two front doors: ``strip`` and ``keep`` (``http://127.0.0.1:port``), both
    serving the gateway under :data:`PREFIX`; ``gateway``: the gateway's own URL."""

    strip: str
    keep: str
    gateway: str


async def _until_up(url: str, failed: asyncio.Future[Any] | None = None) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            assert failed is None or not failed.done(), f"{url}: ended while starting"
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{url} never answered"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def prefixed_gateway(stack: Stack, prefix: str = PREFIX) -> AsyncIterator[str]:
    """A gateway of ``stack`` with ``ingress.gateway.root_path`` = ``prefix``, run here; its
    URL."""
    ingress = stack.settings.ingress
    port = free_port()
    gateway = msgspec.structs.replace(
        ingress.gateway, host="127.0.0.1", port=port, root_path=prefix
    )
    settings = msgspec.structs.replace(
        stack.settings, ingress=msgspec.structs.replace(ingress, gateway=gateway)
    )
    stop = asyncio.Event()
    plugin = AdminPlugin(settings)
    task = asyncio.ensure_future(
        run_edge(settings, "gateway", stop, plugins=[plugin], instance="gateway-prefixed")
    )
    try:
        await _until_up(f"http://127.0.0.1:{port}/health", task)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _nginx() -> str | None:
    found = shutil.which("nginx")
    return found or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)


def _write_conf(workdir: Path, prefix: str, strip: int, keep: int, gateway: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)  # nginx's workers may run as another user (root starts them so)
    conf = workdir / "nginx.conf"
    text = _CONF.format(
        dir=workdir, prefix=prefix, strip=strip, keep=keep, gateway=gateway, common=_COMMON
    )
    conf.write_text(text, encoding="utf-8")
    return conf


@contextlib.asynccontextmanager
async def nginx_in_front(
    gateway: str, workdir: Path, prefix: str = PREFIX
) -> AsyncIterator[Fronted]:
    """nginx before ``gateway`` under ``prefix``: one port stripping it, one keeping it."""
    nginx = _nginx()
    if nginx is None:
        pytest.skip("no nginx (apt-get install nginx)")
    taken: set[int] = set()
    strip = free_port(taken)
    taken.add(strip)
    keep = free_port(taken)
    conf = _write_conf(workdir, prefix, strip, keep, int(gateway.rsplit(":", 1)[1]))
    proc = await asyncio.create_subprocess_exec(
        nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")
    )
    try:
        fronted = Fronted(f"http://127.0.0.1:{strip}", f"http://127.0.0.1:{keep}", gateway)
        exited = asyncio.ensure_future(proc.wait())
        try:
            await _until_up(f"{fronted.strip}{prefix}/health", exited)
            await _until_up(f"{fronted.keep}{prefix}/health", exited)
        finally:
            exited.cancel()
        yield fronted
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
