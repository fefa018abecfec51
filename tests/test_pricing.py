"""The accounting worker's price map: litellm's bundled map, read without importing litellm
(which cost the worker ~160 MiB), priced exactly as litellm prices every model."""

import asyncio
import math
import subprocess
import sys

import msgspec
import pytest

from switchyard.config import prepare_litellm_environment
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.routing import Price, RouteTable, decode_route_table, deployment_id
from switchyard.workers.accounting.pricing import Pricing, price_map

PRICES = ("input_cost_per_token", "output_cost_per_token")


def test_the_map_is_read_without_importing_litellm() -> None:
    code = (
        "import sys\n"
        "from switchyard.workers.accounting.pricing import price_map\n"
        "prices = price_map()\n"
        "assert prices['gpt-4o']['input_cost_per_token'] > 0, prices.get('gpt-4o')\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_model_costs_what_litellm_says() -> None:
    prepare_litellm_environment()
    import litellm  # the comparison is the point

    ours = price_map()
    assert set(ours) == set(litellm.model_cost)
    differ = [
        name
        for name, entry in litellm.model_cost.items()
        if any(entry.get(field) != ours[name].get(field) for field in PRICES)
    ]
    assert differ == []
    aliases = [name for name, entry in ours.items() if "alias_of" in entry]
    assert aliases == []  # an alias carries its model's prices, as in litellm


# ---- prompt-cache tokens: in the prompt, priced apart ----

_TABLE = {
    "providers": {
        "claude": {"kind": "anthropic"},
        "local": {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"},
    },
    "routes": {
        "sonnet": {"deployments": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
        "mini": {"deployments": [{"provider": "local", "model": "gpt-4o-mini"}]},
        "own": {
            "deployments": [
                {
                    "provider": "local",
                    "model": "own",
                    "price": {
                        "input_per_token": 0.000002,
                        "output_per_token": 0.000008,
                        "cache_read_per_token": 0.0000005,
                        "cache_write_per_token": 0.0000025,
                    },
                }
            ]
        },
        "plain": {
            "deployments": [
                {
                    "provider": "local",
                    "model": "plain",
                    "price": {"input_per_token": 0.000002, "output_per_token": 0.000008},
                }
            ]
        },
    },
}


def _priced() -> tuple[Pricing, RouteTable]:
    pricing = Pricing()
    asyncio.run(pricing.load())
    return pricing, decode_route_table(msgspec.json.encode(_TABLE))


def _event(
    provider: str,
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> UsageEvent:
    return UsageEvent(
        id="r:1",
        request_id="r",
        ts=0.0,
        op="chat",
        alias=model,
        deployment=deployment_id(provider, model),
        provider=provider,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
    )


def test_anthropic_cache_reads_and_writes_cost_what_anthropic_charges() -> None:
    """The reported case: 10 input tokens, 100,000 read from the cache, 10 output tokens on
    claude-sonnet-4-5 cost $0.03018 (a read is a tenth of an input token), not $0.30018."""
    pricing, table = _priced()
    entry = price_map()["claude-sonnet-4-5"]
    assert (entry["input_cost_per_token"], entry["cache_read_input_token_cost"]) == (3e-6, 3e-7)
    assert entry["cache_creation_input_token_cost"] == 3.75e-6
    read = _event(
        "claude",
        "claude-sonnet-4-5",
        prompt_tokens=100010,
        completion_tokens=10,
        cache_read_tokens=100000,
    )
    assert pricing.cost_nano(read, table) == 30_180_000  # $0.03018
    written = _event(
        "claude",
        "claude-sonnet-4-5",
        prompt_tokens=101010,
        completion_tokens=10,
        cache_read_tokens=100000,
        cache_write_tokens=1000,
    )
    assert pricing.cost_nano(written, table) == 33_930_000  # + 1,000 x $3.75 per million
    uncached = _event("claude", "claude-sonnet-4-5", prompt_tokens=100010, completion_tokens=10)
    assert pricing.cost_nano(uncached, table) == 300_180_000  # no cache: the input price


def test_openai_cached_tokens_at_the_cached_price() -> None:
    pricing, table = _priced()
    entry = price_map()["gpt-4o-mini"]
    assert entry.get("cache_creation_input_token_cost") is None  # OpenAI charges no writes
    event = _event(
        "local", "gpt-4o-mini", prompt_tokens=1000, completion_tokens=100, cache_read_tokens=800
    )
    per_in, per_out = entry["input_cost_per_token"], entry["output_cost_per_token"]
    expected = 200 * per_in + 800 * entry["cache_read_input_token_cost"] + 100 * per_out
    assert pricing.cost_nano(event, table) == round(expected * 1_000_000_000)
    assert pricing.cost_nano(event, table) < round((1000 * per_in + 100 * per_out) * 1e9)
    # A write the map has no price for costs the input price (what every token cost before).
    written = _event("local", "gpt-4o-mini", prompt_tokens=1000, cache_write_tokens=1000)
    assert pricing.cost_nano(written, table) == round(1000 * per_in * 1_000_000_000)


def test_a_route_prices_cache_tokens_itself_or_at_its_input_price() -> None:
    pricing, table = _priced()
    tokens = {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1000,
        "cache_read_tokens": 600_000,
        "cache_write_tokens": 300_000,
    }
    # 100,000 x $2 + 600,000 x $0.5 + 300,000 x $2.5 per million, + 1,000 x $8 per million.
    assert pricing.cost_nano(_event("local", "own", **tokens), table) == 1_258_000_000
    # Without cache prices the route's input price covers every prompt token (as before).
    assert pricing.cost_nano(_event("local", "plain", **tokens), table) == 2_008_000_000


def test_cache_prices_are_validated_like_the_others() -> None:
    base = {"input_per_token": 1e-6, "output_per_token": 1e-6}
    for field in ("cache_read_per_token", "cache_write_per_token"):
        for bad in (-1e-6, math.inf, math.nan):
            with pytest.raises(msgspec.ValidationError, match=field.split("_per")[0] + "|>= 0"):
                msgspec.convert({**base, field: bad}, Price)
    with pytest.raises(msgspec.ValidationError, match="input_per_token must be a finite"):
        msgspec.convert({**base, "input_per_token": math.inf}, Price)
    # Left out, they are not written back either (the stored table keeps its shape).
    assert msgspec.json.decode(msgspec.json.encode(msgspec.convert(base, Price))) == base


def test_a_deployment_removed_from_its_route_bills_its_last_price() -> None:
    """An explorer's batch: a route edit removed a priced deployment while 8 of its requests
    ran; their usage came after the edit and was billed $0 (no table price, litellm knows no
    model `own`). They cost what the deployment was priced at when it last served."""
    pricing, table = _priced()
    event = _event("local", "own", prompt_tokens=1000, completion_tokens=100)
    before = pricing.cost_nano(event, table)
    assert before == 2_800_000  # 1,000 x $2 + 100 x $8 per million
    routes: dict[str, object] = dict(_TABLE["routes"])  # type: ignore[call-overload]
    del routes["own"]
    edited = {**_TABLE, "routes": routes}
    after_edit = decode_route_table(msgspec.json.encode(edited))
    assert pricing.cost_nano(event, after_edit) == before
    again = decode_route_table(msgspec.json.encode(edited))  # a later revision keeps it too
    assert pricing.cost_nano(event, again) == before
    fresh = Pricing()  # a worker that never saw it priced knows no price (counted as free)
    asyncio.run(fresh.load())
    assert fresh.cost_nano(event, after_edit) == 0
