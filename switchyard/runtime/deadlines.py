"""Which limit set a bus caller's deadline, and its 504 saying so.

An HTTP edge names the limit behind a deadline that passed in its 504 (the client's
``X-Request-Timeout``, or the gateway's setting: ``ingress.timeouts``). A caller on the bus
(``llm.v1.*`` with its key in ``Authorization``) is given its deadline by the head: its own
``Sy-Deadline``, that capped at ``ingress.max_deadline_s``, or ``ingress.default_deadline_s``
when it sent none. The head stamps which (:func:`set_by`, ``Sy-Deadline-By``) so that a reroute
still knows it, and names it in the 504s it answers (:func:`named`); so does the model-proxy
that answers a 504 itself (the deadline passed while the request was queued, or while its
provider worked), from ``Sy-Deadline-By`` on the dispatched request. Shared by both, so kept
below the components.
"""

from __future__ import annotations

from switchyard.bus import identities
from switchyard.bus.envelope import Envelope
from switchyard.bus.request_info import caller_identity
from switchyard.config import IngressSettings
from switchyard.errors import ApiError, DeadlineExceeded

CALLER = "caller"
CAPPED = "capped"
DEFAULT = "default"
# How the 504s of a request deadline that passed begin (the edges' ``ingress.timeouts`` reads
# the same words to name their limits).
PASSED = "the request deadline passed"


def set_by(env: Envelope, caller: str, ingress: IngressSettings) -> str:
    """Which limit sets the deadline of the request ``env`` as ``caller`` sent it, before the
    head gave it one: "" for an edge's (the edge names its own limits)."""
    if caller in identities.INGRESS_NAMES:
        return ""
    if env.deadline is None:
        return DEFAULT
    capped = caller not in identities.KEY_HASH_CALLERS  # (as Head._route caps it)
    if capped and env.deadline.remaining() > ingress.max_deadline_s:
        return CAPPED
    return CALLER


def named(error: ApiError, by: str, ingress: IngressSettings) -> ApiError:
    """``error``, its message naming the limit ``by`` when it is the 504 of the request's
    deadline passing (as the edges' 504s end: "(the deadline was ...)")."""
    if error.code != DeadlineExceeded.code or not error.message.startswith(PASSED):
        return error
    most = ingress.max_deadline_s
    if by == CALLER:
        limit = "the caller's own Sy-Deadline"
    elif by == CAPPED:
        limit = f"the gateway's limit ingress.max_deadline_s ({most:g} s), which capped Sy-Deadline"
    elif by == DEFAULT:
        limit = (
            f"the gateway's default ingress.default_deadline_s ({ingress.default_deadline_s:g} "
            f"s): the request set no Sy-Deadline (up to ingress.max_deadline_s, {most:g} s)"
        )
    else:  # an edge's request (the edge names it), or one routed by an older head
        return error
    error.message = f"{error.message} (the deadline was {limit})"
    return error


def name_limit(
    error: ApiError,
    env: Envelope,
    headers: dict[str, str] | None,
    rerouted: bool,
    ingress: IngressSettings,
) -> None:
    """Name in ``error`` (the answer to the request of ``env`` and ``headers``, a reroute's
    if ``rerouted``) the limit behind its deadline: :func:`named`, by what the head stamped
    on a reroute, else by how its caller sent it."""
    by = env.deadline_by if rerouted else set_by(env, caller_identity(headers), ingress)
    named(error, by, ingress)
