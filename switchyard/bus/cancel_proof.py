"""The proof a cancel carries that it comes from the caller of the request it names.

``llm.v1.cancel`` reaches every model-proxy, so it must not carry the client key itself (an
internal caller once put it in ``Authorization`` there), nor the key's hash (any listener could
then cancel every other request made with that key). It carries ``Sy-Cancel-Proof`` instead:

    proof = lowercase hex( HMAC-SHA256(key=KEY_HASH, message=REQUEST_ID) )

where ``KEY_HASH`` is the ASCII bytes of the 64-character lowercase hex SHA-256 of the client
key's UTF-8 bytes (what the head stamps on dispatched requests as ``Sy-Key-Hash``) and
``REQUEST_ID`` the UTF-8 bytes of ``Sy-Request-Id``. A proof cancels that one request id, and
only a request made with that key: the model-proxy derives the same value from the request it
holds and compares. Pure functions, shared by :class:`~switchyard.client.LLMClient` and the
model-proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope
from switchyard.bus.headers import bearer_token
from switchyard.schemas.keys import hash_key

_PROOF = re.compile(r"[0-9a-f]{64}")


def cancel_proof(key_hash: str, request_id: str) -> str:
    """The ``Sy-Cancel-Proof`` of ``request_id`` made with the key hashed ``key_hash``."""
    return hmac.new(key_hash.encode(), request_id.encode(), hashlib.sha256).hexdigest()


def presented_key_hash(authorization: str) -> str:
    """The hash of the client key an ``Authorization`` value presents ("" when it presents
    none): a bearer token, or the bare value. The head refuses a request with a bare key, but
    a cancel may still present one: it proves the key as well, and only ends that key's
    request."""
    token = bearer_token(authorization) or authorization.strip()
    return hash_key(token) if token else ""


def parse_proof(value: str | None) -> str:
    """A ``Sy-Cancel-Proof`` value as sent (64 hex digits, either case), lowercased; "" when
    it is absent or anything else."""
    if not value or len(value) != 64:
        return ""
    proof = value.lower()
    return proof if _PROOF.fullmatch(proof) else ""


def cancel_headers(env: Envelope, attempt: int, own: tuple[str, str]) -> dict[str, str] | None:
    """The headers of a cancel of ``env``'s request, naming its ``attempt``; None when the
    request names no key (no key hash, no ``Authorization``): every model-proxy refuses such
    a cancel (``no_proof``), so none goes out (an edge's keyless listing of the aliases, left
    when the edge stops, sent one). ``own``: the caller's ``Authorization`` and its key's hash,
    not hashed again for each cancel."""
    headers = {h.REQUEST_ID: env.request_id, h.ATTEMPT: str(attempt)}
    if env.deadline is not None:  # how long model-proxies must remember it
        headers[h.DEADLINE] = env.deadline.header()
    if env.key_hash:  # an edge or the batch runner: trusted to name the key by hash
        headers[h.KEY_HASH] = env.key_hash
        # And a proof: the copy the server stores for model-proxies that start later loses
        # who sent it (JetStream drops Nats-Request-Info), so the hash alone counts for
        # nothing there.
        headers[h.CANCEL_PROOF] = cancel_proof(env.key_hash, env.request_id)
    if env.authorization:  # the key itself never goes out on a cancel: a proof does
        auth, key_hash = own
        digest = key_hash if env.authorization == auth else presented_key_hash(env.authorization)
        if digest:
            headers[h.CANCEL_PROOF] = cancel_proof(digest, env.request_id)
    return headers if h.CANCEL_PROOF in headers else None
