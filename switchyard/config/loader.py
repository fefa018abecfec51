"""Build the settings once at startup: defaults, the YAML file, then the environment.

Sources, later ones winning: built-in defaults, the YAML file (``switchyard.yaml`` or ``--config``),
then ``SWITCHYARD_*`` environment variables, where ``__`` separates nesting levels
(``SWITCHYARD_LOGGING__LEVEL=debug``, ``SWITCHYARD_NATS__SERVERS='["tls://n1:4222"]'``). Values from
the environment are parsed as JSON when they look like JSON, else taken as strings and converted
to the field's type. Every problem is reported as a :class:`~switchyard.errors.ConfigError` that
names the field and the fix. This is the only module that reads the environment.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from switchyard.config.settings import Settings
from switchyard.errors import ConfigError
from switchyard.schemas.fields import enum_hint, struct_of, type_at
from switchyard.schemas.routing import route_table_problems

ENV_PREFIX = "SWITCHYARD_"
# Variables read by the CLI itself rather than mapped onto fields.
CLI_ENV = frozenset({"SWITCHYARD_CONFIG"})
DEFAULT_CONFIG_FILE = "switchyard.yaml"

# Fields the loader sets itself: never read from a file or the environment, never suggested.
INTERNAL_FIELDS = frozenset({"source_file"})
# Field names that mean someone pasted a provider key into the config.
LITERAL_KEY_FIELDS = ("api_key", "apikey", "key", "token", "api_token", "secret_key")
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from a YAML file, the environment and explicit overrides.

    Args:
        path: the YAML file. ``None`` uses ``$SWITCHYARD_CONFIG`` or ``./switchyard.yaml`` when it
            exists, else defaults only. An explicit path that does not exist is an error.
        env: the environment (default ``os.environ``); only ``SWITCHYARD_*`` names are read.
        overrides: dotted-path values applied last (CLI flags such as ``--home``).

    Raises:
        ConfigError: the file cannot be read or parsed, or any field is invalid.
    """
    env = os.environ if env is None else env
    source = "defaults"
    raw: dict[str, Any] = {}
    file = config_path(path, env)
    if file is not None:
        raw = _read_yaml(file)
        source = str(file)
    from_env = _apply_env(raw, env)
    if from_env:
        source = "environment" if file is None else f"{file} and the environment"
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
        from_env = {p: v for p, v in from_env.items() if not _within(p, dotted)}
    _reject_internal_fields(raw, source)
    _reject_literal_keys(raw)
    # before the fields' own bounds word it as a type error
    _reject_non_finite(raw, "", source, from_env)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, source, raw, from_env) from None
    # `inf` from the environment
    _reject_non_finite(msgspec.to_builtins(settings), "", source, from_env)
    # absolute(), not resolve(): a symlinked file (a Kubernetes ConfigMap) is followed anew.
    settings = msgspec.structs.replace(settings, source_file=str(file.absolute()) if file else "")
    problems = route_table_problems(settings.route_table)
    if problems:
        first = problems[0]
        more = "".join(f"\n  also `{p.field}`: {p.problem}" for p in problems[1:])
        raise ConfigError(first.field, first.problem + more, first.hint)
    return settings


def prepare_litellm_environment() -> None:
    """Set what litellm reads at import time; call before importing it.

    Without ``LITELLM_LOCAL_MODEL_COST_MAP`` litellm fetches its price map over the network on
    import (DESIGN §8): we use the copy bundled with the package instead.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def prepare_tokenizer_environment() -> None:
    """Point tiktoken at the tokenizer files litellm ships; call before loading an encoding.

    tiktoken downloads its files on first use unless they are in ``TIKTOKEN_CACHE_DIR``; the
    platform does not reach the internet, and litellm bundles them (and sets the same variable
    when it is imported). A value the operator set is kept.
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations)))
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled / "litellm_core_utils" / "tokenizers")


def read_env_secret(name: str) -> str | None:
    """A key a migration names by environment variable (``os.environ/NAME`` in LiteLLM).

    Only ``switchyard import`` calls this: with ``--secrets-from-env`` to copy such keys into
    the secrets service once, and for numbers a LiteLLM config names the same way (a timeout);
    nothing reads provider keys from the environment at run time.
    """
    return os.environ.get(name) or None


