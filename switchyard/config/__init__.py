"""Typed, frozen settings built once at startup and passed in explicitly.

:mod:`switchyard.config.settings` holds the types, :mod:`switchyard.config.loader` builds them
from defaults, the YAML file and ``SWITCHYARD_*`` variables. This package is the only place
that reads the environment.
"""

from switchyard.config.backing_settings import CertSettings, OpenBaoSettings, RedisSettings
from switchyard.config.loader import (
    DEFAULT_CONFIG_FILE,
    config_path,
    inherited_environment,
    load_settings,
    prepare_litellm_environment,
    prepare_tokenizer_environment,
    read_env_secret,
)
from switchyard.config.queue_settings import BatchSettings, StreamSettings
from switchyard.config.settings import (
    AdminSettings,
    HeadSettings,
    HealthSettings,
    IngressSettings,
    Listen,
    LoggingSettings,
    ModelProxySettings,
    NatsSettings,
    RoutingSettings,
    Settings,
    StackSettings,
    TelemetrySettings,
)
from switchyard.schemas.timeouts import Timeouts

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "AdminSettings",
    "BatchSettings",
    "CertSettings",
    "HeadSettings",
    "HealthSettings",
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
    "config_path",
    "inherited_environment",
    "load_settings",
    "prepare_litellm_environment",
    "prepare_tokenizer_environment",
    "read_env_secret",
]
