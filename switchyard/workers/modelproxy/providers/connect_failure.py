"""A failed connection to a provider, said plainly: where to, and the system's reason.

aiohttp's own wording is ``Cannot connect to host 127.0.0.1:31100 ssl:<ssl.SSLContext object
at 0x7f0d...> [Connect call failed ('127.0.0.1', 31100)]``: an object's repr, a TLS hint for an
``http://`` address, and asyncio's text in place of the reason. litellm wraps it (in httpx's
``ConnectError``) and passes it on as is. What a client and the cooldowns read instead:
``cannot connect to 127.0.0.1:31100 (connection refused)``.

Only a connection that could not be made reads so. One that closed while the answer came is
reported by litellm in httpx's ``ReadError`` too (aiohttp's ``ServerDisconnectedError`` or
``ClientPayloadError`` under it): :func:`closed_early` tells it apart, for the direct path's
words (the provider was reached).
"""

from __future__ import annotations

import os
import re
import ssl

import aiohttp
import httpx

_ERRNO = re.compile(r"\[Errno (-?\d+)\]")
_CHAIN = 10  # causes looked through; litellm wraps a few levels deep
# httpx's errors for a connection that was never made (litellm's mapping of aiohttp's).
_NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, aiohttp.ClientConnectorError)
# A connection that closed, or broke, after it was made: httpx's errors litellm maps aiohttp's
# ServerDisconnectedError, ClientPayloadError and ClientOSError to, and those themselves.
_CLOSED = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
)


def describe(exc: BaseException) -> str:
    """``exc`` (or a cause of it) as ``cannot connect to <host:port> (<reason>)``; the
    exception's kind when it names neither."""
    where, reason = "", ""
    seen: BaseException | None = exc
    for _ in range(_CHAIN):
        if seen is None:
            break
        if isinstance(seen, aiohttp.ClientConnectorError):
            where = where or f"{seen.host}:{seen.port}"
            reason = reason or _reason(seen.os_error)
        elif isinstance(seen, httpx.ConnectError | httpx.ConnectTimeout) and not where:
            where = _request_address(seen)
        elif isinstance(seen, OSError) and not isinstance(seen, aiohttp.ClientError):
            reason = reason or _reason(seen)
        seen = seen.__cause__ or seen.__context__
    if not where:
        return f"{type(exc).__name__}" + (f" ({reason})" if reason else "")
    return f"cannot connect to {where}" + (f" ({reason})" if reason else "")


def closed_early(exc: BaseException) -> bool:
    """Whether ``exc`` (or a cause of it) says the provider's connection closed or broke
    once made (read or write failed, the server hung up mid-answer), not that it could not
    be made."""
    seen: BaseException | None = exc
    closed = False
    for _ in range(_CHAIN):
        if seen is None:
            break
        if isinstance(seen, _NOT_CONNECTED):
            return False
        closed = closed or isinstance(seen, _CLOSED)
        seen = seen.__cause__ or seen.__context__
    return closed


def _reason(error: OSError) -> str:
    """The system's reason for ``error``, in its words (``connection refused``, ``name or
    service not known``), or a TLS failure's; never a repr."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or type(error).__name__}"
    code = error.errno
    if not isinstance(code, int):  # asyncio's "Multiple exceptions: [Errno 111] ..."
        found = _ERRNO.search(str(error))
        code = int(found.group(1)) if found else None
    if error.strerror and (code is None or code < 0):
        return error.strerror.lower()  # getaddrinfo's: "Name or service not known"
    if code is not None and code > 0:
        return os.strerror(code).lower()
    return type(error).__name__


def _request_address(exc: httpx.RequestError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without its request
        return ""
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
