"""Every error Switchyard raises, in one tree.

Errors carry typed attributes (status, retryable, provider, field) so callers branch on data, never
on message text. Each transport maps them at exactly one boundary: the ingress's exception handler
(HTTP), the reply edge of each NATS endpoint, and the provider adapter (which turns aiohttp/litellm
failures into :class:`ProviderError`).

::

    SwitchyardError
    ├── ConfigError              invalid settings; names the field and the fix
    ├── CertificateError         the CA or an identity certificate is missing or unusable
    ├── StackError               a local-stack process failed to start, became unhealthy, or exited
    ├── BusError                 NATS unreachable or a publish could not be confirmed
    │   └── BusUnreachable       the first connection to NATS failed (nothing answering, refused)
    ├── GatewayError             a CLI client of the admin API got no answer or was refused
    │   └── GatewayUnreachable   nothing answered at the gateway's address (or no stack here)
    ├── SecretsError             the secrets service or Vault/OpenBao failed (server zone only)
    │   └── VaultUnavailable     Vault/OpenBao cannot be reached or refused our credentials
    └── ApiError                 what an API client sees: an OpenAI-shaped error with a status
        ├── InvalidRequest           400
        │   └── DeploymentCannotTake     a field this deployment's provider has no place for
        ├── AuthenticationFailed     401
        ├── PermissionDenied         403
        ├── NotFound                 404 (a route, provider, key, batch... that does not exist)
        │   ├── ModelNotFound            no such model for this caller
        │   └── NoSuchObject             an OpenAI file or batch (OpenAI gives these no code)
        ├── Conflict                 409 (a concurrent change won; re-read and retry)
        ├── ReaderTooSlow            408 (the client read a streamed answer too slowly)
        ├── PayloadTooLarge          413
        ├── RateLimited              429 (carries retry_after)
        ├── ProviderError            502 (carries provider, upstream status, retryable)
        │   ├── ProviderRateLimited      429 upstream: also a RateLimited
        │   ├── ProviderTimeout          upstream too slow: also a built-in TimeoutError
        │   └── ProviderUnreachable      no connection: also a built-in ConnectionError
        │       └── ProviderDisconnected     reached, then hung up mid-answer
        ├── ServiceUnavailable       503 (no workers, queue full, secret unavailable)
        └── DeadlineExceeded         504

An upstream failure is both what it is and where it came from, as httpx and nats-core model it:
``except RateLimited`` catches a provider's 429 as well as our own limits, ``except
ProviderError`` catches every upstream failure, ``except TimeoutError`` an upstream timeout.
Attributes are set at construction and never patched afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence


class SwitchyardError(Exception):
    """Root of every error Switchyard raises on purpose."""


class ConfigError(SwitchyardError):
    """Settings failed validation.

    Attributes:
        field: dotted path of the offending field (``"routes.gpt-4o.deployments[0].provider"``).
        hint: what to change to fix it.
    """

    def __init__(self, field: str, problem: str, hint: str = "") -> None:
        self.field = field
        self.problem = problem
        self.hint = hint
        text = self._headline()
        if hint:
            text += f"\n  fix: {hint}"
        super().__init__(text)

    def _headline(self) -> str:
        return f"invalid config at `{self.field}`: {self.problem}"


class InputError(ConfigError):
    """What a command or request was given (an argument, a file, a value) is unusable: said
    as such, not as a settings problem. ``field`` names the argument, or is empty when the
    problem says it all."""

    def _headline(self) -> str:
        return f"{self.field}: {self.problem}" if self.field else self.problem


class CertificateError(SwitchyardError):
    """A certificate or key is missing, expired or not signed by the project's CA."""


class StackError(SwitchyardError):
    """The local stack could not start or keep a process healthy.

    Attributes:
        component: the process that failed (``"nats-server"``, ``"openbao"``, ``"head-1"``...).
    """

    def __init__(self, component: str, message: str) -> None:
        self.component = component
        super().__init__(f"{component}: {message}")


class BusError(SwitchyardError):
    """NATS could not be reached or did not confirm a publish in time."""


class ObjectDamaged(BusError):
    """A stored object's chunks are missing or do not match its digest (the store's leader
    says so: damage, not a delay)."""


class ObjectGone(BusError):
    """A stored object was deleted (or replaced) while it was being read."""


class BusUnreachable(BusError):
    """The first connection attempt to NATS failed.

    Attributes:
        servers: the URLs tried.
        identity: who tried to connect.
        reason: what the attempt ended with (refused, timed out, TLS handshake...).
        refused: a server answered and refused this identity (its certificate unknown, or
            signed by another CA): trying again later will not help.
    """

    def __init__(
        self, servers: tuple[str, ...], identity: str, reason: str, *, refused: bool = False
    ) -> None:
        self.servers = servers
        self.identity = identity
        self.reason = reason
        self.refused = refused
        super().__init__(f"cannot connect to NATS at {', '.join(servers)} as {identity}: {reason}")


class GatewayError(SwitchyardError):
    """The gateway's admin API (``/admin/v1``) did not answer, refused the admin token, or
    answered with an error (``switchyard top`` and other HTTP clients of the gateway).

    Attributes:
        url: the gateway base URL that was tried.
        status: the HTTP status it answered with, or 0 when there was no answer.
        reason: what went wrong, in one clause.
        hint: what to do about it.
    """

    def __init__(self, url: str, reason: str, hint: str = "", *, status: int = 0) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        self.hint = hint
        super().__init__(f"{reason}; {hint}" if hint else reason)


class GatewayUnreachable(GatewayError):
    """Nothing answered at the gateway's address (connection refused, unknown host, no
    connection within the time), or no stack was ever started in this home (no admin token
    written): the CLI's "no stack answering", as :class:`BusUnreachable` is for NATS."""


