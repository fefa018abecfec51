"""Providers and routes: the live table with where each item came from, and the route editor.

Items defined in the settings file are read-only here (editing them would make the file lie);
one that was changed live since is marked, with a button to put the file's version back.
Saving is compare-and-set on the item the form was opened with: a concurrent edit of the same
item is a 409 explained on the form, with a reload.
"""

from __future__ import annotations

import math
from typing import Any

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
from switchyard.schemas.routing import MAX_WEIGHT, Deployment, Route, RouteTable

BLANK_ROWS = 1
_WEIGHT_RULE = (
    f"Weight must be a finite number from 0 to {MAX_WEIGHT:,}: a share of the route's "
    "traffic, e.g. 1 or 0.5 (0: none)."
)
_CONCURRENCY_RULE = (
    "Concurrency must be a whole number of requests, 1 or more, or empty for the provider's."
)


async def routes_page(ui: Ui) -> Response:
    state = await ui.admin.control.table()
    live, file, files = state.table, ui.admin.file_table, ui.admin.files
    secrets = {s.name for s in await ui.admin.secrets.list()}
    built = files.builtin("providers")
    providers = [
        (
            name,
            p,
            source("providers", name, live, file, built),
            p.secret is None or p.secret in secrets,
        )
        for name, p in sorted(live.providers.items())
    ]
    built = files.builtin("routes")
    routes = [
        (a, r, source("routes", a, live, file, built)) for a, r in sorted(live.routes.items())
    ]
    return ui.page(
        "routes.html",
        "routes",
        "Providers & routes",
        providers=providers,
        routes=routes,
        revision=state.revision,
    )


def _rows(route: Route | None, extra: int = BLANK_ROWS) -> list[dict[str, Any]]:
    rows = [
        {
            "provider": d.provider,
            "model": d.model,
            "weight": d.weight,
            "concurrency": d.concurrency or "",
        }
        for d in (route.deployments if route else ())
    ]
    return rows + [{"provider": "", "model": "", "weight": 1, "concurrency": ""}] * extra


def _hidden(dep: Deployment) -> list[str]:
    """The settings of ``dep`` this form does not show (set in the file or through the API)."""
    return [name for name in ("price", "timeouts") if getattr(dep, name) is not None]


async def edit_route(ui: Ui) -> Response:
    alias = ui.query("alias")
    state = await ui.admin.control.table()
    route = state.table.routes.get(alias) if alias else None
    if alias and route is None:
        raise NotFound(f"no route `{alias}`", param="alias")
    return _form(ui, state.table, alias=alias, route=route, values=None, errors={})


def _form(
    ui: Ui,
    table: RouteTable,
    *,
    alias: str,
    route: Route | None,
    values: dict[str, Any] | None,
    errors: dict[str, str],
    status: int = 200,
    conflicted: bool = False,
    deleted: bool = False,
) -> Response:
    files = ui.admin.files
    where = (
        source("routes", alias, table, files.current(), files.builtin("routes"))
        if route
        else "live"
    )
    if values is None:
        values = {
            "alias": alias,
            "description": route.description if route else "",
            "fallbacks": ", ".join(route.fallbacks) if route else "",
            "rows": _rows(route),
            "digest": digest(route),
        }
    return ui.page(
        "route_edit.html",
        "routes",
        f"Route {alias}" if route else "New route",
        alias=alias,
        existing=route is not None,
        values=values,
        errors=errors,
        providers=sorted(table.providers),
        aliases=sorted(a for a in table.routes if a != alias),
        source=where,
        file_route=ui.admin.file_table.routes.get(alias),
        hidden=[_hidden(d) for d in route.deployments] if route else [],
        conflicted=conflicted,
        deleted=deleted,
        status=status,
    )


