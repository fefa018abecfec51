"""What a request cost: per-deployment price overrides first, then litellm's price map.

litellm ships a price map for most hosted models; it is loaded from the installed package (never
fetched: DESIGN §8) once, in a thread, when the worker starts. Models it does not know and that
have no override cost nothing, and are logged once each so an operator can add a price.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from switchyard.config import prepare_litellm_environment
from switchyard.limits.keys import NANO
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import Deployment, Provider, RouteTable

log = logging.getLogger("switchyard.accounting")


class Pricing:
    def __init__(self) -> None:
        self._map: dict[str, Any] = {}
        self._unpriced: set[str] = set()
        self._table: RouteTable | None = None
        self._deployments: dict[str, tuple[Provider, Deployment]] = {}

    async def load(self) -> None:
        def read() -> dict[str, Any]:
            prepare_litellm_environment()
            module = importlib.import_module("litellm")
            cost_map: dict[str, Any] = dict(module.model_cost)
            return cost_map

        try:
            self._map = await asyncio.to_thread(read)
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
