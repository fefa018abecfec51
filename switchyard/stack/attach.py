"""Commands that talk to a running local stack use the endpoints it actually listens on.

``switchyard up`` picks free ports at start for ``stack.*_port: 0`` and records what it chose in
``run/state.json``; a settings file edited after ``up`` may name other ports than the ones in
use. So ``keys``, ``secrets``, ``import --apply``, ``routes``, ``provision`` and ``config`` take
the ports from the stack's home, as ``status`` does, and fall back to the settings when no stack
runs there.
"""

from __future__ import annotations

from typing import Any

import msgspec

from switchyard.config import Settings
from switchyard.errors import BusUnreachable
from switchyard.stack.home import StackHome
from switchyard.stack.process import pid_alive
from switchyard.stack.supervisor import read_state

# Settings fields of the ports a local stack resolves at start.
PORT_FIELDS = (
    "nats_port",
    "nats_monitor_port",
    "nats_cluster_port",
    "openbao_port",
    "valkey_port",
)
_RUNNING = ("starting", "healthy", "stopping")


def running_state(home: StackHome) -> dict[str, Any] | None:
    """``run/state.json`` of the stack in ``home`` if its supervisor is alive, else None."""
    state = read_state(home.state_file)
    if not state:
        return None
    pid = state.get("supervisor_pid")
    if isinstance(pid, int) and pid_alive(pid) and state.get("status") in _RUNNING:
        return state
    return None


def stack_ports(settings: Settings) -> dict[str, int]:
    """What a supervisor records: the resolved ``stack.*_port`` values."""
    return {name: getattr(settings.stack, name) for name in PORT_FIELDS}


def live_settings(settings: Settings) -> Settings:
    """``settings`` with the ports of the stack running in its home, if one runs.

    Raises:
        BusUnreachable: no stack runs there and there is nothing to try: ``stack.nats_port``
            is 0, or the home has no certificates (never started). Only for the local stack
            (``nats.servers`` not set).
    """
    home = StackHome(settings.home_dir)
    state = running_state(home)
    recorded = (state or {}).get("info", {}).get("ports")
    if isinstance(recorded, dict):
        ports = {k: v for k, v in recorded.items() if k in PORT_FIELDS and isinstance(v, int)}
        stack = msgspec.structs.replace(settings.stack, **ports)
        return msgspec.structs.replace(settings, stack=stack)
    if settings.nats.servers:
        return settings
    if settings.stack.nats_port == 0:
        why = "stack.nats_port is 0 and no running stack recorded the port it chose"
        raise BusUnreachable(settings.nats_servers, "", why)
    if state is None and not (settings.certs_dir / "ca.pem").is_file():
        raise BusUnreachable(settings.nats_servers, "", "no stack was ever started in this home")
    return settings


def unreachable_message(settings: Settings, exc: BusUnreachable) -> str:
    """One line: what was tried, and what to do."""
    where = ", ".join(exc.servers)
    if settings.nats.servers:
        return (
            f"no NATS server answering at {where} ({exc.reason}): check that it runs and that "
            "nats.servers in your config names it"
        )
    return (
        f"no Switchyard stack answering at {where} ({exc.reason}; home {settings.home_dir}): "
        "start it with `switchyard up`, or pass --config/--home"
    )
