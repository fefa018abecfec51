"""Open a NATS connection as one identity: its certificate, its inbox prefix, failover settings.

Reconnects are unlimited with short waits (DESIGN §8: zero loss needs the connection back fast);
permission violations, which nats-py reports only asynchronously, are logged with the identity,
and so is each lost connection and reconnect, with the server (a failover's story, in the log).
A first connection every server refuses to log in (no user for the certificate) fails at
once: nats-py would retry it for ever, and the process would sit there looking healthy. It
says which certificate the server does not know and which setting admits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from cryptography import x509
from nats.aio.client import Client as NATS

from switchyard.bus import identities, pings
from switchyard.bus.tls import CertDir, require_tls_files
from switchyard.errors import BusUnreachable

log = logging.getLogger("switchyard.bus")

ErrorCallback = Callable[[Exception], Awaitable[None]]
# Refused logins per server before a first connect gives up (one can be a server mid-reload).
LOGIN_REFUSALS = 2
REFUSED_FOR_S = 5.0  # ...and over at least this long (a rolling config change passes)
CLOSE_FAILED_S = 2.0  # the longest the close of a failed first connection is waited for
# A client pings its server this often, and leaves one that let this many go unanswered: a
# node that dies without closing its sockets (a host lost, a partition) is left in 30-40 s.
# nats-py's defaults (2 min, 2) kept every process on it stalled for 4-6 minutes.
PING_INTERVAL_S = 10.0
PINGS_OUTSTANDING = 3


def client_tls(cert_dir: CertDir, name: str) -> ssl.SSLContext:
    """A TLS context presenting ``name``'s certificate and trusting only the project CA."""
    files = require_tls_files(cert_dir, name)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def connect(
    servers: tuple[str, ...] | list[str],
    cert_dir: CertDir,
    identity: str,
    *,
    name: str | None = None,
    connect_timeout: float = 5.0,
    reconnect_wait: float = 0.25,
    error_cb: ErrorCallback | None = None,
    max_reconnect_attempts: int = -1,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
    ping_interval: float = PING_INTERVAL_S,
) -> NATS:
    """Connect to NATS as ``identity``.

    Args:
        servers: server URLs (``tls://host:port``).
        cert_dir: where the identity's certificate lives (a path or a string).
        identity: the identity name; sets the certificate and the ``_INBOX_<identity>`` prefix.
        name: connection name shown in server monitoring (default: the identity).
        error_cb: receives asynchronous errors (permission violations arrive here).
        max_reconnect_attempts: -1 for unlimited (services); 0 for one-shot callers (CLI
            commands, tests of refusals): one attempt per server, no reconnects.
        ping_interval: seconds between the client's pings; a server that leaves
            :data:`PINGS_OUTSTANDING` unanswered is taken for gone (its connection reconnects).

    Raises:
        BusUnreachable: the first connection attempt failed (refused certificate, no server...).
    """
    ctx = client_tls(cert_dir, identity)
    one_shot = max_reconnect_attempts == 0
    connected = False
    first = FirstConnect(len(servers), one_shot=one_shot)

    async def _log_error(exc: Exception) -> None:
        if connected or not one_shot:  # a one-shot caller's failed connect is raised below
            log.warning("nats error for %s: %s", identity, exc)
        if not connected:
            first.failed(exc)
        if error_cb is not None:
            await error_cb(exc)

    nc = NATS()
    label = name or identity
    server = ""

    async def _disconnected() -> None:
        if nc.is_reconnecting:  # not a close
            log.warning("%s lost its NATS connection to %s; reconnecting", label, server)

    async def _reconnected() -> None:
        nonlocal server
        server = _server(nc)
        log.warning("%s reconnected to NATS at %s", label, server)
        if reconnected_cb is not None:
            await reconnected_cb()

    try:
        await _unless_refused(
            nc.connect(
                servers=list(servers),
                tls=ctx,
                name=label,
                inbox_prefix=f"_INBOX_{identity}",
                connect_timeout=max(1, round(connect_timeout)),
                reconnect_time_wait=reconnect_wait,  # type: ignore[arg-type,unused-ignore]  # floats work
                # nats-py treats 0 as "no limit" and retries a failed first connect forever;
                # with 1 it tries each server twice, then gives up.
                max_reconnect_attempts=1 if one_shot else max_reconnect_attempts,
                allow_reconnect=not one_shot,
                ping_interval=ping_interval,  # type: ignore[arg-type,unused-ignore]  # floats work
                max_outstanding_pings=PINGS_OUTSTANDING,
                error_cb=_log_error,
                reconnected_cb=_reconnected,
                disconnected_cb=_disconnected,
            ),
            first.refused,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            # A refused first connect leaves the transport open. Bounded: after a failed TLS
            # handshake (a certificate of another stack's CA) its close waited for ever, and
            # a CLI command hung for over ten minutes.
            await asyncio.wait_for(nc.close(), CLOSE_FAILED_S)
        reason = first.reason(exc)
        login = first.login_refused or _login_refused(exc)
        if login:
            cert = require_tls_files(cert_dir, identity).cert
            reason = f"{reason}: {unknown_certificate(cert, identity)}"
        refused = login or isinstance(exc, ssl.SSLCertVerificationError)
        raise BusUnreachable(tuple(servers), identity, reason, refused=refused) from exc
    connected = True
    server = _server(nc)
    return nc


class FirstConnect:
    """What the attempts of a first connection failed with, until one succeeds.

    A one-shot caller keeps every failure, a service only the refused logins (it stops
    trying on those alone); each once, as nats-py reports it. Once every server refused the
    login :data:`LOGIN_REFUSALS` times over at least :data:`REFUSED_FOR_S` (not one node
    mid-reload), ``refused`` is set.
    """

    def __init__(
        self, servers: int, *, one_shot: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures: list[Exception] = []
        self.refused = asyncio.Event()
        self._servers = servers
        self._one_shot = one_shot
        self._clock = clock
        self._refusals = 0
        self._first_refusal: float | None = None

    def failed(self, exc: Exception) -> None:
        """nats-py reported ``exc`` before the first connection succeeded."""
        login_refused = _login_refused(exc)
        if self._one_shot or login_refused:
            self.failures.append(exc)
        if not login_refused:
            return
        self._refusals += 1
        now = self._clock()
        if self._first_refusal is None:
            self._first_refusal = now
        if (
            self._refusals >= LOGIN_REFUSALS * self._servers
            and now - self._first_refusal >= REFUSED_FOR_S
        ):
            self.refused.set()

    @property
    def login_refused(self) -> bool:
        """Whether a server refused the login (whatever the attempts after it failed with)."""
        return self._refusals > 0

    def reason(self, raised: BaseException) -> str:
        """Why the first connection failed: a refused login when there was one (the attempts
        after it can fail with a bare "Broken pipe" on the connection the server closed),
        else the last failure kept, else what was raised."""
        refusals = [f for f in self.failures if _login_refused(f)]
        kept = refusals or self.failures
        return _reason(kept[-1] if kept else raised)


async def subscribed(nc: NATS, timeout: float = 5) -> None:
    """Return once the server has every subscription ``nc`` made before this call.

    ``nc.flush()`` alone does not promise it on nats-py 2.16: its PING is written straight to
    the socket, ahead of the commands still waiting in the client's buffer (a SUB just made),
    so the PONG can come back before the server has read the SUB, and a message another
    connection publishes in that moment finds nobody (a request is answered "no responders").
    The first flush also wakes the client's flusher, which writes the buffer before that PONG
    can be read; the second PING therefore goes out behind the SUB, and its PONG proves it.
    Each waits up to ``timeout`` seconds (then ``FlushTimeoutError``), never cutting its PING
    short (:mod:`switchyard.bus.pings`).
    """
    await pings.pong(nc, timeout)
    await pings.pong(nc, timeout)


def unknown_certificate(cert: Path, identity: str) -> str:
    """What to do about a certificate the server maps to no user: its subject (what
    nats-server matches) and the setting that admits it."""
    try:
        subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
    except (OSError, ValueError):
        subject = f"CN={identity}"
    known = f"the NATS server knows no user for the certificate {cert} (subject {subject})"
    if identity in {i.name for i in identities.SERVICE_IDENTITIES}:
        return (
            f"{known}; the server's config predates it: render it again (`switchyard up`, or "
            "`switchyard deploy setup`) and restart nats-server"
        )
    return (
        f"{known}; add `{identity}` to `nats.internal_clients` in the settings and give "
        "nats-server the new config (docs/nats-api.md, Getting an identity)"
    )


async def _unless_refused(connecting: Awaitable[None], refused: asyncio.Event) -> None:
    """Wait for the first connection, or stop trying once every server refused the login.

    Raises:
        nats.errors.Error: the login was refused (or the connect failed as it does).
    """
    attempt = asyncio.ensure_future(connecting)
    gave_up = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait((attempt, gave_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gave_up.cancel()
        if not attempt.done():  # refused, or our caller was cancelled: stop connecting
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt
    if attempt.cancelled():
        raise nats.errors.Error("every server refused the login")
    attempt.result()


def _server(nc: NATS) -> str:
    """The server ``nc`` is on, as host:port (never the URL's user part)."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


def _login_refused(exc: Exception) -> bool:
    """Whether the server refused this identity's login (not a network failure)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate is not one this home's certificate authority signed "
            f"({exc.verify_message or exc}): is another stack, with its own --home, running on "
            "these ports?"
        )
    return str(exc) or type(exc).__name__
