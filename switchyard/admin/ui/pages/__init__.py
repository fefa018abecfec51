"""The admin web app's pages, one module per area; each lists its routes (path under ``/ui``)."""

from switchyard.admin.ui.context import Route
from switchyard.admin.ui.pages import (
    audit,
    batches,
    imports,
    keys,
    live,
    providers,
    routes,
    secrets,
    sessions,
    spend,
)

ROUTES: list[Route] = [
    *live.ROUTES,
    *secrets.ROUTES,
    *routes.ROUTES,
    *providers.ROUTES,
    *imports.ROUTES,
    *keys.ROUTES,
    *spend.ROUTES,
    *batches.ROUTES,
    *audit.ROUTES,
    *sessions.ROUTES,
]
