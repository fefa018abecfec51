"""Load generation with wrk (C, event-driven): cheap enough per request not to hide overhead.

One Lua script (``lua/post.lua``) POSTs the scenario's JSON body and prints a JSON summary from
``done()``; we parse that line instead of wrk's human-readable table. wrk counts HTTP statuses
>= 400 as ``status`` errors and socket problems as connect/read/write/timeout errors; any of them
makes a run invalid, and the report says so loudly.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).parent / "lua" / "post.lua"
MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class LoadSpec:
    """What wrk sends: where, with which body and key, and how hard."""

    url: str
    body: str
    connections: int
    threads: int
    api_key: str = ""


@dataclass
class WrkResult:
    """One wrk run, latencies in microseconds."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    cpu_s: float = 0.0  # wrk's own CPU time (user + system)
    raw_output: str = field(repr=False, default="")

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def error_count(self) -> int:
        return self.non_2xx + self.socket_errors

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("raw_output")
        doc |= {
            "rps": self.rps,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "wrk_cpu_us_per_request": self.cpu_s * 1e6 / self.requests if self.requests else 0.0,
        }
        return doc


class WrkError(RuntimeError):
    """wrk failed to run or printed no summary."""


def run_wrk(wrk: Path, spec: LoadSpec, duration_s: float, *, timeout_s: float = 10.0) -> WrkResult:
    """Run wrk for ``duration_s`` seconds and return its parsed summary."""
    seconds = max(1, round(duration_s))
    cmd = [
        str(wrk),
        f"-t{spec.threads}",
        f"-c{spec.connections}",
        f"-d{seconds}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(LUA_SCRIPT),
        spec.url,
    ]
    env = {**os.environ, "BENCH_BODY": spec.body, "BENCH_AUTH": spec.api_key}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = proc.stdout + proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise WrkError(f"wrk failed (exit {proc.returncode}): {' '.join(cmd)}\n{output}")
    doc = json.loads(line.removeprefix(MARKER))
    return WrkResult(
        requests=int(doc["requests"]),
        duration_s=doc["duration_us"] / 1e6,
        errors={k: int(v) for k, v in doc["errors"].items()},
        latency_us={k: float(v) for k, v in doc["latency_us"].items()},
        cpu_s=cpu_s,
        raw_output=output,
    )
