"""compose/compose.yaml, checked offline (the Podman suite, ``pytest -m compose``, runs it):
the settings every service gets load, and the files they name are in the bundles ``deploy
setup`` fills for the services that read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.config import load_settings
from switchyard.stack import containers

COMPOSE = Path(__file__).parents[2] / "compose" / "compose.yaml"

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _defaults(env: dict[str, str]) -> dict[str, str]:
    """The environment as compose gives it with none of the SY_* variables set."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}


def _creds_volume(service: dict[str, Any], creds: Path) -> str:
    """The named volume a service mounts where it reads its credentials."""
    (volume,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == str(creds)]
    return str(volume)


def test_the_gateway_reads_both_admin_tokens_from_its_bundle(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The read-only admin token, like the admin one, is made by `setup` and found by the
    gateway where the settings say: without it a compose deployment has no read-only access."""
    settings = load_settings(None, env=_defaults(compose["x-env"]))
    layout = containers.DeployLayout(state=tmp_path / "state", bundles=tmp_path / "bundles")
    containers.setup(load_settings(None, env={}), layout)
    gateway = compose["services"]["gateway"]
    assert _creds_volume(gateway, layout.creds) == "creds-gateway"
    # setup mounts that volume as the gateway's bundle.
    assert (
        f"creds-gateway:{containers.DeployLayout().bundle('gateway')}"
        in compose["services"]["setup"]["volumes"]
    )
    bundle = {p.name for p in layout.bundle("gateway").iterdir()}
    for path in (settings.admin_token_file, settings.admin_readonly_token_file):
        assert path.parent == layout.creds, path
        assert path.name in bundle, path
