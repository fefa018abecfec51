"""Reading the operations pack (``ops/``) for tests: rules, dashboard queries, the docs' metric
table, a loose PromQL name extractor, scrapes of a stack's targets, and a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port

T = TypeVar("T")

ROOT = Path(__file__).parents[1]
OPS = ROOT / "ops"
RULES = sorted((OPS / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((OPS / "prometheus" / "tests").glob("*.yml"))
PROMETHEUS_YML = OPS / "prometheus" / "prometheus.yml"
DASHBOARD = OPS / "grafana" / "switchyard.json"
KEDA = OPS / "keda" / "scaledobject.yaml"
DOCS = ROOT / "docs" / "operations.md"
COMPONENTS = frozenset(
    {"tail", "gateway", "head", "modelproxy", "secrets", "control", "accounting", "batch"}
)


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def records() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    doc = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return queries


def expressions() -> dict[str, str]:
    """Every expression of the pack, named for failure messages."""
    out = {f"dashboard query {i}": q for i, q in enumerate(dashboard_queries())}
    for rule in rules():
        out[rule.get("record") or rule["alert"]] = rule["expr"]
    return out


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)")
_IDENT = re.compile(r"[A-Za-z_:][\w:]*")
OURS = re.compile(r"^(?:switchyard|gen_ai|process)_[a-z_]+$")


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, recording-rule names) an expression reads, parsed loosely: strings, label
    matchers and grouping clauses removed, then identifiers with a colon are recording rules and
    those starting switchyard_, gen_ai_ or process_ are metrics."""
    text = LABEL_VALUES.sub(lambda m: m.group(1), expr)
    text = _STRINGS.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    idents = set(_IDENT.findall(text))
    return {i for i in idents if OURS.match(i)}, {i for i in idents if ":" in i}


def unknown_names(exprs: dict[str, str], scraped: set[str], recorded: set[str]) -> list[str]:
    """``where: name`` for each metric no scrape has and each recording rule never defined."""
    missing = []
    for where, expr in exprs.items():
        metrics, rule_names = names_in(expr)
        missing += [f"{where}: {m}" for m in sorted(metrics - scraped)]
        missing += [f"{where}: {r} (no such recording rule)" for r in sorted(rule_names - recorded)]
    return missing


def doc_metrics() -> dict[str, tuple[str, frozenset[str], frozenset[str]]]:
    """The metrics table of docs/operations.md: name -> (type, labels, exported by)."""
    section = DOCS.read_text().split("### Every metric", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[0].startswith("`"):
            continue
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
        where = COMPONENTS if cells[3] == "all" else frozenset(re.findall(r"[a-z]+", cells[3]))
        out[cells[0].strip("`")] = (cells[1], labels, where)
    return out


@dataclass
class Scrape:
    """What each process served on /metrics: samples and the families it declares."""

    samples: dict[str, list[tuple[str, dict[str, str], float]]] = field(default_factory=dict)
    families: dict[str, dict[str, str]] = field(default_factory=dict)  # process -> name -> type

    def names(self) -> set[str]:
        return {name for samples in self.samples.values() for name, _, _ in samples}

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for samples in self.samples.values()
            for sample, found, value in samples
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        )

    def exported(self, components: dict[str, str]) -> dict[str, tuple[str, set[str], set[str]]]:
        """Switchyard's own families: name -> (type, labels seen, components declaring it).

        Args:
            components: process (instance) name -> its component.
        """
        seen: dict[str, tuple[str, set[str], set[str]]] = {}
        for process, families in self.families.items():
            for name, kind in families.items():
                # prometheus-client's *_created timestamps parse as families of their own.
                ours = OURS.match(name) and not name.startswith("process_")
                if ours and not name.endswith("_created"):
                    seen.setdefault(name, (kind, set(), set()))[2].add(components[process])
        for samples in self.samples.values():
            for name, found, _ in samples:
                base = re.sub(r"_(bucket|count|sum|created)$", "", name)
                if base in seen:
                    seen[base][1].update(set(found) - {"le"})
        return seen


async def scrape_targets(targets: list[dict[str, Any]]) -> Scrape:
    """Scrape every target of a file_sd targets file, as Prometheus would."""
    out = Scrape()
    async with httpx.AsyncClient(timeout=10) as http:
        for group in targets:
            name = group["labels"]["instance"]
            resp = await http.get(f"http://{group['targets'][0]}/metrics")
            assert resp.status_code == 200, (name, resp.text)
            families = list(text_string_to_metric_families(resp.text))
            out.samples[name] = [
                (s.name, dict(s.labels), s.value) for f in families for s in f.samples
            ]
            out.families[name] = {
                f.name + ("_total" if f.type == "counter" else ""): f.type for f in families
            }
    return out


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, http: httpx.AsyncClient, port: int, log: Path) -> None:
        self.http = http
        self.api = f"http://127.0.0.1:{port}/api/v1"
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    async def get(self, path: str, **params: str) -> Any:
        resp = await self.http.get(f"{self.api}/{path}", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self.get("query", query=expr))["result"]
        return result

    async def until(self, check: Callable[[], Awaitable[T | None]], seconds: float = 30) -> T:
        """The first truthy result of ``check``, polled until ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                value = await check()
            except httpx.TransportError:
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            await asyncio.sleep(0.5)


@asynccontextmanager
async def run_prometheus(
    binary: str, config: dict[str, Any], workdir: Path
) -> AsyncIterator[Prometheus]:
    """Prometheus with ``config`` on a free loopback port, ready to answer."""
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                prom = Prometheus(http, port, log)

                async def ready() -> bool:
                    return (await http.get(f"{prom.url}/-/ready")).status_code == 200

                await prom.until(ready)
                yield prom
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
