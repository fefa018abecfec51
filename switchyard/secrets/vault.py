"""Vault/OpenBao access for the secrets service: KV v2 reads and writes, login, token renewal.

hvac is synchronous, so every call runs in a worker thread and the event loop never blocks on
Vault. The service logs in with AppRole (production) or a token file (development), renews its
token before it expires and logs in again when renewal is refused. When Vault cannot be
reached, calls fail fast with :class:`~switchyard.errors.VaultUnavailable` for a second instead
of stacking timeouts. Losing Vault (unreachable, sealed, credentials refused) is logged as a
warning, again at most every ``WARN_EVERY_S`` while it lasts (at once when the kind of failure
changes), and its return as an info line: the kind of failure only, never a token or value.
Provider keys live at ``<mount>/providers/<name>`` with non-secret metadata (provider, last
four characters, who changed it) in KV v2 custom metadata.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests
from hvac.utils import format_url

from switchyard.config import Settings
from switchyard.errors import Conflict, SecretsError, VaultUnavailable
from switchyard.runtime.throttle import Throttle

log = logging.getLogger("switchyard.secrets.vault")

T = TypeVar("T")
# What a write did: a new version, a new provider label on the current one, or nothing.
Written = Literal["stored", "labelled", "unchanged"]
PREFIX = "providers"
FAIL_FAST_S = 1.0
# A write read again after another writer's version came between its read and its write.
WRITE_ATTEMPTS = 5
# The pause after a write's n-th lost race: n times this, jittered by half either way.
WRITE_BACKOFF_S = 0.02
WARN_EVERY_S = 60.0
# How long a server or policy that refused the detailed LIST is not asked for it again.
DETAILED_RETRY_S = 300.0
REFUSED = "Vault/OpenBao refused the secrets service's credentials; check its AppRole and policy"
_LOGIN_REFUSED = (
    hvac.exceptions.InvalidRequest,
    hvac.exceptions.Forbidden,
    hvac.exceptions.Unauthorized,
)


class SecretMissing(SecretsError):
    """No secret with that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no secret named `{name}`")


@dataclass(frozen=True, slots=True)
class StoredSecret:
    name: str
    value: str
    version: int

    def __repr__(self) -> str:  # never print the value, even in a debugger or traceback
        return f"StoredSecret(name={self.name!r}, version={self.version}, value='***')"


@dataclass(frozen=True, slots=True)
class SecretMeta:
    """Everything about a secret except its value."""

    name: str
    version: int
    provider: str
    last4: str
    created_at: str
    updated_at: str
    updated_by: str


