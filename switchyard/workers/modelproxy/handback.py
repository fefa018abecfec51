"""A request this model-proxy cannot serve for want of its provider key, while another may.

A model-proxy started, restarted or added while Vault (or the secrets service) is down has no
provider keys, while the model-proxies that ran before keep serving from their caches until
``modelproxy.secret_ttl_s`` (``runtime/secret_cache.py``). Every model-proxy pulls the same
deployment queues, so such a request goes back to its queue (``nak``, after
``HAND_BACK_DELAY_S``) for another model-proxy to take, rather than failing. It costs
deliveries, which ``modelproxy.max_deliver`` bounds: the last one is never handed back, so a
request no model-proxy can serve ends after at most ``max_deliver - 1`` hand-backs. It is then
rerouted like any retryable failure, without a cooldown (the provider is fine); or, when its
route has nowhere else to send it, answered here: 503 ``secret_unavailable`` with
``Retry-After``. After each hand-back this model-proxy stops pulling that deployment a while
(:mod:`.key_pause`), so the requests go to the model-proxies that hold the key, not back here.
"""

from __future__ import annotations

from switchyard.bus.envelope import Envelope
from switchyard.errors import ApiError
from switchyard.schemas.routing import RouteTable
from switchyard.workers.modelproxy.providers.upstream_errors import key_unreachable

# Back in the queue after this long: time for the secrets service to answer again, short next
# to any request's deadline.
HAND_BACK_DELAY_S = 0.25
# Not handed back with less than this left before the deadline: it is answered now instead.
_LEFT_AT_LEAST_S = 1.0


def hand_back(exc: ApiError, *, delivered: int, max_deliver: int, left_s: float) -> bool:
    """Whether to give a failed request back to its queue for another model-proxy: its key
    could not be fetched here (:func:`key_unreachable`), this is not its last delivery
    (``delivered`` of ``max_deliver``), and its deadline leaves time for another try."""
    return (
        key_unreachable(exc)
        and delivered < max_deliver
        and left_s >= HAND_BACK_DELAY_S + _LEFT_AT_LEAST_S
    )


def nowhere_else(table: RouteTable, env: Envelope, deployment_id: str) -> bool:
    """Whether a head could send the request nowhere but ``deployment_id`` (so a reroute
    would only come back as a 503 without ``Retry-After``): it is pinned there, or it was
    tried nowhere else and its route has no other deployment and no fallback."""
    if env.pin:
        return True
    route = table.routes.get(env.alias)
    if env.tried or route is None:
        return False
    return not route.fallbacks and all(d.id == deployment_id for d in route.deployments)
