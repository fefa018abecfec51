"""OpenBao allows the secrets service exactly what docs/security.md says: its own KV mount.

Logs in with the secrets service's AppRole (the credentials ``up`` wrote), checks the mount is
usable, then tries each path outside it (other mounts, ``sys/``, ``auth/``, policy writes,
minting tokens or secret ids): every one must be a 403 from OpenBao itself.
"""

from __future__ import annotations

import asyncio

import hvac
import hvac.exceptions
import pytest

from switchyard.stack import openbao
from tests.stacks import Stack

pytestmark = pytest.mark.integration

# (method, path, body): what a stolen secrets-service token must not do.
FORBIDDEN = [
    ("GET", "sys/mounts", None),
    ("POST", "sys/mounts/evil", {"type": "kv"}),
    ("GET", "sys/policies/acl?list=true", None),
    ("PUT", "sys/policies/acl/evil", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
    ("PUT", f"sys/policies/acl/{openbao.POLICY}", {"policy": 'path "*" {capabilities=["read"]}'}),
    ("GET", "sys/auth", None),
    ("POST", "sys/auth/userpass", {"type": "userpass"}),
    ("GET", "sys/audit", None),
    ("POST", "sys/seal", None),
    ("GET", "sys/raw/core", None),
    ("GET", f"auth/approle/role/{openbao.ROLE}", None),
    ("POST", f"auth/approle/role/{openbao.ROLE}/secret-id", {}),
    ("POST", "auth/approle/role/evil", {"token_policies": ["root"]}),
    ("POST", "auth/token/create", {"policies": ["root"]}),
    ("GET", "auth/token/accessors?list=true", None),
    ("GET", "secret/data/anything", None),
    ("POST", "secret/data/anything", {"data": {"v": "x"}}),
    ("GET", "identity/entity/id?list=true", None),
]


def _login(stack: Stack) -> hvac.Client:
    settings = stack.settings
    base = stack.home.openbao
    client = hvac.Client(
        url=f"https://127.0.0.1:{settings.stack.openbao_port}",
        verify=str(settings.certs_dir / "ca.pem"),
        timeout=10,
    )
    client.auth.approle.login(
        role_id=(base / "role-id").read_text().strip(),
        secret_id=(base / "secret-id").read_text().strip(),
    )
    return client


def _try(client: hvac.Client, method: str, path: str, body: object) -> str:
    try:
        client.adapter.request(method, f"v1/{path}", json=body)
    except hvac.exceptions.Forbidden:
        return "403"
    except hvac.exceptions.VaultError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "allowed"


async def test_secrets_approle_reaches_only_its_mount(stack: Stack) -> None:
    client = await asyncio.to_thread(_login, stack)
    mount = stack.settings.openbao.mount
    kv = client.secrets.kv.v2
    await asyncio.to_thread(
        kv.create_or_update_secret, path="policy-probe", secret={"value": "x"}, mount_point=mount
    )
    read = await asyncio.to_thread(
        kv.read_secret_version,
        path="policy-probe",
        mount_point=mount,
        raise_on_deleted_version=True,
    )
    assert read["data"]["data"] == {"value": "x"}
    outcomes = {
        f"{method} {path}": await asyncio.to_thread(_try, client, method, path, body)
        for method, path, body in FORBIDDEN
    }
    assert {k: v for k, v in outcomes.items() if v != "403"} == {}