def _parse(ui: Ui) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(the form as typed, the route document, per-field number errors)."""
    f = ui.form
    rows_field = f.get("rows")
    count = min(int(rows_field), 64) if rows_field.isdecimal() and len(rows_field) <= 4 else 0
    rows: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for i in range(count):
        row: dict[str, Any] = {
            k: f.get(f"deployments-{i}-{k}") for k in ("provider", "model", "weight", "concurrency")
        }
        row["remove"] = f.has(f"deployments-{i}-remove")
        rows.append(row)
        if row["remove"] or not (row["provider"] or row["model"]):
            continue
        doc: dict[str, Any] = {"provider": row["provider"], "model": row["model"]}
        try:
            weight = float(row["weight"] or 1)
        except ValueError:
            errors[f"deployments-{i}-weight"] = "Enter a number, e.g. 1 or 0.5."
        else:  # float() reads "inf", "nan" and "1e309" too
            if math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT:
                doc["weight"] = weight
            else:
                errors[f"deployments-{i}-weight"] = _WEIGHT_RULE
        if row["concurrency"]:
            try:
                concurrency = int(row["concurrency"])
            except ValueError:
                concurrency = 0
            if concurrency >= 1:
                doc["concurrency"] = concurrency
            else:
                errors[f"deployments-{i}-concurrency"] = _CONCURRENCY_RULE
        doc["_row"] = i
        deployments.append(doc)
    fallbacks = [a.strip() for a in f.get("fallbacks").split(",") if a.strip()]
    values = {
        "alias": f.get("alias"),
        "description": f.get("description"),
        "fallbacks": f.get("fallbacks"),
        "rows": rows,
        "digest": f.get("digest"),
    }
    document = {
        "description": f.get("description"),
        "fallbacks": fallbacks,
        "deployments": deployments,
    }
    return values, document, errors


def _row_fields(values: dict[str, Any]) -> list[str]:
    fields = ["alias", "description", "fallbacks", "deployments"]
    for i in range(len(values["rows"])):
        fields += [f"deployments-{i}-{k}" for k in ("provider", "model", "weight", "concurrency")]
    return fields


def _to_route(document: dict[str, Any], fields: list[str]) -> Route:
    """Validate with the route table's own types; errors name the form row, not the list index."""
    rows = [d.pop("_row") for d in document["deployments"]]
    try:
        return msgspec.convert(document, Route)
    except msgspec.ValidationError as exc:
        problem = validation_problem(exc, fields)
        fixed = {}
        for field, message in problem.errors.items():
            parts = field.split("-")
            if len(parts) >= 2 and parts[0] == "deployments" and parts[1].isdecimal():
                parts[1] = str(rows[int(parts[1])]) if int(parts[1]) < len(rows) else parts[1]
            empty = field == "deployments" and not rows
            fixed["-".join(parts)] = (
                "Add at least one deployment (a provider and its model name)." if empty else message
            )
        raise Problem(fixed) from None


async def save_route(ui: Ui) -> Response:
    values, document, errors = _parse(ui)
    alias = values["alias"]
    existing = ui.form.get("existing") == "1"
    state = await ui.admin.control.table()
    table = state.table
    original = table.routes.get(alias) if existing else None
    fields = _row_fields(values)
    try:
        if not alias:
            raise Problem({"alias": "Name the route: the model name clients will ask for."})
        if alias in ui.admin.file_table.routes:
            raise Problem({"": f"`{alias}` is defined in switchyard.yaml; change it there."}, 403)
        if existing and original is None:
            raise gone(f"Route {alias}")
        if not existing and alias in table.routes:
            raise Problem({"alias": f"A route `{alias}` exists already; edit it instead."}, 409)
        if existing and digest(original) != values["digest"]:
            raise conflict(f"Route {alias}")
        if errors:
            raise Problem(errors)
        rows = [d["_row"] for d in document["deployments"]]
        route, moved = _keep_hidden_settings(_to_route(document, fields), original, rows)
        changed = msgspec.structs.replace(table, routes={**table.routes, alias: route})
        result = await save(
            ui.admin.control.acting_for(ui.actor),
            state,
            changed,
            fields=fields,
            prefix=f"routes.{alias}.",
            what=f"Route {alias}",
        )
    except Problem as problem:
        return _form(
            ui,
            table,
            alias=alias,
            route=original,
            values=values,
            errors=problem.errors,
            status=problem.status,
            conflicted=problem.conflict and original is not None,
            deleted=problem.conflict and original is None,
        )
    if result.changed is False:  # saved as it was: nothing written, nothing to audit
        return ui.redirect("/ui/routes", ("ok", f"Nothing changed: route {alias} was already so."))
    await ui.audit("route.put", alias, f"revision {result.revision}")
    saved = f"Saved route {alias} (revision {result.revision})."
    for dep, names in moved:
        saved += (
            f" {dep.provider}/{dep.model} kept the {' and '.join(names)} of the deployment it"
            " replaced (set in switchyard.yaml or through the API): check they fit it."
        )
    return ui.redirect("/ui/routes", ("ok", saved))


