"""The local stack's supervisor with real child processes: a crash-looping replica is retried
with growing waits, alone, while the rest keeps running; `status` names it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from switchyard.errors import StackError
from switchyard.stack.commands import assess
from switchyard.stack.process import ManagedProcess, ProcessSpec, pid_alive
from switchyard.stack.supervisor import RestartPolicy, Step, Supervisor, read_state


async def _serving() -> bool:
    return True


def _step(name: str, kind: str = "component", *, restart: bool = True) -> Step:
    return Step(ProcessSpec(name, ["sleep", "300"], _serving, kind=kind, restart=restart))


def _supervisor(tmp_path: Path, policy: RestartPolicy, *flaky: Step) -> Supervisor:
    return Supervisor(
        [[_step("server", "server")], [_step("steady"), *flaky]],
        log_dir=tmp_path / "logs",
        state_file=tmp_path / "state.json",
        start_timeout=10,
        stop_timeout=5,
        restart_policy=policy,
        poll_s=0.02,
    )


def _proc(sup: Supervisor, name: str) -> ManagedProcess:
    return next(p for phase in sup.procs for p in phase if p.spec.name == name)


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _kill_and_time_restart(proc: ManagedProcess) -> float:
    """SIGKILL ``proc``; seconds until the supervisor has a new one running."""
    old = proc.pid
    assert old is not None
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    await _until(lambda: proc.running and proc.pid != old)
    return time.monotonic() - killed


async def test_a_crash_looping_replica_backs_off_alone(tmp_path: Path) -> None:
    # Delays far above a restart's own cost (a process start took 0.35 s on a loaded machine).
    policy = RestartPolicy(first_delay_s=0.6, max_delay_s=1.2, stable_after_s=60, crash_loop=3)
    sup = _supervisor(tmp_path, policy, _step("flaky"))
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        others = {name: _proc(sup, name).pid for name in ("server", "steady")}
        flaky = _proc(sup, "flaky")
        waits = [await _kill_and_time_restart(flaky) for _ in range(6)]
        assert waits[0] < 0.6, waits  # one crash costs nothing
        assert 0.6 <= waits[1] < 1.2 + 1, waits
        assert all(1.2 <= w < 1.2 + 1 for w in waits[2:]), waits  # capped, never given up
        assert not watcher.done()
        assert {name: _proc(sup, name).pid for name in others} == others
        assert all(pid is not None and pid_alive(pid) for pid in others.values())

        state = read_state(tmp_path / "state.json")
        assert state is not None
        assert state["status"] == "healthy"  # other commands still find the stack
        record = {p["name"]: p for p in state["processes"]}["flaky"]
        assert record["crashes"] == 6
        assert record["crash_looping"]
        assert record["last_exit"] == -signal.SIGKILL
        assert record["restarts"] == 6
        report = [{**p, "alive": True, "healthy": True} for p in state["processes"]]
        overall, problems = assess(state, report, supervisor_alive=True, now=time.time())
        assert overall == "degraded"
        assert problems[0].startswith("flaky is crash-looping: 6 exits in a row")
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_process_that_ran_long_enough_starts_its_count_again(tmp_path: Path) -> None:
    # A delayed restart waits 1.5 s, an immediate one far less: a loaded CI machine took 0.35 s
    # for an immediate one when the two were told apart at 0.3 s.
    policy = RestartPolicy(first_delay_s=1.5, max_delay_s=1.5, stable_after_s=0.5, crash_loop=3)
    sup = _supervisor(tmp_path, policy, _step("flaky"))
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        flaky = _proc(sup, "flaky")
        await _kill_and_time_restart(flaky)
        assert await _kill_and_time_restart(flaky) >= 1.5
        await _until(lambda: sup.crashes["flaky"].count == 0)
        assert await _kill_and_time_restart(flaky) < 1.0  # immediate again
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_process_stopped_by_sigterm_is_restarted_not_counted_as_a_crash(
    tmp_path: Path,
) -> None:
    """A process stopped with SIGTERM (by an operator, a process manager, or the supervisor)
    was counted as a crash: `status --json` said ``crashes: 1`` and, after three, crash-looping
    with a growing wait. It is a restart: at once, ``restarts`` up, ``crashes`` unchanged. A
    SIGKILL still is a crash, and so is a SIGTERM exit right after a start (one that ends on its
    own at each start is failing)."""
    policy = RestartPolicy(first_delay_s=1.5, max_delay_s=1.5, stable_after_s=60, crash_loop=3)
    sup = _supervisor(tmp_path, policy, _step("flaky"))
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        flaky = _proc(sup, "flaky")
        for _ in range(3):
            await asyncio.sleep(1.1)  # past the supervisor's one-second floor for a stop
            old = flaky.pid
            assert old is not None
            stopped = time.monotonic()
            os.kill(old, signal.SIGTERM)
            await _until(lambda: flaky.running and flaky.pid != old)  # noqa: B023
            assert time.monotonic() - stopped < 1.5  # never the crash wait
        state = read_state(tmp_path / "state.json")
        assert state is not None
        record = {p["name"]: p for p in state["processes"]}["flaky"]
        assert record["restarts"] == 3
        assert record["crashes"] == 0
        assert record["stops"] == 3
        assert not record["crash_looping"]
        assert record["last_exit"] == -signal.SIGTERM  # (it stayed None after a stop)
        report = [{**p, "alive": True, "healthy": True} for p in state["processes"]]
        assert assess(state, report, supervisor_alive=True, now=time.time()) == ("healthy", [])
        # Right after a start, SIGTERM is a crash; SIGKILL always is.
        old = flaky.pid
        assert old is not None
        os.kill(old, signal.SIGTERM)
        await _until(lambda: flaky.running and flaky.pid != old)
        assert await _kill_and_time_restart(flaky) >= 1.5
        assert sup.crashes["flaky"].count == 2
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_process_that_exits_0_by_itself_is_not_restarted_forever_at_once(
    tmp_path: Path,
) -> None:
    """Any exit 0 after a second was a stop: restarted at once, never counted, so a server that
    exits 0 by itself (Valkey after SHUTDOWN) every second or two was restarted forever while
    ``status`` said healthy, and ``last_exit`` said nothing. It is a crash now (back-off,
    crash-looping); only a SIGTERM or SIGINT is a stop."""
    policy = RestartPolicy(first_delay_s=1.5, max_delay_s=1.5, stable_after_s=60, crash_loop=3)
    quits = Step(ProcessSpec("quits", ["sh", "-c", "sleep 1.1"], _serving, kind="server"))
    sup = _supervisor(tmp_path, policy, quits)
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        await _until(lambda: "quits" in sup.crashes and sup.crashes["quits"].count == 2, 8)
        crashes = sup.crashes["quits"]
        assert crashes.stops == 0
        assert crashes.last_exit == 0
        assert crashes.restart_at is not None  # waiting out the back-off, not restarted at once
        assert crashes.restart_at - time.monotonic() > 1.0
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_components_exit_0_is_a_stop_as_it_follows_a_sigterm(tmp_path: Path) -> None:
    """A Switchyard component exits 0 only once told to stop (its ``serve`` returns 0 after a
    SIGTERM sent to it directly): a stop, restarted at once, not a crash (a server's exit 0,
    above, is one)."""
    policy = RestartPolicy(first_delay_s=5, max_delay_s=5, stable_after_s=60, crash_loop=3)
    quits = Step(ProcessSpec("quits", ["sh", "-c", "sleep 1.1"], _serving, kind="component"))
    sup = _supervisor(tmp_path, policy, quits)
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        await _until(lambda: "quits" in sup.crashes and sup.crashes["quits"].stops == 2, 8)
        crashes = sup.crashes["quits"]
        assert crashes.count == 0
        assert crashes.last_exit == 0
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_process_stopped_too_often_gets_the_crash_back_off(tmp_path: Path) -> None:
    """SIGTERMs more than ``crash_loop`` times within ``stable_after_s`` are not all stops: the
    ones past that count as crashes, with their waits."""
    policy = RestartPolicy(first_delay_s=1.5, max_delay_s=1.5, stable_after_s=60, crash_loop=2)
    sup = _supervisor(tmp_path, policy, _step("flaky"))
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    try:
        flaky = _proc(sup, "flaky")
        waits = []
        for _ in range(4):
            await asyncio.sleep(1.1)  # past the supervisor's one-second floor for a stop
            old = flaky.pid
            assert old is not None
            stopped = time.monotonic()
            os.kill(old, signal.SIGTERM)
            await _until(lambda: flaky.running and flaky.pid != old)  # noqa: B023
            waits.append(time.monotonic() - stopped)
        assert all(w < 1.5 for w in waits[:3]), waits  # two stops, then a first crash: at once
        assert waits[3] >= 1.5, waits  # the second crash in a row waits
        crashes = sup.crashes["flaky"]
        assert (crashes.stops, crashes.count, crashes.last_exit) == (2, 2, -signal.SIGTERM)
    finally:
        stop.set()
        await watcher
        await sup.stop()


async def test_a_process_that_may_not_restart_still_fails_the_stack(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, RestartPolicy(), _step("once", restart=False))
    await sup.start()
    once = _proc(sup, "once")
    assert once.pid is not None
    os.kill(once.pid, signal.SIGKILL)
    with pytest.raises(StackError, match="once"):
        await asyncio.wait_for(sup.watch(asyncio.Event()), 10)
    await sup.stop(final_status="failed")
    state = read_state(tmp_path / "state.json")
    assert state is not None
    assert state["status"] == "failed"
    overall, problems = assess(state, [], supervisor_alive=False, now=time.time())
    assert (overall, problems) == ("not running", [f"it failed: {state['error']}"])
    assert "once exited (code -9)" in state["error"]


async def test_a_childs_log_is_rotated_at_its_cap_and_the_child_writes_on(tmp_path: Path) -> None:
    """A stack left up under traffic grew its log files without end (no rotation anywhere).
    A child writing a line every 10 ms past a 4 KB cap: its file is copied to `.1`, `.2` and
    emptied, the child never stops writing to it, and no more than `keep` copies stay."""
    writer = (
        "import sys, time\n"
        "for i in range(100000):\n"
        "    sys.stdout.write(f'line {i:06d} ' + 'x' * 80 + '\\n'); sys.stdout.flush()\n"
        "    time.sleep(0.01)\n"
    )
    spec = ProcessSpec("chatty", [sys.executable, "-c", writer], _serving)
    sup = Supervisor(
        [[Step(spec)]],
        log_dir=tmp_path / "logs",
        state_file=tmp_path / "state.json",
        start_timeout=10,
        stop_timeout=5,
        poll_s=0.02,
        log_max_bytes=4096,
        log_keep=2,
        rotate_every_s=0.1,
    )
    await sup.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(sup.watch(stop))
    log = tmp_path / "logs" / "chatty.log"
    try:
        await _until((tmp_path / "logs" / "chatty.log.2").exists, timeout=20)
        await _until(lambda: log.stat().st_size > 0)  # written on after the cut
    finally:
        stop.set()
        await watcher
        await sup.stop()
    copies = sorted(p.name for p in (tmp_path / "logs").iterdir() if p.name.startswith("chatty"))
    assert copies == ["chatty.log", "chatty.log.1", "chatty.log.2"]  # keep=2: no .3
    first = (tmp_path / "logs" / "chatty.log.1").read_text()
    assert first.startswith("line ")
    assert "\0" not in first  # the child appends at the new end, leaving no hole
    assert max(p.stat().st_size for p in (tmp_path / "logs").iterdir()) < 4096 * 4


async def test_healthy_is_written_with_the_start_up_time_and_endpoints(tmp_path: Path) -> None:
    """A detached `up` prints its summary from the first state that says healthy. That state
    was written before the start-up time and endpoints were added, so `up -d` sometimes
    printed "Switchyard is up in 0.0s" and URLs with unresolved ports. A reader in another
    thread (as `up -d` is another process) now never sees one without the other."""
    sup = _supervisor(tmp_path, RestartPolicy())
    seen: list[dict[str, object]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            state = read_state(tmp_path / "state.json")
            if state and state["status"] == "healthy":
                seen.append(state["info"])

    reader = threading.Thread(target=watch)
    reader.start()

    def ready_info() -> dict[str, object]:
        time.sleep(0.2)  # what computing them may cost: the reader keeps reading meanwhile
        return {"startup_s": 1.25, "endpoints": {"openai_api": "http://127.0.0.1:8080/v1"}}

    try:
        await sup.start(ready_info)
        await asyncio.sleep(0.2)
    finally:
        done.set()
        reader.join()
        await sup.stop()
    assert seen
    assert all(info.get("startup_s") == 1.25 and info.get("endpoints") for info in seen), seen
