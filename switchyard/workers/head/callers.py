"""Who a request on the LLM API comes from: the client key a head establishes for it
(:func:`authorize`), and the identity fields it then vouches for (:func:`stamp`)."""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.envelope import Envelope, new_request_id, refuse_misspelled
from switchyard.bus.request_info import caller_identity
from switchyard.errors import AuthenticationFailed
from switchyard.schemas.keys import ClientKey, current_key_read, hash_key
from switchyard.workers.head.keys import KeyPolicies

# Requests the admin API pins to one deployment are attributed to this key.
DEPLOYMENT_TEST_KEY = ClientKey(
    id="admin-deployment-test", hash="", name="deployment test", team="admin"
)


async def visible_aliases(
    keys: KeyPolicies, aliases: list[str], env: Envelope, headers: dict[str, str] | None
) -> list[str]:
    """The aliases a models list shows its caller: those its key may use, or, for an edge
    asking for itself with no client's key, every alias of the table (so it creates their
    series at 0 before their first request: ``ingress.alias_watch``).

    Raises:
        AuthenticationFailed: as :func:`authorize`.
    """
    caller = caller_identity(headers)
    if caller in identities.INGRESS_NAMES and not (env.key_hash or env.authorization):
        return aliases
    key, _, _ = await authorize(keys, env, caller, headers)
    return [a for a in aliases if key.allows(a)]


async def authorize(
    keys: KeyPolicies, env: Envelope, caller: str, headers: Mapping[str, str] | None = None
) -> tuple[ClientKey, str | None, ClientKey | None]:
    """Establish the request's client key from what the client zone cannot forge.

    An edge (tail, gateway) authenticated the key and passes its hash; any other caller
    must present the key itself in ``Authorization``. Either way the head looks the key up
    itself; :func:`stamp` then overwrites the identity fields. Returns the key, for the
    gateway only a pinned deployment, and the retired record of the old secret the caller
    presented while its rotation's grace lasts (None for the key's current secret, and once
    the grace ended: a batch made before the rotation runs on, but the old secret cancels
    nothing).
    ``headers``: the request's, read only when no key was sent, for an ``authorization``
    spelled in another case.

    Raises:
        AuthenticationFailed: no key, unknown, revoked or expired.
        MalformedHeader: no key, and a contract header spelled in another case.
    """
    if env.pin and caller == identities.GATEWAY.name:
        # The management API's "test this deployment" (admin-authenticated at the edge).
        return DEPLOYMENT_TEST_KEY, env.pin, None
    if caller in identities.KEY_HASH_CALLERS:
        digest = env.key_hash
    else:
        # Only ``Bearer <key>`` is read, as at the HTTP edges: a bare key or another
        # scheme is refused with what is expected (never looked up as a key).
        token = h.bearer_token(env.authorization)
        if token is None:
            if not env.authorization:  # sent as ``authorization`` (as Node clients do)?
                refuse_misspelled(headers)
            problem = h.no_bearer_problem(env.authorization) or "No client key was sent"
            raise AuthenticationFailed(
                f"{problem}. Send the key as `Authorization: Bearer sk-sy-...` in the "
                "headers of the NATS request.",
                code="missing_api_key",
            )
        digest = hash_key(token)
    key = await keys.get(digest) if digest else None
    presented: ClientKey | None = None
    if key is not None and key.successor:  # an old secret of a rotated key (see current_key)
        # A batch made before the rotation names the key by its old hash: it runs on as the
        # key's (its requests are the key's, whatever secret made the batch).
        grace = caller != identities.BATCH.name
        presented = key if not key.expired() else None  # its grace lasts
        key = await current_key_read(key, keys.get, grace=grace)
    if key is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    refused = key.refusal()
    if refused is not None:
        raise refused
    return key, None, presented


def stamp(
    env: Envelope, key: ClientKey, caller: str, presented: ClientKey | None = None
) -> Envelope:
    """The envelope with the identity the head vouches for (whatever the caller claimed).

    Usage is billed once per request id (a re-send is the same request). The edges and
    the batch runner make every id unique; any other caller chooses its own, and one
    reused for every request made them all one bill, so its requests are billed under
    its id plus a suffix made here (a re-send of such a request accepted twice is then
    billed twice: the caller's retry, not the platform's).

    ``presented``: the retired record of the old secret the caller proved the key with while
    its rotation's grace lasts (:func:`authorize`): the cancels of this request are proved
    with it too, for the request's whole life (a caller that made a request during the grace
    may cancel it after: it stays queued or running, and was run and billed for nobody when
    that cancel was refused). Whatever a caller sent in this field is overwritten.
    """
    trusted = caller in identities.KEY_HASH_CALLERS
    old = presented.hash if presented is not None and key.hash != presented.hash else ""
    return env.with_(
        key_hash=key.hash,
        presented_hash=old if key.hash else "",
        key_id=key.id,
        tenant=key.team,
        budget_period=key.budget_period,
        usage_id="" if trusted else f"{env.request_id}.{new_request_id()}",
    )
