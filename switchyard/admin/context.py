"""What the management API and web app use: the clients of the admin services and stores."""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.admin.keys import KeyAdmin
from switchyard.admin.spend import SpendReader
from switchyard.admin.token import AdminAuth
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.client import LLMClient


@dataclass
class AdminContext:
    """What the management API needs, built when the gateway starts."""

    auth: AdminAuth
    control: ControlClient
    secrets: SecretsAdmin
    llm: LLMClient
    keys: KeyAdmin
    spend: SpendReader