class Vault:
    def __init__(self, settings: Settings) -> None:
        cfg = settings.openbao
        self._mount = cfg.mount
        self._auth = cfg.auth
        self._role_id_file = settings.openbao_file(cfg.role_id_file, "role-id")
        self._secret_id_file = settings.openbao_file(cfg.secret_id_file, "secret-id")
        self._token_file = settings.openbao_file(cfg.token_file, "root-token")
        ca = Path(cfg.ca_file) if cfg.ca_file else settings.certs_dir / "ca.pem"
        # hvac takes whatever token it finds around it ($VAULT_TOKEN, ~/.vault-token, left by
        # an operator's `bao login`) when given none, and fails when that file cannot be read:
        # an empty token makes it look for none; only the configured credentials are used.
        self._client = hvac.Client(
            url=settings.openbao_addr, verify=str(ca), timeout=cfg.timeout_s, token=""
        )
        self._lock = threading.Lock()  # hvac's session is shared by the worker threads
        self._renew_at = 0.0
        self._failed_at = 0.0
        self._down: str | None = None  # why Vault is unavailable, while it is
        self._warn = Throttle(WARN_EVERY_S)
        # Until when the detailed LIST is not tried again (the server or policy refused it):
        # each refused try is two more audit lines before the per-name reads.
        self._one_by_one_until = 0.0

    # ---- authentication ----

    def _login(self) -> None:
        if self._auth == "token":
            self._client.token = self._token_file.read_text(encoding="utf-8").strip()
            info = self._client.auth.token.lookup_self()["data"]
            ttl = float(info.get("ttl") or 0)
        else:
            role_id = self._role_id_file.read_text(encoding="utf-8").strip()
            secret_id = self._secret_id_file.read_text(encoding="utf-8").strip()
            auth = self._client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
            ttl = float(auth.get("lease_duration") or 0)
        # Renew at two thirds of the lifetime; tokens without a TTL (root) never need it.
        self._renew_at = time.monotonic() + ttl * 2 / 3 if ttl else float("inf")
        log.info("logged in to Vault (%s auth, token ttl %.0fs)", self._auth, ttl)

    def _ensure_token(self) -> None:
        if not self._client.token:
            self._login()
        elif time.monotonic() >= self._renew_at:
            try:
                self._client.auth.token.renew_self()
                info = self._client.auth.token.lookup_self()["data"]
                ttl = float(info.get("ttl") or 0)
                self._renew_at = time.monotonic() + ttl * 2 / 3 if ttl else float("inf")
            except hvac.exceptions.VaultError:
                self._login()  # renewal refused (max TTL reached or revoked): log in again

    def _fail_fast(self) -> None:
        if time.monotonic() - self._failed_at < FAIL_FAST_S:
            raise VaultUnavailable("Vault/OpenBao is unreachable (retrying shortly)")

    def _call(self, op: Callable[[], T]) -> T:
        """Run ``op`` with a valid token; one re-login on 403. Blocking: use :meth:`run`."""
        self._fail_fast()
        with self._lock:
            self._fail_fast()  # it may have failed while this thread waited for the lock
            try:
                try:
                    self._ensure_token()
                except _LOGIN_REFUSED:  # an AppRole login refused is a 400
                    raise self._unavailable(REFUSED) from None
                try:
                    result = op()
                except hvac.exceptions.Forbidden:
                    self._login()
                    result = op()
            except SecretMissing:  # Vault answered: the secret is not there
                self._answered()
                raise
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._failed_at = time.monotonic()
                raise self._unavailable(
                    f"Vault/OpenBao is unreachable: {type(exc).__name__}"
                ) from None
            except hvac.exceptions.VaultDown:
                self._failed_at = time.monotonic()
                raise self._unavailable("Vault/OpenBao is sealed or down") from None
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                raise self._unavailable(REFUSED) from None
            except hvac.exceptions.VaultError as exc:
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                raise SecretsError(f"Vault/OpenBao refused the request: {first}") from None
            except OSError as exc:  # unreadable credential files
                raise self._unavailable(f"cannot read Vault credentials: {exc.strerror}") from None
            self._answered()
            return result

    def _unavailable(self, why: str) -> VaultUnavailable:
        """The failure to raise for ``why``, logged: at once when Vault was fine or failed
        otherwise before, then at most every ``WARN_EVERY_S`` (the lock is held)."""
        changed = why != self._down
        self._down = why
        if self._warn.ready() or changed:
            log.warning(
                "%s; provider keys cannot be read or changed meanwhile (model-proxies serve "
                "their cached keys for up to modelproxy.secret_ttl_s)",
                why,
            )
        return VaultUnavailable(why)

    def _answered(self) -> None:
        """Vault answered a call (the lock is held): say so once after an outage."""
        if self._down is not None:
            log.info("Vault/OpenBao answers again (it was: %s)", self._down)
            self._down = None

    async def run(self, op: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, op)

    # ---- KV v2 ----

    def _path(self, name: str) -> str:
        return f"{PREFIX}/{name}"

    async def read(self, name: str) -> StoredSecret:
        def op() -> StoredSecret:
            try:
                result = self._client.secrets.kv.v2.read_secret_version(
                    path=self._path(name), mount_point=self._mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                raise SecretMissing(name) from None
            data = result["data"]
            return StoredSecret(name, str(data["data"]["value"]), int(data["metadata"]["version"]))

        return await self.run(op)

    async def write(
        self, name: str, value: str, *, provider: str, actor: str, must_exist: bool
    ) -> tuple[SecretMeta, Written]:
        """Store ``value`` as ``name``'s new version; returns its metadata and what was
        written. The value it already holds makes no new version (a CI job storing the same
        key on every run churned versions, and each new one ended its deployments'
        cooldowns): ``unchanged``, or ``labelled`` when only a new ``provider`` label was
        written to its metadata."""

        def op() -> tuple[SecretMeta, Written] | None:
            return self._write_once(name, value, provider, actor, must_exist=must_exist)

        for attempt in range(WRITE_ATTEMPTS):
            if attempt:  # others are writing it: a short pause, jittered so racers part
                pause = random.uniform(0.5, 1.5) * WRITE_BACKOFF_S * attempt  # noqa: S311
                await asyncio.sleep(pause)
            done = await self.run(op)  # (Vault's lock is not held through the pause)
            if done is not None:
                return done
        # A race lost again and again is a 409 (try again), not a failure of Vault (503).
        raise Conflict(f"secret `{name}` is changing too fast; try again")

    def _write_once(
        self, name: str, value: str, provider: str, actor: str, *, must_exist: bool
    ) -> tuple[SecretMeta, Written] | None:
        """One attempt of :meth:`write`; None when another writer's new version came between
        its read and its write (a secrets service replica, the CLI): read again.

        Vault's custom metadata has no compare-and-set: it is written only while the version
        this attempt read (label) or made (value) is still the current one, so the hint
        (``last4``) and label always describe the current version. A label written from a
        read before another replica's new value kept the old value's last four characters."""
        kv = self._client.secrets.kv.v2
        previous = self._metadata_or_none(name)
        if must_exist and previous is None:
            raise SecretMissing(name)
        if previous is not None and self._holds(name, previous.version, value):
            if not provider or provider == previous.provider:
                return previous, "unchanged"
            custom = {"provider": provider, "last4": previous.last4, "updated_by": actor}
            if not self._set_custom(name, previous.version, custom):
                return None
            return self._metadata(name), "labelled"
        try:  # check-and-set: a version written since the read is not overwritten unseen
            made = kv.create_or_update_secret(
                path=self._path(name),
                secret={"value": value},
                cas=previous.version if previous else self._version_kept(name),
                mount_point=self._mount,
            )
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" in str(exc):
                return None
            raise
        custom = {
            "provider": provider or (previous.provider if previous else ""),
            "last4": _last4(value),
            "updated_by": actor,
        }
        if not isinstance(made, dict):  # (a KV v1 mount answers a write with no body)
            raise SecretsError(
                f"the mount `{self._mount}` did not answer as a KV version 2 secrets engine "
                "does (a KV version 1 mount?): openbao.mount must name a KV v2 mount"
            )
        version = int((made.get("data") or {}).get("version") or 0)
        self._set_custom(name, version, custom)  # (a newer version's writer sets its own)
        return self._metadata(name), "stored"

    def _version_kept(self, name: str) -> int:
        """The current version number of a secret that reads as absent: 0, or that of a
        version deleted without its metadata (``bao kv delete``), which a new one follows."""
        try:
            result = self._client.secrets.kv.v2.read_secret_metadata(
                path=self._path(name), mount_point=self._mount
            )
        except hvac.exceptions.InvalidPath:
            return 0
        return int(result["data"].get("current_version") or 0)

    def _set_custom(self, name: str, version: int, custom: dict[str, str]) -> bool:
        """Write ``custom`` metadata if ``version`` is still ``name``'s current one (read just
        before; Vault has no compare-and-set for metadata); False when it is not."""
        current = self._metadata_or_none(name)
        if current is None or current.version != version:
            return False
        self._client.secrets.kv.v2.update_metadata(
            path=self._path(name),
            mount_point=self._mount,
            # Vault rejects empty metadata values; absent means "not set".
            custom_metadata={k: v for k, v in custom.items() if v},
        )
        return True

    def _holds(self, name: str, version: int, value: str) -> bool:
        """Whether ``name``'s ``version`` is ``value`` (compared in constant time)."""
        try:
            result = self._client.secrets.kv.v2.read_secret_version(
                path=self._path(name),
                version=version,
                mount_point=self._mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            return False  # deleted meanwhile: written anew
        stored = str(((result.get("data") or {}).get("data") or {}).get("value", ""))
        return hmac.compare_digest(stored.encode(), value.encode())

    async def delete(self, name: str) -> None:
        def op() -> None:
            self._metadata(name)
            self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=self._path(name), mount_point=self._mount
            )

        await self.run(op)

    async def metadata(self, name: str) -> SecretMeta:
        return await self.run(lambda: self._metadata(name))

    def _fall_back(self) -> list[SecretMeta]:
        """The per-name reads, and no detailed LIST tried for ``DETAILED_RETRY_S``."""
        self._one_by_one_until = time.monotonic() + DETAILED_RETRY_S
        return self._list_one_by_one()

    def _list_one_by_one(self) -> list[SecretMeta]:
        try:
            keys = self._client.secrets.kv.v2.list_secrets(path=PREFIX, mount_point=self._mount)
        except hvac.exceptions.InvalidPath:
            return []
        names = sorted(k for k in keys["data"]["keys"] if not k.endswith("/"))
        metas = (self._metadata_or_none(n) for n in names)  # deleted meanwhile: not listed
        return [m for m in metas if m is not None]

    async def list(self) -> list[SecretMeta]:
        """Every stored secret's metadata, by name, in one request where the server allows it.

        The admin overview lists secrets every few seconds (which providers miss their key).
        A LIST of names and a metadata read per name made 1 + N requests, each written twice
        to OpenBao's audit log (437 KB a minute for 10 secrets); OpenBao's
        ``detailed-metadata`` LIST answers names and metadata at once. A server without it
        (HashiCorp Vault) or a policy that does not grant it gets the per-name reads.
        """

        def op() -> list[SecretMeta]:
            if time.monotonic() < self._one_by_one_until:
                return self._list_one_by_one()
            try:
                result = self._client.adapter.list(
                    format_url("/v1/{0}/detailed-metadata/{1}", self._mount, PREFIX)
                )
            except hvac.exceptions.InvalidPath as exc:
                if not exc.errors:  # nothing stored under it yet
                    return []
                return self._fall_back()  # "unsupported path": no detailed-metadata
            except (hvac.exceptions.Forbidden, hvac.exceptions.UnsupportedOperation):
                return self._fall_back()
            info: dict[str, Any] = result["data"].get("key_info") or {}
            metas = (_meta(n, d) for n, d in sorted(info.items()) if not n.endswith("/"))
            return [m for m in metas if m is not None]

        return await self.run(op)

    def _metadata_or_none(self, name: str) -> SecretMeta | None:
        try:
            return self._metadata(name)
        except SecretMissing:
            return None

    def _metadata(self, name: str) -> SecretMeta:
        try:
            result = self._client.secrets.kv.v2.read_secret_metadata(
                path=self._path(name), mount_point=self._mount
            )
        except hvac.exceptions.InvalidPath:
            raise SecretMissing(name) from None
        meta = _meta(name, result["data"])
        if meta is None:
            raise SecretMissing(name)
        return meta


def _meta(name: str, data: dict[str, Any]) -> SecretMeta | None:
    """A secret's metadata from OpenBao's answer; None when its current version is deleted."""
    custom = data.get("custom_metadata") or {}
    version = int(data.get("current_version") or 0)
    versions = data.get("versions") or {}
    current = versions.get(str(version), {})
    if current.get("deletion_time") or current.get("destroyed"):
        return None
    return SecretMeta(
        name=name,
        version=version,
        provider=str(custom.get("provider", "")),
        last4=str(custom.get("last4", "")),
        created_at=str(data.get("created_time", "")),
        updated_at=str(data.get("updated_time", "")),
        updated_by=str(custom.get("updated_by", "")),
    )


def _last4(value: str) -> str:
    """The hint shown for a key: its last four characters, when it is long enough for that to
    reveal little and they are printable ASCII (OpenBao refuses control characters in
    metadata, and a hint of other characters helps nobody)."""
    tail = value[-4:]
    return tail if len(value) >= 8 and tail.isascii() and tail.isprintable() else ""
