"""Would a store-once fair scheduler meet issue 17's 5% CPU budget? A standalone measurement.

``python -m bench.store_once_probe`` starts a real nats-server (JetStream, file storage, the
stack's stream and consumer definitions from ``switchyard.runtime.definitions``; TLS and
accounts off, for every variant alike) and, as separate OS processes, a producer (like heads:
~1 KiB requests stored with a JetStream publish that waits for the store ack, answers to its
inbox), 2 model-proxies (the provider is a 50 ms ``asyncio.sleep``; answer to the request's
reply subject, then ack) and, for variant 3, a feeder. Same offered load for all: a deployment
of concurrency 16 (8 per model-proxy) and 64 closed-loop requests (3x oversubscribed) from
tenants with unequal backlogs (harmonic shares: first come, first served gives them unequal
slots, fair order equal ones), plus one ``interactive`` request a second.

1. **fcfs**: one work-queue stream, one durable pull consumer (``max_ack_pending`` 16), pulled
   with credits like ``runtime/puller.py``;
2. **store-once**: requests stay in HOLD (work-queue retention here: the ack removes them)
   under ``<deployment>.<priority>.<tenant>``, one durable pull consumer per subject; each
   model-proxy keeps a pull request of batch 1 outstanding on each, so at most one request of
   each in hand; a freed slot starts the next in hand by priority then DRR and pulls 1 more
   for that consumer; ack on finish. Nothing else on the request's path;
3. **feeder**: today's pattern, roughly: the producer stores to HOLD, a feeder reads HOLD
   (ordered consumer), taps ``$JS.ACK`` of the dispatch consumer for freed slots, moves the
   next request into dispatch (waiting for the store ack) and purges HOLD in batches; the
   model-proxies are variant 1's.

Two controls: 4 **fcfs-pull1** is variant 1 with a pull request of batch 1 per freed slot
(store-once's pull pattern on one consumer), 5 **store-once-p2** is variant 2 with up to 2
requests per consumer in hand (a pull request of batch 2 once none is in hand or asked for).

CPU (user+sys from /proc, ``bench.cpu``) of every process including nats-server, per completed
request, over ``--duration`` seconds after ``--warmup``; variants alternate 1 2 3 3 2 1,
``--rounds`` times, each run on a fresh server. Also per run: starts per tenant (all tenants
have work throughout), the interactive requests' wait until they started, messages through
nats-server per request (``/varz``) and the machine's load. ``--tenants 50 --variants 1 2``
is the many-tenant check. Results: ``bench/results/store_once_probe.json`` (and the ``.md``
written by hand from it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import api as js_api

from bench import cpu, report
from bench.store_once_roles import (
    CONCURRENCY,
    DEP,
    PRIORITIES,
    PROXIES,
    hold_consumer,
    hold_subject,
    run_role,
    tenant_names,
)
from switchyard.config import Settings
from switchyard.runtime import definitions
from switchyard.stack import binaries
from switchyard.stack.natsconf import MAX_PAYLOAD
from switchyard.stack.ports import accepting, listen_port

NAMES = {1: "fcfs", 2: "store-once", 3: "feeder", 4: "fcfs-pull1", 5: "store-once-p2"}
PORTS = (33000, 33499)  # this helper's range on the shared machine
TOTAL = 64  # closed-loop requests: 16 in service, 48 waiting
LOGS = Path(tempfile.gettempdir()) / "store_once_probe_logs"  # the last run's, per process


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    monitor: int

    def varz(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/varz", timeout=5) as r:
            doc: dict[str, Any] = json.load(r)
        return doc


def _start_server(workdir: Path) -> Server:
    taken: set[int] = set()
    port, monitor = listen_port(avoid=taken, within=PORTS), listen_port(avoid=taken, within=PORTS)
    store = workdir / "js"
    conf = workdir / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f"max_payload: {MAX_PAYLOAD}\nmax_pending: {4 * MAX_PAYLOAD}\n"
        f'jetstream {{ store_dir: "{store}" }}\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [str(binaries.nats_server()), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Server(process, port, monitor)


async def _define(nc: NATS, variant: int, tenants: int) -> None:
    """The stack's streams and consumers, as ``switchyard.runtime.definitions`` has them."""
    settings = Settings()
    js = nc.jetstream()
    if variant in (1, 3, 4):
        await js.add_stream(definitions.dispatch_stream_config(settings))
        await js.add_consumer(
            "DISPATCH", definitions.dispatch_consumer_config(settings, DEP, CONCURRENCY)
        )
    if variant == 3:
        await js.add_stream(definitions.hold_stream_config(settings))
    if variant in (2, 5):
        hold = dataclasses.replace(
            definitions.hold_stream_config(settings),
            retention=js_api.RetentionPolicy.WORK_QUEUE,  # the ack removes it: stored once
        )
        await js.add_stream(hold)
        base = definitions.dispatch_consumer_config(settings, DEP, CONCURRENCY)
        for priority in PRIORITIES:
            for tenant in tenant_names(tenants):
                await js.add_consumer(
                    "HOLD",
                    dataclasses.replace(
                        base,
                        durable_name=hold_consumer(priority, tenant),
                        description=None,
                        filter_subject=hold_subject(priority, tenant),
                        # No setting caps a set of consumers: each may take the deployment's
                        # concurrency plus what each model-proxy has in hand (prefetch <= 2).
                        max_ack_pending=CONCURRENCY + 2 * PROXIES,
                    ),
                )


