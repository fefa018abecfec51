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
