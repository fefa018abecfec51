"""One frame of ``switchyard top``, drawn from an :class:`Overview` (pure: no I/O, no clock).

A header with the platform's totals (and a red line per break of the upgrade order: a process
newer than one it relies on), a deployments table sorted by what needs attention (cooling
down, failing, saturated, then the most queued and the busiest: the order of the admin web
app's pages too), and a processes table, those not healthy first, then in pipeline order,
with each process's version. On a screen the frame is cut to its height (``_screen``): each
table shows its first rows and says how many more there are. Colour marks what an operator
should look at (a queue near its limit, a deployment serving at its concurrency, errors,
refusals, cooldowns, a process that stopped reporting) but every fact is also in the text, so
a frame reads the same without it.
"""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.text import Text

from switchyard.schemas.attention import HIGH_ERRORS, by_attention
from switchyard.schemas.money import dollars
from switchyard.schemas.monitor import (
    DeploymentState,
    Overview,
    ProcessState,
    UpgradeOrderViolation,
)
from switchyard.top._fit import Column, Fields, FittedTable
from switchyard.top._screen import Screenful
from switchyard.top.source import OVERVIEW_PATH

# Processes are listed in the order a request meets them.
PIPELINE = ("tail", "gateway", "head", "modelproxy", "secrets", "control", "accounting", "batch")
NEAR_LIMIT, AT_LIMIT = 0.5, 0.9  # share of a queue's limit: yellow, red
SLOW_WAIT_S, STUCK_WAIT_S = 5.0, 30.0  # age of the oldest waiting request: yellow, red
HIGH_REFUSED = 0.10  # share of requests answered 429: red from here (the alert's threshold)
BUSY_CPU = 80.0
NO_ROUTES = "no deployments routed: add routes to your config (routes:) or PUT /admin/v1/routes"
NO_PROCESSES = "no process has reported in yet (each one does every couple of seconds)"
# Rows each table gets of a screen too short for every row, once each has a few: deployments
# are what an operator watches; the header already counts the processes that are healthy.
DEPLOYMENTS_WEIGHT, PROCESSES_WEIGHT = 2, 1


def frame(
    overview: Overview | None,
    *,
    url: str,
    error: str | None = None,
    interval: float = 0.0,
    keys: bool = True,
    height: int | None = None,
) -> RenderableType:
    """The whole screen: header, deployments, processes; cut to ``height`` when given.

    Args:
        overview: the latest overview, or None when none was ever read.
        url: the gateway it came from (shown in the header).
        error: why the latest read failed; the last overview (if any) stays on screen below it.
        interval: the live view's refresh interval; 0 for a one-off frame (``--once``).
        keys: whether keys work (not for frames printed into a pipe or a file).
        height: the screen's height, to cut the frame to (each table its first rows and how
            many more); None for a frame printed whole (``--once``, into a pipe or a file).
    """
    parts: list[RenderableType] = [_title(overview, url, live=interval > 0 and keys)]
    if error:
        parts.append(Text(error, style="bold red"))
        notes = [f"trying again every {interval:g}s"] if interval else []
        if overview is not None:
            notes.append(f"below: the overview of {_clock(overview.at)}")
        if notes:
            parts.append(Text("; ".join(notes), style="dim"))
    if overview is None and not error:
        parts.append(Text(f"reading {url}{OVERVIEW_PATH} ...", style="dim"))
    if overview is None:
        return Group(*parts)
    parts.append(_totals(overview))
    parts += [
        Text(f"Upgrade order broken: {v.summary}", style="bold red") for v in overview.upgrade_order
    ]
    return Screenful(
        parts,
        [
            (deployments_table(overview.deployments), DEPLOYMENTS_WEIGHT),
            (processes_table(overview.processes, overview.upgrade_order), PROCESSES_WEIGHT),
        ],
        height,
    )


def _title(overview: Overview | None, url: str, *, live: bool) -> Text:
    text = Text("switchyard top", style="bold")
    text.append(f"  {url}", style="cyan")
    if overview is not None:
        text.append(f"  {_clock(overview.at)}")
    if live:
        text.append("   q quits", style="dim")
    return text


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _totals(overview: Overview) -> Fields:
    t = overview.totals
    spend = "-" if overview.spend_today_usd is None else dollars(overview.spend_today_usd)
    deps = overview.deployments
    queues = [d.queue for d in deps if d.queue is not None]
    cooling = sum(1 for d in deps if d.cooldown is not None)
    healthy = sum(1 for p in overview.processes if p.healthy)
    all_healthy = healthy == len(overview.processes)
    return Fields(
        [
            ("requests", f"{_rate(t.requests_per_s)}/s", ""),
            ("errors", _percent(t.error_ratio), _error_style(t.error_ratio)),
            ("refused", _refused(t.refused_ratio), _refused_style(t.refused_ratio)),
            ("latency p50/p99", _pair(t.p50_ms, t.p99_ms), ""),
            ("TTFT p50/p99", _pair(t.ttft_p50_ms, t.ttft_p99_ms), ""),
            ("tokens", f"{_rate(t.tokens_per_s)}/s", ""),
            ("spend today", spend, ""),
        ],
        [
            ("deployments", str(len(deps)), ""),
            ("queued", str(sum(q.waiting for q in queues)), ""),
            ("in flight", str(sum(q.in_flight for q in queues)), ""),
            ("cooling down", str(cooling), "bold red" if cooling else ""),
            ("processes", f"{healthy}/{len(overview.processes)} healthy", _bad(not all_healthy)),
        ],
    )


