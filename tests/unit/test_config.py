"""Settings: defaults, file + environment layering, and errors that name the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from switchyard.config import load_settings
from switchyard.config.loader import INTERNAL_FIELDS
from switchyard.config.settings import Settings
from switchyard.errors import ConfigError
from switchyard.schemas.routing import (
    Provider,
    RouteTable,
    decode_route_table,
    deployment_id,
    is_deployment_id,
    route_table_findings,
    route_table_problems,
)
from switchyard.schemas.secrets import PutSecret

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchyard.yaml"
    path.write_text(text)
    return path


def test_defaults_give_a_working_demo_route() -> None:
    settings = load_settings(env={})
    table = settings.route_table
    assert "demo" in table.routes
    assert table.providers["demo"].kind == "demo"
    assert settings.nats_servers == ("tls://127.0.0.1:4222",)
    assert settings.ingress.tail.port == 8080


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "logging:\n  level: warning\nstack:\n  heads: 3\n")
    settings = load_settings(
        path,
        env={"SWITCHYARD_STACK__HEADS": "4", "SWITCHYARD_NATS__SERVERS": '["tls://n1:4222"]'},
        overrides={"home": str(tmp_path / "h")},
    )
    assert settings.logging.level == "warning"
    assert settings.stack.heads == 4  # env beats file
    assert settings.nats_servers == ("tls://n1:4222",)
    assert settings.home_dir == (tmp_path / "h").resolve()


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(AttributeError):
        settings.home = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "field", "in_problem", "in_hint"),
    [
        ("nats:\n  sevrers: []\n", "nats", "unknown field sevrers", "servers"),
        ("stack:\n  heads: many\n", "stack.heads", "Expected int", "number"),
        ("stack:\n  nats_port: 70000\n", "stack.nats_port", "<= 65535", ""),
        ("logging:\n  level: loud\n", "logging.level", "Invalid enum value", ""),
        (
            "routes:\n  gpt:\n    deployments:\n      - {provider: nope, model: m}\n",
            "routes.gpt.deployments[0].provider",
            "unknown provider `nope`",
            "define it under `providers:`",
        ),
        (
            "providers:\n  oa:\n    kind: openai\n    api_key: sk-live-123\n",
            "providers.oa.api_key",
            "never go in the config file",
            "switchyard secrets put oa",
        ),
        (
            "providers:\n  oa:\n    kind: openai\n    secret: sk-proj-abc123def456\n",
            "providers.oa.secret",
            "looks like an API key",
            "switchyard secrets put oa",
        ),
        (  # a name the secrets service refuses: its routes answered 503 for ever
            "providers:\n  oa:\n    kind: openai\n    secret: OpenAI.Prod\n",
            "providers.oa.secret",
            "not a name the secrets service can store",
            "e.g. openai-prod",
        ),
        (
            "providers:\n  az:\n    kind: azure\n    api_base: https://x\n",
            "providers.az.api_version",
            "api-version",
            "2024",
        ),
        (
            "providers:\n  v:\n    kind: vllm\n    api_base: https://h/v1?api_key=abc123\n",
            "providers.v.api_base",
            "carries a credential",
            "switchyard secrets put v",
        ),
        (
            "providers:\n  v:\n    kind: vllm\n",
            "providers.v.api_base",
            "no default base URL",
            "api_base",
        ),
        (
            "routes:\n  a:\n    deployments: [{provider: demo, model: demo}]\n    fallbacks: [b]\n",
            "routes.a.fallbacks[0]",
            "unknown alias `b`",
            "",
        ),
        (
            "routes:\n"
            "  a:\n    deployments:\n"
            "      - {provider: demo, model: demo,"
            " price: {input_per_token: 1e-6, output_per_token: 1e-6}}\n"
            "  b:\n    deployments:\n"
            "      - {provider: demo, model: demo,"
            " price: {input_per_token: 2e-6, output_per_token: 1e-6}}\n",
            "routes.b.deployments[0].price",
            "priced differently by routes.a.deployments[0]",
            "same price",
        ),
        (  # msgspec's error says routes[...]: the route is named
            "routes:\n  ok:\n    deployments: [{provider: demo, model: demo}]\n"
            "  bad:\n    deployments:\n"
            "      - {provider: demo, model: demo, price: {input_per_token: 1e-6}}\n",
            "routes.bad.deployments[0].price",
            "missing required field output_per_token",
            "",
        ),
        ("- just\n- a list\n", "", "top level must be a mapping", "nats:"),
        ("nats: [unclosed\n", "", "not valid YAML", "YAML syntax"),
    ],
)
def test_invalid_config_names_field_and_fix(
    tmp_path: Path, text: str, field: str, in_problem: str, in_hint: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    err = info.value
    if field:
        assert err.field == field
    assert in_problem in err.problem
    assert in_hint in err.hint
    assert err.hint  # every error says how to fix it


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SWITCHYARD_LOGING__LEVEL": "debug"})
    assert info.value.field == "SWITCHYARD_LOGING__LEVEL"
    assert "SWITCHYARD_LOGGING" in info.value.hint


def test_environment_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SWITCHYARD_INGRESS__MAX_BODY_BYTES": "lots"})
    assert info.value.field == "ingress.max_body_bytes"
    assert "environment" in info.value.hint


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan"])
def test_an_endless_number_in_the_file_is_refused_by_name(tmp_path: Path, text: str) -> None:
    """YAML's ``.inf`` passed a timeout's ``> 0`` check: a hang the settings promise never
    happens, printed by `switchyard config` as ``Infinity`` (not JSON)."""
    file = tmp_path / "switchyard.yaml"
    file.write_text(f"redis:\n  timeout_s: 2\nbatch:\n  sweep_s: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(file, env={})
    assert info.value.field == "batch.sweep_s"
    assert info.value.problem.startswith("must be a finite number")
    assert str(file) in info.value.hint


def test_an_endless_number_in_the_environment_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SWITCHYARD_REDIS__TIMEOUT_S": "inf"})
    assert info.value.field == "redis.timeout_s"
    assert "environment" in info.value.hint


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "routes:\n  a:\n    deployments: [{provider: x, model: m}]\n"
        "  b:\n    deployments: [{provider: y, model: m}]\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "also `routes.b.deployments[0].provider`" in info.value.problem


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "switchyard.example.yaml"
    settings = load_settings(example, env={})
    assert settings.route_table.routes


def test_deployment_ids_are_token_safe() -> None:
    plain = deployment_id("openai", "gpt-4o")
    odd = deployment_id("bedrock", "anthropic.claude-3.5 sonnet/v2")
    assert plain == "openai--gpt-4o"
    assert all(c.isalnum() or c in "_-" for c in odd)
    assert deployment_id("p", "a.b") != deployment_id("p", "a_b")
    # Every id it can make is one the control service accepts (clearing a cooldown).
    longest = deployment_id("p" * 128, "m" * 256)
    assert len(longest) == 386
    for made in (plain, odd, longest, deployment_id("p" * 128, "m." * 128)):
        assert is_deployment_id(made), made
    for bad in ("", "a.b", "a..b", "x y", "caf\u00e9", "a>"):
        assert not is_deployment_id(bad), bad


def test_a_price_set_by_one_route_prices_the_deployment_for_all() -> None:
    """The demo route names demo/demo without a price; a second route naming the same
    deployment with a price must not be ignored (its traffic was billed as free, so budgets
    never ran out)."""
    settings = load_settings(
        env={},
        overrides={
            "routes": {
                "demo-priced": {
                    "deployments": [
                        {
                            "provider": "demo",
                            "model": "demo",
                            "price": {"input_per_token": 1e-5, "output_per_token": 2e-5},
                        }
                    ]
                }
            }
        },
    )
    table = settings.route_table
    assert table.routes["demo"].deployments[0].price is None  # the built-in route, first
    _, deployment = table.deployments()[deployment_id("demo", "demo")]
    assert deployment.price is not None
    assert (deployment.price.input_per_token, deployment.price.output_per_token) == (1e-5, 2e-5)


def test_a_stored_table_from_before_the_price_rule_still_loads() -> None:
    """Two prices for one deployment were accepted before (the first route's won): a live
    table like that must still load in every worker, and be replaceable, after an upgrade."""
    price = {"output_per_token": 1e-6}
    doc = {
        "providers": {"p": {"kind": "openai"}},
        "routes": {
            "a": {
                "deployments": [
                    {"provider": "p", "model": "m", "price": {**price, "input_per_token": 1e-6}}
                ]
            },
            "b": {
                "deployments": [
                    {"provider": "p", "model": "m", "price": {**price, "input_per_token": 2e-6}}
                ]
            },
        },
    }
    table = decode_route_table(msgspec.json.encode(doc))
    _, deployment = table.deployments()[deployment_id("p", "m")]
    assert deployment.price is not None
    assert deployment.price.input_per_token == 1e-6  # the first route's, as before
    assert [p.field for p in route_table_problems(table)] == ["routes.b.deployments[0].price"]


def test_settings_remember_the_file_they_came_from(tmp_path: Path) -> None:
    """The gateway's admin views follow that file (not ./switchyard.yaml) as it changes."""
    path = _write(tmp_path, "demo_model: true\n")
    assert load_settings(path, env={}).source_file == str(path.absolute())


def _setting_paths(info: msgspec.inspect.Type, prefix: str) -> set[str]:
    """Every field path under ``info``: ``streams.usage_max_bytes``, and ``*`` for a mapping's
    keys or a list's items (``routes.*.deployments.*.price.input_per_token``)."""
    if isinstance(info, msgspec.inspect.StructType):
        paths: set[str] = set()
        for field in info.fields:
            path = f"{prefix}.{field.name}" if prefix else field.name
            paths |= {path} | _setting_paths(field.type, path)
        return paths
    if isinstance(info, msgspec.inspect.UnionType):
        return set().union(*(_setting_paths(t, prefix) for t in info.types))
    if isinstance(info, msgspec.inspect.DictType):
        return _setting_paths(info.value_type, f"{prefix}.*")
    if isinstance(info, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
        return _setting_paths(info.item_type, f"{prefix}.*")
    return set()


def _example_paths(value: object, prefix: str) -> set[str]:
    if isinstance(value, dict):
        paths: set[str] = set()
        for name, item in value.items():
            # Mapping keys the user names (providers, routes) become `*`.
            step = "*" if prefix in ("providers", "routes") else str(name)
            path = f"{prefix}.{step}" if prefix else step
            paths |= {path} | _example_paths(item, path)
        return paths
    if isinstance(value, list):
        return set().union(set(), *(_example_paths(item, f"{prefix}.*") for item in value))
    return set()


def test_every_setting_is_described_in_the_example() -> None:
    """The README says every field is in switchyard.example.yaml (`streams.usage_max_bytes`,
    which operations.md tells operators to tune, was not). A field whose default is computed
    may be shown commented out (`# free_ports: ...`)."""
    example = Path(__file__).parents[2] / "switchyard.example.yaml"
    text = example.read_text()
    shown = _example_paths(yaml.safe_load(text), "")
    commented = set(re.findall(r"^\s*#\s*([a-z_]+):", text, re.MULTILINE))
    settings = msgspec.inspect.type_info(Settings)
    missing = sorted(
        path
        for path in _setting_paths(settings, "")
        if path not in shown
        and path.rsplit(".", 1)[-1] not in commented
        and path.split(".")[0] not in INTERNAL_FIELDS
    )
    assert missing == []


def test_source_file_is_set_by_the_loader_not_a_file(tmp_path: Path) -> None:
    """It was listed among "valid fields here" and silently overwritten when given."""
    path = _write(tmp_path, "source_file: /elsewhere.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.field == "source_file"
    assert "set by Switchyard itself" in info.value.problem
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"SWITCHYARD_SOURCE_FILE": "/elsewhere.yaml"})
    assert info.value.field == "source_file"
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, "sorce_file: x\n"), env={})
    listed = info.value.hint.partition(" (read from")[0]  # the path names this test
    assert "demo_model" in listed
    assert "source_file" not in listed
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"SWITCHYARD_SORCE_FILE": "x"})
    assert "SWITCHYARD_DEMO_MODEL" in info.value.hint
    assert "SOURCE_FILE" not in info.value.hint