async def delete_route(ui: Ui) -> Response:
    """Delete the route the form was opened with: compare-and-set like a save, so a route
    someone else changed since is not deleted with their edit (a 409 on the form, current)."""
    alias, shown = ui.form.get("alias"), ui.form.get("digest")
    if alias in ui.admin.file_table.routes:
        return ui.redirect("/ui/routes", ("error", f"`{alias}` is defined in switchyard.yaml."))

    def change(t: RouteTable) -> RouteTable:
        if alias not in t.routes:
            raise NotFound(f"no route `{alias}`", param="alias")
        if digest(t.routes[alias]) != shown:
            raise Stale
        users = sorted(a for a, r in t.routes.items() if alias in r.fallbacks)
        if users:
            raise Conflict(f"routes {', '.join(users)} fall back to `{alias}`; change them first")
        return msgspec.structs.replace(t, routes={a: r for a, r in t.routes.items() if a != alias})

    try:
        result = await ui.admin.control.acting_for(ui.actor).edit(change)
    except Stale:
        table = (await ui.admin.control.table()).table
        route = table.routes.get(alias)
        if route is None:  # deleted meanwhile after all: the list says what there is
            return ui.redirect("/ui/routes", ("error", f"Route {alias} was deleted already."))
        return _form(
            ui,
            table,
            alias=alias,
            route=route,
            values=None,
            errors=not_deleted(f"Route {alias}").errors,
            status=409,
        )
    except Conflict as exc:
        return ui.redirect("/ui/routes", ("error", exc.message))
    await ui.audit("route.delete", alias, f"revision {result.revision}")
    return ui.redirect("/ui/routes", ("ok", f"Deleted route {alias}."))


async def restore(ui: Ui) -> Response:
    """Put switchyard.yaml's version of a route or provider back into the live table."""
    kind, name = ui.form.get("kind"), ui.form.get("name")
    if kind not in ("routes", "providers"):
        return ui.redirect("/ui/routes", ("error", "Nothing to restore."))
    file_items: dict[str, Any] = getattr(ui.admin.file_table, kind)
    if name not in file_items:
        return ui.redirect("/ui/routes", ("error", f"`{name}` is not in switchyard.yaml."))
    origin = "built in" if name in ui.admin.files.builtin(kind) else "switchyard.yaml says"

    def change(t: RouteTable) -> RouteTable:
        return msgspec.structs.replace(t, **{kind: {**getattr(t, kind), name: file_items[name]}})

    result, was = await edit_seen(ui.admin.control.acting_for(ui.actor), change)
    if result.changed is not False:  # (already as the file says: nothing written)
        words = table_words(was, result.table, result.revision)
        await ui.audit(f"{kind[:-1]}.restore", name, f"from switchyard.yaml; {words}")
    return ui.redirect("/ui/routes", ("ok", f"{name} is as {origin} again."))


def _keep_hidden_settings(
    route: Route, original: Route | None, rows: list[int]
) -> tuple[Route, list[tuple[Deployment, list[str]]]]:
    """Timeouts and prices (set in the file or the API, not on this form) stay with the form row
    they were shown on: row ``i`` was the original's deployment ``i`` (the save checked the
    original is the one the form was opened with), ``rows`` saying which row each deployment of
    ``route`` came from. Matching by (provider, model) lost them, saved as null (spend $0,
    budgets no longer counting), whenever the row's upstream model was changed. Also the
    deployments whose provider or model changed but kept such a setting, with its names, for
    the page to say so."""
    if original is None:
        return route, []
    kept: list[Deployment] = []
    moved: list[tuple[Deployment, list[str]]] = []
    for dep, row in zip(route.deployments, rows, strict=True):
        old = original.deployments[row] if row < len(original.deployments) else None
        if old is None:
            kept.append(dep)
            continue
        same = msgspec.structs.replace(dep, timeouts=old.timeouts, price=old.price)
        kept.append(same)
        if same.id != old.id and _hidden(old):
            moved.append((same, _hidden(old)))
    return msgspec.structs.replace(route, deployments=tuple(kept)), moved


ROUTES: list[UiRoute] = [
    ("/routes", "GET", routes_page),
    ("/routes/edit", "GET", edit_route),
    ("/routes/save", "POST", save_route),
    ("/routes/delete", "POST", delete_route),
    ("/routes/restore", "POST", restore),
]
