"""Command-line input that used to be taken as given and then did the wrong thing: a health
port past 65535, a key allowed no model or expiring at once, and what `secrets` says about
secrets that providers use or lack."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from switchyard.admin.keys_cli import _fields, period_note
from switchyard.cli import build_parser
from switchyard.errors import InputError
from switchyard.schemas.routing import RouteTable
from switchyard.secrets.cli import _usage_lines

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_a_health_port_outside_0_to_65535_is_refused(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """99999 was accepted and the kernel listened on 34463 (99999 mod 65536)."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "head", "--health-port", port])
    assert exited.value.code == 2
    assert f"`{port}` is not a port number (0-65535)" in capsys.readouterr().err


def test_a_health_port_in_range_is_taken() -> None:
    args = build_parser().parse_args(["serve", "head", "--health-port", "65535"])
    assert args.health_port == 65535


def _key_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["keys", "create", "k", *argv])


@pytest.mark.parametrize("models", ["", " , ,"])
def test_an_empty_model_list_is_refused_with_what_to_pass(models: str) -> None:
    """``--models ''`` locked the key out of every model, silently."""
    with pytest.raises(InputError) as refused:
        _fields(_key_args("--models", models))
    assert refused.value.field == "--models"
    assert "--models '*'" in str(refused.value)
    assert _fields(_key_args("--models", "gpt-*, b"))["models"] == ("gpt-*", "b")


@pytest.mark.parametrize("duration", ["0d", "0s", "00h"])
def test_an_expiry_of_no_time_is_refused(duration: str) -> None:
    """``--expires-in 0d`` wrote a key that was expired before anyone could use it."""
    with pytest.raises(InputError) as refused:
        _fields(_key_args("--expires-in", duration))
    assert "no time at all" in str(refused.value)
    assert "keys revoke" in str(refused.value)
    assert _fields(_key_args("--expires-in", "1h"))["expires_at"] > 0


TABLE = msgspec.convert(
    {
        "providers": {
            "p": {"kind": "openai-compatible", "api_base": "http://x/v1", "secret": "s"},
            "q": {"kind": "openai-compatible", "api_base": "http://x/v1"},
            "r": {"kind": "openai-compatible", "api_base": "http://x/v1", "secret": "gone"},
        },
        "routes": {
            "only-p": {"deployments": [{"provider": "p", "model": "m"}]},
            "p-and-q": {
                "deployments": [{"provider": "p", "model": "m"}, {"provider": "q", "model": "m"}]
            },
            "p-falls-back": {"deployments": [{"provider": "p", "model": "m"}], "fallbacks": ["q"]},
            "q": {"deployments": [{"provider": "q", "model": "m"}]},
        },
    },
    RouteTable,
)


def test_a_secrets_users_are_told_apart_by_whether_they_keep_answering() -> None:
    users = TABLE.secret_users("s")
    assert users.providers == ["p"]
    assert users.stranded == ["only-p"]
    assert users.degraded == ["p-and-q"]
    assert users.fallback_only == {"p-falls-back": ["q"]}


def test_a_route_left_with_its_fallback_alone_is_not_called_degraded() -> None:
    """`secrets rm` listed it among the routes that only "lose those deployments", though
    it can no longer serve its own model: only its fallback answers."""
    users = TABLE.secret_users("s")
    assert users.fallback_notes() == ["p-falls-back (only its fallback q will answer)"]
    said = "\n".join(_usage_lines("s", users))
    assert "lose all their own deployments: p-falls-back (only its fallback q will answer)" in said
    assert "(their others answer): p-and-q" in said
    assert "p-falls-back" not in said.split("their others answer")[1]
    assert TABLE.secret_users("unused").providers == []


def test_secrets_providers_name_but_nobody_stored_are_found() -> None:
    assert TABLE.unstored_secrets({"s"}) == [("gone", "r")]
    assert TABLE.unstored_secrets({"s", "gone"}) == []


def test_a_changed_budget_period_is_said_to_start_from_its_own_counter() -> None:
    """`keys update --budget-period daily` of a monthly key showed `$0 this daily period`
    after $0.06 spent today, without a word: each period has its own counter."""
    note = period_note("monthly", "daily")
    assert note is not None
    assert "starts from what the current `daily` period's counter holds" in note
    assert "under `monthly` is not carried over" in note
    assert "3600-second" in (period_note("daily", "3600") or "")
    assert period_note("daily", "daily") is None


def test_a_fallback_that_loses_the_same_key_is_no_fallback() -> None:
    """`big` falls back to `small`, both on the key deleted: the warning promised that `small`
    would answer for `big` while it listed `small` itself as left with nothing (reviewer)."""
    table = msgspec.convert(
        {
            "providers": {
                "p": {"kind": "openai-compatible", "api_base": "http://x/v1", "secret": "s"},
                "q": {"kind": "openai-compatible", "api_base": "http://x/v1"},
            },
            "routes": {
                "big": {"deployments": [{"provider": "p", "model": "l"}], "fallbacks": ["small"]},
                "small": {"deployments": [{"provider": "p", "model": "s"}]},
                # A chain still answers at its end; a cycle on the lost key does not.
                "chain": {"deployments": [{"provider": "p", "model": "c"}], "fallbacks": ["via"]},
                "via": {"deployments": [{"provider": "p", "model": "v"}], "fallbacks": ["q"]},
                "q": {"deployments": [{"provider": "q", "model": "m"}]},
                "loop-a": {
                    "deployments": [{"provider": "p", "model": "a"}],
                    "fallbacks": ["loop-b"],
                },
                "loop-b": {
                    "deployments": [{"provider": "p", "model": "b"}],
                    "fallbacks": ["loop-a"],
                },
            },
        },
        RouteTable,
    )
    users = table.secret_users("s")
    assert users.stranded == ["big", "loop-a", "loop-b", "small"]
    assert users.fallback_only == {"chain": ["via"], "via": ["q"]}