def _bad(flag: bool) -> str:
    return "bold red" if flag else ""


def deployments_table(deployments: list[DeploymentState]) -> FittedTable:
    """Deployments, the ones that need attention first (:func:`by_attention`)."""
    rows, idle = [], []
    for d in by_attention(deployments):
        q = d.queue
        r = d.rates
        rows.append(
            [
                Text(d.id, style="bold red" if d.cooldown else ""),
                Text(", ".join(d.aliases) or "-"),
                *_queue_cells(d),
                Text(_rate(r.requests_per_s)),
                Text(_pair(r.p50_ms, r.p99_ms)),
                Text(_pair(r.ttft_p50_ms, r.ttft_p99_ms)),
                Text(_percent(r.error_ratio), style=_error_style(r.error_ratio)),
                _count(q.redelivered if q else 0),
                _oldest(q.oldest_wait_s if q else 0.0),
                _cooldown(d),
            ]
        )
        idle.append(_idle(d))
    return FittedTable(
        "Deployments", DEPLOYMENT_COLUMNS, rows, empty=NO_ROUTES, quiet=idle, quiet_word="idle"
    )


# When the terminal is too narrow for every column: columns with nothing in them (only their
# `blank` values) go first, then long ids and aliases are shortened down to `shorten_to`, then
# the columns with data go, the lowest `keep` first. COOLDOWN and ERRORS outrank the latency
# columns: they name what is broken.
DEPLOYMENT_COLUMNS = (
    Column("DEPLOYMENT", keep=100, shorten_to=22),
    Column("ALIASES", keep=55, shorten_to=10, cut="end"),
    Column("QUEUED", "right", keep=100),
    Column("IN FLIGHT", "right", keep=100),
    Column("REQ/S", "right", keep=90, blank=frozenset({"0"})),
    Column("P50/P99", "right", keep=60),
    Column("TTFT P50/P99", "right", keep=30),
    Column("ERRORS", "right", keep=70, blank=frozenset({"0%"})),
    Column("REDELIV", "right", keep=20, blank=frozenset({"0"})),
    Column("OLDEST", "right", keep=50),
    Column("COOLDOWN", keep=80),
)


def _idle(d: DeploymentState) -> bool:
    """Nothing to look at: no traffic, nothing queued, nothing wrong."""
    q = d.queue
    return (
        q is not None
        and not (q.waiting or q.in_flight or q.redelivered)
        and not (d.rates.requests_per_s or d.rates.error_ratio)
        and d.cooldown is None
        and not d.key_missing
    )


def _queue_cells(d: DeploymentState) -> list[Text]:
    q = d.queue
    if q is None:  # the control service could not read this queue
        return [Text("?", style="yellow"), Text(f"?/{d.concurrency}", style="yellow")]
    # Of the limit (dispatch_queue_limit): what waits in dispatch plus what is in flight; held
    # requests wait in HOLD, which the limit does not count.
    share = (max(0, q.waiting - q.held) + q.in_flight) / q.limit if q.limit else 0.0
    queued = Text(str(q.waiting))
    if share >= NEAR_LIMIT:
        queued.append(f" {share:.0%}")
        queued.stylize("bold red" if share >= AT_LIMIT else "yellow")
    if q.held:  # saturated: these wait in HOLD for their fair turn (by priority and tenant)
        queued.append(f" ({q.held} held)", style="yellow")
    saturated = q.concurrency and q.in_flight >= q.concurrency
    in_flight = Text(f"{q.in_flight}/{q.concurrency}", style="yellow" if saturated else "")
    if q.in_flight and q.oldest_in_flight_s >= 1:  # the oldest call's age, from its start
        in_flight.append(f" {_age(q.oldest_in_flight_s)}")
    return [queued, in_flight]


def _count(n: int) -> Text:
    return Text(str(n), style="yellow") if n else Text("0", style="dim")


def _oldest(seconds: float) -> Text:
    if not seconds:
        return Text("-", style="dim")
    style = "bold red" if seconds >= STUCK_WAIT_S else "yellow" if seconds >= SLOW_WAIT_S else ""
    return Text(_age(seconds), style=style)


