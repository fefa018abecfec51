"""Session fixtures: real nats-server, OpenBao and Valkey on free loopback ports.

The servers are started by the same supervisor and configs ``switchyard up`` uses, once per
session, under pytest's temporary directory; at the end of the session no process that mentions
that directory may be left running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from switchyard.config import Settings
from switchyard.stack.home import StackHome
from switchyard.stack.local import ensure_certificates, infrastructure
from switchyard.stack.supervisor import Supervisor
from tests.support import processes_mentioning, write_settings


@dataclass
class Infra:
    settings: Settings
    config_file: Path
    home: StackHome
    supervisor: Supervisor


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Infra]:
    """nats-server (zones, provisioned), OpenBao (initialised) and Valkey (ACL users)."""
    root = tmp_path_factory.mktemp("stack")
    settings, path = write_settings(root, {"nats": {"internal_clients": ["app"]}})
    ensure_certificates(settings)
    home = StackHome(settings.home_dir)
    home.ensure()
    supervisor = Supervisor(
        [infrastructure(settings, home)],
        log_dir=home.logs,
        state_file=home.state_file,
        start_timeout=settings.stack.start_timeout_s,
        stop_timeout=settings.stack.stop_timeout_s,
    )
    await supervisor.start()
    try:
        yield Infra(settings, path, home, supervisor)
    finally:
        await supervisor.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any server or component outlived its test."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = str(factory.getbasetemp())
    leaked = processes_mentioning(base)
    if leaked:
        print(f"\nleaked processes mentioning {base}: {leaked}")
        session.exitstatus = 1
