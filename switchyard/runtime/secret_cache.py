"""The model-proxy's view of provider keys: fetched from the secrets service, cached in memory.

* A key is fetched over NATS (``secrets.v1.get.<name>``, model-proxy identity only) on first use.
* ``secrets.v1.changed.<name>`` drops it at once and fetches the new version in the background,
  so a rotation applies on the next request without any restart.
* :meth:`SecretCache.prefetch` loads the keys of every routed provider at start, so the first
  request does not wait for Vault.
* It is refreshed in the background after ``ttl / 5``; when refreshing fails (Vault down), the
  cached key keeps serving until ``ttl``, then requests fail with a 503 naming the secret (with
  ``Retry-After``). A refresh that finds the key deleted drops it.
* Change events are core NATS: those sent while the connection was down never arrive. After a
  reconnect, :meth:`SecretCache.recheck` fetches every cached key again; a request for one
  waits for that answer (at most ``RECHECK_WAIT_S``), and when the secrets service or Vault
  cannot answer, the cached key keeps serving.
* Concurrent requests for the same name share one fetch.
* A name no secret can have (a route table stored before names were checked whole may hold
  ``key\n``) is never asked for: it would make a broken NATS subject, and the server closes
  the connection of a client that sends one (every request of the model-proxy, at start in
  its prefetch). It answers like a key not stored (503 ``secret_unavailable``), logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard.bus import subjects
from switchyard.bus.replies import ReplyKind, decode_reply
from switchyard.errors import SecretMissing, ServiceUnavailable
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.openai import decode_error
from switchyard.schemas.secret import Secret
from switchyard.schemas.secrets import NAME_PATTERN, SecretPayload

log = logging.getLogger("switchyard.bus.secret_cache")

# After a failed refresh, wait this long before trying again (requests use the cached key).
RETRY_BACKOFF_S = 1.0
NO_RESPONDER_RETRIES = 3
# A key the secrets service does not have is not asked for again for this long (each ask is a
# read of OpenBao and an audit line), unless the service says it was stored meanwhile.
MISSING_FOR_S = 5.0
# After a reconnect, a request for a cached key waits at most this long for it to be fetched
# again (a rotation may have been missed); then the cached key serves.
RECHECK_WAIT_S = 1.0
# Retry-After of a key that cannot be fetched (Vault or the secrets service down).
UNAVAILABLE_RETRY_S = 2.0
UNAVAILABLE = "secret_unavailable"


_DECODE = msgspec.json.Decoder(SecretPayload)
_NAME = re.compile(NAME_PATTERN)


@dataclass(slots=True)
class _Entry:
    secret: Secret
    fetched_at: float
    failed_at: float = 0.0
    # When a reconnect marked it for a fetch (0: not marked); cleared by a fetch that succeeds.
    recheck_at: float = 0.0


class SecretCache:
    def __init__(self, nc: NATS, *, ttl: float, request_timeout: float = 3.0) -> None:
        self._nc = nc
        self._ttl = ttl
        self._refresh_after = ttl / 5
        self._timeout = request_timeout
        self._entries: dict[str, _Entry] = {}
        self._missing: dict[str, tuple[float, SecretMissing]] = {}  # name -> (when, why)
        self._inflight: dict[str, asyncio.Task[Secret]] = {}
        self._tasks = TaskSupervisor("secret-cache")
        # Lookups served from memory, that had to wait for a fetch, and that failed (metrics).
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._sub: Subscription | None = None
        self._wanted: set[str] = set()
        self._bad_names: set[str] = set()  # logged once each

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            f"{subjects.SECRETS_CHANGED_PREFIX}.*", cb=self._on_changed
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        await self._tasks.cancel_all()

    async def _on_changed(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        self._missing.pop(name, None)  # stored (or deleted) just now: ask again
        if name in self._wanted or self._entries.pop(name, None) is not None:
            self._entries.pop(name, None)
            log.info("provider key %s changed; fetching the new version", name)
            if name in self._wanted and name not in self._inflight and not self._tasks.closed:
                self._spawn(name)

    def recheck(self) -> None:
        """After a reconnect: fetch every cached key again, and every wanted key not cached.

        Cached values stay until their fetch succeeds (during a Vault outage they keep
        serving); a key stored or deleted while the connection was down is seen at once.
        """
        if self._tasks.closed:
            return
        now = asyncio.get_running_loop().time()
        self._missing.clear()
        for entry in self._entries.values():
            entry.recheck_at = now
        for name in {*self._entries, *self._wanted}:
            if name not in self._inflight:
                self._spawn(name)

    def prefetch(self, names: set[str]) -> None:
        """Fetch ``names`` in the background (failures are left for requests to report)."""
        self._wanted = set(names)
        for name in names:
            if name not in self._entries and name not in self._inflight:
                self._spawn(name)

    async def get(self, name: str) -> Secret:
        """The key named ``name``.

        Raises:
            ServiceUnavailable: the key does not exist, or it cannot be fetched and no cached
                copy younger than the TTL exists. The message names the secret, never a value.
        """
        loop = asyncio.get_running_loop()
        entry = self._entries.get(name)
        if entry is not None and entry.recheck_at:
            entry = await self._rechecked(name, entry)
        now = loop.time()
        if entry is not None and now - entry.fetched_at < self._ttl:
            due = bool(entry.recheck_at) or now - entry.fetched_at >= self._refresh_after
            if due and name not in self._inflight and now - entry.failed_at >= RETRY_BACKOFF_S:
                self._spawn(name)  # refresh in the background, serve the cached key now
            self.hits += 1
            return entry.secret
        self.misses += 1
        missing = self._missing.get(name)
        if missing is not None and now - missing[0] < MISSING_FOR_S:
            self.errors += 1
            raise SecretMissing(missing[1].message)
        task = self._inflight.get(name) or self._spawn(name)
        try:
            return await asyncio.shield(task)
        except ServiceUnavailable:
            self.errors += 1
            raise

    async def _rechecked(self, name: str, entry: _Entry) -> _Entry | None:
        """The entry to use for a key a reconnect marked (:meth:`recheck`): once the fetch
        under way answers (waited for at most ``RECHECK_WAIT_S``), the new one, or None when
        the key was deleted meanwhile; ``entry`` when no fetch is under way or it failed."""
        task = self._inflight.get(name)
        if task is None or entry.failed_at >= entry.recheck_at:
            return entry  # already failed since the reconnect: the cached key serves
        with contextlib.suppress(ServiceUnavailable, TimeoutError):
            async with asyncio.timeout(RECHECK_WAIT_S):
                await asyncio.shield(task)
        return self._entries.get(name)

    def _spawn(self, name: str) -> asyncio.Task[Secret]:
        task = self._tasks.spawn(self._fetch(name), name=f"secret-{name}", quiet=True)
        self._inflight[name] = task
        task.add_done_callback(lambda t: self._settle(name, t))
        return task

    def _settle(self, name: str, task: asyncio.Task[Secret]) -> None:
        self._inflight.pop(name, None)
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, SecretMissing):
            self._missing[name] = (asyncio.get_running_loop().time(), failure)
            if self._entries.pop(name, None) is not None:  # deleted: its change event was missed
                log.info("provider key %s is no longer stored; dropped", name)
        elif failure is None and not task.cancelled():
            self._missing.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            log.debug("fetching provider key %s failed: %s", name, task.exception())
            entry = self._entries.get(name)
            if entry is not None:
                entry.failed_at = asyncio.get_running_loop().time()

    def _unfetchable(self, name: str) -> SecretMissing:
        shown = ascii(name)  # quoted, a line break escaped: never a broken log line
        if name not in self._bad_names:
            self._bad_names.add(name)
            log.error(
                "provider key name %s is not a secret name (a route table stored before names "
                "were checked whole?): never fetched; fix the provider's `secret`",
                shown,
            )
        return SecretMissing(
            f"provider key {shown} is unavailable: not a secret name; fix the route table"
        )

    async def _fetch(self, name: str) -> Secret:
        if not _NAME.fullmatch(name):  # as a subject it would cut the NATS connection
            raise self._unfetchable(name)
        # A secrets service restart or a server config reload leaves a gap of a few hundred
        # milliseconds without responders: ride it out rather than fail requests.
        for attempt in range(NO_RESPONDER_RETRIES + 1):
            try:
                msg = await self._nc.request(subjects.secrets_get(name), b"", timeout=self._timeout)
                break
            except nats.errors.NoRespondersError:
                if attempt == NO_RESPONDER_RETRIES:
                    raise unavailable(name, "the secrets service is not running") from None
                await asyncio.sleep(0.1 * (attempt + 1))
            except (nats.errors.TimeoutError, TimeoutError):
                if attempt >= 1:
                    raise unavailable(name, "the secrets service did not answer") from None
        reply = decode_reply(msg.data, msg.headers)
        if reply.kind is ReplyKind.ERROR:
            detail = decode_error(msg.data)
            why = detail.message if detail else f"status {reply.status}"
            if reply.status == 404:  # not stored: this deployment's problem, not the platform's
                raise SecretMissing(f"provider key `{name}` is unavailable: {why}")
            raise unavailable(name, why)
        value = _DECODE.decode(msg.data)
        secret = Secret(value.value, name=name, version=value.version)
        self._entries[name] = _Entry(secret, asyncio.get_running_loop().time())
        return secret


def unavailable(name: str, why: str) -> ServiceUnavailable:
    """A key that cannot be fetched now (the secrets service or Vault is down): a client may
    retry shortly, and other model-proxies may hold it cached."""
    return ServiceUnavailable(
        f"provider key `{name}` is unavailable: {why}",
        code=UNAVAILABLE,
        retry_after=UNAVAILABLE_RETRY_S,
    )