def test_a_yaml_error_names_the_file_it_is_in(tmp_path: Path) -> None:
    """PyYAML's marks said `in "<unicode string>", line 3`: the file was read as a string."""
    path = _write(tmp_path, "nats:\n  servers: []\n  bad: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert f'in "{path}", line 3' in info.value.problem
    assert "<unicode string>" not in str(info.value)


def test_an_environment_value_of_the_wrong_type_names_its_variable(tmp_path: Path) -> None:
    """The hint said `(read from switchyard.yaml and the environment)`: which variable?"""
    path = _write(tmp_path, "stack:\n  heads: 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"SWITCHYARD_STACK__NATS_PORT": "abc"})
    assert info.value.field == "stack.nats_port"
    assert "SWITCHYARD_STACK__NATS_PORT in the environment" in info.value.hint
    with pytest.raises(ConfigError) as endless:
        load_settings(env={"SWITCHYARD_REDIS__TIMEOUT_S": "inf"})
    assert "SWITCHYARD_REDIS__TIMEOUT_S in the environment" in endless.value.hint
    with pytest.raises(ConfigError) as nested:  # a JSON value sets the fields under it
        load_settings(env={"SWITCHYARD_STACK": '{"heads": "many"}'})
    assert "SWITCHYARD_STACK in the environment" in nested.value.hint


def test_a_file_value_of_the_wrong_type_is_not_blamed_on_a_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "stack:\n  heads: many\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"SWITCHYARD_STACK__NATS_PORT": "4222"})
    assert info.value.field == "stack.heads"
    assert f"{path} and the environment" in info.value.hint
    assert "SWITCHYARD_STACK__NATS_PORT" not in info.value.hint


def test_an_unknown_provider_kind_lists_the_kinds(tmp_path: Path) -> None:
    """`Invalid enum value 'openai-compat'` was all it said: which are valid?"""
    path = _write(tmp_path, "providers:\n  local:\n    kind: openai-compat\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.field == "providers.local.kind"
    assert "Invalid enum value 'openai-compat'" in info.value.problem
    assert "use one of: demo, openai, azure, openai-compatible, vllm" in info.value.hint
    with pytest.raises(ConfigError) as level:  # every field of named values
        load_settings(env={"SWITCHYARD_LOGGING__LEVEL": "loud"})
    assert "use one of: debug, info" in level.value.hint
    assert "SWITCHYARD_LOGGING__LEVEL in the environment" in level.value.hint


def test_a_stored_table_with_an_unstorable_secret_name_still_loads() -> None:
    """The secret-name rule is newer than some stored tables: such a table still loads (its
    provider answers 503 as before), and an edit elsewhere is not refused for it; an edit of
    that provider must fix the name."""
    old = RouteTable(
        providers={"p": Provider(kind="openai-compatible", api_base="http://h/v1", secret="P.K")},
        routes={},
    )
    assert not route_table_findings(old, stored=True).problems
    assert not route_table_findings(old, previous=old).problems
    edited = RouteTable(
        providers={"p": Provider(kind="openai-compatible", api_base="http://h2/v1", secret="P.K")},
        routes={},
    )
    (problem,) = route_table_findings(edited, previous=old).problems
    assert problem.field == "providers.p.secret"


def test_a_secret_value_of_more_than_one_line_is_refused_without_quoting_it() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(b'{"name":"k","value":"sk-abc\\nX-Evil: 1"}', type=PutSecret)
    assert "one line" in str(info.value)
    assert "sk-abc" not in str(info.value)
    ok = msgspec.json.decode(b'{"name":"k","value":"sk-abc"}', type=PutSecret)
    assert ok.value == "sk-abc"
