"""A provider call's timeouts: what the route table writes, and what a call uses.

A provider's ``timeouts`` and a deployment's each set some of the four fields; a deployment's
field wins, else its provider's, else :data:`DEFAULT_TIMEOUTS`. So a deployment that tightens
one timeout keeps its provider's other two (a block that set one field used to reset the other
two to the defaults, loosening what the provider had tightened). Readers resolve once per route
table (:func:`call_timeouts`), not per request.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from switchyard.schemas.numbers import AboveZero

# finite: a timeout of ``inf`` would be stored as ``null``, read back as "not set"
Seconds = AboveZero


class CallTimeouts(NamedTuple):
    """The timeouts one deployment's calls use, every field set (each is also capped by the
    request's remaining deadline)."""

    first_token_s: float
    stream_s: float
    request_s: float
    idle_s: float


# idle_s, 120 s: a reasoning model's long pause comes before its content (bounded by
# ``stream_s``), and no model pauses that long mid-answer; a provider that does has stalled.
DEFAULT_TIMEOUTS = CallTimeouts(first_token_s=60.0, stream_s=600.0, request_s=600.0, idle_s=120.0)


class Timeouts(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Provider call timeouts as written; a field left out (or ``null``) is not set here.

    Attributes:
        first_token_s: time to the first byte of a streamed answer (or to the headers).
        stream_s: total time of a streamed answer.
        request_s: total time of a non-streamed answer.
        idle_s: the longest gap between two chunks of a streamed answer once its content
            began. Readers older than the field (protocol level 3) refuse a table that sets
            it (``omit_defaults``: unset, it is not written).
    """

    first_token_s: Seconds | None = None
    stream_s: Seconds | None = None
    request_s: Seconds | None = None
    idle_s: Seconds | None = None


def call_timeouts(deployment: Timeouts | None, provider: Timeouts | None) -> CallTimeouts:
    """Field by field: the deployment's, else the provider's, else the default."""
    layers = [t for t in (deployment, provider) if t is not None]
    return CallTimeouts(
        *(
            next((v for t in layers if (v := getattr(t, name)) is not None), default)
            for name, default in DEFAULT_TIMEOUTS._asdict().items()
        )
    )


def settings_apart(
    here: tuple[int | None, Timeouts | None],
    there: tuple[int | None, Timeouts | None],
    provider: Timeouts | None,
    provider_name: str,
) -> str:
    """How two uses of one deployment set its queue apart (each is the concurrency and the
    timeouts written on it, over its provider's ``provider``): each field that differs, its
    two values and where each comes from (written on the deployment, the provider's, or the
    default), so an operator knows which to change (a provider's change can set two uses
    apart when only one of them writes the field)."""
    apart = []
    if here[0] != there[0]:
        mine, theirs = (c or "not written" for c in (here[0], there[0]))
        apart.append(f"`concurrency` is {mine} here and {theirs} there")
    for name, default in DEFAULT_TIMEOUTS._asdict().items():
        ours, other = (
            _resolved(name, t, provider, default, provider_name) for t in (here[1], there[1])
        )
        if ours[0] != other[0]:
            apart.append(
                f"`timeouts.{name}` is {ours[0]:g} s here ({ours[1]}) and {other[0]:g} s "
                f"there ({other[1]})"
            )
    return "; ".join(apart)


def _resolved(
    name: str, written: Timeouts | None, provider: Timeouts | None, default: float, of: str
) -> tuple[float, str]:
    if written is not None and (value := getattr(written, name)) is not None:
        return value, "written on the deployment"
    if provider is not None and (value := getattr(provider, name)) is not None:
        return value, f"provider `{of}`'s timeouts"
    return default, "the default"
