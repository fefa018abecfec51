"""The operations pack (``ops/``) against the real thing.

* ``promtool`` checks the rules and runs their unit tests (every alert fires on the failure it
  names and stays quiet on its look-alike);
* a stack started by ``switchyard up --detach`` gets chat, stream, fallback, provider 429,
  rate-limit 429, bad-key and missing-secret traffic, then every metric name any dashboard
  query or rule expression uses must be in a real scrape of its processes, the metrics table
  of docs/operations.md must list exactly what the scrape shows, and the targets file ``up``
  wrote must list every process;
* a real Prometheus scrapes that stack with ops/prometheus/prometheus.yml and evaluates every
  rule without an error;
* the KEDA trigger's account, stream and consumer are read from the stack's monitoring port
  exactly as KEDA reads them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.bus.connect import connect
from switchyard.bus.identities import Zone
from switchyard.config import Settings, load_settings
from switchyard.runtime import semconv as sc
from switchyard.schemas.routing import deployment_id
from switchyard.stack.scrape_targets import TARGETS_FILE
from tests.opspack import (
    COMPONENTS,
    DASHBOARD,
    DOCS,
    KEDA,
    LABEL_VALUES,
    OPS,
    PROMETHEUS_YML,
    ROOT,
    RULE_TESTS,
    RULES,
    Scrape,
    alerts,
    dashboard_queries,
    doc_metrics,
    expressions,
    names_in,
    records,
    rules,
    run_prometheus,
    scrape_targets,
    unknown_names,
)
from tests.support import free_port, processes_mentioning, write_settings
from tests.upstream import FakeOpenAI

ECHO = deployment_id("fake", "echo")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
# The stack tests share one `switchyard up` (its start counts toward the first test's time).
pytestmark = pytest.mark.timeout(300)

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus; .ci/run does)",
)


# ---- no stack needed ----


@pytest.mark.unit
def test_the_name_check_flags_a_name_no_scrape_has() -> None:
    """Positive control: the loose parser sees metrics and rules, not labels or strings."""
    expr = (
        'sum by (deployment, gen_ai_token_type) (rate(switchyard_made_up_total{route="/v1"}[5m]))'
        " / on (deployment) deployment:nowhere:rate5m + label_values(process_x_y, instance)"
    )
    assert names_in(expr) == (
        {"switchyard_made_up_total", "process_x_y"},
        {"deployment:nowhere:rate5m"},
    )
    assert unknown_names({"q": expr}, {"process_x_y"}, set()) == [
        "q: switchyard_made_up_total",
        "q: deployment:nowhere:rate5m (no such recording rule)",
    ]


@pytest.mark.unit
@needs_promtool
def test_promtool_checks_the_rules_and_the_config() -> None:
    assert PROMTOOL is not None
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULES)], capture_output=True, text=True, check=False
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert rules.stdout.count("SUCCESS") == len(RULES)
    config = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.unit
@needs_promtool
def test_promtool_unit_tests_prove_each_alert_fires_and_stays_quiet() -> None:
    assert PROMTOOL is not None
    assert RULE_TESTS
    run = subprocess.run(
        [PROMTOOL, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # ... and the tests cover every alert both ways.
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


@pytest.mark.unit
def test_every_alert_says_what_it_means_and_what_to_do() -> None:
    docs = DOCS.read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#+ (.+)$", docs, flags=re.M)}
    for alert in alerts():
        notes = alert["annotations"]
        assert {"summary", "description", "runbook", "runbook_url"} <= set(notes), alert["alert"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        anchor = notes["runbook_url"].split("#", 1)[1]
        assert notes["runbook_url"].startswith("docs/operations.md#")
        assert anchor == alert["alert"].lower()
        assert alert["alert"].lower() in headings, f"no runbook section for {alert['alert']}"
    for record in records():
        assert f"`{record}`" in docs, f"recording rule {record} is not explained"


@pytest.mark.unit
def test_prometheus_config_reads_the_targets_file_up_writes_and_therules() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    switchyard = jobs["switchyard"]
    assert switchyard["honor_labels"] is True  # process_up's component/instance are control's
    (files,) = [c["files"] for c in switchyard["file_sd_configs"]]
    # Relative to the config's directory: the default home at the repository root.
    assert [(PROMETHEUS_YML.parent / f).resolve() for f in files] == [
        (ROOT / ".switchyard" / TARGETS_FILE).resolve()
    ]
    assert load_settings(env={}).home == ".switchyard"
    assert [PROMETHEUS_YML.parent / g for g in config["rule_files"]] == [
        OPS / "prometheus" / "rules" / "*.yml"
    ]
    assert jobs["nats"]["static_configs"][0]["targets"] == ["127.0.0.1:7777"]  # the exporter


@pytest.mark.unit
def test_keda_triggers_name_the_real_account_stream_and_consumers() -> None:
    doc = yaml.safe_load(KEDA.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    example = load_settings(ROOT / "switchyard.example.yaml", env={})
    # Every deployment of the example's routes (the built-in offline demo needs no scaling).
    ids = {
        i
        for i, (provider, _) in example.route_table.deployments().items()
        if provider.kind != "demo"
    }
    triggers = doc["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"nats-jetstream"}
    consumers = set()
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["account"] == Zone.CORE.value
        assert meta["stream"] == subjects.DISPATCH_STREAM
        assert re.fullmatch(r"[\w.-]+:\d+", meta["natsServerMonitoringEndpoint"])  # no scheme
        assert int(meta["lagThreshold"]) > 0
        consumers.add(meta["consumer"])
    assert consumers == {subjects.dispatch_consumer(i) for i in ids}


@pytest.mark.unit
def test_dashboard_uses_the_datasource_variable_and_filters() -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"deployment", "alias"} <= set(variables)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for topic in (
        "waiting",
        "in flight",
        "oldest",
        "requests/s",
        "p99",
        "first token",
        "tokens/s",
        "spend",
        "errors",
        "refusals",
        "cool",
        "process up",
        "cpu",
        "memory",
    ):
        assert topic in titles, topic
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    exprs = " ".join(dashboard_queries())
    assert '$deployment"' in exprs
    assert '$alias"' in exprs


@pytest.mark.unit
def test_docs_list_only_metric_names_kept_in_semconv() -> None:
    names = {v for k, v in vars(sc).items() if k.isupper() and isinstance(v, str)}
    documented = doc_metrics()
    assert documented
    assert set(documented) - names == set()


# ---- one stack, started by `switchyard up`, with every kind of traffic ----


@dataclass
class OpsStack:
    settings: Settings
    config: Path
    targets: list[dict[str, Any]]
    processes: list[dict[str, Any]]
    keys: dict[str, str]  # plain, rpm1 (1 request a minute), budget (90% spent)
    scrape: Scrape


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _traffic(base: str, keys: dict[str, str]) -> None:
    """Chat, stream, fallback, provider 429, rate-limit 429, bad key, missing secret, budget."""

    def chat(
        model: str, key: str, *, stream: bool = False, text: str = "one two"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return {
            "url": f"{base}/v1/chat/completions",
            "json": body,
            "headers": {"Authorization": f"Bearer {key}"},
        }

    async with httpx.AsyncClient(timeout=60) as http:
        ok = keys["plain"]
        for _ in range(3):
            assert (await http.post(**chat("m", ok))).status_code == 200
        streamed = await http.post(**chat("m", ok, stream=True, text="a b c d e"))
        assert streamed.status_code == 200
        fell_back = await http.post(**chat("broken", ok))  # 500, cooldown, fallback to m
        assert fell_back.status_code == 200, fell_back.text
        throttled = await http.post(**chat("limited", ok))  # the provider's own 429
        assert throttled.status_code == 429, throttled.text
        assert (await http.post(**chat("m", keys["rpm1"]))).status_code == 200
        refused = await http.post(**chat("m", keys["rpm1"]))  # our rate limit's 429
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert (await http.post(**chat("m", "sk-sy-not-a-key"))).status_code == 401
        missing = await http.post(**chat("nokey", ok))  # secrets: no such secret
        assert missing.status_code >= 400
        # "one" costs 7 + 2 tokens at $1e-6 each: 90% of the budget key's $0.00001.
        assert (await http.post(**chat("m", keys["budget"], text="one"))).status_code == 200


async def _known(base: str, keys: Iterable[str]) -> None:
    """Wait until the edge at ``base`` knows every key: a loaded machine can keep its key
    ring from following the bucket within a fixed wait, and the traffic would then be 401s.
    (Asked again only while it does not: each 401 is a failed authentication.)"""
    async with httpx.AsyncClient(timeout=10) as http:
        for key in keys:
            auth = {"Authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 10
            # Until 200, every 0.5 s: each 401 counts against this address (20 a minute).
            while (got := await http.get(f"{base}/v1/models", headers=auth)).status_code != 200:
                assert got.status_code in (401, 503), got.text
                assert time.monotonic() < deadline, "the edge never learned a new key"
                await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ops_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[OpsStack]:
    home = tmp_path_factory.mktemp("ops") / "home"
    price = {"input_per_token": 0.000001, "output_per_token": 0.000001}
    taken: set[int] = set()
    settings, config = write_settings(
        home,
        {
            "ingress": {
                "tail": {"host": "127.0.0.1", "port": free_port(taken)},
                "gateway": {"host": "127.0.0.1", "port": free_port(taken)},
            },
            "providers": {
                "fake": {"kind": "openai-compatible", "api_base": upstream.base_url},
                "fake-locked": {
                    "kind": "openai-compatible",
                    "api_base": upstream.base_url,
                    "secret": "missing-secret",
                },
            },
            "routes": {
                "m": {"deployments": [{"provider": "fake", "model": "echo", "price": price}]},
                "broken": {
                    "deployments": [{"provider": "fake", "model": "status:500"}],
                    "fallbacks": ["m"],
                },
                "limited": {"deployments": [{"provider": "fake", "model": "status:429"}]},
                "nokey": {"deployments": [{"provider": "fake-locked", "model": "echo"}]},
            },
            # Long enough that the cooldown gauges are still set when the test scrapes.
            "routing": {"cooldown_s": 300},
            "admin": {"budget_watch_s": 0.5},
        },
    )
    up = await asyncio.to_thread(_cli, config, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = json.loads((await asyncio.to_thread(_cli, config, "status", "--json")).stdout)
        nc = await connect(settings.nats_servers, settings.certs_dir, "admin")
        try:
            admin = KeyAdmin(nc.jetstream(timeout=10))
            keys = {
                "plain": (await admin.create("ops-plain"))[0],
                "rpm1": (await admin.create("ops-rpm", rpm=1))[0],
                "budget": (await admin.create("ops-budget", budget_usd=0.00001))[0],
            }
        finally:
            await nc.close()
        await asyncio.sleep(0.5)  # the edges' key rings follow the bucket
        base = f"http://127.0.0.1:{settings.ingress.tail.port}"
        await _known(base, keys.values())
        await _traffic(base, keys)
        targets = json.loads((home / TARGETS_FILE).read_text())

        async def settled() -> Scrape:
            deadline = time.monotonic() + 15
            while True:
                scrape = await scrape_targets(targets)
                near = scrape.total(sc.KEYS_NEAR_BUDGET, threshold="0.8")
                if near >= 1 or time.monotonic() > deadline:
                    return scrape
                await asyncio.sleep(0.5)

        yield OpsStack(settings, config, targets, status["processes"], keys, await settled())
    finally:
        down = await asyncio.to_thread(_cli, config, "down")
        assert down.returncode == 0, down.stderr
        assert processes_mentioning(str(home)) == []


@pytest.mark.integration
@pytest.mark.slow
async def test_the_targets_file_up_wrote_lists_every_process(ops_stack: OpsStack) -> None:
    components = [p for p in ops_stack.processes if p["kind"] == "component"]
    # 6 singles (secrets, control, accounting, batch, tail, gateway), 2 heads, 2 model-proxies
    assert len(components) == len(ops_stack.targets) == 6 + 2 + 2
    by_instance = {g["labels"]["instance"]: g for g in ops_stack.targets}
    assert set(by_instance) == {p["name"] for p in components}
    assert {g["labels"]["component"] for g in ops_stack.targets} == COMPONENTS
    for process in components:
        group = by_instance[process["name"]]
        assert process["health_url"].startswith(f"http://{group['targets'][0]}/")
        # Each target says what it is: the label matches the process's own build info.
        builds = [s for s in ops_stack.scrape.samples[process["name"]] if s[0] == sc.BUILD_INFO]
        assert [labels[sc.COMPONENT] for _, labels, _ in builds] == [group["labels"]["component"]]


@pytest.mark.integration
@pytest.mark.slow
async def test_every_name_the_dashboard_and_rules_use_is_in_a_real_scrape(
    ops_stack: OpsStack,
) -> None:
    scraped = ops_stack.scrape.names()
    assert unknown_names(expressions(), scraped, records()) == []
    # The dashboard's variables read labels the scrape has.
    for query in dashboard_queries():
        for metric, label in LABEL_VALUES.findall(query):
            found = {
                labels.get(label)
                for samples in ops_stack.scrape.samples.values()
                for name, labels, _ in samples
                if name == metric
            }
            assert found - {None}, query
    # The traffic made the series the alerts and panels are about.
    s = ops_stack.scrape
    assert s.total(sc.REFUSALS, reason="rpm") == 1
    assert s.total(sc.REFUSALS, reason="auth") == 1
    assert s.total(sc.FALLBACKS, alias="broken", fallback="m") == 1
    assert s.total(sc.COOLDOWN_ACTIVE, deployment=deployment_id("fake", "status:500")) >= 1
    assert s.total(sc.PROVIDER_ERRORS, deployment=deployment_id("fake", "status:429")) >= 1
    assert s.total(f"{sc.CLIENT_OPERATION_DURATION}_count", deployment=ECHO) >= 6
    assert s.total(sc.VAULT_REQUESTS, result="secret_not_found") >= 1


@pytest.mark.integration
@pytest.mark.slow
async def test_the_docs_list_every_metric_with_the_labels_a_scrape_shows(
    ops_stack: OpsStack,
) -> None:
    documented = doc_metrics()
    components = {g["labels"]["instance"]: g["labels"]["component"] for g in ops_stack.targets}
    seen = ops_stack.scrape.exported(components)
    assert set(documented) == set(seen), "documented vs scraped metric names"
    for name, (kind, labels, where) in seen.items():
        doc_kind, doc_labels, doc_where = documented[name]
        assert doc_kind == kind, name
        # A family with no series yet (nothing held, say) declares itself without labels.
        assert doc_labels == labels or not labels, name
        assert doc_where == where, name


@pytest.mark.integration
@pytest.mark.slow
async def test_keys_near_budget_count_a_key_that_spent_90_percent(ops_stack: OpsStack) -> None:
    s = ops_stack.scrape
    assert s.total(sc.KEYS_WITH_BUDGET) == 1  # only the gateway counts
    assert s.total(sc.KEYS_NEAR_BUDGET, threshold="0.8") == 1
    assert s.total(sc.KEYS_NEAR_BUDGET, threshold="1") == 0
    text = "\n".join(str(v) for samples in s.samples.values() for v in samples)
    assert ops_stack.keys["budget"] not in text


@pytest.mark.integration
@pytest.mark.slow
async def test_keda_reads_the_dispatch_consumer_lag_from_the_monitoring_port(
    ops_stack: OpsStack,
) -> None:
    doc = yaml.safe_load(KEDA.read_text())
    meta = doc["spec"]["triggers"][0]["metadata"]
    port = ops_stack.settings.stack.nats_monitor_port
    # KEDA's own request (pkg/scalers/nats_jetstream_scaler.go), against this stack.
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(
            f"http://127.0.0.1:{port}/jsz",
            params={"acc": meta["account"], "consumers": "true", "config": "true"},
        )
    assert resp.status_code == 200
    (account,) = [a for a in resp.json()["account_details"] if a["name"] == meta["account"]]
    (stream,) = [s for s in account["stream_detail"] if s["name"] == meta["stream"]]
    consumers = {c["name"]: c for c in stream["consumer_detail"]}
    consumer = consumers[subjects.dispatch_consumer(ECHO)]
    lag = consumer["num_pending"] + consumer["num_ack_pending"]
    assert lag == 0  # the queue drained
    assert consumer["delivered"]["stream_seq"] > 0  # it is the queue the traffic went through


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
async def test_prometheus_scrapes_the_stack_and_evaluates_every_rule(
    ops_stack: OpsStack, tmp_path: Path
) -> None:
    """The shipped config, pointed at this stack's home, with 1 s intervals."""
    assert PROMETHEUS is not None
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(OPS / "prometheus" / "rules" / "*.yml")]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "switchyard"]
    job["file_sd_configs"][0]["files"] = [str(ops_stack.settings.home_dir / TARGETS_FILE)]
    config["scrape_configs"] = [job]
    async with run_prometheus(PROMETHEUS, config, tmp_path) as prom:

        async def all_up() -> list[dict[str, Any]] | None:
            active: list[dict[str, Any]] = (await prom.get("targets"))["activeTargets"]
            up = [t for t in active if t["health"] == "up"]
            return active if len(up) == len(ops_stack.targets) else None

        active = await prom.until(all_up)
        assert {(t["labels"]["component"], t["labels"]["instance"]) for t in active} == {
            (g["labels"]["component"], g["labels"]["instance"]) for g in ops_stack.targets
        }
        # honor_labels: control's process_up keeps the processes' own names.
        process_up = await prom.until(lambda: prom.query("switchyard_process_up == 1"))
        assert {r["metric"]["component"] for r in process_up} == COMPONENTS
        assert {r["metric"]["instance"] for r in process_up} == {
            g["labels"]["instance"] for g in ops_stack.targets
        }
        # Fresh traffic while Prometheus watches, so the 5-minute rates have something to rate.
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(4):
                resp = await http.post(
                    f"http://127.0.0.1:{ops_stack.settings.ingress.tail.port}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {ops_stack.keys['plain']}"},
                )
                assert resp.status_code == 200
                await asyncio.sleep(1)

        async def every_rule_recorded() -> dict[str, int] | None:
            counts = {r: len(await prom.query(r)) for r in records()}
            return counts if all(counts.values()) else None

        await prom.until(every_rule_recorded)

        async def calls_rate() -> list[dict[str, Any]]:
            return await prom.query(
                f'deployment:switchyard_provider_calls:rate5m{{deployment="{ECHO}"}} > 0'
            )

        await prom.until(calls_rate)

        async def evaluated() -> list[dict[str, Any]] | None:
            groups = (await prom.get("rules"))["groups"]
            found = [r for g in groups for r in g["rules"]]
            done = all(r.get("lastEvaluation", "").startswith("2") for r in found)
            return found if done and len(found) == len(rules()) else None

        evaluated_rules = await prom.until(evaluated)
        errors = {r["name"]: r.get("lastError") for r in evaluated_rules if r["health"] != "ok"}
        assert errors == {}
