"""Hostile or broken LiteLLM configs pasted into the admin UI's import (or given to the CLI):
a clear refusal or an 'not mapped' line, never a 500, a hang or gigabytes of memory."""

from __future__ import annotations

import pytest

from switchyard.control.litellm_import import (
    MAX_VALUES,
    ConfigUnreadable,
    convert_text,
    parse_config,
)

pytestmark = pytest.mark.unit


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    lines.append(f"model_list: [{{model_name: x, litellm_params: {{model: *a{levels - 1}}}}}]")
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_past_the_bound_are_refused_at_once() -> None:
    text = _laughs(9)  # 500 bytes that expand to 387 million values
    assert len(text) < 600
    with pytest.raises(ConfigUnreadable, match=f"more than {MAX_VALUES:,} values"):
        convert_text(text)  # (before: spelled out in full, gigabytes)


def test_deep_nesting_and_non_configs_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigUnreadable, match="nested too deeply"):
        parse_config("[" * 50_000)
    with pytest.raises(ConfigUnreadable, match="not valid YAML"):
        parse_config("model_list: [unclosed\n")
    with pytest.raises(ConfigUnreadable, match="no `model_list` found"):
        parse_config("- a list\n")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("[1, 2]", "model_list[0]: not a mapping"),
        ("{model_name: x, litellm_params: [1]}", "model_list[0].litellm_params: not a mapping"),
        (
            "{model_name: x, litellm_params: {model: gpt-4o, weight: abc}}",
            "model_list[0].litellm_params.weight: `abc` is not a number",
        ),
        (
            "{model_name: x, litellm_params: {model: [a, b]}}",
            "model_list[0].litellm_params.model: expected a single value, got a list",
        ),
    ],
)
def test_an_entry_that_cannot_be_read_is_listed_not_raised(entry: str, reason: str) -> None:
    text = f"model_list:\n  - {entry}\n  - {{model_name: ok, litellm_params: {{model: gpt-4o}}}}\n"
    result = convert_text(text)
    assert reason in result.unmapped
    assert list(result.table.routes) == ["ok"]  # the readable entry is still imported
    assert list(result.table.providers) == ["openai"]  # and nothing of the broken one


def test_settings_sections_of_the_wrong_shape_are_skipped() -> None:
    text = (
        "model_list: [{model_name: ok, litellm_params: {model: gpt-4o}}]\n"
        "router_settings: [1]\nlitellm_settings: {fallbacks: [{ok: 3}], api_version: [x]}\n"
    )
    result = convert_text(text)
    assert list(result.table.routes) == ["ok"]


def test_an_unquoted_date_is_an_api_version_as_before() -> None:
    """YAML reads `api_version: 2024-06-01` as a date; LiteLLM takes it, so does the import."""
    text = (
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: azure/gpt-4o, api_base: 'https://x.openai"
        ".azure.com', api_version: 2024-06-01}}\n"
    )
    result = convert_text(text)
    assert result.unmapped == []
    assert [p.api_version for p in result.table.providers.values()] == ["2024-06-01"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("weight: -1", "weight: `-1` is out of range (at least 0)"),
        ("max_parallel_requests: .inf", "max_parallel_requests: `inf` is out of range"),
        ("timeout: .nan", "timeout: `nan` is out of range"),
        ("timeout: '1e400'", "timeout: `1e400` is out of range"),
        ("api_base: 'https://h/v1?api_key=abc'", "api_base: carries a credential"),
    ],
)
def test_values_the_table_would_refuse_are_listed_per_entry(params: str, reason: str) -> None:
    """Imported as they were, the preview looked fine and Apply then refused everything."""
    text = (
        f"model_list:\n  - {{model_name: x, litellm_params: {{model: gpt-4o, {params}}}}}\n"
        "  - {model_name: ok, litellm_params: {model: gpt-4o}}\n"
    )
    result = convert_text(text)
    assert any(reason in line for line in result.unmapped), result.unmapped
    # An unusable timeout is left to the default; the other values drop their entry.
    kept = ["x", "ok"] if params.startswith("timeout") else ["ok"]
    assert list(result.table.routes) == kept


def test_a_default_is_listed_only_for_an_entry_that_was_imported() -> None:
    text = (
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: azure/x, api_base: 'https://h', weight: z}}\n"
    )
    result = convert_text(text)
    assert result.defaults == []
    assert not result.table.routes


def test_a_model_list_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(ConfigUnreadable, match="`model_list` is not a list"):
        parse_config("model_list: {model_name: x, litellm_params: {model: gpt-4o}}\n")
