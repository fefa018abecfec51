"""Import a LiteLLM ``config.yaml``: paste or pick the file, preview what changes, apply.

The parsed result waits in the session between preview and apply, so the file (which may hold
literal keys) is sent once and never sent back; literal keys are stored in the secrets service
on apply and shown only by the name they get. Each preview gets a random id that its Apply
button sends back, so Apply applies the config on that page, never another tab's later
preview; a session keeps its last :data:`KEPT` previews for :data:`KEPT_S` seconds.

A preview also keeps a fingerprint of each live entry it compared (or that there was none).
Apply writes nothing when an entry the import would write has changed since (another admin
created, edited or deleted it): the admin approved "new" or "unchanged" against a table that is
gone, so the page shows the preview again against the current table, naming what changed, and
Apply must be pressed on that one. The check is made again inside the table write itself, so
an edit landing between the check and the write is not overwritten either.

Apply checks the merged table as the control service will (its types, then its rules) before
anything is written, so a refused import stores no secret. Secrets new to the store are
written before the table (its providers name them) and deleted again if the table is refused
all the same (another edit won meanwhile); new versions of secrets stored already are written
only once the table is applied, so a refusal leaves those as they were."""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from switchyard.admin.context import Imported, ImportedSecret
from switchyard.admin.ui.context import Route as UiRoute
from switchyard.admin.ui.context import Ui
from switchyard.admin.ui.pages.tables import digest
from switchyard.errors import ApiError, Conflict, InvalidRequest
from switchyard.runtime.provider_changes import edit_seen, table_words
from switchyard.schemas.import_merge import compare, merge
from switchyard.schemas.route_check import edit_problems
from switchyard.schemas.routing import InvalidRouteTable, RouteTable
from switchyard.schemas.secrets import written_words

log = logging.getLogger("switchyard.admin.ui")

STASH = "litellm_import"
KEPT = 5  # previews a session keeps (several tabs, or a preview redone after an edit)
KEPT_S = 3600.0  # how long a preview can be applied after it was shown
SHOWN_USERS = 10  # routes named in a secret's line of the preview


@dataclass(frozen=True, slots=True)
class Preview:
    """A config as converted, and the fingerprint of each live entry its page compared it
    with, by ``provider NAME`` or ``route NAME`` (``""``: there was none)."""

    result: Imported
    seen: Mapping[str, str]


def _seen(live: RouteTable, incoming: RouteTable) -> dict[str, str]:
    """The fingerprints of the live entries named like ``incoming``'s (``""``: none live)."""
    return {
        **{f"provider {n}": digest(live.providers.get(n)) for n in incoming.providers},
        **{f"route {n}": digest(live.routes.get(n)) for n in incoming.routes},
    }


def changed_since(seen: Mapping[str, str], now: RouteTable, file: RouteTable) -> list[str]:
    """The entries the import would write (not the settings file's), as ``route NAME``, that
    differ in ``now`` from what the preview showed: created, edited or deleted since."""
    held = {f"provider {n}" for n in file.providers} | {f"route {n}" for n in file.routes}
    out = []
    for key, was in seen.items():
        section, _, name = key.partition(" ")
        items: Mapping[str, Any] = now.providers if section == "provider" else now.routes
        if key not in held and digest(items.get(name)) != was:
            out.append(key)
    return out


class Previews:
    """The previews a session waits to apply, by id: the newest :data:`KEPT`, each for
    :data:`KEPT_S` seconds."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[float, Preview]] = OrderedDict()

    def add(self, preview: Preview, now: float | None = None) -> str:
        """Keep ``preview``; its id. Expired previews go first: one holds the file's literal
        keys, which must not stay in memory for the session's whole life."""
        moment = time.time() if now is None else now
        for stale in [key for key, (at, _) in self._kept.items() if moment - at > KEPT_S]:
            del self._kept[stale]
        preview_id = secrets.token_urlsafe(16)
        self._kept[preview_id] = (moment, preview)
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return preview_id

    def __len__(self) -> int:
        return len(self._kept)

    def take(self, preview_id: str, now: float | None = None) -> Preview | None:
        """The preview ``preview_id``, forgotten (applied once); None when unknown or expired."""
        kept = self._kept.pop(preview_id, None)
        if kept is None or (time.time() if now is None else now) - kept[0] > KEPT_S:
            return None
        return kept[1]


