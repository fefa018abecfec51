"""What a request cost: per-deployment price overrides first, then litellm's price map.

litellm ships a price map for most hosted models; it is read from the installed package (never
fetched: DESIGN §8) once, in a thread, when the worker starts. The JSON file is read directly:
importing litellm for it cost the accounting worker ~160 MiB of memory and seconds of start-up.
Models it does not know and that have no override cost nothing, and are logged once each so an
operator can add a price.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from switchyard.config import prepare_litellm_environment
from switchyard.limits.keys import NANO
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import Deployment, Provider, RouteTable

log = logging.getLogger("switchyard.accounting")


PRICE_FILE = "model_prices_and_context_window_backup.json"


def price_map() -> dict[str, Any]:
    """litellm's bundled price map, read without importing litellm (which would load the
    whole package); through litellm itself only if the file is not where it was.

    Raises:
        ImportError: litellm is not installed.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None:
        raise ImportError("litellm")
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / PRICE_FILE
        if path.is_file():
            loaded = json.loads(path.read_bytes())
            if isinstance(loaded, dict):
                return _resolved(loaded)
    log.info("litellm's %s was not found; importing litellm for its price map", PRICE_FILE)
    prepare_litellm_environment()
    module = importlib.import_module("litellm")
    return dict(module.model_cost)


def _resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """The map as litellm presents it: an entry that is only ``alias_of`` another model has
    that model's prices, and the file's lookup rules (not a model) are left out."""
    out: dict[str, Any] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or name == "fallback_generalizations":
            continue
        target = raw.get(entry.get("alias_of") or "")
        if isinstance(target, dict):
            out[name] = {**target, **{k: v for k, v in entry.items() if k != "alias_of"}}
        else:
            out[name] = entry
    return out


class Pricing:
    def __init__(self) -> None:
        self._map: dict[str, Any] = {}
        self._unpriced: set[str] = set()
        self._table: RouteTable | None = None
        self._deployments: dict[str, tuple[Provider, Deployment]] = {}

    async def load(self) -> None:
        try:
            self._map = await asyncio.to_thread(price_map)
        except ImportError:
            log.warning("litellm is not installed: only configured prices apply")

    def per_token(self, event: UsageEvent, table: RouteTable) -> tuple[float, float]:
        """USD per input and per output token for the deployment that served ``event``."""
        if table is not self._table:  # the map is rebuilt once per route table revision
            self._table, self._deployments = table, table.deployments()
        pair = self._deployments.get(event.deployment)
        kind: str = ""
        if pair is not None:
            provider, deployment = pair
            if deployment.price is not None:
                return deployment.price.input_per_token, deployment.price.output_per_token
            kind = provider.kind
        model = event.model
        for name in (f"{kind}/{model}", model, model.rsplit("/", 1)[-1]):
            entry = self._map.get(name)
            if isinstance(entry, dict):
                return (
                    float(entry.get("input_cost_per_token") or 0.0),
                    float(entry.get("output_cost_per_token") or 0.0),
                )
        if event.deployment not in self._unpriced:
            self._unpriced.add(event.deployment)
            log.info("no price known for %s (%s); counted as free", event.deployment, model)
        return 0.0, 0.0

    def cost_nano(self, event: UsageEvent, table: RouteTable) -> int:
        """The cost in nano-dollars (integers keep sums exact)."""
        per_in, per_out = self.per_token(event, table)
        return round((event.prompt_tokens * per_in + event.completion_tokens * per_out) * NANO)
