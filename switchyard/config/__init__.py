"""Typed, frozen settings built once at startup and passed in explicitly.

:mod:`switchyard.config.settings` holds the types, :mod:`switchyard.config.loader` builds them
from defaults, the YAML file and ``SWITCHYARD_*`` variables. This package is the only place
that reads the environment.
"""

from switchyard.config.loader import (
    config_file_from_env,
    inherited_environment,
    load_settings,
    prepare_litellm_environment,
    read_env_secret,
)
from switchyard.config.settings import (
    AdminSettings,
    CertSettings,
    HeadSettings,
    IngressSettings,
    Listen,
    LoggingSettings,
    ModelProxySettings,
    NatsSettings,
    OpenBaoSettings,
    RedisSettings,
    RoutingSettings,
    Settings,
    StackSettings,
    StreamSettings,
    TelemetrySettings,
)
from switchyard.schemas.routing import Timeouts

__all__ = [
    "AdminSettings",
    "CertSettings",
    "HeadSettings",
    "IngressSettings",
    "Listen",
    "LoggingSettings",
    "ModelProxySettings",
    "NatsSettings",
    "OpenBaoSettings",
    "RedisSettings",
    "RoutingSettings",
    "Settings",
    "StackSettings",
    "StreamSettings",
    "TelemetrySettings",
    "Timeouts",
    "config_file_from_env",
    "inherited_environment",
    "load_settings",
    "prepare_litellm_environment",
    "read_env_secret",
]
