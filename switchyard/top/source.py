"""Where ``switchyard top`` reads from: the gateway's ``GET /admin/v1/overview``.

One small function, :func:`resolve_target`, decides which gateway and which admin token to use,
so a change in how CLI commands find the running stack touches only it. Every way the call can
fail becomes one :class:`~switchyard.errors.GatewayError` whose text says what happened and what
to do; the token itself is kept in a :class:`Secret` and never appears in any of them.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from switchyard.config import Settings
from switchyard.errors import GatewayError, GatewayUnreachable
from switchyard.schemas.monitor import OVERVIEW, Overview
from switchyard.schemas.secret import Secret

OVERVIEW_PATH = "/admin/v1/overview"
_START_HINT = "start the stack with `switchyard up`, or pass --url for a remote gateway"
_ANY_ADDRESS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104  # nosec B104  (a listen address, read to connect)


class _ErrorBody(msgspec.Struct, frozen=True):
    message: str = ""
    code: str | None = None


class _ErrorDoc(msgspec.Struct, frozen=True):
    error: _ErrorBody = _ErrorBody()


_ERROR = msgspec.json.Decoder(_ErrorDoc)


@dataclass(frozen=True, slots=True)
class Target:
    """A gateway's admin API and the token it takes."""

    url: str  # base URL, no trailing slash
    token: Secret
    token_file: Path


def resolve_target(settings: Settings, url: str | None, token_file: Path | None) -> Target:
    """The gateway and admin token to use: ``--url`` and ``--token-file`` when given, else the
    gateway listener of the settings and ``admin.token_file`` (``<home>/admin-token``, which
    ``switchyard up`` writes).

    Raises:
        GatewayUnreachable: neither ``--url`` nor ``--token-file`` was given and this home
            has no admin token (no stack was started in it).
        GatewayError: the token file is missing or empty.
    """
    if url:
        base = _with_scheme(url).rstrip("/").removesuffix("/admin/v1").removesuffix("/v1")
    else:
        listen = settings.ingress.gateway
        host = "127.0.0.1" if listen.host in _ANY_ADDRESS else listen.host
        base = f"http://{host}:{listen.port}"
    path = token_file.expanduser().resolve() if token_file else settings.admin_token_file
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        # With neither option this home's own token is missing: no stack was started here.
        missing = GatewayUnreachable if not (url or token_file) else GatewayError
        raise missing(
            base,
            f"cannot read the admin token file {path} ({exc.strerror or exc})",
            "start the stack with `switchyard up` (it writes one), or pass --token-file",
        ) from None
    if not token:
        raise GatewayError(base, f"the admin token file {path} is empty", "pass --token-file")
    return Target(url=base, token=Secret(token, name="admin-token"), token_file=path)


def _with_scheme(url: str) -> str:
    """``url`` with ``http://`` in front when it has no scheme (``127.0.0.1:8081``, as people
    type it); a scheme other than http(s) is refused rather than read as a host name.

    Raises:
        GatewayError: the URL names another scheme.
    """
    if "://" not in url:
        return f"http://{url}"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise GatewayError(
            url,
            f"--url {url} is not an http:// or https:// URL",
            "pass the gateway's URL, e.g. http://127.0.0.1:8081",
        )
    return url


async def fetch_overview(http: httpx.AsyncClient, target: Target) -> tuple[Overview, bytes]:
    """One overview from the gateway: the decoded document and the bytes it came as.

    Raises:
        GatewayUnreachable: nothing answered at the gateway's address.
        GatewayError: no answer in time, the token was refused, or the platform could not say.
    """
    url = target.url + OVERVIEW_PATH
    try:
        resp = await http.get(url, headers={"Authorization": f"Bearer {target.token.reveal()}"})
    except httpx.ConnectTimeout:
        raise GatewayUnreachable(
            target.url,
            f"gateway not answering at {target.url} (no connection within "
            f"{http.timeout.connect or 0:g}s)",
            _START_HINT,
        ) from None
    except httpx.TimeoutException:
        raise GatewayError(
            target.url,
            f"no overview from {target.url} within {http.timeout.read:g}s: the gateway or the "
            "control service behind it is not answering",
            "check `switchyard status`, or pass --url",
        ) from None
    except httpx.HTTPError as exc:
        # No connection (refused, unknown host) is "no stack answering"; a connection that
        # broke, a TLS handshake that failed (something answers there) or a protocol error is
        # a failure of a gateway that is there.
        error = GatewayUnreachable if _no_connection(exc) else GatewayError
        raise error(
            target.url,
            f"gateway not answering at {target.url} ({_why(exc)})",
            _START_HINT,
        ) from None
    if resp.status_code != 200:
        raise _refusal(target, resp)
    try:
        return OVERVIEW.decode(resp.content), resp.content
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise GatewayError(
            target.url,
            f"{url} answered with something that is not an overview ({exc})",
            "check that --url names a Switchyard gateway of the same version",
        ) from None


def _why(exc: httpx.HTTPError) -> str:
    """The innermost cause in a few words (``connection refused``)."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"unknown host: {cause.strerror}"
    return str(cause) or type(cause).__name__


def _refusal(target: Target, resp: httpx.Response) -> GatewayError:
    try:
        body = _ERROR.decode(resp.content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = _ErrorBody(message=resp.text[:200].strip())
    status, message = resp.status_code, body.message or resp.reason_phrase
    if status == 401:
        return GatewayError(
            target.url,
            f"the gateway at {target.url} refused the admin token from {target.token_file}",
            "pass --token-file with this gateway's admin token",
            status=status,
        )
    if status == 404:
        return GatewayError(
            target.url,
            f"{target.url} has no {OVERVIEW_PATH}",
            "point --url at the gateway (default port 8081), not the tail",
            status=status,
        )
    if status == 503 and body.code == "admin_disabled":
        return GatewayError(
            target.url,
            message,
            "set admin.token_file for the gateway and restart it",
            status=status,
        )
    if status in (502, 503, 504):
        return GatewayError(
            target.url,
            f"control service not answering: {message}",
            "check `switchyard status` and the control service's log",
            status=status,
        )
    return GatewayError(
        target.url, f"the gateway at {target.url} answered {status}: {message}", status=status
    )


def _no_connection(exc: httpx.HTTPError) -> bool:
    """Whether ``exc`` is a connection never made (refused, no such host), not a TLS
    handshake that failed: httpx raises ConnectError for both."""
    if not isinstance(exc, httpx.ConnectError):
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return False
        seen = seen.__cause__ or seen.__context__
    return True
