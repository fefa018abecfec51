"""What ``switchyard import litellm-config`` checks before ``--apply`` writes anything: the
route table's own rules, and entries it could not import at all (the CLI's text and exit)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from switchyard.config import load_settings
from switchyard.control.import_cli import run_import
from switchyard.errors import InputError, SwitchyardError

pytestmark = pytest.mark.unit

# `a` falls back to itself: the route table refuses that, so the control service would too.
SELF_FALLBACK = (
    "model_list:\n"
    "  - {model_name: a, litellm_params: {model: openai/gpt-4o, api_key: sk-literal-1234}}\n"
    "router_settings: {fallbacks: [{a: [a]}]}\n"
)
# `odd` is a provider Switchyard does not serve: the route would be left out.
UNSERVABLE = (
    "model_list:\n"
    "  - {model_name: ok, litellm_params: {model: openai/gpt-4o}}\n"
    "  - {model_name: odd, litellm_params: {model: sagemaker/x}}\n"
)


def _run(tmp_path: Path, text: str, **flags: bool) -> tuple[int | None, str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    # No stack runs here: an --apply that gets as far as connecting raises there.
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path / "home")})
    args = argparse.Namespace(
        file=config, output=None, secrets_from_env=False, **{"apply": False, **flags}
    )
    out = io.StringIO()
    try:
        code: int | None = run_import(args, settings, out)
    except InputError as exc:
        return None, out.getvalue(), str(exc)
    return code, out.getvalue(), ""


def test_the_preview_shows_what_the_route_table_refuses(tmp_path: Path) -> None:
    """The preview said nothing; --apply then failed in the control service."""
    code, out, _ = _run(tmp_path, SELF_FALLBACK)
    assert code == 0
    assert "the route table refuses these (--apply stores and changes nothing):" in out
    assert "routes.a.fallbacks[0]" in out


def test_apply_refuses_a_table_the_route_table_refuses_before_connecting(tmp_path: Path) -> None:
    _, out, error = _run(tmp_path, SELF_FALLBACK, apply=True)
    assert error.startswith("not applied: routes.a.fallbacks[0]")
    assert "sk-literal" not in out + error


def test_an_entry_not_imported_is_named_with_its_route_and_blocks_apply(tmp_path: Path) -> None:
    """It was one line among the not-mapped ones, and --apply went on without the route."""
    code, out, _ = _run(tmp_path, UNSERVABLE)
    assert code == 0
    assert "NOT IMPORTED (1 model_list entries left out):" in out
    assert "! route odd: model_list[1]: provider of model `sagemaker/x` is not supported" in out
    assert "--apply refuses while 1 entries are not imported unless you add --allow-partial" in out
    _, _, error = _run(tmp_path, UNSERVABLE, apply=True)
    assert "1 model_list entries cannot be imported (routes odd;" in error
    assert "--allow-partial" in error


def test_allow_partial_lets_apply_go_on_without_them(tmp_path: Path) -> None:
    """With the flag the import goes on to the platform (none runs here, so it stops there)."""
    with pytest.raises(SwitchyardError) as raised:  # no certificates, no stack
        _run(tmp_path, UNSERVABLE, apply=True, allow_partial=True)
    assert not isinstance(raised.value, InputError)