def _previews(ui: Ui) -> Previews:
    previews = ui.session.stash.get(STASH)
    if not isinstance(previews, Previews):
        previews = ui.session.stash[STASH] = Previews()
    return previews


async def import_page(ui: Ui) -> Response:
    return ui.page("import.html", "routes", "Import a LiteLLM config", error="", preview=None)


# What each state of :func:`~switchyard.schemas.import_merge.compare` is called on the page.
_STATES = {
    "new": "new",
    "unchanged": "unchanged",
    "replaces": "replaces the current one",
    "kept": "skipped: defined in switchyard.yaml",
}


def _changes(live: RouteTable, imported: RouteTable, file: RouteTable) -> list[dict[str, Any]]:
    out = []
    for change in compare(live, imported, kept=file):
        state = _STATES[change.state]
        if change.differs:
            state += f" ({', '.join(change.differs)} differ)"
        out.append(
            {"kind": change.section, "name": change.name, "item": change.item, "state": state}
        )
    return out


async def preview(ui: Ui) -> Response:
    convert = ui.admin.convert_litellm
    text = ui.form.raw("config")
    error = ""
    result: Imported | None = None
    if convert is None:
        error = "This gateway was started without the LiteLLM importer."
    else:
        try:
            result = convert(text)
        except ValueError as exc:  # says why: not YAML, no model_list, aliases past a bound
            reason = str(exc)
            error = f"{reason[:1].upper()}{reason[1:]}."
    if result is None:
        return ui.page(
            "import.html",
            "routes",
            "Import a LiteLLM config",
            error=error,
            preview=None,
            status=400,
        )
    return await _show(ui, result)


async def _show(ui: Ui, result: Imported, changed: list[str] | None = None) -> Response:
    """The preview page of ``result`` against the live table, with a new id; ``changed``: an
    Apply refused because these entries changed since its preview (a 409 that says so)."""
    live = (await ui.admin.control.table()).table
    preview_id = _previews(ui).add(Preview(result, _seen(live, result.table)))
    file = ui.admin.file_table
    stored = {s.name for s in await ui.admin.secrets.list()}
    changes = _changes(live, result.table, file)
    secrets = [
        {"name": s.name, "how": _how(s, stored, live), "stored": s.name in stored}
        for s in result.secrets
    ]
    refused = table_refusal(merge(live, result.table, kept=file), live)
    errors = [f"Apply would be refused, storing nothing: {refused}"] if refused else []
    if changed:
        errors.insert(
            0, f"Nothing applied: {_changed(changed)}. Check the changes below and apply again."
        )
    return ui.page(
        "import.html",
        "routes",
        "Import a LiteLLM config",
        error=" ".join(errors),
        preview={
            "id": preview_id,
            "changes": changes,
            "secrets": secrets,
            "unmapped": list(result.unmapped),
        },
        status=409 if changed else 200,
    )


def _changed(names: list[str]) -> str:
    return (
        f"{', '.join(names)} changed since the preview was shown (someone else created, "
        "edited or deleted it), and applying would have replaced that change"
    )


def _how(secret: ImportedSecret, stored: set[str], live: RouteTable) -> str:
    """How the preview says a secret gets its value; a literal key for a secret stored
    already says that apply replaces it, and which routes use it now."""
    if not secret.value:
        if secret.env_var:
            return f"from ${secret.env_var}: store it on the Secrets page"
        return "store it"
    if secret.name not in stored:
        return "literal key in the file: stored for you on apply"
    routes = live.secret_users(secret.name).routes
    used = ", ".join(routes[:SHOWN_USERS])
    if len(routes) > SHOWN_USERS:
        used += f" and {len(routes) - SHOWN_USERS} more"
    return f"literal key in the file: apply replaces the stored value of secret {secret.name} " + (
        f"(used now by routes {used})" if routes else "(no route uses it now)"
    )


def table_refusal(table: RouteTable, live: RouteTable) -> str:
    """Why the control service would refuse to replace ``live`` with ``table``, or ``""``."""
    problems = edit_problems(table, live)
    return f"invalid route table: {InvalidRouteTable(problems)}" if problems else ""


