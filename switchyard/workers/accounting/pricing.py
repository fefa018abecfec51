"""What a request cost: per-deployment price overrides first, then litellm's price map.

litellm ships a price map for most hosted models; it is read from the installed package (never
fetched: DESIGN §8) once, in a thread, when the worker starts. The JSON file is read directly:
importing litellm for it cost the accounting worker ~160 MiB of memory and seconds of start-up.
Models it does not know and that have no override cost nothing, and are logged once each so an
operator can add a price. Prompt tokens the provider read from or wrote to its prompt cache are
priced apart (litellm's ``cache_read_input_token_cost`` and ``cache_creation_input_token_cost``,
or the override's ``cache_read_per_token`` and ``cache_write_per_token``), at the input price
when no cache price is known.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

from switchyard.config import prepare_litellm_environment
from switchyard.limits.keys import NANO
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import Deployment, Provider, RouteTable

log = logging.getLogger("switchyard.accounting")


PRICE_FILE = "model_prices_and_context_window_backup.json"
# Rates remembered at most (then forgotten at once): a model name is what a provider says.
RATES_KEPT = 4096


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
        # Rates per (deployment, model) under the current table and price map: the events of a
        # batch mostly share them, and looking them up again cost ~1.3 µs an event.
        self._rates: dict[tuple[str, str], Rates] = {}

    async def load(self) -> None:
        try:
            self._map = await asyncio.to_thread(price_map)
        except ImportError:
            log.warning("litellm is not installed: only configured prices apply")
        self._rates.clear()

    def per_token(self, event: UsageEvent, table: RouteTable) -> Rates:
        """USD per token for the deployment that served ``event``: its route's price, else
        litellm's (a cache price either leaves out is the input price), else nothing."""
        if table is not self._table:  # the map is rebuilt once per route table revision
            self._table, self._deployments = table, table.deployments()
            self._rates.clear()
        key = (event.deployment, event.model)
        rates = self._rates.get(key)
        if rates is None:
            if len(self._rates) >= RATES_KEPT:
                self._rates.clear()
            rates = self._rates[key] = self._look_up(event)
        return rates

    def _look_up(self, event: UsageEvent) -> Rates:
        pair = self._deployments.get(event.deployment)
        kind: str = ""
        if pair is not None:
            provider, deployment = pair
            price = deployment.price
            if price is not None:
                return Rates(
                    price.input_per_token,
                    price.output_per_token,
                    price.cache_read,
                    price.cache_write,
                )
            kind = provider.kind
        model = event.model
        for name in (f"{kind}/{model}", model, model.rsplit("/", 1)[-1]):
            entry = self._map.get(name)
            if isinstance(entry, dict):
                per_in = _usd(entry.get("input_cost_per_token"))
                read = entry.get("cache_read_input_token_cost")
                write = entry.get("cache_creation_input_token_cost")
                return Rates(
                    per_in,
                    _usd(entry.get("output_cost_per_token")),
                    per_in if read is None else _usd(read),
                    per_in if write is None else _usd(write),
                )
        if event.deployment not in self._unpriced:
            self._unpriced.add(event.deployment)
            log.info("no price known for %s (%s); counted as free", event.deployment, model)
        return FREE

    def cost_nano(self, event: UsageEvent, table: RouteTable) -> int:
        """The cost in nano-dollars (integers keep sums exact): the prompt tokens not in the
        provider's cache at the input price, cache reads and writes at theirs, the completion
        at the output price."""
        rates = self.per_token(event, table)
        read, write = cache_split(
            event.prompt_tokens, event.cache_read_tokens, event.cache_write_tokens
        )
        uncached = max(0, event.prompt_tokens - read - write)
        usd = (
            uncached * rates.input
            + read * rates.cache_read
            + write * rates.cache_write
            + event.completion_tokens * rates.output
        )
        return round(usd * NANO)


class Rates(NamedTuple):
    """USD per token: prompt tokens (not cached), completion tokens, cache reads, writes."""

    input: float
    output: float
    cache_read: float
    cache_write: float


FREE = Rates(0.0, 0.0, 0.0, 0.0)


def cache_split(prompt: int, read: int, write: int) -> tuple[int, int]:
    """An event's cache reads and writes, within its prompt (an event from an older
    model-proxy has none; a count never makes more cache tokens than prompt tokens)."""
    read = min(max(0, read), max(0, prompt))
    return read, min(max(0, write), max(0, prompt) - read)


def _usd(value: object) -> float:
    """A price from litellm's map: a number, else free (``null``, or a value it does not
    parse; never an exception that would stop a batch)."""
    if not isinstance(value, int | float | str):
        return 0.0
    try:
        price = float(value)
    except ValueError:
        return 0.0
    return price if math.isfinite(price) and price >= 0 else 0.0
