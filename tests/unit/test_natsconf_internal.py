"""The INTERNAL account of internal clients, as rendered into nats-server's config.

The running server is checked in tests/test_zones.py; this pins down the shape of the document:
internal clients in their own account with no JetStream and the LLM API as its only import,
their DN unchanged (existing certificates keep working), and the same accounts on every node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.bus import subjects as s
from switchyard.bus.identities import by_name, certificate_subjects, internal_client
from switchyard.config import load_settings
from switchyard.errors import ConfigError
from switchyard.stack.home import StackHome
from switchyard.stack.natsconf import NatsServerLayout, nats_config
from switchyard.stack.natsnodes import plan_nodes

pytestmark = pytest.mark.unit

ORG = "Switchyard"


def _doc(tmp_path: Path, internal_clients: tuple[str, ...]) -> dict[str, object]:
    layout = NatsServerLayout(
        port=4222,
        monitor_port=8222,
        store_dir=tmp_path / "js",
        cert_dir=tmp_path / "certs",
        organization=ORG,
        response_threshold_s=60,
        internal_clients=internal_clients,
    )
    return nats_config(layout)


def test_internal_clients_have_an_account_of_their_own(tmp_path: Path) -> None:
    accounts = _doc(tmp_path, ("billing-bot",))["accounts"]
    assert isinstance(accounts, dict)
    internal = accounts["INTERNAL"]
    # The DN its certificate was always issued with (OU=client): no certificate to reissue.
    assert [u["user"] for u in internal["users"]] == [f"CN=billing-bot,OU=client,O={ORG}"]
    assert "jetstream" not in internal  # nothing in this account can store a message
    assert "exports" not in internal
    imports = internal["imports"]
    assert [i["service"] for i in imports] == [{"account": "CORE", "subject": x} for x in s.LLM_API]
    assert all(i["share"] is True for i in imports)  # the head sees who asked
    users = [u["user"] for zone in ("CLIENT", "CORE", "SYS") for u in accounts[zone]["users"]]
    assert not any(u.startswith("CN=billing-bot,") for u in users)
    llm_exports = [e for e in accounts["CORE"]["exports"] if e["service"] in s.LLM_API]
    assert len(llm_exports) == len(s.LLM_API)
    assert all(e["accounts"] == ["CLIENT", "INTERNAL"] for e in llm_exports)


def test_the_internal_account_is_there_without_internal_clients(tmp_path: Path) -> None:
    """Every node renders the same accounts whatever the settings list."""
    accounts = _doc(tmp_path, ())["accounts"]
    assert isinstance(accounts, dict)
    assert accounts["INTERNAL"]["users"] == []


def test_every_cluster_node_has_the_same_accounts(tmp_path: Path) -> None:
    overrides = {
        "home": str(tmp_path),
        "stack": {"nats_nodes": 3},
        "nats": {"internal_clients": ["app"]},
    }
    settings = load_settings(None, env={}, overrides=overrides)
    docs = [nats_config(n.layout) for n in plan_nodes(settings, StackHome(tmp_path))]
    assert all(d["accounts"] == docs[0]["accounts"] for d in docs)
    assert [u["user"] for u in docs[0]["accounts"]["INTERNAL"]["users"]] == [
        f"CN=app,OU=client,O={ORG}"
    ]


def test_certificates_of_internal_clients_keep_their_subject() -> None:
    assert certificate_subjects(("app",))[-1] == ("app", "client")
    assert internal_client("app").dn(ORG) == f"CN=app,OU=client,O={ORG}"
    assert by_name("app", ("app",)).zone.value == "INTERNAL"


def test_an_internal_client_may_not_take_a_service_name() -> None:
    """Its DN would be the service's, which the head trusts by name (key hashes)."""
    with pytest.raises(ConfigError) as refused:
        internal_client("tail")
    assert refused.value.field == "nats.internal_clients"
    with pytest.raises(ConfigError):
        certificate_subjects(("batch",))