async def apply(ui: Ui) -> Response:
    shown = _previews(ui).take(ui.form.get("preview"))
    if shown is None:  # not this session's, applied already, pushed out or too old
        return ui.redirect(
            "/ui/import",
            (
                "error",
                "Nothing applied: that preview is no longer kept (a session keeps its last "
                f"{KEPT} previews for {KEPT_S / 60:.0f} minutes, each applied once). "
                "Preview the config again.",
            ),
        )
    result = shown.result
    file = ui.admin.file_table
    imported = result.table
    live = (await ui.admin.control.table()).table
    changed = changed_since(shown.seen, live, file)
    if changed:  # nothing written yet: show it again as the table is now
        return await _show(ui, result, changed)
    refused = table_refusal(merge(live, imported, kept=file), live)
    if refused:  # nothing written yet
        return ui.redirect("/ui/import", ("error", f"Not applied: {refused}"))
    secrets = ui.admin.secrets.acting_for(ui.actor)
    before = {s.name for s in await ui.admin.secrets.list()}
    literal = {s.name: s.value for s in result.secrets if s.value}
    created: list[str] = []
    try:
        for name, value in literal.items():
            if name not in before:
                info = await secrets.put(name, value)
                created.append(name)
                await ui.audit("secret.put", name, f"version {info.version}, from an import")
    except ApiError as exc:  # not stored: neither is anything else
        return await _refused(ui, exc, created)

    def change(table: RouteTable) -> RouteTable:
        moved = changed_since(shown.seen, table, file)
        if moved:  # an edit landed after the check above
            raise Conflict(f"{_changed(moved)}; preview the config again")
        return merge(table, imported, kept=file)

    try:
        state, was = await edit_seen(ui.admin.control.acting_for(ui.actor), change)
    except (Conflict, InvalidRequest) as exc:  # refused: what this apply stored goes again
        return await _refused(ui, exc, created)
    stored = list(created)
    failed = ""
    for name, value in literal.items():
        if name not in before:
            continue
        try:
            info = await secrets.put(name, value)
        except ApiError as exc:  # the routes are in: say which key kept its old version
            failed = f"; the new version of secret {name} was not stored ({exc.message})"
            break
        if info.changed:  # (the key it holds again: no new version, nothing said)
            stored.append(name)
        await ui.audit("secret.put", name, f"{written_words(info)}, from an import")
    detail = f"{len(imported.routes)} routes, {len(imported.providers)} providers"
    if stored:
        detail += f", stored secrets {', '.join(stored)}"
    if state.changed is False:  # the same routes and providers again: no new revision
        detail += " (the live table had them all: unchanged)"
    if state.changed is not False or stored:  # (each secret stored is audited above too)
        words = table_words(was, state.table, state.revision)
        await ui.audit("import.litellm", "", f"{detail}; {words}{failed}")
    if failed:
        return ui.redirect("/ui/routes", ("error", f"Imported {detail}{failed}."))
    return ui.redirect("/ui/routes", ("ok", f"Imported {detail}."))


async def _refused(ui: Ui, exc: ApiError, created: list[str]) -> Response:
    """A refused apply: the secrets it stored are deleted again, and the refusal said (and
    audited, when it had stored any)."""
    left = await _remove(ui, created)
    note = f" (could not remove the secrets it stored: {', '.join(left)})" if left else ""
    if created:
        removed = ", ".join(n for n in created if n not in left) or "none"
        await ui.audit(
            "import.litellm",
            "",
            f"not applied: {exc.message}; secrets it stored then removed: {removed}{note}",
            ok=False,
        )
    return ui.redirect("/ui/import", ("error", f"Not applied: {exc.message}{note}"))


async def _remove(ui: Ui, names: list[str]) -> list[str]:
    """Delete the secrets ``names`` (stored by a refused import); the ones that remain."""
    left = []
    secrets = ui.admin.secrets.acting_for(ui.actor)
    for name in names:
        try:
            await secrets.delete(name)
        except ApiError as exc:
            log.warning("could not remove secret %s after a refused import: %s", name, exc)
            left.append(name)
        else:
            await ui.audit("secret.delete", name, "stored by an import that was then refused")
    return left


ROUTES: list[UiRoute] = [
    ("/import", "GET", import_page),
    ("/import/preview", "POST", preview),
    ("/import/apply", "POST", apply),
]