def _cooldown(d: DeploymentState) -> Text:
    c = d.cooldown
    if c is None and d.key_missing:  # answers nothing until its provider key is stored
        return Text("no key", style="yellow")
    if c is None:
        return Text("-", style="dim")
    return Text(f"{_age(max(0.0, c.seconds_left))} left ({c.status})", style="bold red")


def processes_table(
    processes: list[ProcessState], upgrade_order: list[UpgradeOrderViolation] | None = None
) -> FittedTable:
    """Every process that reported in: those not healthy first (silent, then not ready), then
    in pipeline order; the host only when there are several, the version (and wire-protocol
    level) unless no process states one, in red for the processes of a broken upgrade order."""
    several_hosts = len({p.host for p in processes}) > 1
    versions = any(p.version for p in processes)  # else all predate the field: nothing to say
    mixed = {(p.component, p.instance) for v in upgrade_order or [] for p in (*v.behind, *v.ahead)}
    ordered = sorted(processes, key=_health_then_pipeline)
    rows = []
    for p in ordered:
        cpu_style = "yellow" if p.cpu_percent >= BUSY_CPU else ""
        rows.append(
            [
                Text(p.component),
                Text(p.instance),
                *([Text(p.host)] if several_hosts else []),
                Text(str(p.pid or "-")),
                _health(p),
                *([_version(p, (p.component, p.instance) in mixed)] if versions else []),
                Text(f"{p.cpu_percent:.1f}%", style=cpu_style),
                Text(_bytes(p.rss_bytes)),
                Text(_age(p.uptime_s) if p.uptime_s else "-"),
                Text(f"{_age(p.last_seen_s)} ago", style="" if p.healthy else "bold red"),
            ]
        )
    hidden = {h for h, shown in (("HOST", several_hosts), ("VERSION", versions)) if not shown}
    columns = tuple(c for c in PROCESS_COLUMNS if c.header not in hidden)
    return FittedTable(
        "Processes",
        columns,
        rows,
        empty=NO_PROCESSES,
        quiet=[p.healthy for p in ordered],
        quiet_word="healthy",
    )


PROCESS_COLUMNS = (
    Column("COMPONENT", keep=100),
    Column("INSTANCE", keep=100, shorten_to=12),
    Column("HOST", keep=30, shorten_to=12),
    Column("PID", "right", keep=20),
    Column("HEALTH", keep=100),
    # "0.2.0 p3": package version, protocol level
    Column("VERSION", keep=75, shorten_to=10, cut="end"),
    Column("CPU", "right", keep=70),
    Column("MEMORY", "right", keep=60),
    Column("UPTIME", "right", keep=40),
    Column("LAST SEEN", "right", keep=80),
)


def _health_then_pipeline(p: ProcessState) -> tuple[int, int, str, str]:
    health = 2 if p.healthy else 1 if not p.ready else 0  # silent, not ready, healthy
    rank = PIPELINE.index(p.component) if p.component in PIPELINE else len(PIPELINE)
    return (health, rank, p.component, p.instance)


def _health(p: ProcessState) -> Text:
    if p.healthy:
        return Text("healthy", style="green")
    if not p.ready:
        return Text("not ready", style="bold yellow")
    return Text("silent", style="bold red")  # stopped reporting in


def _version(p: ProcessState, mixed: bool) -> Text:
    """``<version> p<level>``; ``?`` for a process older than the version field."""
    return Text(f"{p.version or '?'} p{p.protocol}", style="bold red" if mixed else "")


# ---- numbers as people read them ----


def _rate(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _ms(value: float) -> str:
    if value < 10:
        return f"{value:.1f}ms"
    if value < 1000:
        return f"{value:.0f}ms"
    return f"{value / 1000:.1f}s"


def _pair(p50: float | None, p99: float | None) -> str:
    if p50 is None and p99 is None:
        return "-"
    return f"{_ms(p50) if p50 is not None else '-'}/{_ms(p99) if p99 is not None else '-'}"


def _percent(ratio: float) -> str:
    return "0%" if ratio == 0 else f"{ratio:.1%}"


def _error_style(ratio: float) -> str:
    return "bold red" if ratio >= HIGH_ERRORS else "yellow" if ratio > 0 else ""


def _refused(ratio: float | None) -> str:
    """The share answered 429; ``-`` when the overview does not know it (no edge reports, or
    a control service older than the field)."""
    return "-" if ratio is None else _percent(ratio)


def _refused_style(ratio: float | None) -> str:
    if not ratio:
        return ""
    return "bold red" if ratio >= HIGH_REFUSED else "yellow"


def _age(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _bytes(n: int) -> str:
    if n <= 0:
        return "-"
    mib = n / (1024 * 1024)
    return f"{mib:.0f} MiB" if mib < 10240 else f"{mib / 1024:.1f} GiB"
