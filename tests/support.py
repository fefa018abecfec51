"""Helpers for tests that run real servers: free ports, settings files, violation capture."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import yaml
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, KeyValueConfig, StreamConfig

from switchyard.bus import replies, subjects
from switchyard.bus.connect import subscribed
from switchyard.config import Settings, load_settings
from switchyard.schemas.events import UsageBatch, UsageEvent
from switchyard.stack import binaries, valkey
from switchyard.stack.ports import accepting, listen_port
from tests.portrange import worker_range

T = TypeVar("T")


def free_port(taken: set[int] | None = None) -> int:
    """A free listening port below the ephemeral range (see switchyard.stack.ports).

    Ports picked for one stack must share ``taken``: none is bound until the stack starts,
    so only the set keeps two picks apart.
    """
    return listen_port(avoid=taken, within=worker_range())


def free_port_pair(taken: set[int] | None = None) -> int:
    """A free port whose successor is free too (OpenBao's cluster port is port + 1)."""
    return listen_port(span=2, avoid=taken, within=worker_range())


@contextlib.asynccontextmanager
async def jetstream_server(store: Path) -> AsyncIterator[tuple[NATS, asyncio.subprocess.Process]]:
    """A plain single nats-server with JetStream (no zones) on a free port, and a client.

    The client is checked to be talking to this server (its name): a port picked free can be
    taken by another process on this machine before the server binds it (another test run's
    plain nats-server), and then the server exits while the client talks to the other one (two
    CI runs lost published messages in `test_direct_delivery` with helpers' test runs beside
    them). Such a start is tried again on another port.
    """
    for attempt in range(3):
        name = f"sy-test-{os.getpid()}-{time.monotonic_ns()}"
        port = free_port()
        server = await asyncio.create_subprocess_exec(
            str(binaries.nats_server()),
            *["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store), "-n", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nc: NATS | None = None
        try:
            await accepting(port)  # nats-py would wait 2 s between attempts
            nc = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=1)
            if nc._server_info.get("server_name") != name or server.returncode is not None:
                assert attempt < 2, f"port {port} was taken by another server three times"
                continue
            yield nc, server
            return
        finally:
            if nc is not None:
                await nc.close()
            if server.returncode is None:
                server.terminate()
            await asyncio.wait_for(server.wait(), 10)


async def add_full_subject_stream(nc: NATS) -> None:
    """Stream ``T`` on ``t.>`` holding one message per subject, refusing (discard-new) the
    next: a publish that is stored, one that is refused, on demand."""
    await nc.jetstream().add_stream(
        StreamConfig(
            name="T",
            subjects=["t.>"],
            max_msgs_per_subject=1,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
        )
    )


@contextlib.asynccontextmanager
async def valkey_server(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real valkey-server with Switchyard's roles (ACL, passwords under
    ``settings.redis_password_dir``) on ``settings.stack.valkey_port``; yields its process
    (to pause it, say)."""
    layout = valkey.ValkeyLayout(dir=settings.redis_password_dir, port=settings.stack.valkey_port)
    valkey.write_config(layout)
    server = await asyncio.create_subprocess_exec(
        str(binaries.valkey_server()),
        str(layout.config_file),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert await accepting(layout.port, within_s=30), "valkey-server did not start"
        yield server
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


def ports_in(doc: Any) -> set[int]:
    """Every non-zero integer under a key ending in ``port`` anywhere in ``doc``."""
    found: set[int] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            if str(key).endswith("port") and isinstance(value, int) and value > 0:
                found.add(value)
            else:
                found |= ports_in(value)
    elif isinstance(doc, list):
        for item in doc:
            found |= ports_in(item)
    return found


def merged(doc: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``doc`` with ``extra`` on top; sections (dicts) merge one level deep."""
    out = dict(doc)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def write_settings(home: Path, extra: dict[str, Any] | None = None) -> tuple[Settings, Path]:
    """A settings file for an isolated stack under ``home`` on free ports."""
    taken = ports_in(extra)
    doc: dict[str, Any] = {
        "home": str(home),
        "stack": {
            "nats_port": free_port(taken),
            "nats_monitor_port": free_port(taken),
            "openbao_port": free_port_pair(taken),
            "valkey_port": free_port(taken),
            "free_ports": list(worker_range()),
            "start_timeout_s": 90,
            "stop_timeout_s": 10,
        },
        "logging": {"level": "debug"},
    }
    doc = merged(doc, extra)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "switchyard.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_settings(path, env={}), path


class Violations:
    """Collects nats-py's asynchronous errors (permission violations arrive lowercased)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def about(self, subject: str) -> list[str]:
        needle = f'"{subject.lower()}"'
        return [e for e in self.errors if "permissions violation" in e and needle in e]


async def until(check: Callable[[], object], timeout: float = 15.0) -> None:
    """Return once ``check()`` is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "not seen in time"
        await asyncio.sleep(0.05)


async def flushed(nc: NATS) -> None:
    """Return once the server has every subscription ``nc`` made (``nc.flush()`` does not
    promise it: see :func:`switchyard.bus.connect.subscribed`)."""
    await subscribed(nc)


async def bus_answer(
    nc: NATS, body: Mapping[str, object], headers: dict[str, str], subject: str = subjects.CHAT
) -> replies.Reply:
    """The final or error message of one request on the NATS API (its other messages, the
    ``accepted``, chunks and keep-alives, are skipped)."""
    inbox = nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=got.put)
    try:
        await nc.publish(subject, msgspec.json.encode(body), reply=inbox, headers=headers)
        async with asyncio.timeout(30):
            while True:
                msg = await got.get()
                reply = replies.decode_reply(msg.data, msg.headers)
                if reply.kind in (replies.ReplyKind.FINAL, replies.ReplyKind.ERROR):
                    return reply
    finally:
        await sub.unsubscribe()


async def settle(nc: Any, seconds: float = 0.15) -> None:
    """Flush and give the server time to send back asynchronous errors."""
    await nc.flush(timeout=2)
    await asyncio.sleep(seconds)


async def pause(pid: int) -> None:
    """Stop ``pid`` with SIGSTOP and return once it is stopped: the signal lands
    asynchronously, and a loaded machine let a server answer one more request after ``kill``
    returned (a CI run saw a read of a "paused" server complete)."""
    os.kill(pid, signal.SIGSTOP)
    while process_state(pid) != "T":
        await asyncio.sleep(0.001)


def pause_now(pid: int) -> None:
    """:func:`pause` for synchronous code: returns once ``pid`` is stopped."""
    os.kill(pid, signal.SIGSTOP)
    while process_state(pid) != "T":
        time.sleep(0.001)


def process_state(pid: int) -> str:
    """A process's state letter (``T``: stopped), from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line or environment mentions ``text``."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if ") Z " in stat:  # zombies are already dead
            continue
        if needle in cmdline or needle in environ:
            found.append(int(entry.name))
    return found


def describe_processes(pids: list[int]) -> list[str]:
    """``pid state command line`` of each process, for a failure message about leaks."""
    described = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            described.append(f"{pid} (gone)")
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        described.append(f"{pid} {state} {cmdline.decode(errors='replace').strip()[:160]}")
    return described


def usage_events(data: bytes | None) -> list[UsageEvent]:
    """The events of one stored USAGE message; none for a message that is no usage batch (the
    bus fuzzer stores hostile ones there earlier in a full run, on the same stack)."""
    try:
        return list(msgspec.json.decode(data or b"", type=UsageBatch).events)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


async def usage_of(nc: NATS, request_id: str) -> UsageEvent | None:
    """The usage event of the request its client called ``request_id`` (an edge appends a
    suffix: ``<client id>.<suffix>``), among the last 50 USAGE messages, waited for ~10 s;
    ``nc`` may read the USAGE stream (the provisioner)."""
    js = nc.jetstream()
    for _ in range(50):
        last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
        for seq in range(last, max(0, last - 50), -1):
            raw = await js.get_msg(subjects.USAGE_STREAM, seq)
            for event in usage_events(raw.data):
                if event.request_id.split(".", 1)[0] == request_id:
                    return event
        await asyncio.sleep(0.2)
    return None


async def beat_until(
    check: Callable[[], Awaitable[T | None]],
    beat: Callable[[], Awaitable[None]],
    within_s: float = 20.0,
) -> T:
    """Beat (as a live process would: ``beat`` publishes its heartbeat) and check until
    ``check`` gives something; fails after ``within_s`` (a loaded machine: the control service
    hears a beat in milliseconds when idle)."""
    deadline = time.monotonic() + within_s
    while True:
        await beat()
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, "the control service never showed it"
        await asyncio.sleep(0.3)


def day_totals(rows: list[dict[str, Any]], kind: str, member: str) -> dict[str, float]:
    """The admin API's ``/spend?days=N`` rows of one key, model or team, summed over the days.

    Accounting files a request under the UTC day it ran, so a test that crosses midnight has
    rows on two days: ask for ``days=2`` and sum (test keys and aliases are made per test).
    """
    total: dict[str, float] = {}
    for row in rows:
        if row.get(kind) != member:
            continue
        for name, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
    return total


# The spent marks' bucket as provisioning makes it, for a plain nats-server: direct gets on.
SPENT_BUCKET = KeyValueConfig(bucket=subjects.KEY_SPENT_BUCKET, direct=True)


async def relay_spent_reads(nc: NATS, before: Callable[[], Awaitable[None]] | None = None) -> Any:
    """On a plain nats-server, answer the budget watch's reads of one spent mark as the zoned
    stack's import does (``subjects.KEY_SPENT_DIRECT_GET_PREFIX`` remapped to the bucket's
    own direct get); ``before``, if given, runs after the read and before its answer (a
    write in between). Returns the subscription."""

    async def answer(msg: Msg) -> None:
        real = msg.subject.replace(
            subjects.KEY_SPENT_DIRECT_GET_PREFIX,
            f"$JS.API.DIRECT.GET.KV_{subjects.KEY_SPENT_BUCKET}",
        )
        got = await nc.request(real, b"", timeout=2)
        if before is not None:
            await before()
        await nc.publish(msg.reply, got.data, headers=got.headers)

    return await nc.subscribe(f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.>", cb=answer)
