"""``switchyard up``, ``down`` and ``status``: the local stack as three commands."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from switchyard.config import Settings, inherited_environment
from switchyard.errors import StackError, SwitchyardError
from switchyard.schemas.monitor import Overview
from switchyard.stack import attach, local, natsnodes
from switchyard.stack.certs import CA_NAME, expiring
from switchyard.stack.demo_key import demo_key_file, read_demo_key
from switchyard.stack.home import StackHome
from switchyard.stack.natsconf import body_ceiling_note
from switchyard.stack.process import http_status, pid_alive, redis_ping_check
from switchyard.stack.scrape_targets import write_scrape_targets
from switchyard.stack.status_routing import routing_summary
from switchyard.stack.supervisor import read_state

log = logging.getLogger("switchyard.stack")


def _running_supervisor(home: StackHome) -> int | None:
    state = read_state(home.state_file)
    if not state:
        return None
    pid = state.get("supervisor_pid")
    if (
        isinstance(pid, int)
        and pid != os.getpid()
        and pid_alive(pid)
        and state.get("status")
        in (
            "starting",
            "healthy",
            "stopping",
        )
    ):
        return pid
    return None


def up(
    settings: Settings,
    config_file: Path | None,
    *,
    detach: bool,
    out: TextIO,
    reveal_key: bool = True,
) -> int:
    """Start the stack; in the foreground unless ``detach``. Returns the exit code.

    ``reveal_key`` False: ``out`` is a log (a detached supervisor's), so the summary names the
    demo key's file instead of printing the key.
    """
    home = StackHome(settings.home_dir)
    home.ensure()
    flags = command_flags(settings, config_file)
    running = _running_supervisor(home)
    if running:
        raise StackError(
            "up",
            f"a stack is already running from {home.root} (supervisor pid {running}); "
            f"see `switchyard{flags} status`, or stop it with `switchyard{flags} down`",
        )
    natsnodes.check_store_layout(settings, home)
    if (ceiling := body_ceiling_note(settings.ingress.max_body_bytes)) is not None:
        print(ceiling, file=sys.stderr, flush=True)
    if detach:
        local.resolve_ports(settings)  # fail fast, here, on a port in use
        return _up_detached(settings, config_file, home, out)
    return asyncio.run(_up_foreground(settings, config_file, home, out, reveal_key))


def command_flags(settings: Settings, config_file: Path | None) -> str:
    """The global flags a later command (`status`, `down`) needs to find this stack.

    Always absolute: ``--config`` when a settings file was read, and ``--home``, so the
    printed command works when pasted into another terminal, in another directory, without
    the ``SWITCHYARD_*`` variables this one may have. Leaving out the defaults
    (``./switchyard.yaml``, ``./.switchyard``) made the printed commands look in the other
    directory's home, find nothing there and leave the stack running.
    """
    flags: list[str] = []
    if config_file is not None:
        flags += ["--config", str(config_file.resolve())]
    flags += ["--home", str(settings.home_dir)]
    return "".join(f" {shlex.quote(flag)}" for flag in flags)


async def _up_foreground(
    settings: Settings, config_file: Path | None, home: StackHome, out: TextIO, reveal_key: bool
) -> int:
    began = time.monotonic()
    local.prepare_home(settings)
    settings, port_env = local.resolve_ports(settings)
    env = local.child_env(settings, config_file, port_env)
    supervisor = local.stack_supervisor(
        settings,
        home,
        local.components(settings, env, local.component_specs(settings)),
        info={
            "home": str(home.root),
            "config": str(config_file) if config_file else None,
            # What commands run beside this stack connect to (stack.attach), 0s resolved.
            "ports": attach.stack_ports(settings),
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Prometheus finds this run's ports here (ops/prometheus/prometheus.yml).
    write_scrape_targets(home, [step.spec for phase in supervisor.phases for step in phase])

    def ready_info() -> dict[str, Any]:
        # In the write that says healthy: a detached `up` prints the summary from it.
        return {
            "startup_s": round(time.monotonic() - began, 2),
            "endpoints": endpoints(settings),  # ports are resolved here, in the supervisor
        }

    await supervisor.start(ready_info)
    elapsed = float(supervisor.state.info["startup_s"])
    urls: dict[str, str] = supervisor.state.info["endpoints"]
    key = read_demo_key(settings)
    hidden = demo_key_file(settings) if key is not None and not reveal_key else None
    print(
        summary(
            urls,
            key,
            supervisor.state.processes,
            home,
            elapsed,
            key_file=hidden,
            flags=command_flags(settings, config_file),
        ),
        file=out,
        flush=True,
    )
    for line in await _route_drift(settings, config_file):
        print(line, file=out, flush=True)
    try:
        await supervisor.watch(stop)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        await supervisor.stop(final_status="failed")
        return 1
    print("stopping...", file=out, flush=True)
    await supervisor.stop()
    print("stopped.", file=out, flush=True)
    return 0


def _up_detached(settings: Settings, config_file: Path | None, home: StackHome, out: TextIO) -> int:
    env = {**inherited_environment(), "SWITCHYARD_HOME": str(home.root)}
    if config_file is not None:
        env["SWITCHYARD_CONFIG"] = str(config_file.resolve())
    home.state_file.unlink(missing_ok=True)
    with (home.logs / "supervisor.log").open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchyard", "up", "--logged"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + settings.stack.start_timeout_s * 2 + 30
    while time.monotonic() < deadline:
        state = read_state(home.state_file)
        if state and state.get("supervisor_pid") == proc.pid:
            if state["status"] == "healthy":
                info = state.get("info", {})
                elapsed = float(info.get("startup_s", 0))
                urls = info.get("endpoints") or endpoints(settings)
                key = read_demo_key(settings)
                print(
                    summary(
                        urls,
                        key,
                        state["processes"],
                        home,
                        elapsed,
                        detached=True,
                        flags=command_flags(settings, config_file),
                    ),
                    file=out,
                )
                for line in asyncio.run(_route_drift(attach.live_settings(settings), config_file)):
                    print(line, file=out)
                return 0
            if state["status"] in ("failed", "stopped"):
                print(f"error: the stack failed to start: {state.get('error')}", file=sys.stderr)
                return 1
        if proc.poll() is not None:
            log_path = home.logs / "supervisor.log"
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            print(
                f"error: the supervisor exited with code {proc.returncode}; "
                f"last lines of {log_path}:\n{tail}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.1)
    print("error: the stack did not become healthy in time; stopping it", file=sys.stderr)
    down(settings, out=out)
    return 1


async def _route_drift(settings: Settings, config_file: Path | None) -> list[str]:
    """The note that the file's routes are not the live ones (a failure to check is logged)."""
    from switchyard.control.sync_cli import file_drift  # noqa: PLC0415

    try:
        return await file_drift(settings, config_file)
    except SwitchyardError as exc:
        log.warning("could not compare the configured routes with the live table: %s", exc)
        return []


def endpoints(settings: Settings) -> dict[str, str]:
    """The local stack's user-facing URLs."""
    tail, gateway = settings.ingress.tail, settings.ingress.gateway
    return {
        "openai_api": f"http://{tail.host}:{tail.port}/v1",
        "gateway_api": f"http://{gateway.host}:{gateway.port}/v1",
        "gateway_docs": f"http://{gateway.host}:{gateway.port}/docs",
        "admin_ui": f"http://{gateway.host}:{gateway.port}/ui/",
        "nats": settings.nats_servers[0],
        "nats_monitoring": f"http://127.0.0.1:{settings.stack.nats_monitor_port}",
        "openbao": settings.openbao_addr,
        "valkey": settings.redis_url,
    }


def summary(
    urls: dict[str, str],
    key: str | None,
    processes: list[dict[str, Any]],
    home: StackHome,
    elapsed: float,
    *,
    detached: bool = False,
    key_file: Path | None = None,
    flags: str = "",
) -> str:
    """What `up` prints once healthy. ``key_file``: the demo key is not printed (the output is
    a log), the examples read it from that file instead. ``flags``: what `status` and `down`
    need to find this stack (``command_flags``)."""
    lines = [f"Switchyard is up in {elapsed:.1f}s (home: {home.root})", ""]
    width = max((len(p["name"]) for p in processes), default=10) + 2
    for p in processes:
        where = p.get("endpoint") or ""
        lines.append(f"  {p['name']:<{width}} pid {p['pid'] or '-':<8} {where}")
    lines += ["", f"OpenAI-compatible API: {urls['openai_api']}   docs: {urls['gateway_docs']}"]
    if key:
        shown, shell, python = key, key, f'"{key}"'
        if key_file is not None:
            shown = f"in {key_file} (kept out of this log)"
            shell = f"$(cat {shlex.quote(str(key_file))})"
            python = f"open({str(key_file)!r}).read().strip()"
        lines += [
            f"Demo client key: {shown}",
            "",
            "Try it (the built-in `demo` model answers offline):",
            f"  curl {urls['openai_api']}/chat/completions \\",
            f'    -H "Authorization: Bearer {shell}" -H "Content-Type: application/json" \\',
            """    -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}]}'""",
            "",
            "  from openai import OpenAI",
            f'  client = OpenAI(base_url="{urls["openai_api"]}", api_key={python})',
            '  for chunk in client.chat.completions.create(model="demo", stream=True,',
            '          messages=[{"role": "user", "content": "Hello!"}]):',
            '      print(chunk.choices[0].delta.content or "", end="")',
        ]
    token = home.root / "admin-token"
    if token.is_file():
        lines += [
            "",
            f"Admin UI: {urls['admin_ui']} (sign in with the token in {token})",
            f"Management API: {urls['gateway_api'].removesuffix('/v1')}/admin/v1/... "
            f"(Authorization: Bearer $(cat {token}); every route at "
            f"{urls['gateway_api'].removesuffix('/v1')}/docs)",
        ]
    read_only = home.root / "admin-readonly-token"
    if token.is_file() and read_only.is_file():
        lines.append(f"Read-only admin token (look, change nothing): {read_only}")
    lines += ["", f"Logs: {home.logs}/"]
    if detached:
        lines.append(f"Status: `switchyard{flags} status`   Stop: `switchyard{flags} down`")
    else:
        lines.append(f"Stop: Ctrl-C in the terminal that runs it, or `switchyard{flags} down`")
    return "\n".join(lines)


def down(settings: Settings, *, out: TextIO) -> int:
    """Stop a detached (or foreground) stack and make sure none of its processes remain."""
    home = StackHome(settings.home_dir)
    state = read_state(home.state_file)
    if not state:
        print(
            f"no stack found in {home.root} (a stack started with --home or --config is "
            "stopped with the same flags)",
            file=out,
        )
        return 0
    pid = state.get("supervisor_pid")
    timeout = settings.stack.stop_timeout_s * 3 + 10
    running = isinstance(pid, int) and pid_alive(pid)
    if isinstance(pid, int) and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    leftovers = []
    for proc in state.get("processes", []):
        child = proc.get("pid")
        if isinstance(child, int) and pid_alive(child) and _is_ours(child, home):
            leftovers.append(child)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    if leftovers:
        print(f"stopped (killed {len(leftovers)} stragglers).", file=out)
    elif running:
        print("stopped.", file=out)
    else:
        print(f"no stack was running in {home.root}", file=out)
    return 0


def _is_ours(pid: int, home: StackHome) -> bool:
    """Guard against PID reuse: only kill processes whose command line points into ``home``
    or is a switchyard component."""
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(home.root) in cmdline or str(home.root).encode() in environ


def status(
    settings: Settings,
    *,
    as_json: bool,
    out: TextIO,
    routing: Callable[[], Overview] | None = None,
) -> int:
    """Print each process with its health; exit 0 only when all are healthy. ``routing``
    reads the gateway's overview, for the deployments cooling down (they do not change the
    exit status: the processes are what it reports on)."""
    home = StackHome(settings.home_dir)
    state = read_state(home.state_file)
    if not state:
        if as_json:
            print(
                json.dumps({"status": "not running", "home": str(home.root), "processes": []}),
                file=out,
            )
        else:
            print(f"not running (no stack in {home.root})", file=out)
        return 3
    report = asyncio.run(_probe(state, settings))
    supervisor_alive = isinstance(state.get("supervisor_pid"), int) and pid_alive(
        state["supervisor_pid"]
    )
    overall, problems = assess(state, report, supervisor_alive=supervisor_alive, now=time.time())
    doc = {
        "status": overall,
        "healthy": overall == "healthy",
        "problems": problems,
        "error": state.get("error"),
        "home": str(home.root),
        "supervisor_pid": state.get("supervisor_pid"),
        "processes": report,
        "endpoints": state.get("info", {}).get("endpoints") or endpoints(settings),
        # Local stack only (like `supabase status`): the key `up` created for trying it out.
        "demo_key": read_demo_key(settings),
        "info": state.get("info", {}),
        # Not problems of the headline (everything still works), but nothing else warns.
        "certificates_expiring": certificates_expiring(settings.certs_dir, now=time.time()),
    }
    line, trouble = "", False
    if routing is not None:
        doc["routing"], line, trouble = routing_summary(routing)
    if as_json:
        print(json.dumps(doc, indent=2), file=out)
    else:
        print(f"stack: {overall} (home: {home.root})", file=out)
        for problem in problems:
            print(f"  ! {problem}", file=out)
        for cert in doc["certificates_expiring"]:
            print(f"  ! {_expiry_line(cert)}", file=out)
        if line:  # the processes can all be healthy while a route answers nothing
            print(f"  {'!' if trouble else ' '} {line}", file=out)
        width = max((len(p["name"]) for p in report), default=10) + 2
        for p in report:
            health = "healthy" if p["healthy"] else ("unhealthy" if p["alive"] else "not running")
            # Workers have no endpoint of their own: their health port is where to look.
            pid, where = p["pid"] or "-", p.get("endpoint") or p.get("health_url") or ""
            print(f"  {p['name']:<{width}} {health:<12} pid {pid:<8} {where}", file=out)
    return 0 if overall == "healthy" else 1


def certificates_expiring(cert_dir: Path, *, now: float) -> list[dict[str, Any]]:
    """The certificates in the home that expire within 30 days (or have), for ``status``."""
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    return [
        {
            "name": name,
            "expires_at": ends.isoformat(timespec="seconds"),
            "days_left": round((ends - at).total_seconds() / 86400, 1),
        }
        for name, ends in expiring(cert_dir, now=at)
    ]


def _expiry_line(cert: dict[str, Any]) -> str:
    name, when, days = cert["name"], cert["expires_at"][:16].replace("T", " "), cert["days_left"]
    ends = f"expired on {when} UTC" if days <= 0 else f"expires on {when} UTC (in {days:g} days)"
    fix = (
        "replace the CA with `switchyard certs init --rotate-ca`, then restart everything"
        if name == CA_NAME
        else "renew it: `switchyard down`, then `switchyard up`"
    )
    return f"certificate {name} {ends}: {fix} (docs/operations.md, Certificates)"


def assess(
    state: dict[str, Any], report: list[dict[str, Any]], *, supervisor_alive: bool, now: float
) -> tuple[str, list[str]]:
    """The headline of `status` and the lines that explain it.

    ``healthy`` only when every process answers its health check and none is crash-looping;
    ``unhealthy`` when a server (NATS, Valkey, OpenBao: the others depend on them) does not,
    ``degraded`` when only components do; ``starting``/``stopping`` as the supervisor says;
    ``not running`` with the reason the supervisor recorded, if it failed.
    """
    lifecycle = state.get("status", "unknown")
    if not supervisor_alive:
        error = state.get("error")
        if error:
            return "not running", [f"it failed: {str(error).splitlines()[0]}"]
        if lifecycle not in ("stopped", "failed"):
            return "not running", [
                f"its supervisor (pid {state.get('supervisor_pid')}) ended without stopping "
                "it: see logs/supervisor.log in the home"
            ]
        return "not running", []
    if lifecycle != "healthy":
        return lifecycle, []
    problems = [line for p in report if (line := _problem(p, now))]
    if not problems:
        return "healthy", []
    servers_down = any(p.get("kind") == "server" and not p["healthy"] for p in report)
    return ("unhealthy" if servers_down else "degraded"), problems


def _problem(proc: dict[str, Any], now: float) -> str | None:
    """What is wrong with one probed process, in a line (None: nothing)."""
    name, crashes, code = proc["name"], proc.get("crashes") or 0, proc.get("last_exit")
    restart_at = proc.get("restart_at")
    retry = f"; next try in {max(0, round(restart_at - now))}s" if restart_at else ""
    if proc.get("crash_looping"):
        state = "up again" if proc["healthy"] else ("unhealthy" if proc["alive"] else "down")
        return (
            f"{name} is crash-looping: {crashes} exits in a row, the last with code {code} "
            f"({state}{retry}; log: {proc.get('log')})"
        )
    if not proc["alive"]:
        exited = f": exited with code {code}" if crashes else ""
        return f"{name} is not running{exited}{retry}"
    if not proc["healthy"]:
        return f"{name} is unhealthy: running, but {proc.get('health_url')} does not answer ok"
    return None


async def _probe(state: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    ca = settings.certs_dir / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else None

    async def one(proc: dict[str, Any]) -> dict[str, Any]:
        pid = proc.get("pid")
        alive = isinstance(pid, int) and pid_alive(pid)
        url = proc.get("health_url") or ""
        healthy = False
        if alive and url.startswith("redis://"):
            host, _, port = url.removeprefix("redis://").partition(":")
            healthy = await redis_ping_check(host, int(port))()
        elif alive and url:
            healthy = await http_status(url, ctx) == 200
        return {**proc, "alive": alive, "healthy": healthy}

    return list(await asyncio.gather(*(one(p) for p in state.get("processes", []))))