def _spawn(
    role: str, name: str, url: str, variant: int, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.store_once_probe", "--role", role, "--name", name]
    argv += ["--url", url, "--variant", str(variant), "--tenants", str(args.tenants)]
    argv += ["--heartbeat", str(args.heartbeat)]
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


async def _stats(nc: NATS, name: str) -> dict[str, Any]:
    reply = await nc.request(f"probe.stats.{name}", b"", timeout=5)
    doc: dict[str, Any] = json.loads(reply.data)
    return doc


async def _ready(nc: NATS, name: str, within_s: float = 30.0) -> None:
    end = time.monotonic() + within_s
    while True:
        try:
            await _stats(nc, name)
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


def _switches(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far: about its wake-ups."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text(encoding="utf-8").splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text(encoding="utf-8").split()[0])


async def _snapshot(
    nc: NATS, server: Server, names: list[str], watched: list[cpu.Watched]
) -> tuple[cpu.Snapshot, dict[str, dict[str, Any]], dict[str, Any], float]:
    stats = {n: await _stats(nc, n) for n in names}
    varz = server.varz()
    varz["switches"] = {w.name: _switches(w.pid) for w in watched}
    return cpu.snapshot(watched), stats, varz, time.monotonic()


def _starts(stats: dict[str, dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for doc in stats.values():
        for tenant, n in doc.get("starts", {}).items():
            total[tenant] = total.get(tenant, 0) + n
    return total


async def run_one(variant: int, tenants: int, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="store-once-probe-"))
    server = _start_server(workdir)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        assert await accepting(server.port, within_s=15), "nats-server did not start"
        url = f"nats://127.0.0.1:{server.port}"
        nc = await nats.connect(url, name="probe-orchestrator")
        await _define(nc, variant, tenants)
        roles = [("proxy", f"proxy{i}") for i in range(PROXIES)]
        if variant == 3:
            roles.append(("feeder", "feeder"))
        for role, name in [*roles, ("producer", "producer")]:
            procs[name] = _spawn(role, name, url, variant, args)
            await _ready(nc, name)
        watched = [cpu.Watched("nats-server", server.process.pid, "nats-server")]
        watched += [cpu.Watched(n, p.pid, "clients") for n, p in procs.items()]
        await asyncio.sleep(args.warmup)
        load_before = _loadavg()
        before = await _snapshot(nc, server, list(procs), watched)
        await asyncio.sleep(args.duration)
        after = await _snapshot(nc, server, list(procs), watched)
        load_after = _loadavg()
        await nc.close()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = after[3] - before[3]
    done = after[1]["producer"]["completed"] - before[1]["producer"]["completed"]
    assert done > 0, f"no request completed: see {LOGS}"
    per = cpu.per_request_us(before[0], after[0], done)
    starts_before, starts_after = _starts(before[1]), _starts(after[1])
    starts = {t: starts_after.get(t, 0) - starts_before.get(t, 0) for t in sorted(starts_after)}
    n_starts = sum(starts.values()) or 1
    interactive = after[1]["producer"]["interactive_s"]
    msgs = sum(after[2][k] - before[2][k] for k in ("in_msgs", "out_msgs"))
    extra: dict[str, Any] = {}
    for n in after[1]:  # summed over the processes
        for k in ("pulls", "expired_pulls", "moves", "purges", "taps"):
            if k in after[1][n]:
                extra[k] = extra.get(k, 0) + after[1][n][k] - before[1][n][k]
    extra["feeder_direct"] = after[1].get("feeder", {}).get("direct", None)
    return {
        "variant": NAMES[variant],
        "tenants": tenants,
        "requests": done,
        "rps": round(done / seconds, 1),
        "cpu_us": round(sum(per.values()), 1),
        "nats_server_us": round(per["nats-server"], 1),
        "clients_us": round(sum(v for k, v in per.items() if k != "nats-server"), 1),
        "per_process_us": {k: round(v, 1) for k, v in per.items()},
        "msgs_per_request": round(msgs / max(1, done), 2),
        "switches_per_request": {
            k: round((v - before[2]["switches"].get(k, 0)) / done, 2)
            for k, v in after[2]["switches"].items()
        },
        "share": {t: round(n / n_starts, 3) for t, n in starts.items()},
        "mix": after[1]["producer"]["mix"],
        "interactive_start_s": interactive,
        "counters": extra,
        "loadavg": [load_before, load_after],
        "other_cores": round(cpu.other_cores(before[0], after[0], seconds), 2),
        "refused": after[1]["producer"]["refused"],
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    keys = ("cpu_us", "nats_server_us", "clients_us", "rps", "msgs_per_request")
    med: dict[str, dict[str, Any]] = {
        v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in by.items()
    }
    for v, rs in by.items():
        waits = [w for r in rs for w in r["interactive_start_s"]]
        med[v]["interactive_start_s_median"] = statistics.median(waits) if waits else None
        med[v]["interactive_start_s_max"] = max(waits, default=None)
        med[v]["share_min"] = min(min(r["share"].values()) for r in rs)
        med[v]["share_max"] = max(max(r["share"].values()) for r in rs)
        med[v]["runs_cpu_us"] = [r["cpu_us"] for r in rs]
    base = med.get("fcfs")
    if base is not None:
        for row in med.values():
            row["extra_us"] = round(row["cpu_us"] - base["cpu_us"], 1)
            row["extra_nats_us"] = round(row["nats_server_us"] - base["nats_server_us"], 1)
            row["extra_clients_us"] = round(row["clients_us"] - base["clients_us"], 1)
            row["extra_pct"] = round(100 * (row["cpu_us"] / base["cpu_us"] - 1), 1)
    return med


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    # Each round runs the variants forth and back (1 2 3 3 2 1): a slow phase of the machine
    # weighs on all alike.
    order = [*args.variants, *reversed(args.variants)] * args.rounds
    for variant in order:
        run = await run_one(variant, args.tenants, args)
        runs.append(run)
        shares = sorted(run["share"].values())
        print(
            f"probe: {run['variant']:<10} t={args.tenants} {run['rps']:6.1f} req/s"
            f"  {run['cpu_us']:7.0f} us/req (nats {run['nats_server_us']:5.0f},"
            f" clients {run['clients_us']:6.0f})  {run['msgs_per_request']:5.2f} msg/req"
            f"  share min {shares[0]:.3f} max {shares[-1]:.3f}"
            f"  interactive max {max(run['interactive_start_s'], default=0):.3f} s"
            f"  load {run['loadavg']} other {run['other_cores']}  {run['per_process_us']}"
            f"  switches/req {run['switches_per_request']}"
            f"  {run['counters']}",
            flush=True,
        )
    meta = {**report.machine_info(), "args": {**vars(args), "results": str(args.results)}}
    return {"meta": meta, "runs": runs, "median": _summary(runs)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.store_once_probe", description=__doc__)
    p.add_argument("--role", choices=("producer", "proxy", "feeder"))
    p.add_argument("--name", default="")
    p.add_argument("--url", default="")
    p.add_argument("--variant", type=int, default=1)
    p.add_argument("--tenants", type=int, default=3)
    p.add_argument("--variants", type=int, nargs="+", choices=tuple(NAMES), default=[1, 2, 3])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        help="the model-proxies' pull requests' idle heartbeat in seconds (0: none)",
    )
    p.add_argument("--results", type=Path, default=report.RESULTS_DIR / "store_once_probe.json")
    args = p.parse_args(argv)
    if args.role:
        asyncio.run(
            run_role(
                args.role,
                args.url,
                name=args.name,
                variant=args.variant,
                heartbeat=args.heartbeat,
                tenants=args.tenants,
                total=TOTAL,
            )
        )
        return 0
    doc = asyncio.run(orchestrate(args))
    print(json.dumps(doc["median"], indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if args.results.exists():
        previous = json.loads(args.results.read_text(encoding="utf-8"))
    label = f"tenants_{args.tenants}_variants_{'-'.join(map(str, args.variants))}"
    if args.heartbeat != 5.0:
        label += f"_heartbeat_{args.heartbeat:g}"
    previous[label] = doc
    args.results.write_text(json.dumps(previous, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
