"""Reading a LiteLLM config's numbers, and mapping its timeouts onto Switchyard's.

LiteLLM's proxy resolves ``os.environ/NAME`` in every config value, so a number may be spelled
that way; the import resolves it through a lookup its caller passes (the CLI passes
:func:`switchyard.config.read_env_secret`, the one environment reader; the admin UI passes
none, since the gateway's environment is not the one the LiteLLM proxy ran in).

The timeouts follow LiteLLM 1.110's router (``router_rust/invoke/shaping.py``,
``litellm_core_utils/completion_timeout.py``):

* A non-streamed call is bounded as a whole by the deployment's ``timeout`` (or its
  ``request_timeout``), else ``litellm_settings.request_timeout``, else
  ``router_settings.timeout``: Switchyard's ``request_s``.
* A stream is bounded *per read* (httpx's read timeout) by the deployment's
  ``stream_timeout``, else ``router_settings.stream_timeout``, else
  ``litellm_settings.request_timeout`` when ``router_settings.timeout`` is also set, else the
  non-streamed chain above. A stream never times out as a whole while chunks keep coming.

Switchyard has no per-read timeout: its ``first_token_s`` bounds the first read, so it gets the
stream's per-read value, and ``stream_s`` (the whole stream) is left at Switchyard's default,
or the whole-call timeout where that is longer, so an imported stream is not cut sooner than
the same call unstreamed. Neither is exactly LiteLLM's rule, and the import says so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchyard.schemas.timeouts import DEFAULT_TIMEOUTS, Timeouts

# How the import looks up an ``os.environ/NAME`` value; None: it does not read the environment.
EnvLookup = Callable[[str], str | None] | None

_ENV_PREFIX = "os.environ/"
_LOWEST_S = 0.001  # below a millisecond every call would time out: not a usable timeout


class Unusable(Exception):
    """A setting (or a whole ``model_list`` entry) the import cannot use, and why."""


def text_value(value: Any, where: str) -> str:
    """A scalar setting as text (an unquoted date, as YAML reads `api_version: 2024-06-01`,
    as the date); a list or a mapping is not a setting."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise Unusable(f"{where}: expected a single value, got a {type(value).__name__}")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def number(value: Any, where: str, default: float, env: EnvLookup, *, low: float = 0.0) -> float:
    """A finite number of at least ``low`` (``default`` when absent); ``os.environ/NAME`` is
    looked up first. The variable's value is never quoted back: it is the user's environment.

    Raises:
        Unusable: not a number, out of range, or a variable that cannot be read.
    """
    if value is None or value == "":
        return default
    shown = str(value)[:40]
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value.removeprefix(_ENV_PREFIX)
        if env is None:
            raise Unusable(
                f"{where}: `{shown}` is read from the environment only by "
                "`switchyard import litellm-config`"
            )
        found = env(name)
        if found is None:
            raise Unusable(f"{where}: `{shown}` names a variable this environment does not set")
        value, shown = found, f"${name}"
    if isinstance(value, bool):  # YAML's `true` is no number of seconds
        raise Unusable(f"{where}: `{shown}` is not a number")
    try:
        result = float(text_value(value, where))
    except (ValueError, OverflowError):
        raise Unusable(f"{where}: `{shown}` is not a number") from None
    if not math.isfinite(result) or result < low:
        raise Unusable(f"{where}: `{shown}` is out of range (at least {low:g})")
    return result


def seconds(value: Any, where: str, env: EnvLookup, problems: list[str]) -> float | None:
    """A timeout in seconds, or None when unset (0 or empty, as LiteLLM's ``or`` chains read
    it) or unusable (then ``problems`` says why and the next setting in LiteLLM's order
    applies)."""
    if not value:
        return None
    try:
        return number(value, where, 0, env, low=_LOWEST_S) or None
    except Unusable as exc:
        problems.append(str(exc))
        return None


@dataclass(frozen=True)
class Setting:
    """A config-wide timeout: where it is set, and its value."""

    name: str
    seconds: float


@dataclass(frozen=True)
class ConfigTimeouts:
    """The config-wide timeouts LiteLLM gives deployments that set none of their own.

    ``whole``: the whole-call limit of non-streamed calls; ``unused``: a
    ``router_settings.timeout`` that ``whole`` (``litellm_settings.request_timeout``) wins
    over; ``stream``: the per-read limit of streams.
    """

    whole: Setting | None = None
    unused: float | None = None
    stream: Setting | None = None
    problems: list[str] = field(default_factory=list)


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    found = doc.get(key)
    return found if isinstance(found, dict) else {}


