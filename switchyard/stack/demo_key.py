"""The local stack's demo client key: a real key in KV, created on first start only.

Its plaintext is kept 0600 in ``<home>/demo-key`` so ``switchyard up`` and ``status --json`` can
show it (like ``supabase status`` does for its local keys). A container deployment's demo key may
use only the demo model (``DEMO_ONLY``): it sits on a volume, and must not become a key to the
providers added later. Turn ``demo_model`` off and no demo key is made.
"""

from __future__ import annotations

from pathlib import Path

from nats.js.errors import KeyNotFoundError

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import identities, subjects
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.schemas.keys import KEY_DECODER, hash_key, record_name
from switchyard.stack.home import write_private

DEMO_KEY_NAME = "demo"
DEMO_ONLY = ("demo",)  # the built-in route's alias (Settings.route_table)


def demo_key_file(settings: Settings) -> Path:
    return settings.home_dir / "demo-key"


async def ensure_demo_key(settings: Settings, *, models: tuple[str, ...] | None = None) -> str:
    """The demo key, creating it (and its file) when either is missing.

    Args:
        models: the only models the key may use (None: every model, the local stack's key).
            An existing key allowed more is narrowed to these.
    """
    path = demo_key_file(settings)
    restrict = {} if models is None else {"models": list(models)}
    nc = await connect(settings.nats_servers, settings.certs_dir, identities.ADMIN.name)
    try:
        admin = KeyAdmin(nc.jetstream(timeout=10))
        if path.is_file():
            api_key = path.read_text(encoding="utf-8").strip()
            kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
            try:
                entry = await kv.get(record_name(hash_key(api_key)))
            except KeyNotFoundError:
                pass  # the bucket was reset: issue a fresh key below
            else:
                record = KEY_DECODER.decode(entry.value or b"")
                if not record.successor:  # (rotated: the file's secret is refused; a fresh key)
                    if models is not None and tuple(record.models) != models:
                        await admin.update(record.id, **restrict)
                    return api_key
        api_key, _ = await admin.create(DEMO_KEY_NAME, owner="local", team="demo", **restrict)
        write_private(path, api_key + "\n")
        return api_key
    finally:
        await nc.close()


def read_demo_key(settings: Settings) -> str | None:
    path = demo_key_file(settings)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
