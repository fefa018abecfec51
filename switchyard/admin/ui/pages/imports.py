"""Import a LiteLLM ``config.yaml``: paste or pick the file, preview what changes, apply.

The parsed result waits in the session between preview and apply, so the file (which may hold
literal keys) is sent once and never sent back; literal keys are stored in the secrets service
on apply and shown only by the name they get."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from switchyard.admin.context import Imported
from switchyard.admin.ui.context import Route as UiRoute
from switchyard.admin.ui.context import Ui
from switchyard.errors import Conflict, InvalidRequest
from switchyard.schemas.import_merge import compare, merge
from switchyard.schemas.routing import RouteTable

STASH = "litellm_import"


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
    ui.session.stash[STASH] = result
    live = (await ui.admin.control.table()).table
    file = ui.admin.file_table
    stored = {s.name for s in await ui.admin.secrets.list()}
    changes = _changes(live, result.table, file)
    secrets = [
        {
            "name": s.name,
            "how": "literal key in the file: stored for you on apply"
            if s.value
            else (f"from ${s.env_var}: store it on the Secrets page" if s.env_var else "store it"),
            "stored": s.name in stored,
        }
        for s in result.secrets
    ]
    return ui.page(
        "import.html",
        "routes",
        "Import a LiteLLM config",
        error="",
        preview={"changes": changes, "secrets": secrets, "unmapped": list(result.unmapped)},
    )


async def apply(ui: Ui) -> Response:
    result: Imported | None = ui.session.stash.pop(STASH, None)
    if result is None:
        return ui.redirect("/ui/import", ("error", "Nothing to apply: preview a config first."))
    file = ui.admin.file_table
    stored = []
    for secret in result.secrets:
        if secret.value:
            await ui.admin.secrets.acting_for(ui.actor).put(secret.name, secret.value)
            stored.append(secret.name)
    imported = result.table
    try:
        state = await ui.admin.control.acting_for(ui.actor).edit(
            lambda t: merge(t, imported, kept=file)
        )
    except (Conflict, InvalidRequest) as exc:
        return ui.redirect("/ui/import", ("error", f"Not applied: {exc.message}"))
    detail = f"{len(imported.routes)} routes, {len(imported.providers)} providers"
    if stored:
        detail += f", stored secrets {', '.join(stored)}"
    await ui.audit("import.litellm", "", f"{detail}; revision {state.revision}")
    return ui.redirect("/ui/routes", ("ok", f"Imported {detail}."))


ROUTES: list[UiRoute] = [
    ("/import", "GET", import_page),
    ("/import/preview", "POST", preview),
    ("/import/apply", "POST", apply),
]
