"""What the settings file defines, as the admin views compare the live route table with it.

The file seeds the live table on the first start and is edited afterwards (then applied with
``switchyard routes sync``): the views must compare with the file as it is now, as ``switchyard
config`` does, not as it was when the gateway started. The file is read again when its
modification time or size changes; a file that does not load (an edit in progress) leaves the
last good reading in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from switchyard.config import Settings, load_settings
from switchyard.errors import ConfigError
from switchyard.schemas.routing import RouteTable

log = logging.getLogger("switchyard.admin.file_table")


class FileTable:
    """The routes and providers of ``path`` (None: no file, the defaults only)."""

    def __init__(self, settings: Settings, path: Path | None) -> None:
        self._path = path
        self._table = settings.route_table
        self._builtin = _builtin(settings)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            status = self._path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def current(self) -> RouteTable:
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self._table
        self._stamp = stamp
        try:
            loaded = load_settings(self._path)
        except ConfigError as exc:
            log.warning("%s does not load (%s); its last good version stays", self._path, exc)
        else:
            self._table, self._builtin = loaded.route_table, _builtin(loaded)
        return self._table

    def builtin(self, kind: str) -> frozenset[str]:
        """The names of ``kind`` (``providers`` or ``routes``) in :meth:`current` that the
        file does not write: the built-in ``demo`` model's (``demo_model``)."""
        self.current()
        return self._builtin.get(kind, frozenset())


def _builtin(settings: Settings) -> dict[str, frozenset[str]]:
    table = settings.route_table
    return {
        "providers": frozenset(table.providers.keys() - settings.providers.keys()),
        "routes": frozenset(table.routes.keys() - settings.routes.keys()),
    }
