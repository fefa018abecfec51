"""The local OpenBao: configuration, first-run initialisation, and the secrets service's access.

Raft storage keeps data across restarts; a static 32-byte key auto-unseals it (fine for a local
stack; production uses a KMS or transit seal). On first run the server is initialised, the root
token is written 0600 under ``<home>/openbao`` (never printed), a KV v2 mount, a policy limited
to that mount and an AppRole for the secrets service are created. Every step is idempotent, so a
second ``up`` changes nothing and keeps every secret.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import requests

from switchyard.bus.identities import SERVER_CERT
from switchyard.bus.tls import tls_files
from switchyard.errors import StackError
from switchyard.stack.home import write_private

POLICY = "switchyard-secrets"
ROLE = "switchyard-secrets"
AUDIT_LOG = "audit.log"  # in the layout's dir; the supervisor rotates it as it does the logs


@dataclass(frozen=True, slots=True)
class OpenBaoLayout:
    """Where OpenBao keeps its files and how it is reached.

    Attributes:
        host: the name clients use (the server certificate names it).
        bind: the listen address (a container listens on every interface).
    """

    dir: Path
    port: int
    cert_dir: Path
    mount: str
    host: str = "127.0.0.1"
    bind: str = "127.0.0.1"

    @property
    def config_file(self) -> Path:
        return self.dir / "openbao.hcl"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def unseal_key(self) -> Path:
        return self.dir / "unseal.key"

    @property
    def root_token(self) -> Path:
        return self.dir / "root-token"

    @property
    def recovery_key(self) -> Path:
        return self.dir / "recovery-key"

    @property
    def role_id(self) -> Path:
        return self.dir / "role-id"

    @property
    def secret_id(self) -> Path:
        return self.dir / "secret-id"

    @property
    def audit_log(self) -> Path:
        return self.dir / AUDIT_LOG

    @property
    def addr(self) -> str:
        return f"https://{self.host}:{self.port}"


def _same_place(layout: OpenBaoLayout) -> None:
    """OpenBao stores its audit device's file path when it first starts, and refuses to
    start when the config names another ("modifications to audit devices are not allowed"),
    so a home moved or restored elsewhere left ``up`` waiting 60 s for an OpenBao that never
    unseals. The path is remembered beside the data; a moved home is refused at once, saying
    where it belongs."""
    marker = layout.dir / "audit-path"
    here = str(layout.audit_log)
    if marker.is_file():
        first = marker.read_text(encoding="utf-8").strip()
        if first and first != here and any(layout.data_dir.iterdir()):
            home = Path(first).parent.parent
            raise StackError(
                "openbao",
                f"this stack's home was set up at {home} and has moved: OpenBao keeps the "
                f"path of its audit log ({first}) and will not start with another. Put the "
                f"home back at {home} (a backup is restored at the path it came from)",
            )
    write_private(marker, here + "\n")


def policy_text(mount: str) -> str:
    """The secrets service's policy: its KV v2 mount, and keeping its own token alive."""
    return f"""
path "{mount}/data/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{mount}/metadata/*" {{ capabilities = ["read", "list", "delete", "update"] }}
path "{mount}/metadata" {{ capabilities = ["list"] }}
path "{mount}/detailed-metadata/*" {{ capabilities = ["list"] }}
path "{mount}/delete/*" {{ capabilities = ["update"] }}
path "{mount}/undelete/*" {{ capabilities = ["update"] }}
path "{mount}/destroy/*" {{ capabilities = ["update"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
""".lstrip()


