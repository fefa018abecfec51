"""The bootstrap admin credential: a random bearer token in a 0600 file.

``switchyard up`` creates it on first start (``<home>/admin-token``); the gateway compares the
SHA-256 of a presented token with the file's in constant time. Production deployments mount the
file from their secret store (``admin.token_file``) and rotate it by replacing the file and
restarting the gateway.

A second, read-only token (``<home>/admin-readonly-token``, ``admin.readonly_token_file``) is
for people who only look: with it every GET of ``/admin/v1`` and every page of the web app
works, and every change is refused (403 ``admin_read_only``, :mod:`switchyard.admin.access`).
It is loaded by the same rules (length, file mode) and must differ from the admin token.

Nothing limits how fast a right token may be tried, so the token's length is the defence: a
token shorter than :data:`MIN_TOKEN_CHARS` stops the gateway at start (``admin``, ``x``), one
shorter than :data:`ADVISED_TOKEN_CHARS` is warned about once at start, and so is a file other
users may read. Wrong tokens on ``/admin/v1`` are counted per
address by the sign-in's guard (:mod:`switchyard.admin.ui.signin_guard`, one count for both):
past its limit an address gets 429 with ``Retry-After`` and one warning line, never the token.
Each refused one is also audited, a minute apart per address (:mod:`switchyard.admin.token_audit`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import shlex
import stat
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Protocol

from switchyard.errors import (
    AuthenticationFailed,
    ConfigError,
    RateLimited,
    ServiceUnavailable,
)

log = logging.getLogger("switchyard.admin")

# `switchyard up` writes "sy-admin-" + 43 random characters (256 bits). Refused only far below
# any random token's length: 128 random bits are 22 characters (base64url), 24
# (`openssl rand -base64 16`) or 32 (hex), so under 16 is a word or a placeholder, not a secret.
# Refusing at 32 stopped gateways whose 128-bit token had served them: an outage on upgrade.
MIN_TOKEN_CHARS = 16
# Shorter is taken but warned about: 32 random characters of a password generator or
# `openssl rand -base64 32` (44) leave guessing out of reach for good.
ADVISED_TOKEN_CHARS = 32


class Role(Enum):
    """What a right token may do: everything (the admin token), or look (the read-only one)."""

    ADMIN = "admin"
    READ_ONLY = "read-only"


class FailureGuard(Protocol):
    """The per-address count of wrong tokens (the sign-in's ``SigninGuard``)."""

    def wait_s(self, source: str, now: float | None = None) -> float: ...
    def failed(self, source: str, now: float | None = None) -> bool: ...


def make_token_hint(path: Path, prefix: str = "sy-admin-") -> str:
    """How to write a strong token to ``path`` (the error and the docs say it)."""
    quoted = shlex.quote(str(path))
    return (
        f'(umask 077; python3 -c \'import secrets; print("{prefix}" + '
        f"secrets.token_urlsafe(32))' > {quoted}), then restart the gateway; or delete the "
        "file and let `switchyard up` make one"
    )


def _warn_if_readable(path: Path, what: str = "admin token") -> None:
    """A warning when users other than the gateway's may read (or replace) the file. Group
    access is how a process reads a file someone else owns (a Kubernetes secret mounted 0440
    with ``fsGroup``), so it is warned about only on a file the gateway's own user owns."""
    try:
        info = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    loose = mode & 0o006 or (mode & 0o060 and info.st_uid == os.geteuid())
    if loose:
        log.warning(
            "the %s file %s is readable by other users (mode %04o): "
            "`chmod 600 %s`, or mount it owner-only",
            what,
            path,
            mode,
            shlex.quote(str(path)),
        )


def load_token(
    path: Path,
    setting: str = "admin.token_file",
    what: str = "admin token",
    prefix: str = "sy-admin-",
) -> str | None:
    """The token in ``path`` (None: no file, or an empty one: the API is disabled). Raises
    :class:`ConfigError` for one shorter than :data:`MIN_TOKEN_CHARS`; warns for one shorter
    than :data:`ADVISED_TOKEN_CHARS`, and when other users may read the file (the gateway reads
    it once, at start: one warning each). ``setting`` and ``what`` name the file in errors and
    warnings (the read-only token's: ``admin.readonly_token_file``, "read-only admin token")."""
    if not path.is_file():
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            setting,
            f"the {what} in {path} is {len(token)} characters, too short for a "
            f"random token; at least {MIN_TOKEN_CHARS} are needed and {ADVISED_TOKEN_CHARS} random "
            "ones advised (anyone who reaches the gateway may try tokens as fast as it answers)",
            hint=make_token_hint(path, prefix),
        )
    if len(token) < ADVISED_TOKEN_CHARS:
        log.warning(
            "the %s in %s is %d characters; %d or more random ones are advised "
            "(anyone who reaches the gateway may try tokens as fast as it answers): %s",
            what,
            path,
            len(token),
            ADVISED_TOKEN_CHARS,
            make_token_hint(path, prefix),
        )
    _warn_if_readable(path, what)
    return token


