"""The provider editor: kind, base URL, the *name* of its secret, concurrency and timeouts.

The same types and cross-checks as the API (a secret that looks like a key is refused at the
field, and is not echoed back into the form)."""

from __future__ import annotations

import math
from typing import Any, get_args

import msgspec
from starlette.responses import Response

from switchyard.admin.ui.context import Route as UiRoute
from switchyard.admin.ui.context import Ui
from switchyard.admin.ui.pages.stale import Stale, gone, not_deleted
from switchyard.admin.ui.pages.tables import (
    Problem,
    conflict,
    digest,
    save,
    source,
    validation_problem,
)
from switchyard.errors import Conflict, NotFound
from switchyard.runtime.provider_changes import edit_seen, table_words
from switchyard.schemas.routing import (
    Provider,
    ProviderKind,
    RouteTable,
    credential_in_url,
    looks_like_a_key,
)
from switchyard.schemas.timeouts import Timeouts, call_timeouts

KINDS = list(get_args(ProviderKind))
FIELDS = [
    "name",
    "kind",
    "api_base",
    "api_version",
    "secret",
    "concurrency",
    "timeouts-first_token_s",
    "timeouts-request_s",
    "timeouts-stream_s",
    "timeouts-idle_s",
]

_TIMEOUTS = {
    "first_token_s": "first-token",
    "request_s": "request",
    "stream_s": "stream",
    "idle_s": "idle",
}


def _values(name: str, p: Provider | None) -> dict[str, Any]:
    p = p or Provider(kind="openai")
    timeouts = call_timeouts(None, p.timeouts)
    return {
        "name": name,
        "kind": p.kind,
        "api_base": p.api_base or "",
        "api_version": p.api_version or "",
        "secret": p.secret or "",
        "concurrency": p.concurrency,
        # What its deployments use where they set none (a field it leaves out: the default).
        "timeouts-first_token_s": timeouts.first_token_s,
        "timeouts-request_s": timeouts.request_s,
        "timeouts-stream_s": timeouts.stream_s,
        "timeouts-idle_s": timeouts.idle_s,
        "digest": digest(p) if name else "",
    }


async def _form(
    ui: Ui,
    table: RouteTable,
    *,
    name: str,
    provider: Provider | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    conflicted: bool = False,
    deleted: bool = False,
) -> Response:
    secrets = sorted(s.name for s in await ui.admin.secrets.list())
    users = sorted(
        a for a, r in table.routes.items() if any(d.provider == name for d in r.deployments)
    )
    return ui.page(
        "provider_edit.html",
        "routes",
        f"Provider {name}" if provider else "New provider",
        name=name,
        existing=provider is not None,
        values=values,
        errors=errors,
        kinds=KINDS,
        secrets=secrets,
        users=users,
        status=status,
        conflicted=conflicted,
        deleted=deleted,
        source=source(
            "providers", name, table, ui.admin.file_table, ui.admin.files.builtin("providers")
        )
        if provider
        else "live",
    )


async def edit_provider(ui: Ui) -> Response:
    name = ui.query("name")
    table = (await ui.admin.control.table()).table
    provider = table.providers.get(name) if name else None
    if name and provider is None:
        raise NotFound(f"no provider `{name}`", param="name")
    return await _form(
        ui, table, name=name, provider=provider, values=_values(name, provider), errors={}
    )


