"""A model-proxy that cannot fetch a deployment's provider key stops pulling its queue a while.

A request handed back for want of its key (:mod:`.handback`) goes back to the deployment's queue,
and JetStream gives it to whichever process has a pull request waiting: as likely this one
again as a model-proxy holding the key, so under load some requests used all their deliveries
here and ended in a 503 although another model-proxy could serve them. After a hand-back this
model-proxy therefore pauses pulling that deployment (:meth:`Puller.pause`; its other
deployments are pulled as before), so the model-proxies still pulling take its requests. It
tries the key every ``PROBE_EVERY_S`` through its key cache and pulls again

* as soon as the key is fetched (or the secrets service says it is not stored at all: then no
  model-proxy can call with it, and handing requests back helps nobody), with its full
  capacity;
* at the latest after ``LONGEST_PAUSE_S``, with one message at a time until one is served
  without a new hand-back. When no model-proxy has the key, every model-proxy pauses; the
  bound lets a request's deliveries go on, so it still ends within a few seconds with the 503
  ``secret_unavailable`` (or a reroute) of its last delivery. One message, not ``capacity``:
  if the key still cannot be fetched, each message pulled is handed back again, spending one
  of its ``modelproxy.max_deliver`` deliveries here, the very thing the pause avoids.

``LONGEST_PAUSE_S`` is the ``Retry-After`` of that 503: a request no model-proxy can serve waits
for at most one pause per delivery (``max_deliver`` of them, three by default), and a
model-proxy paused beside one holding the key hands back one request per pause, one in forty
at 20 requests a second.

A pause shows in ``switchyard_modelproxy_key_paused{deployment}``: 1 from the hand-back that
starts it until the deployment is pulled again, then 0. While requests keep coming and the key
stays out of reach it is 1 nearly all the time: the first request pulled after a pause is
handed back and pauses the deployment again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from switchyard.errors import ApiError
from switchyard.runtime.secret_cache import UNAVAILABLE_RETRY_S
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.runtime.throttle import Throttle
from switchyard.telemetry import request_id_var
from switchyard.workers.modelproxy.providers.upstream_errors import key_unreachable

log = logging.getLogger("switchyard.modelproxy")

PROBE_EVERY_S = 1.0
LONGEST_PAUSE_S = UNAVAILABLE_RETRY_S


class Pausable(Protocol):
    """What a paused deployment's puller does (:class:`switchyard.runtime.puller.Puller`)."""

    def pause(self) -> None: ...

    async def resume(self, first: int | None = None) -> None: ...


def _unwatched(deployment_id: str, paused: bool) -> None:
    """Where a pause is shown when nothing is (a :class:`KeyPauses` built without a gauge)."""


class KeyPauses:
    """The deployments this model-proxy does not pull for want of their provider keys.

    Args:
        puller: the puller of a routed deployment, None when it is not (any more).
        secret: the name of the provider key a deployment's calls need, None for none.
        fetch: fetches a key (the model-proxy's :class:`SecretCache` ``get``).
        shown: told each time a deployment's pause starts (True) or ends (False): the
            model-proxy's gauge (:meth:`ProxyMetrics.paused`).
    """

    def __init__(
        self,
        puller: Callable[[str], Pausable | None],
        secret: Callable[[str], str | None],
        fetch: Callable[[str], Awaitable[object]],
        *,
        probe_every_s: float = PROBE_EVERY_S,
        longest_s: float = LONGEST_PAUSE_S,
        shown: Callable[[str, bool], None] = _unwatched,
    ) -> None:
        self._puller = puller
        self._shown = shown
        self._secret = secret
        self._fetch = fetch
        self._probe_every_s = probe_every_s
        self._longest_s = longest_s
        self._paused: dict[str, tuple[asyncio.Task[None], Pausable]] = {}
        self._tasks = TaskSupervisor("key-pauses")
        self._saying = Throttle(30.0)  # one line at most every 30 s, whatever is paused

    def __contains__(self, deployment_id: str) -> bool:
        return deployment_id in self._paused

    def handed_back(self, deployment_id: str) -> None:
        """A request of ``deployment_id`` went back to its queue for want of its key: pause
        pulling it, unless it is paused already (a pause is not lengthened)."""
        if deployment_id in self._paused or self._tasks.closed:
            return
        puller = self._puller(deployment_id)
        if puller is None:
            return
        puller.pause()
        self._shown(deployment_id, True)
        task = self._tasks.spawn(self._hold(deployment_id, puller), name=f"paused-{deployment_id}")
        self._paused[deployment_id] = (task, puller)
        if self._saying.ready():
            log.warning(
                "not pulling requests for %s for up to %.0fs: its provider key cannot be fetched"
                " here; other model-proxies take them (paused now: %s)",
                deployment_id,
                self._longest_s,
                ", ".join(sorted(self._paused)),
            )

    async def forget(self, deployment_id: str) -> None:
        """End the pause of a deployment taken out of the routes: its puller pulls again, to
        send its queued requests back to the heads (which takes no key)."""
        paused = self._paused.pop(deployment_id, None)
        if paused is None:
            return
        task, puller = paused
        task.cancel()
        await asyncio.wait([task])
        self._shown(deployment_id, False)
        await puller.resume()

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        for deployment_id in self._paused:
            self._shown(deployment_id, False)
        self._paused.clear()

    async def _hold(self, deployment_id: str, puller: Pausable) -> None:
        request_id_var.set(None)  # the pause is no request's, though one started it
        loop = asyncio.get_running_loop()
        until = loop.time() + self._longest_s
        fetched = False
        while not fetched and (left := until - loop.time()) > 0:
            await asyncio.sleep(min(self._probe_every_s, left))
            if until - loop.time() > 0:
                fetched = await self._probe(deployment_id, until - loop.time())
        del self._paused[deployment_id]
        self._shown(deployment_id, False)  # pulled again (one at a time, if not fetched)
        if fetched:
            log.info("pulling requests for %s again: its provider key is fetched", deployment_id)
            await puller.resume()
        else:
            await puller.resume(first=1)

    async def _probe(self, deployment_id: str, within_s: float) -> bool:
        """Whether the deployment's key can be had now, or at least is no longer one that
        only this model-proxy lacks (not stored at all, or no key needed any more)."""
        name = self._secret(deployment_id)
        if name is None:
            return True
        try:
            async with asyncio.timeout(within_s):
                await self._fetch(name)
        except TimeoutError:
            return False
        except ApiError as exc:
            return not key_unreachable(exc)
        except Exception:  # not a key cache's answer: counted as not fetched, said
            log.warning("trying the provider key of %s failed", deployment_id, exc_info=True)
            return False
        return True
