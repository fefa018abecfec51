"""A provider call's timeouts: what the route table writes, and what a call uses.

A provider's ``timeouts`` and a deployment's each set some of the three fields; a deployment's
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


DEFAULT_TIMEOUTS = CallTimeouts(first_token_s=60.0, stream_s=600.0, request_s=600.0)


class Timeouts(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Provider call timeouts as written; a field left out (or ``null``) is not set here.

    Attributes:
        first_token_s: time to the first byte of a streamed answer (or to the headers).
        stream_s: total time of a streamed answer.
        request_s: total time of a non-streamed answer.
    """

    first_token_s: Seconds | None = None
    stream_s: Seconds | None = None
    request_s: Seconds | None = None


def call_timeouts(deployment: Timeouts | None, provider: Timeouts | None) -> CallTimeouts:
    """Field by field: the deployment's, else the provider's, else the default."""
    layers = [t for t in (deployment, provider) if t is not None]
    return CallTimeouts(
        *(
            next((v for t in layers if (v := getattr(t, name)) is not None), default)
            for name, default in DEFAULT_TIMEOUTS._asdict().items()
        )
    )