def _document(
    values: dict[str, Any], original: Timeouts | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The provider the form describes, and what is wrong with it, field by field.

    Its timeouts are merged onto the ``original`` provider's: a field the form did not send
    keeps its value, an empty one is unset, and one still showing what the form showed for a
    field the provider left unset (the default) stays unset, so saving a form changes only
    what was changed (it wrote every default, and dropped ``idle_s``, which it had no field
    for: saving any change reset it).
    """
    doc: dict[str, Any] = {"kind": values["kind"]}
    errors: dict[str, str] = {}
    for key in ("api_base", "api_version", "secret"):
        if values[key]:
            doc[key] = values[key]
    try:
        concurrency = int(values["concurrency"] or 64)
    except ValueError:
        concurrency = 0
    if concurrency >= 1:
        doc["concurrency"] = concurrency
    else:
        errors["concurrency"] = (
            "Concurrency must be a whole number of requests, 1 or more, e.g. 64."
        )
    shown = call_timeouts(None, original)
    timeouts: dict[str, float] = {}
    for key, label in _TIMEOUTS.items():
        raw = values.get(f"timeouts-{key}")
        had = getattr(original, key) if original is not None else None
        if raw is None:  # not in the form: as it was
            if had is not None:
                timeouts[key] = had
        elif raw:
            try:
                seconds = float(raw)
            except ValueError:
                seconds = -1.0
            if math.isfinite(seconds) and seconds > 0:  # float() reads "inf" and "nan" too
                if had is not None or seconds != getattr(shown, key):
                    timeouts[key] = seconds
            else:
                errors[f"timeouts-{key}"] = (
                    f"The {label} timeout must be a finite number of seconds above 0, e.g. 60."
                )
    doc["timeouts"] = timeouts
    return doc, errors


_PASTED_KEY = (
    "This looks like an API key, not the name of a stored secret: store it under Secrets "
    "and put its name here."
)


async def save_provider(ui: Ui) -> Response:
    f = ui.form
    values = {k: f.get(k) for k in FIELDS} | {"digest": f.get("digest")}
    name, existing = values["name"], f.get("existing") == "1"
    state = await ui.admin.control.table()
    table = state.table
    original = table.providers.get(name) if existing else None
    try:
        if not name:
            raise Problem({"name": "Name the provider, e.g. openai or azure-east."})
        if name in ui.admin.file_table.providers:
            raise Problem({"": f"`{name}` is defined in switchyard.yaml; change it there."}, 403)
        if existing and original is None:
            raise gone(f"Provider {name}")
        if existing and digest(original) != values["digest"]:
            raise conflict(f"Provider {name}")
        if not existing and name in table.providers:
            raise Problem({"name": f"A provider `{name}` exists already; edit it instead."}, 409)
        doc, errors = _document(values, original.timeouts if original is not None else None)
        if errors:
            raise Problem(errors)
        try:
            provider = msgspec.convert(doc, Provider)
        except msgspec.ValidationError as exc:
            raise validation_problem(exc, FIELDS) from None
        changed = msgspec.structs.replace(table, providers={**table.providers, name: provider})
        result = await save(
            ui.admin.control.acting_for(ui.actor),
            state,
            changed,
            fields=FIELDS,
            prefix=f"providers.{name}.",
            what=f"Provider {name}",
        )
    except Problem as problem:
        if looks_like_a_key(values["secret"]) and "secret" not in problem.errors:
            # Whichever field failed first, a pasted key is never sent back.
            problem.errors["secret"] = _PASTED_KEY
        if "secret" in problem.errors:
            values["secret"] = ""  # it may be a pasted key: never send it back
        if credential_in_url(values["api_base"]):
            values["api_base"] = ""  # nor a URL with one in it (the error says why)
        return await _form(
            ui,
            table,
            name=name,
            provider=original,
            values=values,
            errors=problem.errors,
            status=problem.status,
            conflicted=problem.conflict and original is not None,
            deleted=problem.conflict and original is None,
        )
    if result.changed is False:  # saved as it was: nothing written, nothing to audit
        return ui.redirect(
            "/ui/routes", ("ok", f"Nothing changed: provider {name} was already so.")
        )
    await ui.audit("provider.put", name, table_words(state.table, result.table, result.revision))
    return ui.redirect("/ui/routes", ("ok", f"Saved provider {name} (revision {result.revision})."))


async def delete_provider(ui: Ui) -> Response:
    """Delete the provider the form was opened with: compare-and-set like a save, so one
    someone else changed since is not deleted with their edit (a 409 on the form, current)."""
    name, shown = ui.form.get("name"), ui.form.get("digest")
    if name in ui.admin.file_table.providers:
        return ui.redirect("/ui/routes", ("error", f"`{name}` is defined in switchyard.yaml."))

    def change(t: RouteTable) -> RouteTable:
        if name not in t.providers:
            raise NotFound(f"no provider `{name}`", param="name")
        if digest(t.providers[name]) != shown:
            raise Stale
        users = sorted(
            a for a, r in t.routes.items() if any(d.provider == name for d in r.deployments)
        )
        if users:
            raise Conflict(f"routes {', '.join(users)} use provider `{name}`; change them first")
        return msgspec.structs.replace(
            t, providers={n: p for n, p in t.providers.items() if n != name}
        )

    try:
        result, was = await edit_seen(ui.admin.control.acting_for(ui.actor), change)
    except Stale:
        table = (await ui.admin.control.table()).table
        provider = table.providers.get(name)
        if provider is None:  # deleted meanwhile after all: the list says what there is
            return ui.redirect("/ui/routes", ("error", f"Provider {name} was deleted already."))
        return await _form(
            ui,
            table,
            name=name,
            provider=provider,
            values=_values(name, provider),
            errors=not_deleted(f"Provider {name}").errors,
            status=409,
        )
    except Conflict as exc:
        return ui.redirect("/ui/routes", ("error", exc.message))
    await ui.audit("provider.delete", name, table_words(was, result.table, result.revision))
    return ui.redirect("/ui/routes", ("ok", f"Deleted provider {name}."))


ROUTES: list[UiRoute] = [
    ("/providers/edit", "GET", edit_provider),
    ("/providers/save", "POST", save_provider),
    ("/providers/delete", "POST", delete_provider),
]
