"""The local Valkey: append-only persistence and one ACL user per role.

Roles and what they may touch (DESIGN §5): ``ingress`` writes rate-limit keys (its budget holds
among them) and only reads spend (with the estimated costs per request it holds); ``accounting``
writes spend (those estimates among it) and usage; ``admin`` reads everything Switchyard keeps;
``batch`` (the Batch API runner) may only ``GET`` keys' budget counters and ``HGETALL`` the
estimated costs per request; ``ops`` is the
operator's full-access user (provisioning, tests). The default user is off.
Passwords are random, kept 0600 as ``<role>.password``; the ACL file stores only their SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from switchyard.stack.home import write_private

# Key families (every Switchyard key starts with "sy:").
RATE_KEYS = "sy:rl:*"
SPEND_KEYS = "sy:spend:*"
USAGE_KEYS = "sy:usage:*"
# A key's spend in one budget period (limits.keys.budget): what the batch runner checks.
BUDGET_KEYS = "sy:spend:key:*:p:*"
# The estimated cost of one request per model, a key's and the platform's (limits.keys
# estimates, platform_estimates): what the batch runner's lines in flight hold of a budget.
ESTIMATE_KEYS = ("sy:spend:est:key:*", "sy:spend:est:all")

# Commands nobody but ops needs; denied on top of key patterns.
_DENY = "-@dangerous -@admin"
# Key patterns do not filter commands without key arguments: these would list other roles'
# key names (KEYS is already @dangerous).
_NO_LISTING = "-scan -randomkey"

ROLE_RULES: dict[str, str] = {
    "ingress": f"~{RATE_KEYS} %R~{SPEND_KEYS} +@all {_DENY} {_NO_LISTING}",
    "accounting": f"~{SPEND_KEYS} ~{USAGE_KEYS} +@all {_DENY} {_NO_LISTING}",
    "admin": f"%R~sy:* +@read +@connection +ping {_DENY}",
    # Reads budget counters with a plain GET and estimates with HGETALL, nothing else: no
    # scripts (EVAL and SCRIPT LOAD), no other key, no write.
    "batch": f"%R~{BUDGET_KEYS} %R~{ESTIMATE_KEYS[0]} %R~{ESTIMATE_KEYS[1]} "
    "+get +hgetall +ping +select",
    "ops": "~* &* +@all",
}


@dataclass(frozen=True, slots=True)
class ValkeyLayout:
    """Where Valkey keeps its files; ``bind`` is its listen address."""

    dir: Path
    port: int
    bind: str = "127.0.0.1"

    @property
    def config_file(self) -> Path:
        return self.dir / "valkey.conf"

    @property
    def acl_file(self) -> Path:
        return self.dir / "users.acl"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def password_file(self, role: str) -> Path:
        return self.dir / f"{role}.password"


def write_config(layout: ValkeyLayout) -> None:
    """Write the server config and ACL file, creating role passwords on first run only."""
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    lines = ["user default off"]
    for role, rules in ROLE_RULES.items():
        file = layout.password_file(role)
        if not file.is_file():
            write_private(file, secrets.token_urlsafe(32))
        digest = hashlib.sha256(file.read_text(encoding="utf-8").strip().encode()).hexdigest()
        lines.append(f"user {role} on #{digest} resetchannels {rules}")
    write_private(layout.acl_file, "\n".join(lines) + "\n")
    config = f"""# Rendered by switchyard; edits are overwritten on the next `switchyard up`.
bind {layout.bind}
port {layout.port}
protected-mode yes
daemonize no
dir {layout.data_dir}
appendonly yes
appendfsync everysec
appenddirname appendonly
aclfile {layout.acl_file}
save ""
loglevel warning
"""
    write_private(layout.config_file, config)
