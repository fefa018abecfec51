"""The settings of what Switchyard stands on: its certificate authority, Vault/OpenBao and
Redis/Valkey (sections of :class:`switchyard.config.settings.Settings`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from switchyard.config.section import Seconds, Section


class CertSettings(Section, frozen=True):
    """Identity certificates.

    Attributes:
        dir: where the CA and identity certificates live (default ``<home>/certs``).
        organization: the ``O=`` of every subject DN; part of each NATS user name.
        validity_days: lifetime of issued certificates.
    """

    dir: str | None = None
    organization: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9 _-]{1,64}$(?!\n)")] = (
        "Switchyard"
    )
    validity_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 825


class OpenBaoSettings(Section, frozen=True):
    """How the secrets service reaches Vault/OpenBao.

    Attributes:
        addr: Vault/OpenBao URL; empty means the local stack's (``https://127.0.0.1:<port>``).
        mount: the KV v2 mount holding provider keys.
        auth: ``approle`` (production) or ``token`` (development).
        role_id_file / secret_id_file: AppRole credentials (default under ``<home>/openbao``).
        token_file: a token, for ``auth: token``.
        ca_file: CA bundle to verify the server (default: the project's CA).
        timeout_s: per-call timeout.
    """

    addr: str | None = None
    mount: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,62}$(?!\n)")] = "switchyard"
    auth: Literal["approle", "token"] = "approle"
    role_id_file: str | None = None
    secret_id_file: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    timeout_s: Seconds = 5.0


class RedisSettings(Section, frozen=True):
    """Shared counters (rate limits, spend) in Redis/Valkey.

    Attributes:
        url: ``redis://host:port/db``; empty means the local stack's Valkey.
        password_dir: directory of ``<role>.password`` files (default ``<home>/valkey``); each
            component logs in as its role's ACL user.
        on_unavailable: ``fail_closed`` refuses requests with 503 when Redis is down;
            ``fail_open`` lets them through without limits.
        timeout_s: per-command timeout.
    """

    url: str | None = None
    password_dir: str | None = None
    on_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout_s: Seconds = 0.5
