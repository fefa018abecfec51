"""The layout of a local stack's home directory (``./.switchyard`` by default).

Everything the local runtime creates lives here, so a second ``switchyard up`` finds the same
certificates, secrets, streams and counters, and ``rm -rf .switchyard`` is a clean reset.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ADMIN_TOKEN_PREFIX = "sy-admin-"  # noqa: S105  (a prefix that marks the token kind, not a secret)
READONLY_TOKEN_PREFIX = "sy-read-"  # noqa: S105  (the read-only admin token's)


@dataclass(frozen=True, slots=True)
class StackHome:
    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def nats(self) -> Path:
        return self.root / "nats"

    @property
    def nats_config(self) -> Path:
        return self.nats / "nats-server.conf"

    @property
    def nats_store(self) -> Path:
        return self.nats / "jetstream"

    @property
    def openbao(self) -> Path:
        return self.root / "openbao"

    @property
    def valkey(self) -> Path:
        return self.root / "valkey"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> None:
        """Create the directories (0700: they hold keys and credentials)."""
        for path in (
            self.root,
            self.certs,
            self.nats,
            self.openbao,
            self.valkey,
            self.run,
            self.logs,
        ):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write a credential file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def ensure_admin_token(path: Path, prefix: str = ADMIN_TOKEN_PREFIX) -> bool:
    """Create the token file if missing (``prefix``: :data:`READONLY_TOKEN_PREFIX` for the
    read-only token's); True when it was created."""
    if path.is_file():
        return False
    write_private(path, prefix + secrets.token_urlsafe(32) + "\n")
    return True
