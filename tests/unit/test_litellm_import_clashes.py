"""What an import does to names the live route table already has (pure logic and the text
the CLI prints); the refusal on a live stack is in tests/test_import.py."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import yaml

from switchyard.config import load_settings
from switchyard.control.import_cli import live_report, refusal, run_import
from switchyard.schemas.control import TableState
from switchyard.schemas.import_merge import compare, merge, replaced
from switchyard.schemas.routing import Deployment, Price, Provider, Route, RouteTable

pytestmark = pytest.mark.unit

LIVE_OPENAI = Provider(kind="openai", secret="team-a-key")
LIVE = RouteTable(
    providers={"openai": LIVE_OPENAI, "same": Provider(kind="anthropic")},
    routes={
        "gpt": Route(deployments=(Deployment(provider="openai", model="gpt-4o"),)),
        "other": Route(deployments=(Deployment(provider="openai", model="gpt-4o-mini"),)),
        "kept": Route(deployments=(Deployment(provider="same", model="c"),)),
    },
)
IMPORTED = RouteTable(
    providers={
        "openai": Provider(kind="openai-compatible", api_base="http://10.0.0.9/v1"),
        "same": Provider(kind="anthropic"),
        "fresh": Provider(kind="groq"),
    },
    routes={
        "gpt": Route(deployments=(Deployment(provider="openai", model="llama", weight=2),)),
        "kept": Route(deployments=(Deployment(provider="fresh", model="x"),)),
        "new": Route(deployments=(Deployment(provider="fresh", model="y"),)),
    },
)
FILE = RouteTable(routes={"kept": LIVE.routes["kept"]})


def test_each_name_is_new_unchanged_replaced_or_kept_with_what_differs() -> None:
    states = [(c.section, c.name, c.state, c.differs) for c in compare(LIVE, IMPORTED, kept=FILE)]
    assert states == [
        ("provider", "fresh", "new", ()),
        ("provider", "openai", "replaces", ("kind", "api_base", "secret")),
        ("provider", "same", "unchanged", ()),
        ("route", "gpt", "replaces", ("deployments",)),
        ("route", "kept", "kept", ()),
        ("route", "new", "new", ()),
    ]


def test_an_identical_import_is_no_clash() -> None:
    assert replaced(compare(LIVE, LIVE)) == []
    assert merge(LIVE, LIVE) == LIVE


def test_merge_adds_and_replaces_but_leaves_kept_names_alone() -> None:
    merged = merge(LIVE, IMPORTED, kept=FILE)
    assert merged.providers["openai"] == IMPORTED.providers["openai"]
    assert merged.routes["kept"] == LIVE.routes["kept"]
    assert set(merged.routes) == {"gpt", "other", "kept", "new"}


def test_the_cli_says_how_each_clash_differs_and_which_live_routes_it_touches() -> None:
    out = io.StringIO()
    changes = compare(LIVE, IMPORTED)
    live_report(TableState(revision=41, table=LIVE), changes, IMPORTED, out)
    text = out.getvalue()
    assert "already in the live route table (revision 41):" in text
    assert (
        "  provider openai: differs, would be replaced (kind: openai -> openai-compatible; "
        "api_base: none -> http://10.0.0.9/v1; secret: team-a-key -> none; "
        "live routes using it: other)"
    ) in text
    assert "  provider same: identical; left as it is" in text
    assert (
        "  route gpt: differs, would be replaced "
        "(deployments: openai/gpt-4o -> openai/llama weight=2)"
    ) in text
    assert "provider fresh" not in text  # new names are not "already live"
    problem, fix = refusal(replaced(changes))
    assert "provider openai, route gpt" in problem
    assert "--replace" in fix


def test_a_dry_run_without_a_platform_says_it_did_not_check(tmp_path: Path) -> None:
    config = tmp_path / "litellm.yaml"
    config.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-4o"}}]})
    )
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path / "home")})
    args = argparse.Namespace(file=config, output=None, apply=False, secrets_from_env=False)
    out = io.StringIO()
    assert run_import(args, settings, out) == 0
    assert "not checked against the live route table (" in out.getvalue()


def test_a_changed_price_reads_as_a_plain_decimal() -> None:
    """Per-token prices printed as ``2.5e-06 -> 1e-05`` in the import's diff."""
    priced = Route(
        deployments=(
            Deployment(
                provider="openai",
                model="gpt-4o",
                price=Price(input_per_token=2.5e-06, output_per_token=1e-05),
            ),
        )
    )
    imported = RouteTable(providers=LIVE.providers, routes={**LIVE.routes, "gpt": priced})
    out = io.StringIO()
    live_report(TableState(revision=7, table=LIVE), compare(LIVE, imported), imported, out)
    text = out.getvalue()
    assert "price=input_per_token=0.0000025 output_per_token=0.00001" in text, text
    assert "e-0" not in text
