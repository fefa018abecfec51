"""Deployment cooldowns shared by every head through the ``sy_health`` KV bucket.

A head that handles a reroute (a deployment answered 429, 5xx, timed out or was unreachable)
writes ``cd.<deployment>`` with the time it may be used again: ``Retry-After`` when the provider
sent one, else ``routing.cooldown_s``. A model-proxy whose provider failed after part of the
answer was sent (nothing to reroute, so no head hears of it) writes the same entry itself
(:class:`CooldownWriter`). Every head follows the bucket, so the next request on any head skips
the deployment at once, and it comes back exactly when the cooldown ends (no polling cycle).
Entries are plain data anyone can read: the admin API shows them.
"""

from __future__ import annotations

import logging
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.health import MAX_COOLDOWN_S, PREFIX, Cooldown

log = logging.getLogger("switchyard.head")


_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(Cooldown)


class Cooldowns:
    """Which deployments are cooling down, from a map of deployment id to :class:`Cooldown`.

    What routing decisions read; :class:`CooldownBook` keeps one current from KV.
    """

    def __init__(self, entries: dict[str, Cooldown] | None = None) -> None:
        self._until: dict[str, Cooldown] = dict(entries or {})

    def cooling(self, deployment: str, now: float | None = None) -> bool:
        entry = self._until.get(deployment)
        return entry is not None and entry.until > (now or time.time())

    def remaining(self, deployment: str, now: float | None = None) -> float:
        entry = self._until.get(deployment)
        return max(0.0, entry.until - (now or time.time())) if entry else 0.0

    def asked(self, deployment: str, now: float | None = None) -> bool:
        """Whether ``deployment`` cools down because its provider asked for the wait (a 429,
        Anthropic's 529 "overloaded", or its own ``Retry-After``), not because Switchyard
        chose to after an error."""
        entry = self._until.get(deployment)
        if entry is None or entry.until <= (now or time.time()):
            return False
        return entry.asked or entry.status in (429, 529)

    def active(self, now: float | None = None) -> list[Cooldown]:
        moment = now or time.time()
        return [c for c in self._until.values() if c.until > moment]


class CooldownBook(Cooldowns):
    def __init__(self, js: JetStreamContext) -> None:
        super().__init__()
        self._js = js
        self._follower = KvFollower(js, subjects.HEALTH_BUCKET, self._on_entry, keys=f"{PREFIX}>")
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        self._kv = await self._js.key_value(subjects.HEALTH_BUCKET)
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        deployment = key[len(PREFIX) :]
        if value is None:  # ended early (the admin API, a provider key stored)
            self._until.pop(deployment, None)
            return
        entry = _DECODE.decode(value)
        current = self._until.get(deployment)
        # A put never shortens a running cooldown: a model-proxy writes without reading the
        # bucket (CooldownWriter), and its routing.cooldown_s must not cut a longer
        # Retry-After short. Only a delete ends a cooldown early.
        if current is not None and current.until > max(entry.until, time.time()):
            return
        self._until[deployment] = entry

    async def cool(
        self, deployment: str, seconds: float, *, status: int, reason: str, asked: bool = False
    ) -> Cooldown:
        """Put ``deployment`` in cooldown for ``seconds`` (capped), for every head; ``asked``:
        the provider asked for the wait (its ``Retry-After``).

        A cooldown already lasting at least as long stays as it is (no write): requests that
        were in flight when it began keep failing, and must neither shorten it nor load KV.
        """
        entry = _entry(deployment, seconds, status=status, reason=reason, asked=asked)
        current = self._until.get(deployment)
        if current is not None and current.until >= entry.until:
            return current
        self._until[deployment] = entry  # applies here at once, others follow the bucket
        if self._kv is not None:
            try:
                await self._kv.put(f"{PREFIX}{deployment}", _ENCODE.encode(entry))
            except Exception:  # the local cooldown still holds; other heads learn on their own
                log.warning("could not share the cooldown of %s", deployment, exc_info=True)
        log.info(
            "deployment %s cooling down for %.1fs (%s %s)", deployment, seconds, status, reason
        )
        return entry


class CooldownWriter:
    """Puts deployments in cooldown for every head from a process that does not follow the
    bucket: a model-proxy, which may write ``sy_health`` but not read it.

    Every stream of a broken provider fails at about the same moment, so a deployment is
    written once while the cooldown this writer last put for it runs (not once per failure).
    The heads' longer cooldown is not shortened by the write: they keep the longer one
    (:meth:`CooldownBook._on_entry`). A write that fails is logged, never raised: the request
    it follows is answered all the same.
    """

    def __init__(self, js: JetStreamContext, *, logger: logging.Logger = log) -> None:
        # Written by subject only: opening the bucket (``js.key_value``) reads its stream's
        # info, which a writer may not. A put makes no other request.
        self._kv = KeyValue(
            name=subjects.HEALTH_BUCKET,
            stream=f"KV_{subjects.HEALTH_BUCKET}",
            pre=f"$KV.{subjects.HEALTH_BUCKET}.",
            js=js,
            direct=True,
        )
        self._log = logger
        self._until: dict[str, float] = {}  # deployment -> end of the cooldown written here

    async def cool(
        self, deployment: str, seconds: float, *, status: int, reason: str, asked: bool = False
    ) -> Cooldown | None:
        """Put ``deployment`` in cooldown for ``seconds`` (capped); the entry written, or None
        when none was (one written here still runs, or the write failed). ``asked``: the
        provider asked for the wait (its ``Retry-After``)."""
        now = time.time()
        if self._until.get(deployment, 0.0) > now:
            return None
        self._until = {d: until for d, until in self._until.items() if until > now}
        entry = _entry(deployment, seconds, status=status, reason=reason, asked=asked)
        self._until[deployment] = entry.until
        try:
            await self._kv.put(f"{PREFIX}{deployment}", _ENCODE.encode(entry))
        except (TimeoutError, NatsError) as exc:  # NATS down, no bucket: answered all the same
            self._until.pop(deployment, None)
            self._log.warning(
                "could not put deployment %s in cooldown (%s %s): %s",
                deployment,
                status,
                reason,
                type(exc).__name__,
            )
            return None
        self._log.info(
            "deployment %s cooling down for %.1fs (%s %s)", deployment, seconds, status, reason
        )
        return entry


def _entry(deployment: str, seconds: float, *, status: int, reason: str, asked: bool) -> Cooldown:
    now = time.time()
    return Cooldown(
        deployment=deployment,
        until=now + min(max(seconds, 0.0), MAX_COOLDOWN_S),
        status=status,
        reason=reason[:200],
        since=now,
        asked=asked,
    )
