"""What a request cost: per-deployment price overrides first, then litellm's price map.

litellm ships a price map for most hosted models; it is read from the installed package (never
fetched: DESIGN §8) once, in a thread, when the worker starts. The JSON file is read directly:
importing litellm for it cost the accounting worker ~160 MiB of memory and seconds of start-up.
The tokens of models it does not know and that have no override cost nothing (their web
searches do not), and are logged once each so an operator can add a price. Prompt tokens the
provider read from or wrote to its prompt cache are priced apart (litellm's
``cache_read_input_token_cost`` and ``cache_creation_input_token_cost``, or the override's
``cache_read_per_token`` and ``cache_write_per_token``), at the input price when no cache price
is known.

The provider's own web searches are priced per call: the override's ``web_search_per_call``,
else litellm's ``search_context_cost_per_query`` for the model (at the ``medium`` search
context, the providers' default), else :data:`WEB_SEARCH_DEFAULT` (Anthropic's and OpenAI's
documented $10 per 1,000 searches), whether the model's tokens are priced or not.
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
# Deployments removed from the route table whose prices are kept for their late usage.
REMOVED_KEPT = 1024
# USD per web search when neither the route nor litellm's map prices it: what Anthropic
# (web_search tool) and OpenAI (web_search tool of the Responses API) charge, $10 per 1,000.
WEB_SEARCH_DEFAULT = 0.01
_SEARCH_CONTEXT = "search_context_size_medium"


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
        litellm's (a cache price either leaves out is the input price), else nothing; and
        USD per web search (see the module's note)."""
        if table is not self._table:  # the map is rebuilt once per route table revision
            self._table = table
            self._deployments = self._with_removed(table.deployments())
            self._rates.clear()
        key = (event.deployment, event.model)
        rates = self._rates.get(key)
        if rates is None:
            if len(self._rates) >= RATES_KEPT:
                self._rates.clear()
            rates = self._rates[key] = self._look_up(event)
        return rates

    def _with_removed(
        self, current: dict[str, tuple[Provider, Deployment]]
    ) -> dict[str, tuple[Provider, Deployment]]:
        """``current`` plus the deployments earlier tables had and this one dropped: requests
        a removed deployment was still serving end after the edit (a batch's in-flight lines,
        a queue's backlog) and are billed at the price it last had, not litellm's or nothing.
        The newest :data:`REMOVED_KEPT` are kept, for as long as this worker runs."""
        removed = {k: v for k, v in self._deployments.items() if k not in current}
        if len(removed) > REMOVED_KEPT:
            removed = dict(list(removed.items())[-REMOVED_KEPT:])
        return {**removed, **current}

    def _look_up(self, event: UsageEvent) -> Rates:
        pair = self._deployments.get(event.deployment)
        price = pair[1].price if pair is not None else None
        entry = self._entry(pair[0].kind if pair is not None else "", event.model)
        search = search_price(entry)
        if price is not None:
            per_call = price.web_search_per_call
            return Rates(
                price.input_per_token,
                price.output_per_token,
                price.cache_read,
                price.cache_write,
                search if per_call is None else per_call,
            )
        if entry is not None:
            per_in = _usd(entry.get("input_cost_per_token"))
            read = entry.get("cache_read_input_token_cost")
            write = entry.get("cache_creation_input_token_cost")
            return Rates(
                per_in,
                _usd(entry.get("output_cost_per_token")),
                per_in if read is None else _usd(read),
                per_in if write is None else _usd(write),
                search,
            )
        if event.deployment not in self._unpriced:
            self._unpriced.add(event.deployment)
            log.info(
                "no price known for %s (%s); its tokens are counted as free",
                event.deployment,
                event.model,
            )
        return FREE

    def _entry(self, kind: str, model: str) -> dict[str, Any] | None:
        """litellm's entry for ``model`` on a provider of ``kind``, if it has one."""
        for name in (f"{kind}/{model}", model, model.rsplit("/", 1)[-1]):
            entry = self._map.get(name)
            if isinstance(entry, dict):
                return entry
        return None

    def cost_nano(self, event: UsageEvent, table: RouteTable) -> int:
        """The cost in nano-dollars (integers keep sums exact): the prompt tokens not in the
        provider's cache at the input price, cache reads and writes at theirs, the completion
        at the output price, each web search at the search price."""
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
            + max(0, event.web_search_calls) * rates.web_search
        )
        return round(usd * NANO)


class Rates(NamedTuple):
    """USD per token: prompt tokens (not cached), completion tokens, cache reads, writes; and
    USD per web search."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    web_search: float = WEB_SEARCH_DEFAULT


# Tokens of a model without a price; its web searches still cost the default.
FREE = Rates(0.0, 0.0, 0.0, 0.0)


def search_price(entry: dict[str, Any] | None) -> float:
    """USD per web search from litellm's entry for a model: its
    ``search_context_cost_per_query`` at the medium context (the providers' default; the
    highest it lists when it has no medium), else :data:`WEB_SEARCH_DEFAULT`."""
    costs = entry.get("search_context_cost_per_query") if entry is not None else None
    if isinstance(costs, dict) and costs:
        if _SEARCH_CONTEXT in costs:
            return _usd(costs[_SEARCH_CONTEXT])
        return max(_usd(cost) for cost in costs.values())
    if isinstance(costs, int | float) and not isinstance(costs, bool):
        return _usd(costs)
    return WEB_SEARCH_DEFAULT


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
