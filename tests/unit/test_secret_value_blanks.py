"""A provider key with a blank around it: refused by the secrets service's message type,
stripped by every way in that reads a key (CLI, LiteLLM import).

A pasted ``" sk-...333  "`` was stored as typed, and every call with it then failed 502
"provider refused the API key" until it was rotated again.
"""

from __future__ import annotations

import argparse
import io

import msgspec
import pytest

from switchyard.control.import_secrets import value_to_store
from switchyard.control.litellm_import import SecretPlaceholder, convert_text
from switchyard.schemas.secrets import PutSecret
from switchyard.secrets.cli import read_value

pytestmark = pytest.mark.unit

KEY = "sk-blank-test-3333"


@pytest.mark.parametrize("value", [f" {KEY}", f"{KEY}  ", f" {KEY} ", f"{KEY}\u00a0"])
def test_a_value_with_a_blank_at_either_end_is_refused_without_quoting_it(value: str) -> None:
    body = msgspec.json.encode({"name": "k", "value": value})
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=PutSecret)
    assert "starts or ends with a space" in str(info.value)
    assert "blank-test" not in str(info.value)


def test_a_blank_inside_a_value_is_kept() -> None:
    """Only the ends: what is inside is the caller's (no guess at what a provider takes)."""
    got = msgspec.json.decode(b'{"name":"k","value":"sk-a b"}', type=PutSecret)
    assert got.value == "sk-a b"


def test_the_cli_strips_blanks_around_a_value_from_stdin() -> None:
    args = argparse.Namespace(name="k", value_file=None, from_stdin=True)
    assert read_value(args, io.StringIO(f"  {KEY}  \r\n")) == KEY
    assert read_value(args, io.StringIO(f"\t{KEY}\n")) == KEY


def test_the_import_strips_blanks_around_a_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = SecretPlaceholder(name="team_key", env_var="TEAM_KEY")
    monkeypatch.setenv("TEAM_KEY", f" {KEY}  \n")
    assert value_to_store(env, from_env=True) == KEY
    monkeypatch.setenv("TEAM_KEY", "  \n")
    assert value_to_store(env, from_env=True) is None  # nothing to store, as when unset


def test_the_import_strips_blanks_around_a_literal_key_in_the_file() -> None:
    config = (
        "model_list:\n"
        "  - model_name: m\n"
        f"    litellm_params: {{model: openai/gpt-4o, api_key: ' {KEY}  '}}\n"
    )
    (secret,) = convert_text(config).secrets
    assert secret.value == KEY
    assert value_to_store(secret, from_env=False) == KEY
