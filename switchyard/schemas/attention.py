"""Which deployments need an operator first: the order ``switchyard top`` and the admin web
app's Overview and Queues list them in.

Here, below both (DESIGN §2), so the terminal and the web pages cannot drift apart: a burst
that saturated one deployment of 57 showed it first in ``top`` and 56th on both pages, which
listed deployments by name.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchyard.schemas.monitor import DeploymentState

# A deployment failing this share of its requests (5xx or a provider error) or more is failing:
# shown red in `switchyard top`, the alerts' threshold.
HIGH_ERRORS = 0.05


def is_saturated(d: DeploymentState) -> bool:
    """Serving at its concurrency: what else arrives waits (held in fair order, or queued)."""
    q = d.queue
    return d.saturated or (q is not None and q.concurrency > 0 and q.in_flight >= q.concurrency)


def attention(d: DeploymentState) -> tuple[bool, bool, bool, int, float, int, float, str]:
    """Sort key, most urgent first: cooling down (it failed; it takes only what nothing else
    can), then failing (:data:`HIGH_ERRORS` or more of its requests), then saturated; within
    each, the most requests waiting, then the highest error share, then the oldest call in
    flight (in whole seconds: streams stalled at their provider for 15 s, nothing finishing,
    were listed by name below deployments answering well), then the most traffic; the id
    last, so idle deployments keep a stable order by name."""
    q = d.queue
    waiting = q.waiting if q is not None else 0
    running = int(q.oldest_in_flight_s) if q is not None else 0
    return (
        d.cooldown is None,
        d.rates.error_ratio < HIGH_ERRORS,
        not is_saturated(d),
        -waiting,
        -d.rates.error_ratio,
        -running,
        -d.rates.requests_per_s,
        d.id,
    )


def by_attention(deployments: Iterable[DeploymentState]) -> list[DeploymentState]:
    """``deployments`` in :func:`attention` order."""
    return sorted(deployments, key=attention)


def routing_trouble(
    deployments: Iterable[DeploymentState],
) -> tuple[list[DeploymentState], list[str]]:
    """The deployments cooling down (in :func:`attention` order) and the routes (aliases)
    whose every deployment is: what ``switchyard status`` names beside its processes."""
    listed = list(deployments)
    cooling = [d for d in by_attention(listed) if d.cooldown is not None]
    aliases = sorted({a for d in listed for a in d.aliases})
    down = [a for a in aliases if all(d.cooldown is not None for d in listed if a in d.aliases)]
    return cooling, down