def config_path(path: str | Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The settings file to read: ``path``, else ``$SWITCHYARD_CONFIG``, else
    ``./switchyard.yaml`` when it exists, else None (defaults only).

    Raises:
        ConfigError: a named file does not exist.
    """
    if path is None:
        named = (os.environ if env is None else env).get("SWITCHYARD_CONFIG")
        if named:
            path = named
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            return Path(DEFAULT_CONFIG_FILE)
        else:
            return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            "config file",
            f"{file} does not exist",
            "pass an existing file with --config, or copy switchyard.example.yaml to it",
        )
    return file


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        # Read from the open file, not its text: YAML's error marks then name the file
        # (`in "switchyard.yaml", line 3`), not `<unicode string>`.
        with file.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), f"not valid YAML: {exc}", "fix the YAML syntax") from None
    except OSError as exc:
        raise ConfigError(str(file), f"cannot be read: {exc.strerror}", "check the path") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(file), "the top level must be a mapping", "start with keys like `nats:`"
        )
    return data


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply ``SWITCHYARD_*`` variables onto the raw config; the dotted path each one set,
    to its variable's name (empty: none applied)."""
    applied: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in CLI_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts) or (parts[0] not in Settings.__struct_fields__):
            valid = ", ".join(f"{ENV_PREFIX}{f.upper()}" for f in _public(Settings))
            raise ConfigError(
                name,
                "not a Switchyard setting",
                f"remove it, or use one of {valid} (with __ between nested names)",
            )
        _set_path(raw, parts, _parse_env_value(value))
        applied[".".join(parts)] = name
    return applied


def _within(field: str, path: str) -> bool:
    """Whether the dotted ``field`` is ``path`` or inside it (``a.b[0]`` is inside ``a.b``)."""
    return field == path or field.startswith((f"{path}.", f"{path}["))


def _read_from(field: str, source: str, from_env: Mapping[str, str]) -> str:
    """Where ``field``'s value came from, for a hint: the variable that set it, else
    ``source`` (the file, the environment, or both)."""
    for path, name in from_env.items():
        if _within(field, path):
            return f"{name} in the environment"
    return source


def _parse_env_value(value: str) -> Any:
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _name_key(raw: dict[str, Any], path: str) -> str:
    """``path`` with its first mapping key named (msgspec's error says ``routes[...]``, not
    which route): the first entry of that mapping that fails on its own."""
    head, marked, rest = path.partition("[...]")
    if not marked:
        return path
    node: Any = raw
    for part in head.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return path
    for key, value in node.items():
        trial = copy.deepcopy(raw)
        _set_path(trial, head.split("."), {key: value})
        try:
            msgspec.convert(trial, Settings, strict=False)
        except msgspec.ValidationError:
            return f"{head}.{key}{rest}"
    return path


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _reject_internal_fields(raw: dict[str, Any], source: str) -> None:
    """Refuse a field the loader sets (``source_file``): a value given for it was silently
    replaced, so it did nothing but mislead."""
    given = sorted(INTERNAL_FIELDS & raw.keys())
    if given:
        raise ConfigError(
            given[0],
            "is set by Switchyard itself (the settings file it read), not by a setting",
            f"remove it (read from {source})",
        )


def _public(struct: Any) -> list[str]:
    """A struct's field names less the loader's own (:data:`INTERNAL_FIELDS`)."""
    return [f for f in getattr(struct, "__struct_fields__", ()) if f not in INTERNAL_FIELDS]


def _reject_literal_keys(raw: dict[str, Any]) -> None:
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name, provider in providers.items():
        if not isinstance(provider, dict):
            continue
        for field in LITERAL_KEY_FIELDS:
            if field in provider:
                raise ConfigError(
                    f"providers.{name}.{field}",
                    "provider keys never go in the config file",
                    f"store it with `switchyard secrets put {name}` and set "
                    f"`secret: {name}` on the provider instead",
                )


def _reject_non_finite(
    value: Any, path: str, source: str, from_env: Mapping[str, str] | None = None
) -> None:
    """Refuse ``.inf``/``.nan`` (YAML) and ``inf``/``nan`` (the environment) in any number: a
    timeout of infinity is a hang the settings promise never happens, and JSON (`config`'s
    output, the records built from settings) cannot carry it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            path or "(top level)",
            f"must be a finite number, not {value}",
            f"write a finite number (read from {_read_from(path, source, from_env or {})})",
        )
    if isinstance(value, dict):
        for name, item in value.items():
            _reject_non_finite(item, f"{path}.{name}" if path else str(name), source, from_env)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{path}[{index}]", source, from_env)


def _config_error(
    exc: msgspec.ValidationError, source: str, raw: dict[str, Any], from_env: Mapping[str, str]
) -> ConfigError:
    text = str(exc)
    match = _AT_PATH.search(text)
    path = match.group("path").lstrip(".") if match else ""
    problem = text[: match.start()] if match else text
    problem = problem.replace("`", "")
    field = _name_key(raw, path).replace("[...]", ".<key>") or "(top level)"
    source = _read_from(field, source, from_env)
    hint = f"see switchyard.example.yaml for the expected shape (read from {source})"
    if problem.startswith(("Expected float", "Expected int")):
        hint = f"use a number here (read from {source})"
    if problem.startswith("Object contains unknown field"):
        valid = _public(struct_of(type_at(Settings, path)))
        if valid:
            hint = f"valid fields here: {', '.join(valid)} (read from {source})"
    listed = enum_hint(problem, Settings, path)
    if listed:  # `Invalid enum value 'openai-compat'` alone left the reader to guess
        hint = f"{listed} (read from {source})"
    return ConfigError(field, problem, hint)


def inherited_environment() -> dict[str, str]:
    """The environment a child process of the local stack starts from (a copy)."""
    return dict(os.environ)
