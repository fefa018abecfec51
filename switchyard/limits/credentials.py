"""The Valkey password of a role, from the directory a deployment mounts (``redis.password_dir``).

Each role (``ingress``, ``accounting``, ``admin``, ``ops``) has its own ACL user; the local stack
writes ``<role>.password`` files 0600, a compose or Kubernetes deployment mounts them.
"""

from __future__ import annotations

from pathlib import Path


def read_password(password_dir: Path, role: str) -> str:
    """A role's password from ``<password_dir>/<role>.password`` (empty if absent)."""
    path = password_dir / f"{role}.password"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