def write_config(layout: OpenBaoLayout) -> None:
    """Write the server config and, on first run, the static unseal key (0600).

    Raises:
        StackError: the home was moved since OpenBao was set up (see :func:`_same_place`).
    """
    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    _same_place(layout)
    if not layout.unseal_key.exists():
        key = secrets.token_bytes(32)
        layout.unseal_key.touch(mode=0o600)
        layout.unseal_key.write_bytes(key)
    server = tls_files(layout.cert_dir, SERVER_CERT)
    text = f"""# Rendered by switchyard; edits are overwritten on the next `switchyard up`.
storage "raft" {{
  path    = "{layout.data_dir}"
  node_id = "switchyard-openbao-1"
  # Tight raft timings: a single local node elects itself in ~1 s instead of ~10 s.
  performance_multiplier = 1
}}
listener "tcp" {{
  address         = "{layout.bind}:{layout.port}"
  cluster_address = "{layout.bind}:{layout.port + 1}"
  tls_cert_file   = "{server.cert}"
  tls_key_file    = "{server.key}"
  tls_min_version = "tls12"
}}
seal "static" {{
  current_key_id = "local-1"
  current_key    = "file://{layout.unseal_key}"
}}
audit "file" "switchyard" {{
  options {{
    file_path = "{layout.audit_log}"
  }}
}}
api_addr      = "{layout.addr}"
cluster_addr  = "https://{layout.host}:{layout.port + 1}"
ui            = false
log_level     = "warn"
"""
    write_private(layout.config_file, text)


def _client(layout: OpenBaoLayout, token: str | None = None) -> hvac.Client:
    return hvac.Client(
        url=layout.addr, token=token, verify=str(layout.cert_dir / "ca.pem"), timeout=10
    )


def bootstrap(layout: OpenBaoLayout, timeout: float = 60.0) -> None:
    """Initialise (first run only) and provision the mount, policy and AppRole. Idempotent.

    Blocking (hvac is synchronous): call it in a thread from async code.

    Raises:
        StackError: OpenBao did not become ready, or refused a provisioning call.
    """
    client = _client(layout)
    deadline = time.monotonic() + timeout
    try:
        if not client.sys.is_initialized():
            result = client.sys.initialize(recovery_shares=1, recovery_threshold=1)
            write_private(layout.root_token, result["root_token"])
            write_private(layout.recovery_key, result["recovery_keys_base64"][0])
        _wait_active(layout, deadline)
        if not layout.root_token.is_file():
            raise StackError(
                "openbao",
                f"initialised, but {layout.root_token} is missing; restore it or remove "
                f"{layout.dir} to start over (this deletes stored secrets)",
            )
        client.token = layout.root_token.read_text(encoding="utf-8").strip()
        _provision(client, layout)
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise StackError("openbao", f"provisioning failed: {exc}") from exc


def _wait_active(layout: OpenBaoLayout, deadline: float) -> None:
    url = f"{layout.addr}/v1/sys/health"
    while True:
        try:
            if (
                requests.get(url, verify=str(layout.cert_dir / "ca.pem"), timeout=2).status_code
                == 200
            ):
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise StackError("openbao", "did not become active and unsealed in time")
        time.sleep(0.2)


def _provision(client: hvac.Client, layout: OpenBaoLayout) -> None:
    mounts = client.sys.list_mounted_secrets_engines()
    if f"{layout.mount}/" not in mounts.get("data", mounts):
        client.sys.enable_secrets_engine("kv", path=layout.mount, options={"version": "2"})
    client.sys.create_or_update_policy(POLICY, policy_text(layout.mount))
    auths = client.sys.list_auth_methods()
    if "approle/" not in auths.get("data", auths):
        client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        ROLE,
        token_policies=[POLICY],
        token_ttl="1h",  # noqa: S106  (a duration, not a password)
        token_max_ttl="24h",  # noqa: S106
        token_type="service",  # noqa: S106
    )
    role_id = client.auth.approle.read_role_id(ROLE)["data"]["role_id"]
    write_private(layout.role_id, role_id)
    if not layout.secret_id.is_file():
        secret_id = client.auth.approle.generate_secret_id(ROLE)["data"]["secret_id"]
        write_private(layout.secret_id, secret_id)