READ_ONLY_SETTING = "admin.readonly_token_file"
READ_ONLY_WHAT = "read-only admin token"
READ_ONLY_PREFIX = "sy-read-"  # what `switchyard up` starts the read-only token with


def load_read_only_token(path: Path, admin_token: str | None) -> str | None:
    """The read-only token in ``path`` by :func:`load_token`'s rules (None: no file, or an
    empty one: no read-only access). Raises :class:`ConfigError` when it is the admin token:
    who holds it would be taken for an admin."""
    token = load_token(path, READ_ONLY_SETTING, READ_ONLY_WHAT, READ_ONLY_PREFIX)
    if (
        token is not None
        and admin_token is not None
        and hmac.compare_digest(token.encode(), admin_token.encode())
    ):
        raise ConfigError(
            READ_ONLY_SETTING,
            f"the read-only admin token in {path} is the admin token; make it another one",
            hint=make_token_hint(path, READ_ONLY_PREFIX),
        )
    return token


def _digest(token: str | None) -> bytes | None:
    return None if token is None else hashlib.sha256(token.encode()).digest()


class AdminAuth:
    """Checks ``Authorization: Bearer`` against the token files (read once, by
    :func:`load_token`, when it is made: a short token raises :class:`ConfigError`).
    ``read_only``: the read-only token's file (None or no file: no read-only access)."""

    def __init__(
        self, path: Path, guard: FailureGuard | None = None, read_only: Path | None = None
    ) -> None:
        token = load_token(path)
        self._digest = _digest(token)
        self._read_only = _digest(
            None if read_only is None else load_read_only_token(read_only, token)
        )
        self._guard = guard

    def token_digest(self, read_only: bool) -> bytes:
        """The SHA-256 of the admin token (``read_only``: the read-only one's; b"": none):
        the web app's sessions are marked with the token they signed in with."""
        return (self._read_only if read_only else self._digest) or b""

    def check(self, presented: str | None) -> Role:
        """The role of a right token. Raises AuthenticationFailed (401), or ServiceUnavailable
        when no admin token is set up (a read-only one alone opens nothing)."""
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
        if hmac.compare_digest(given, self._digest):
            return Role.ADMIN
        # Compared whether or not there is a read-only token: the time taken says nothing.
        read_only = self._read_only or bytes(len(given))
        if hmac.compare_digest(given, read_only) and self._read_only is not None:
            return Role.READ_ONLY
        raise AuthenticationFailed("invalid admin token", code="invalid_admin_token")

    def check_from(self, presented: str | None, source: Callable[[], str]) -> Role:
        """:meth:`check` for a call of the API from ``source()`` (the client's address, only
        worked out for a wrong token): a wrong
        token is counted for the address, and past the guard's limit is a 429 with
        ``Retry-After`` instead of 401. The right token passes from any address (many
        clients share one, as at sign-in); a missing one is not counted (nothing guessed). A wrong
        token is wrong for both files: one count, whichever it was meant to be."""
        try:
            return self.check(presented)
        except AuthenticationFailed as exc:
            if self._guard is None or exc.code != "invalid_admin_token":
                raise
            address = source()
            wait = self._guard.wait_s(address)
            if wait:
                raise RateLimited(
                    "too many wrong admin tokens from this address or its network; try again later",
                    code="too_many_failed_authentications",
                    retry_after=wait,
                ) from None
            self._guard.failed(address)  # the one that blocks it logs a warning
            raise
