"""The local stack's demo client key: a real key in KV, created on first start only.

Its plaintext is kept 0600 in ``<home>/demo-key`` so ``switchyard up`` and ``status --json`` can
show it (like ``supabase status`` does for its local keys). Production stacks have no demo key.
"""

from __future__ import annotations

from pathlib import Path

from nats.js.errors import KeyNotFoundError

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import identities, subjects
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.schemas.keys import hash_key, record_name
from switchyard.stack.home import write_private

DEMO_KEY_NAME = "demo"


def demo_key_file(settings: Settings) -> Path:
    return settings.home_dir / "demo-key"


async def ensure_demo_key(settings: Settings) -> str:
    """The demo key, creating it (and its file) when either is missing."""
    path = demo_key_file(settings)
    nc = await connect(settings.nats_servers, settings.certs_dir, identities.ADMIN.name)
    try:
        admin = KeyAdmin(nc.jetstream(timeout=10))
        if path.is_file():
            api_key = path.read_text(encoding="utf-8").strip()
            kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
            try:
                await kv.get(record_name(hash_key(api_key)))
            except KeyNotFoundError:
                pass  # the bucket was reset: issue a fresh key below
            else:
                return api_key
        api_key, _ = await admin.create(DEMO_KEY_NAME, owner="local", team="demo")
        write_private(path, api_key + "\n")
        return api_key
    finally:
        await nc.close()


def read_demo_key(settings: Settings) -> str | None:
    path = demo_key_file(settings)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
