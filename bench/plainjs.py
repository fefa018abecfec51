"""What the store benchmarks share: a plain nats-server with JetStream on a free port, and
their results written as a small Markdown page."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from switchyard.stack import binaries
from switchyard.stack.ports import accepting, listen_port


@contextmanager
def jetstream_server() -> Iterator[int]:
    """A throwaway nats-server with JetStream (no zones, no TLS); yields its port."""
    port = listen_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [str(binaries.nats_server()), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield port
        finally:
            server.terminate()
            server.wait(10)


async def connect(port: int) -> NATS:
    """A client of the server on ``port``, once it accepts connections."""
    if not await accepting(port):
        raise SystemExit("nats-server did not start")
    return await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=0)


def write_results(path: Path, title: str, how: str, lines: list[str]) -> None:
    """``path`` as a page: ``title``, a paragraph saying how it was measured, the rows."""
    doc = "\n".join([f"# {title}", "", how, "", *lines, ""])
    path.write_text(doc, encoding="utf-8")
    print(doc)
