"""How the admin web app's Keys page scales: 10 keys, then 100,000 (``python -m bench.admin_keys``).

Starts a real stack with ``switchyard up --detach``, signs in to the web app like a browser, and
times the Keys page (first page, a deep page, searches that match one key, thousands, none) and
``GET /admin/v1/keys`` with 10 keys stored and again with ``--keys`` (default 100,000). Also
times how long a gateway's in-memory key index takes to load that many keys. Writes
``bench/results/admin_keys.md``. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.stack import BenchStack
from switchyard.admin.key_index import KeyIndex
from switchyard.admin.keys import KeyAdmin
from switchyard.bus.connect import connect
from switchyard.config import load_settings
from switchyard.stack.ports import listen_port

RESULTS = Path(__file__).parent / "results" / "admin_keys.md"
TEAMS = 20


def _config(workdir: Path) -> BenchStack:
    home = workdir / "home"
    tail_port, gateway_port = listen_port(), listen_port()
    doc: dict[str, Any] = {
        "home": str(home),
        "stack": {
            "nats_port": listen_port(),
            "nats_monitor_port": listen_port(),
            "openbao_port": listen_port(span=2),
            "valkey_port": listen_port(),
            "heads": 1,
            "modelproxies": 1,
        },
        "ingress": {
            "tail": {"host": "127.0.0.1", "port": tail_port},
            "gateway": {"host": "127.0.0.1", "port": gateway_port},
        },
        "logging": {"level": "warning"},
    }
    config = workdir / "switchyard.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return BenchStack(config, home, tail_port, gateway_port)


async def _store(admin: KeyAdmin, start: int, count: int, parallel: int = 128) -> float:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            await admin.create(
                f"bench-{i:06d}",
                team=f"team-{i % TEAMS}",
                owner=f"owner{i % 997}@example.com",
                rpm=600,
            )

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(start, start + count)))
    return time.perf_counter() - began


async def _time(http: httpx.AsyncClient, path: str, runs: int) -> dict[str, float]:
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        resp = await http.get(path)
        took.append((time.perf_counter() - began) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:200]}")
    took.sort()
    return {"p50": statistics.median(took), "p95": took[int(len(took) * 0.95) - 1], "max": took[-1]}


def _cases(total: int) -> list[tuple[str, str]]:
    return [
        ("Keys page, first 50", "/ui/keys"),
        ("Keys page, last page", f"/ui/keys?offset={max(0, total - 50)}"),
        ("Search: one key by name", f"/ui/keys?q=bench-{total // 2:06d}"),
        ("Search: a team (1 in 20 keys)", "/ui/keys?team=team-7"),
        ("Search: owner substring (~1 in 100)", "/ui/keys?q=owner42%40"),
        ("Search: no match", "/ui/keys?q=nothing-like-this"),
        ("API GET /admin/v1/keys?limit=50", "/admin/v1/keys?limit=50"),
    ]


async def run(keys: int, runs: int) -> str:
    with tempfile.TemporaryDirectory(prefix="sy-bench-admin-") as tmp:
        stack = _config(Path(tmp))
        try:
            stack.up()
            settings = load_settings(stack.config_file, env={})
            token = settings.admin_token_file.read_text(encoding="utf-8").strip()
            base = f"http://127.0.0.1:{stack.gateway_port}"
            nc = await connect(settings.nats_servers, settings.certs_dir, "admin")
            admin = KeyAdmin(nc.jetstream(timeout=30))
            lines: list[str] = []
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                signed = await http.post(
                    "/ui/signin", data={"name": "bench", "token": token}, follow_redirects=False
                )
                if signed.status_code != 303:
                    raise RuntimeError(f"sign-in failed: {signed.status_code}")
                http.headers["Authorization"] = f"Bearer {token}"  # for the API case only
                await _store(admin, 0, 10)
                await asyncio.sleep(1)
                small = {name: await _time(http, path, runs) for name, path in _cases(10)}
                stored = await _store(admin, 10, keys - 10)
                while (await http.get("/admin/v1/keys?limit=1")).json()["count"] < keys:  # noqa: ASYNC110 (the gateway's index catching up)
                    await asyncio.sleep(0.5)
                large = {name: await _time(http, path, runs) for name, path in _cases(keys)}
            began = time.perf_counter()
            index = KeyIndex(nc.jetstream(timeout=30))
            await index.start()
            loaded = time.perf_counter() - began
            count = len(index)
            await index.stop()
            await nc.close()
        finally:
            stack.down()
    lines += [
        f"# Admin Keys page: 10 keys vs {keys:,}",
        "",
        f"`python -m bench.admin_keys --keys {keys}`; {runs} requests per row, one at a time, "
        "through the gateway with a signed-in session (page rendered on the server, spend read "
        "for the page's keys only). Milliseconds.",
        "",
        f"| Request | 10 keys p50 | {keys:,} keys p50 | {keys:,} keys p95 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in small.items():
        big = large[name]
        lines.append(
            f"| {name} | {s['p50']:.1f} | {big['p50']:.1f} | {big['p95']:.1f} | {big['max']:.1f} |"
        )
    lines += [
        "",
        f"Storing {keys - 10:,} keys (128 concurrent KV creates as the admin identity): "
        f"{stored:.1f} s. A gateway's key index loads {count:,} keys in {loaded:.1f} s "
        "(at start; then it follows changes live).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    report = asyncio.run(run(args.keys, args.runs))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
