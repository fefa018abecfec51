"""The local stack's Prometheus targets, as a file Prometheus re-reads by itself (file_sd).

``switchyard up`` picks every worker's health port when it starts, so no static scrape config
can name them. Each ``up`` rewrites ``<home>/prometheus/targets.json`` before its processes
start: one target group per Switchyard process (``/metrics`` on the edges' HTTP port and the
workers' health port) labelled ``component`` and ``instance`` as the processes name themselves.
``ops/prometheus/prometheus.yml`` reads it; Prometheus notices a rewrite without a restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from switchyard.stack.home import StackHome
from switchyard.stack.process import ProcessSpec

TARGETS_FILE = Path("prometheus") / "targets.json"


def _identity(spec: ProcessSpec) -> tuple[str, str]:
    """(component, instance) from ``switchyard serve <component> --instance <instance>``."""
    argv = spec.argv
    component = argv[argv.index("serve") + 1] if "serve" in argv[:-1] else spec.name
    instance = argv[argv.index("--instance") + 1] if "--instance" in argv[:-1] else spec.name
    return component, instance


def scrape_targets(specs: Iterable[ProcessSpec]) -> list[dict[str, Any]]:
    """file_sd target groups for every Switchyard process among ``specs`` (servers are skipped:
    nats-server, OpenBao and Valkey serve no Prometheus metrics of their own)."""
    groups = []
    for spec in specs:
        if spec.kind != "component" or not spec.health_url:
            continue
        component, instance = _identity(spec)
        groups.append(
            {
                "targets": [urlsplit(spec.health_url).netloc],
                "labels": {"component": component, "instance": instance},
            }
        )
    return groups


def write_scrape_targets(home: StackHome, specs: Iterable[ProcessSpec]) -> Path:
    """Write ``<home>/prometheus/targets.json`` atomically (Prometheus may read it any time)."""
    path = home.root / TARGETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(scrape_targets(specs), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