def config_timeouts(doc: dict[str, Any], env: EnvLookup) -> ConfigTimeouts:
    """The config-wide timeouts, in LiteLLM's order (see the module doc); each unusable one
    is listed in ``problems`` with what applies instead."""
    litellm, router = _section(doc, "litellm_settings"), _section(doc, "router_settings")
    problems: list[str] = []
    request = seconds(
        litellm.get("request_timeout"), "litellm_settings.request_timeout", env, problems
    )
    timeout = seconds(router.get("timeout"), "router_settings.timeout", env, problems)
    whole: Setting | None = None
    if request is not None:
        whole = Setting("litellm_settings.request_timeout", request)
    elif timeout is not None:
        whole = Setting("router_settings.timeout", timeout)
    instead = f"{whole.name} applies instead" if whole else "Switchyard's default timeouts apply"
    problems = [f"{problem}; {instead}" for problem in problems]
    stream_problems: list[str] = []
    stream_s = seconds(
        router.get("stream_timeout"), "router_settings.stream_timeout", env, stream_problems
    )
    stream: Setting | None = None
    if stream_s is not None:
        stream = Setting("router_settings.stream_timeout", stream_s)
    elif request is not None and timeout is not None:
        # LiteLLM's router keeps the global request_timeout for streams only when it has a
        # timeout of its own, and then reads it before a deployment's timeout.
        stream = Setting("litellm_settings.request_timeout", request)
    problems += [
        f"{problem}; streams wait for their first chunk as long as the whole-call timeout"
        for problem in stream_problems
    ]
    if "stream_timeout" in litellm:
        problems.append(
            "litellm_settings.stream_timeout: LiteLLM's router does not read it; set "
            "router_settings.stream_timeout (the import maps that one) or a deployment's own"
        )
    unused = timeout if request is not None else None
    return ConfigTimeouts(whole=whole, unused=unused, stream=stream, problems=problems)


@dataclass(frozen=True)
class DeploymentTimeouts:
    """One deployment's timeouts (None: Switchyard's defaults), which config-wide settings
    filled them in, and the settings of its own that could not be used."""

    timeouts: Timeouts | None
    whole_by_default: bool = False
    stream_by_default: bool = False
    problems: list[str] = field(default_factory=list)


def deployment_timeouts(
    params: dict[str, Any], at: str, config: ConfigTimeouts, env: EnvLookup
) -> DeploymentTimeouts:
    """The timeouts of the deployment whose ``litellm_params`` are ``params`` (``at`` names
    them in messages). An unusable setting of its own is treated as unset, as its problem
    says, so the entry is still imported."""
    problems: list[str] = []
    own = seconds(params.get("timeout"), f"{at}.timeout", env, problems)
    if own is None:  # LiteLLM reads request_timeout only without a timeout
        own = seconds(params.get("request_timeout"), f"{at}.request_timeout", env, problems)
    own_stream = seconds(params.get("stream_timeout"), f"{at}.stream_timeout", env, problems)
    whole = own or (config.whole.seconds if config.whole else None)
    stream_default = config.stream.seconds if config.stream and not own_stream else None
    per_read = own_stream or stream_default or whole
    fallback = "the config-wide timeout applies" if config.whole else "Switchyard's default applies"
    problems = [f"{problem}; {fallback}" for problem in problems]
    if whole is None and per_read is None:
        return DeploymentTimeouts(None, problems=problems)
    defaults = DEFAULT_TIMEOUTS
    request_s = whole or defaults.request_s
    first_token_s = per_read or defaults.first_token_s
    timeouts = Timeouts(
        first_token_s=first_token_s,
        request_s=request_s,
        stream_s=max(defaults.stream_s, request_s, first_token_s),
    )
    return DeploymentTimeouts(
        timeouts,
        whole_by_default=own is None and config.whole is not None,
        stream_by_default=stream_default is not None,
        problems=problems,
    )


def default_notes(config: ConfigTimeouts, whole_count: int, stream_count: int) -> list[str]:
    """What the import says it filled in from the config-wide timeouts."""
    notes: list[str] = []
    if config.whole is not None and whole_count:
        note = (
            f"{config.whole.name} ({config.whole.seconds:g}s): the whole-call timeout "
            f"(request_s) of the {whole_count} deployment(s) that set no timeout of their own, "
            "as LiteLLM applies it"
        )
        if config.unused is not None:
            note += (
                f"; LiteLLM prefers it to router_settings.timeout ({config.unused:g}s), "
                "which is therefore not used"
            )
        notes.append(note)
    if config.stream is not None and stream_count:
        notes.append(
            f"{config.stream.name} ({config.stream.seconds:g}s): the wait for the first chunk "
            f"of a stream (first_token_s) of the {stream_count} deployment(s) without a "
            "stream_timeout of their own, as LiteLLM applies it to their streams"
        )
    return notes


def per_read_note(count: int) -> str:
    """The one thing about streams the import cannot carry over exactly."""
    return (
        f"stream timeouts of {count} deployment(s): LiteLLM bounds each read of a stream "
        "(a stream runs as long as chunks keep coming) and Switchyard has no per-read "
        "timeout; the import bounds the wait for the first chunk (first_token_s) by it and "
        "leaves the whole stream (stream_s) at Switchyard's default, or the whole-call "
        "timeout where that is longer"
    )