class SecretsError(SwitchyardError):
    """A secrets operation failed inside the server zone."""


class VaultUnavailable(SecretsError):
    """Vault/OpenBao is unreachable, sealed, or refused the service's credentials."""


class ApiError(SwitchyardError):
    """An error a client of the OpenAI-compatible API sees.

    Rendered as ``{"error": {"message", "type", "param", "code"}}`` with :attr:`status`.

    Attributes:
        status: HTTP status code.
        type: OpenAI error ``type`` (``invalid_request_error``, ``rate_limit_error``...).
        code: machine-readable code (``model_not_found``, ``queue_full``...), or None.
        param: the request field at fault, or None.
        retry_after: seconds a client should wait before retrying, when known.
        no_retry: no retry of the same request can succeed (a key's ``tpm`` below what the
            request needs, a ``total`` budget spent, a request or an answer too large): the
            edges answer it with ``x-should-retry: false``, which the OpenAI and Anthropic
            SDKs obey before their status rules (they retry 408, 409, 429 and 5xx).
            A class's default; a constructor's ``no_retry`` sets it for one error.
    """

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    no_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        no_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if no_retry is not None:
            self.no_retry = no_retry
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.retry_after = retry_after
        # Extra HTTP headers for the response (x-ratelimit-*), as (name, value) byte pairs.
        self.headers: tuple[tuple[bytes, bytes], ...] = tuple(headers)


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class DeploymentCannotTake(InvalidRequest):
    """A field of the request this deployment's provider has no place for (``top_k`` to
    Anthropic through litellm), refused before anything is sent: the client's 400 when no
    other deployment of its route can take the request, else a reason to try another one.
    ``code`` and ``param`` name the refusal as for any other 400."""

    code = "unsupported_parameter"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    code: str | None = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class NoSuchObject(NotFound):
    code = None


class Conflict(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class ReaderTooSlow(ApiError):
    """The client took a streamed answer more slowly than it arrived, and more of it waited
    unread than one request may hold (``ingress.max_unread_bytes``): the request was ended and
    its provider call stopped. Its own fault, so a 4xx; in practice it ends a stream that
    already started, as its last event."""

    status = 408
    type = "invalid_request_error"
    code = "reader_too_slow"


class PayloadTooLarge(ApiError):
    """413: the request (or the answer it asks for) is larger than Switchyard carries; the
    same request is refused again, however often it is sent."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    no_retry = True


class RateLimited(ApiError):
    """Attributes:
    limit: which of the client key's limits refused (``rpm``, ``tpm``, ``parallel``,
        ``budget``), or None when the cause is elsewhere (a provider's 429).
    """

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        no_retry: bool | None = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            param=param,
            retry_after=retry_after,
            status=status,
            type=type,
            headers=headers,
            no_retry=no_retry,
        )
        self.limit = limit


class ProviderError(ApiError):
    """The upstream provider failed.

    Attributes:
        provider: the provider (deployment) that failed.
        upstream_status: the provider's HTTP status, or None for connection errors and timeouts.
        retryable: whether another attempt (same or other deployment) may succeed.
    """

    status = 502
    type = "api_error"
    code = "provider_error"
    retryable_by_default = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int | None = None,
        retryable: bool | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after, status=status, type=type)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retryable = self.retryable_by_default if retryable is None else retryable


class ProviderRateLimited(ProviderError, RateLimited):
    """The provider answered 429: a client sees 429 (and backs off); another deployment may
    still have capacity, so it is retryable."""

    status = 429
    type = RateLimited.type
    code = "rate_limit_exceeded"
    retryable_by_default = True


class ProviderTimeout(ProviderError, TimeoutError):
    """The provider did not answer (or stream) in time."""

    code = "provider_timeout"
    retryable_by_default = True


class ProviderUnreachable(ProviderError, ConnectionError):
    """No connection to the provider (refused, reset, DNS, TLS)."""

    code = "provider_unreachable"
    retryable_by_default = True


class ProviderDisconnected(ProviderUnreachable):
    """The provider was reached and closed the connection before its answer was complete:
    retried and cooled as an unreachable one, under its own code (an alert on
    ``provider_unreachable`` sends its reader to the network, and the network was fine)."""

    code = "provider_disconnected"


class ServiceUnavailable(ApiError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class SecretMissing(ServiceUnavailable):
    """A deployment's provider key is not stored: that deployment cannot answer, another of
    the route may (the request is rerouted; the deployment does not cool down, so it answers
    as soon as the key is stored)."""

    code = "secret_unavailable"


class DeadlineExceeded(ApiError):
    status = 504
    type = "timeout_error"
    code = "deadline_exceeded"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidRequest,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        Conflict,
        PayloadTooLarge,
        RateLimited,
        ProviderError,
        ServiceUnavailable,
        DeadlineExceeded,
    )
}


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str = "",
    retry_after: float | None = None,
    code: str | None = None,
    param: str | None = None,
    type: str | None = None,
) -> ApiError:
    """The typed error for an HTTP status (an :class:`ApiError` with that status if none fits).

    ``provider`` names the failed deployment when the status is a provider error's.
    """
    cls = _BY_STATUS.get(status)
    if cls is NotFound and code == ModelNotFound.code:
        cls = ModelNotFound
    if cls is ProviderError:
        return ProviderError(
            message, provider=provider, retry_after=retry_after, code=code, type=type
        )
    if cls is None:
        return ApiError(
            message, status=status, retry_after=retry_after, code=code, param=param, type=type
        )
    return cls(message, retry_after=retry_after, code=code, param=param, type=type)
