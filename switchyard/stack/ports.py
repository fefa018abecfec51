"""Listening ports for local processes, chosen outside the kernel's ephemeral range.

A port the kernel hands out for ``bind(0)`` sits in the ephemeral range, which is also
where every outgoing connection gets its source port. Picking a listener port there and
binding it a second later (in another process) races with those connections: the stack
saw ``address already in use`` on a busy machine. Ports below the ephemeral range are
never assigned to outgoing connections, so once a port there is free at plan time only
another listener can take it, and a random pick over thousands of ports makes that rare.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32768
_LOWEST = 20000


def ephemeral_low(range_file: Path = _RANGE_FILE) -> int:
    """First port of the kernel's ephemeral range (Linux default when unreadable)."""
    try:
        low = int(range_file.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW
    return low


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def default_range() -> tuple[int, int]:
    """Where free ports are picked unless told: from 20000 up to the ephemeral range."""
    high = ephemeral_low() - 1
    return (_LOWEST if high > _LOWEST + 1000 else 1024), high


def listen_port(
    span: int = 1, avoid: set[int] | None = None, within: tuple[int, int] | None = None
) -> int:
    """A free port (and its ``span - 1`` successors) below the ephemeral range.

    Args:
        span: how many consecutive ports must be free (OpenBao needs two).
        avoid: ports already promised to another process in the same plan; the chosen
            ones are added to it.
        within: the first and last port to pick from (default: ``default_range()``). Two
            planners that pick at the same time from disjoint ranges can never choose the
            same port, which a random pick over one shared range only makes rare.
    """
    taken = avoid if avoid is not None else set()
    low, last = within or default_range()
    high = last - span + 1
    for _ in range(1000):
        port = random.randint(low, high)  # noqa: S311 - not security sensitive
        block = range(port, port + span)
        if any(p in taken for p in block) or not all(port_free(p) for p in block):
            continue
        taken.update(block)
        return port
    # A machine with thousands of listeners below the ephemeral range: let the kernel pick.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


async def accepting(port: int, host: str = "127.0.0.1", within_s: float = 5.0) -> bool:
    """Wait until something listens on ``port`` (a server just started); False if nothing
    did within ``within_s``. Cheaper than a client's own connect loop: nats-py, for one,
    waits two seconds between attempts and logs each refusal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:  # not listening yet
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return True
