"""An internal client named like a service is refused when the settings load.

It used to be refused only where the NATS config or the certificates were built (``up``,
``deploy setup``, ``certs init``), so ``switchyard config`` and every other command took it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.cli import main
from switchyard.config import NatsSettings, load_settings
from switchyard.config.settings import CERT_FILE_NAMES, SERVICE_NAMES
from switchyard.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES | CERT_FILE_NAMES))
def test_a_service_name_is_refused_when_the_settings_load(name: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, env={}, overrides={"nats": {"internal_clients": ["app", name]}})
    assert refused.value.field == "nats.internal_clients"
    assert f"`{name}` is the name of a Switchyard service identity" in refused.value.problem
    # (`ca`, `server`, `route`: `certs init` would write the client's leaf over the CA's files
    # or a server's, and the CA's key would be lost.)
    assert "rename the internal client" in refused.value.hint


def test_refused_from_the_environment_and_when_built_in_code() -> None:
    env = {"SWITCHYARD_NATS__INTERNAL_CLIENTS": '["head"]'}
    with pytest.raises(ConfigError, match="`head` is the name"):
        load_settings(None, env=env)
    with pytest.raises(ConfigError, match="`tail` is the name"):
        NatsSettings(internal_clients=("tail",))
    env = {"SWITCHYARD_NATS__INTERNAL_CLIENTS": '["app", "head-client"]'}
    assert load_settings(None, env=env).nats.internal_clients == ("app", "head-client")


def test_switchyard_config_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``switchyard config`` (which renders nothing) refuses it too, naming the fix."""
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    path = tmp_path / "switchyard.yaml"
    path.write_text(f"home: {tmp_path}\nnats:\n  internal_clients: [batch]\n", encoding="utf-8")
    assert main(["--config", str(path), "config"]) == 2
    err = capsys.readouterr().err
    assert "invalid config at `nats.internal_clients`: `batch` is the name" in err
    assert "fix: rename the internal client (e.g. `batch-client`)" in err


def test_the_stacks_own_certificate_names_are_the_ones_refused() -> None:
    from switchyard.bus.identities import SERVER_CERT
    from switchyard.stack.certs import CA_NAME, ROUTE_CERT

    assert {CA_NAME, SERVER_CERT, ROUTE_CERT} == CERT_FILE_NAMES


@pytest.mark.parametrize("name", sorted(CERT_FILE_NAMES))
def test_certs_issue_refuses_the_stacks_own_certificate_names(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    path = tmp_path / "switchyard.yaml"
    path.write_text(f"home: {tmp_path}\n", encoding="utf-8")
    assert main(["--config", str(path), "certs", "issue", name, "--new-ca"]) == 1
    assert "names one of the stack's own certificates" in capsys.readouterr().err
    assert not list(tmp_path.rglob(f"{name}-key.pem"))


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_certs_issue_refuses_a_service_name(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``certs issue head`` printed ``kept .../head.pem`` and exited 0, handing back the
    head's own certificate (or issuing one with the head's DN in a new CA)."""
    monkeypatch.delenv("SWITCHYARD_CONFIG", raising=False)
    path = tmp_path / "switchyard.yaml"
    path.write_text(f"home: {tmp_path}\n", encoding="utf-8")
    assert main(["--config", str(path), "certs", "issue", name, "--new-ca"]) == 1
    err = capsys.readouterr().err
    assert f"`{name}` is a Switchyard service's identity" in err
    assert "certs init" in err
    assert not list(tmp_path.rglob(f"{name}-key.pem"))
