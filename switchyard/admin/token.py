"""The bootstrap admin credential: a random bearer token in a 0600 file.

``switchyard up`` creates it on first start (``<home>/admin-token``); the gateway compares the
SHA-256 of a presented token with the file's in constant time. Production deployments mount the
file from their secret store (``admin.token_file``) and rotate it by replacing the file and
restarting the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from switchyard.errors import AuthenticationFailed, ServiceUnavailable


class AdminAuth:
    """Checks ``Authorization: Bearer`` against the token file (read once at startup)."""

    def __init__(self, path: Path) -> None:
        self._digest: bytes | None = None
        if path.is_file():
            token = path.read_text(encoding="utf-8").strip()
            if token:
                self._digest = hashlib.sha256(token.encode()).digest()

    def check(self, presented: str | None) -> None:
        """Raises AuthenticationFailed (401), or ServiceUnavailable when no token is set up."""
        if self._digest is None:
            raise ServiceUnavailable(
                "the management API is disabled: no admin token file (admin.token_file)",
                code="admin_disabled",
            )
        if not presented:
            raise AuthenticationFailed(
                "no admin token: send it as `Authorization: Bearer <token>`",
                code="missing_admin_token",
            )
        given = hashlib.sha256(presented.encode()).digest()
        if not hmac.compare_digest(given, self._digest):
            raise AuthenticationFailed("invalid admin token", code="invalid_admin_token")
