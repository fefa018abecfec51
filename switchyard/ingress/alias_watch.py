"""The route table's aliases, learned by an edge so that each alias's series exist at 0 before
its first request.

Prometheus (before its created-timestamp handling) takes the first value it scrapes of a
series as its start: an alias's request series born with its first burst in them count none
of it in rate() and increase(). The processes that hold the route table create its series
when they load it; an edge holds no route table, so it asks a head for the aliases, every
:data:`EVERY_S`, with no client's key (a head answers an edge that asks so with the whole
list), and has :meth:`~.metrics.EdgeMetrics.known` create the series of those it had not
seen. A route added to the live table has its edge series within :data:`EVERY_S`, before any
scrape after it, at the usual scrape intervals (15 s and more). Every edge replica asks for
itself: nothing is shared between them. Until a head first answers, the edge holds the aliases
of the table in its own settings (told at its start, in ``create_app``): an edge no head
answers (none running, or all older) labels their requests with their alias, not ``_OTHER``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import msgspec

from switchyard.bus import subjects
from switchyard.client import LLMClient
from switchyard.errors import ApiError, AuthenticationFailed
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.openai import ModelList

log = logging.getLogger(__name__)

EVERY_S = 2.0  # how often an edge asks for the aliases
ODD_EVERY_S = 600.0  # an unreadable answer is said at most this often
_LISTING = msgspec.json.Decoder(ModelList)


class AliasWatch:
    """Asks the heads for the route table's aliases every ``every_s`` and hands them to
    ``known`` (the edge's metrics), until stopped."""

    def __init__(
        self,
        client: LLMClient,
        known: Callable[[Iterable[str]], None],
        *,
        every_s: float = EVERY_S,
    ) -> None:
        self._client = client
        self._known = known
        self._every_s = every_s
        self._loops = TaskSupervisor("alias-watch")
        self._refused_said = False
        self._odd = Throttle(ODD_EVERY_S)

    def start(self) -> None:
        self._loops.spawn(self._watch())

    async def stop(self) -> None:
        await self._loops.cancel_all()

    async def ask(self) -> list[str]:
        """The route table's aliases, from one head.

        Raises:
            ApiError: no head answered, or the head refused (an older one wants a key).
        """
        env = self._client.envelope(timeout=max(1.0, self._every_s))
        reply = await self._client.request(subjects.MODELS, b"{}", env)
        return [model.id for model in _LISTING.decode(reply.body).data]

    async def _watch(self) -> None:
        while True:
            try:
                self._known(await self.ask())
            except AuthenticationFailed:
                if not self._refused_said:  # heads older than this edge: said once
                    self._refused_said = True
                    log.info(
                        "the heads do not list the route table's aliases to this edge (an "
                        "older version?): a new alias's request series start with its "
                        "first requests until they do"
                    )
            except ApiError as exc:  # no head now: the edge's readiness says so
                log.debug("could not read the route table's aliases: %s", exc)
            except Exception as exc:  # noqa: BLE001  (the watch outlives any one failure)
                # A head of another version (msgspec.DecodeError), or the NATS connection
                # (closed for now, its buffer full): asked again next time. Any of these ended
                # the watch for good, and a new alias's series with it.
                if self._odd.ready():
                    log.warning("could not read the heads' list of aliases: %r", exc)
            await asyncio.sleep(self._every_s)
