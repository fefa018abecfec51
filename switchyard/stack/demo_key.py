"""The stack's demo client key: a real key in KV, made once per home, for the demo model only.

``switchyard up`` (and ``switchyard deploy init`` for containers) makes it on the first start
of a home and writes two files: ``<home>/demo-key``, its plaintext (0600, so ``up`` and
``status --json`` can show it, like ``supabase status`` does for its local keys), and
``<home>/demo-key.id``, the marker: the key's id and the key store it was made in. From then
on the key is found by its id, never by its name: once it is deleted or rotated (through the
API, the web app or ``switchyard keys``) no start makes another one, and the plaintext file is
removed, since it no longer opens anything of use (a rotated key's new secret went to whoever
rotated it). Only a new key store (the NATS data moved away) gets a new demo key. To get one
back, remove ``<home>/demo-key.id`` and start again, or make a key yourself with
``switchyard keys create``.

The key may use only the demo model (``DEMO_ONLY``): its plaintext sits in a file, and it
must not become a key to the providers added later. A key adopted from a home made before the
marker (an all-models key) is narrowed once, when adopted, and the marker says so
(``"narrowed": true``). From then on the key is the admin's: a start never changes it, so a
widening made on purpose (through the API, the web app or ``switchyard keys update``) stays.
Its creation and that one narrowing are audited (``key.create``, ``key.update``, through
``cli``). Turn ``demo_model`` off and no demo key is made.
"""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from switchyard.admin.audit_words import update_seen, update_words
from switchyard.admin.keys import KeyAdmin, KeyNotFound
from switchyard.bus import identities, subjects
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.errors import SwitchyardError
from switchyard.schemas.keys import KEY_DECODER, hash_key, record_name
from switchyard.stack.home import write_private

DEMO_KEY_NAME = "demo"
DEMO_ONLY = ("demo",)  # the built-in route's alias (Settings.route_table)


def demo_key_file(settings: Settings) -> Path:
    return settings.home_dir / "demo-key"


def demo_marker_file(settings: Settings) -> Path:
    """Says the home's demo key was made: its id and the key store it was made in."""
    return settings.home_dir / "demo-key.id"


async def _store_id(nc: NATS) -> str:
    """When the key bucket was created: a new key store (NATS data moved away) differs."""
    info = await nc.jetstream(timeout=10).stream_info(f"KV_{subjects.KEYS_BUCKET}")
    return info.created.isoformat() if info.created else ""


async def _adopt(nc: NATS, api_key: str) -> str:
    """The id of the key a demo-key file from before the marker holds ("": none that
    works: deleted, or rotated), found by its secret's hash."""
    kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
    try:
        entry = await kv.get(record_name(hash_key(api_key)))
    except KeyNotFoundError:
        return ""
    record = KEY_DECODER.decode(entry.value or b"")
    return "" if record.successor else record.id


def _read_marker(path: Path) -> tuple[str, str] | None:
    """(key id, store id) from the marker; None: no marker, or one that does not read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return str(doc["id"]), str(doc["store"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


async def _narrow(nc: NATS, key_id: str, models: tuple[str, ...]) -> bool:
    """Narrow an adopted key to ``models``, audited; whether it was allowed more."""
    admin = KeyAdmin(nc.jetstream(timeout=10))
    try:
        if tuple((await admin.find(key_id)).models) == models:
            return False
        record, was = await update_seen(admin, key_id, {"models": list(models)})
    except KeyNotFound:  # deleted meanwhile: nothing to narrow
        return False
    words = update_words(was, record, {"models": models})
    detail = f"{words}: the demo key of a home from before the marker, narrowed once"
    await AuditWriter(nc, "cli").record(_actor(), "key.update", record.id, detail)
    return True


async def _create(nc: NATS, settings: Settings, models: tuple[str, ...]) -> tuple[str, str]:
    """A new demo key, its plaintext written and its creation audited: (key, id)."""
    admin = KeyAdmin(nc.jetstream(timeout=10))
    api_key, record = await admin.create(
        DEMO_KEY_NAME, owner="local", team="demo", models=list(models)
    )
    write_private(demo_key_file(settings), api_key + "\n")
    detail = f"name {DEMO_KEY_NAME!r}, models {', '.join(models)}: the home's demo key, made once"
    await AuditWriter(nc, "cli").record(_actor(), "key.create", record.id, detail)
    return api_key, record.id


async def ensure_demo_key(
    settings: Settings, *, models: tuple[str, ...] | None = None
) -> str | None:
    """The demo key, made on a home's first start; None once it was deleted or rotated.

    Args:
        models: the only models the key may use (None: :data:`DEMO_ONLY`): a new key's, and
            an adopted key's, narrowed to these once.
    """
    allowed = DEMO_ONLY if models is None else models
    path, marker = demo_key_file(settings), demo_marker_file(settings)
    nc = await connect(settings.nats_servers, settings.certs_dir, identities.ADMIN.name)
    try:
        store = await _store_id(nc)
        api_key = path.read_text(encoding="utf-8").strip() if path.is_file() else None
        made = _read_marker(marker)
        if made is None or made[1] != store:  # never made in this key store
            doc: dict[str, object] = {"store": store}
            if made is None and api_key is not None:  # a home from before the marker
                key_id = await _adopt(nc, api_key)
                doc["narrowed"] = bool(key_id) and await _narrow(nc, key_id, allowed)
            else:
                api_key, key_id = await _create(nc, settings, allowed)
            write_private(marker, json.dumps({"id": key_id, **doc}) + "\n")
        else:
            key_id = made[0]
        return await _current(nc, settings, key_id, api_key)
    finally:
        await nc.close()


async def _current(nc: NATS, settings: Settings, key_id: str, api_key: str | None) -> str | None:
    """``api_key`` when key ``key_id`` is still there with that secret (None while it is
    revoked); else None, and the plaintext file is removed. Its models are left as they are."""
    admin = KeyAdmin(nc.jetstream(timeout=10))
    try:
        record = await admin.find(key_id) if key_id and api_key else None
    except KeyNotFound:
        record = None
    except SwitchyardError:  # a damaged record: not shown, nothing removed
        return None
    if record is None or api_key is None or record.hash != hash_key(api_key):
        demo_key_file(settings).unlink(missing_ok=True)  # deleted, or rotated
        return None
    return None if record.disabled else api_key  # revoked: kept for `--enable`, not shown


def read_demo_key(settings: Settings) -> str | None:
    path = demo_key_file(settings)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
