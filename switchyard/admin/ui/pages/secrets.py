"""Secrets: metadata and who uses each; put and rotate through a write-only field; delete after
a confirmation that names the providers and routes it would break. No value ever comes back."""

from __future__ import annotations

from urllib.parse import quote

import msgspec
from starlette.responses import Response

from switchyard.admin.ui.context import Route, Ui
from switchyard.admin.ui.pages.tables import digest
from switchyard.errors import ApiError, NotFound
from switchyard.runtime.provider_changes import secret_delete_words
from switchyard.schemas.secrets import COOLDOWNS_RUN_ON, PutSecret, written_words


async def _render(
    ui: Ui, errors: dict[str, str] | None = None, name: str = "", status: int = 200
) -> Response:
    secrets = await ui.admin.secrets.list()
    table = (await ui.admin.control.table()).table
    rows = [(s, *table.secret_users(s.name)[:2]) for s in sorted(secrets, key=lambda s: s.name)]
    missing = table.unstored_secrets({s.name for s in secrets})
    return ui.page(
        "secrets.html",
        "secrets",
        "Secrets",
        rows=rows,
        missing=missing,
        errors=errors or {},
        name=name,
        status=status,
    )


async def secrets_page(ui: Ui) -> Response:
    return await _render(ui, name=ui.query("name"))


def _checked(name: str, value: str) -> dict[str, str]:
    """The secrets service's own validation, field by field (the value is never echoed)."""
    try:
        msgspec.convert({"name": name, "value": value}, PutSecret)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.name`" in text:
            return {"name": "Use 1-63 lowercase letters, digits, - or _ (not first)."}
        if "one line" in text:
            return {"value": "An API key is one line: no line break, tab or other control key."}
        return {"value": "Enter the key (1 to 16,384 characters)."}
    return {}


async def put_secret(ui: Ui) -> Response:
    """Stores a new secret; one of that name is refused (Rotate is the way to a new version):
    two admins "storing" the same name wrote over each other, a secret in use included."""
    # A key pasted with a blank around it: the blank goes (no API key has one at either end).
    name, value = ui.form.get("name"), ui.form.raw("value").strip()
    errors = _checked(name, value)
    if errors:
        return await _render(ui, errors, name=name, status=400)
    if await _exists(ui, name):
        taken = f"A secret named {name} exists already: use Rotate in its row for a new version."
        return await _render(ui, {"name": taken}, name=name, status=409)
    try:
        info = await ui.admin.secrets.acting_for(ui.actor).put(name, value, ui.form.get("provider"))
    except ApiError as exc:
        return await _render(ui, {"name": exc.message}, name=name, status=exc.status)
    await ui.audit("secret.put", info.name, f"version {info.version}")
    return ui.redirect("/ui/secrets", ("ok", f"Stored {info.name} (version {info.version})."))


async def _exists(ui: Ui, name: str) -> bool:
    try:
        await ui.admin.secrets.info(name)
    except NotFound:
        return False
    return True


async def rotate_secret(ui: Ui) -> Response:
    name = ui.request.path_params["name"]
    value = ui.form.raw("value").strip()  # as on Store
    if _checked(name, value):
        return ui.redirect("/ui/secrets", ("error", f"Rotate {name}: enter the new key."))
    try:
        info = await ui.admin.secrets.acting_for(ui.actor).rotate(name, value)
    except NotFound:
        gone = f"{name} was deleted by someone else, so it was not rotated: store it again if "
        return ui.redirect(f"/ui/secrets?name={quote(name)}", ("error", gone + "it is needed."))
    await ui.audit("secret.rotate", info.name, written_words(info))
    if not info.changed:
        same = (
            f"{info.name} holds that key already: version {info.version} kept, not rotated; "
            f"{COOLDOWNS_RUN_ON}."
        )
        return ui.redirect("/ui/secrets", ("ok", same))
    return ui.redirect("/ui/secrets", ("ok", f"Rotated {info.name} to version {info.version}."))


async def confirm_delete(ui: Ui) -> Response:
    return await _confirm(ui, ui.request.path_params["name"])


async def _confirm(ui: Ui, name: str, changed: bool = False) -> Response:
    """The confirmation, naming what deleting ``name`` breaks now; ``changed``: shown again
    because that changed since the admin's copy was shown."""
    info = await ui.admin.secrets.info(name)
    table = (await ui.admin.control.table()).table
    users = table.secret_users(name)
    return ui.page(
        "secret_delete.html",
        "secrets",
        f"Delete {name}?",
        info=info,
        providers=users.providers,
        stranded=users.stranded,
        degraded=users.degraded,
        fallback_only=users.fallback_only,
        users=digest(users),
        changed=changed,
        status=409 if changed else 200,
    )


async def delete_secret(ui: Ui) -> Response:
    """Deletes only if the secret's users are still those the confirmation named: a page
    left open went stale, and the typed name deleted a secret a provider and route had
    started to use meanwhile (the route then answered 503)."""
    name = ui.request.path_params["name"]
    if ui.form.get("confirm") != name:
        return ui.redirect(
            f"/ui/secrets/{name}/delete", ("error", "Type the secret's name to confirm.")
        )
    table = (await ui.admin.control.table()).table
    try:
        if digest(table.secret_users(name)) != ui.form.get("users"):
            return await _confirm(ui, name, changed=True)
        await ui.admin.secrets.acting_for(ui.actor).delete(name)
    except NotFound:  # a second delete, or someone else's first
        return ui.redirect("/ui/secrets", ("error", f"{name} was already deleted by someone else."))
    users = table.secret_users(name)  # as the confirmation named them (checked above)
    how = "confirmed by typing its name" if users.providers else ""
    await ui.audit("secret.delete", name, secret_delete_words(users, how))
    return ui.redirect("/ui/secrets", ("ok", f"Deleted {name} and all its versions."))


ROUTES: list[Route] = [
    ("/secrets", "GET", secrets_page),
    ("/secrets", "POST", put_secret),
    ("/secrets/{name}/rotate", "POST", rotate_secret),
    ("/secrets/{name}/delete", "GET", confirm_delete),
    ("/secrets/{name}/delete", "POST", delete_secret),
]
