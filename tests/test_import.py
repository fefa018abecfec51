"""Migrating a LiteLLM proxy config: pure conversion, then import-apply-serve on a live stack."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from switchyard.control.import_cli import report
from switchyard.control.import_secrets import (
    StoredSecret,
    in_use,
    overwrites,
    secrets_report,
    value_to_store,
)
from switchyard.control.litellm_import import (
    LITELLM_AZURE_DEFAULT_API_VERSION,
    ImportResult,
    SecretPlaceholder,
    convert,
)
from switchyard.schemas.routing import Provider, RouteTable, route_table_problems
from tests.fakes.anthropic import FakeAnthropic
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

LITERAL = "sk-ant-literal-" + "7" * 24


def _config(openai_base: str, anthropic_base: str) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": "lite-gpt",
                "litellm_params": {
                    "model": "openai/ctl:lite1",
                    "api_base": openai_base,
                    "api_key": "os.environ/LITE_OPENAI_KEY",
                    "timeout": 30,
                },
            },
            {
                "model_name": "lite-claude",
                "litellm_params": {
                    "model": "anthropic/ok",
                    "api_base": anthropic_base,
                    "api_key": LITERAL,
                },
            },
            {
                "model_name": "lite-local",
                "litellm_params": {
                    "model": "hosted_vllm/local",
                    "api_base": openai_base,
                    "rpm": 100,
                },
            },
        ],
        "router_settings": {
            "fallbacks": [{"lite-gpt": ["lite-claude"]}, {"lite-local": ["nowhere"]}],
            "routing_strategy": "least-busy",
        },
        "general_settings": {"master_key": "sk-1234"},
    }


@pytest.mark.unit
def test_conversion_maps_models_fallbacks_and_secret_placeholders() -> None:
    result = convert(_config("http://up/v1", "http://anthropic"))
    routes = result.table.routes
    assert set(routes) == {"lite-gpt", "lite-claude", "lite-local"}
    assert routes["lite-gpt"].fallbacks == ("lite-claude",)
    providers = result.table.providers
    assert {p.kind for p in providers.values()} == {"openai-compatible", "anthropic", "vllm"}
    assert all(p.secret is None or "sk-" not in p.secret for p in providers.values())
    secrets = {s.name: s for s in result.secrets}
    assert secrets["lite_openai_key"].env_var == "LITE_OPENAI_KEY"
    literal = next(s for s in secrets.values() if s.env_var is None)
    assert literal.value == LITERAL
    assert LITERAL not in repr(literal)  # never shown
    unmapped = "\n".join(result.unmapped)
    assert "rpm" in unmapped
    assert "least-busy" in unmapped
    assert "nowhere" in unmapped
    assert "general_settings" in unmapped


@pytest.mark.integration
@pytest.mark.slow
async def test_litellm_config_imports_and_serves(
    stack: Stack, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    anthropic = FakeAnthropic()
    anthropic_base = await anthropic.start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(_config(upstream.base_url, anthropic_base)))
        env_key = "sk-env-" + "5" * 24
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "switchyard",
                "--config",
                str(stack.config_file),
                "import",
                "litellm-config",
                str(config),
                "--apply",
                "--secrets-from-env",
                "--output",
                str(tmp_path / "routes.yaml"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LITE_OPENAI_KEY": env_key},
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert LITERAL not in out.stdout + out.stderr
        assert env_key not in out.stdout + out.stderr
        assert "applied: route table revision" in out.stdout
        assert "rpm" in out.stdout  # what could not be mapped is printed
        assert yaml.safe_load((tmp_path / "routes.yaml").read_text())["routes"]["lite-gpt"]

        auth = {"Authorization": f"Bearer {stack.api_key}"}
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=60) as http:
            url = f"{stack.tail_url}/v1/chat/completions"
            for alias in ("lite-gpt", "lite-claude", "lite-local"):
                resp = await http.post(url, json={**chat, "model": alias}, headers=auth)
                assert resp.status_code == 200, (alias, resp.text)
            assert (
                upstream.calls_for("ctl:lite1")[-1].headers["Authorization"] == f"Bearer {env_key}"
            )
            assert anthropic.calls[-1].headers["x-api-key"] == LITERAL
            # The imported fallback works: the OpenAI deployment fails, Anthropic answers.
            upstream.set_mode("lite1", "status:500")
            resp = await http.post(url, json={**chat, "model": "lite-gpt"}, headers=auth)
            assert resp.status_code == 200, resp.text
            imported = convert(_config(upstream.base_url, anthropic_base)).table
            claude = imported.routes["lite-claude"].deployments[0].id
            assert resp.headers["x-switchyard-deployment"] == claude
            assert resp.headers["x-switchyard-attempts"] == "2"
    finally:
        upstream.set_mode("lite1", "echo")
        await anthropic.stop()


@pytest.mark.integration
async def test_apply_refuses_an_unset_env_secret_unless_told_to_go_on(
    stack: Stack, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """--secrets-from-env with the variable unset stored nothing and said nothing: the route
    went live and answered 503 secret_unavailable with no hint from the import. Then it said
    so on stdout, applied and exited 0, so a CI job with a mistyped variable passed: now it
    refuses (stderr, exit 1, nothing written) unless --allow-missing-secrets is given."""
    config = tmp_path / "config.yaml"
    # Its own host spelling, so its provider is not the one the test above imported (the same
    # name with another secret would be a clash, refused).
    base = upstream.base_url.replace("127.0.0.1", "localhost")
    entry = {
        "model_name": "lite-unset",
        "litellm_params": {
            "model": "openai/echo",
            "api_base": base,
            "api_key": "os.environ/LITE_UNSET_KEY",
        },
    }
    config.write_text(yaml.safe_dump({"model_list": [entry]}))
    env = {k: v for k, v in os.environ.items() if k != "LITE_UNSET_KEY"}
    argv = [
        sys.executable,
        "-m",
        "switchyard",
        "--config",
        str(stack.config_file),
        "import",
        "litellm-config",
        str(config),
        "--apply",
        "--secrets-from-env",
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, *extra], capture_output=True, text=True, timeout=120, env=env, check=False
        )

    refused = await asyncio.to_thread(run)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not applied: $LITE_UNSET_KEY is not set in this shell" in refused.stderr
    assert "--allow-missing-secrets" in refused.stderr
    assert "applied: route table revision" not in refused.stdout
    assert (await stack.admin("GET", "/routes/lite-unset")).status_code == 404
    preview = await asyncio.to_thread(
        subprocess.run,
        [*argv[: argv.index("--apply")], "--secrets-from-env"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert "--apply refuses while $LITE_UNSET_KEY is not set" in preview.stdout

    out = await asyncio.to_thread(run, "--allow-missing-secrets")
    assert out.returncode == 0, out.stderr
    assert "applied: route table revision" in out.stdout
    assert "lite_unset_key not stored ($LITE_UNSET_KEY is not set in this shell)" in out.stderr
    assert "printenv LITE_UNSET_KEY | switchyard secrets put lite_unset_key" in out.stderr
    assert "not stored" not in out.stdout

    # Stored since (a CI runner that exports only new providers' variables): the unset
    # variable needs nothing, and the import runs again without the flag.
    put = await stack.admin("PUT", "/secrets/lite_unset_key", {"value": "sk-stored-0123456789"})
    assert put.status_code == 200, put.text
    again = await asyncio.to_thread(run)
    assert again.returncode == 0, again.stdout + again.stderr
    # A variable ending in a newline (as CI secrets often do) is stored without it.
    env["LITE_UNSET_KEY"] = "sk-from-env-0123456789\n"
    stored = await asyncio.to_thread(run, "--replace")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    info = (await stack.admin("GET", "/secrets")).json()["secrets"]
    (entry,) = [i for i in info if i["name"] == "lite_unset_key"]
    assert entry["last4"] == "6789"


@pytest.mark.integration
async def test_apply_without_secrets_from_env_warns_on_stderr_which_providers_answer_503(
    stack: Stack, tmp_path: Path
) -> None:
    """Without --secrets-from-env the keys named by variables are not read: the apply said
    "not stored" on stdout among its results, mixed with them for a script reading stdout.
    Now stdout has what was applied, stderr a warning naming each provider (and its routes)
    that answers 503 until its key is stored, and the command that stores it; exit 0, since
    what was asked is written. The command it prints works."""
    base = "http://sy-no-env.invalid:1/v1"  # never called: no key, then no such host
    entry = {
        "model_name": "lite-no-env",
        "litellm_params": {
            "model": "openai/echo",
            "api_base": base,
            "api_key": "os.environ/LITE_NO_ENV_KEY",
        },
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [entry]}))
    out = await asyncio.to_thread(_run_cli, config, stack, "--apply")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "applied: route table revision" in out.stdout
    assert "not stored" not in out.stdout
    assert "warning" not in out.stdout
    lines = out.stderr.splitlines()
    warning = lines[next(i for i, line in enumerate(lines) if line.startswith("warning: ")) :]
    assert warning[0] == (
        "warning: 1 imported provider answers 503 secret_unavailable until their key is stored:"
    )
    provider = warning[1].strip().split(" ", 1)[0]
    assert warning[1].strip() == (
        f"{provider} (routes lite-no-env): secret lite_no_env_key not stored "
        "($LITE_NO_ENV_KEY not read: no --secrets-from-env)"
    )
    assert "  printenv LITE_NO_ENV_KEY | switchyard secrets put lite_no_env_key" in warning

    auth = {"Authorization": f"Bearer {stack.api_key}"}
    chat = {"model": "lite-no-env", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{stack.tail_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60) as http:
        unstored = await http.post(url, json=chat, headers=auth)
        assert unstored.status_code == 503, unstored.text
        assert unstored.json()["error"]["code"] == "secret_unavailable"
        # The command it printed, as a shell runs it (printenv ends the value with a newline).
        put = await asyncio.to_thread(
            stack.cli, "secrets", "put", "lite_no_env_key", stdin="sk-no-env-0123456789\n"
        )
        assert put.returncode == 0, put.stdout + put.stderr
        async with asyncio.timeout(10):  # the key is used: the call goes out (to no host)
            while (resp := await http.post(url, json=chat, headers=auth)).status_code == 503:
                await asyncio.sleep(0.2)
        assert resp.json()["error"]["code"] != "secret_unavailable", resp.text
    await stack.admin("DELETE", "/routes/lite-no-env")
    await stack.admin("DELETE", f"/providers/{provider}")
    await stack.admin("DELETE", "/secrets/lite_no_env_key?force=true")


def _run_cli(config: Path, stack: Stack, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "switchyard",
            "--config",
            str(stack.config_file),
            "import",
            "litellm-config",
            str(config),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _clash_config(path: Path, port: int, key: str, *aliases: str) -> Path:
    """Every alias on one provider at clash.invalid:<port>: its name does not depend on the
    port, so two ports make two different providers of one name."""
    params = {"model": f"openai/m{port}", "api_base": f"http://clash.invalid:{port}/v1"}
    entries = [
        {"model_name": alias, "litellm_params": {**params, "api_key": f"os.environ/{key}"}}
        for alias in aliases
    ]
    path.write_text(yaml.safe_dump({"model_list": entries}))
    return path


CLASH_PROVIDER = "openai-compatible-clash-invalid"


@pytest.mark.integration
async def test_apply_refuses_to_replace_live_entries_that_differ(
    stack: Stack, tmp_path: Path
) -> None:
    """An imported provider named like an unrelated live one replaced it without a word and
    broke the routes using it; now --apply names each clash and how it differs, and changes
    nothing unless told to replace."""
    first = _clash_config(tmp_path / "first.yaml", 1001, "CLASH_KEY_A", "clash-route")
    second = _clash_config(
        tmp_path / "second.yaml", 1002, "CLASH_KEY_B", "clash-route", "clash-new"
    )
    try:
        out = await asyncio.to_thread(_run_cli, first, stack, "--apply")
        assert out.returncode == 0, out.stderr
        # The same import again: identical entries are no clash.
        out = await asyncio.to_thread(_run_cli, first, stack, "--apply")
        assert out.returncode == 0, out.stderr
        assert f"provider {CLASH_PROVIDER}: identical; left as it is" in out.stdout

        differs = (
            f"provider {CLASH_PROVIDER}: differs, would be replaced (api_base: "
            "http://clash.invalid:1001/v1 -> http://clash.invalid:1002/v1; "
            "secret: clash_key_a -> clash_key_b)"
        )
        dry = await asyncio.to_thread(_run_cli, second, stack)
        assert dry.returncode == 0, dry.stderr
        assert differs in dry.stdout
        assert "--apply refuses to replace the 2 live entries that differ" in dry.stdout

        refused = await asyncio.to_thread(_run_cli, second, stack, "--apply")
        assert refused.returncode == 1, refused.stdout
        assert differs in refused.stdout
        assert "route clash-route: differs, would be replaced (deployments: " in refused.stdout
        assert f"provider {CLASH_PROVIDER}, route clash-route" in refused.stderr
        assert "add --replace" in refused.stderr
        assert "applied" not in refused.stdout
        table = (await stack.admin("GET", "/routes")).json()["table"]
        assert table["providers"][CLASH_PROVIDER]["api_base"] == "http://clash.invalid:1001/v1"
        assert table["routes"]["clash-route"]["deployments"][0]["model"] == "m1001"
        assert "clash-new" not in table["routes"]

        replaced = await asyncio.to_thread(_run_cli, second, stack, "--apply", "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert "applied: route table revision" in replaced.stdout
        table = (await stack.admin("GET", "/routes")).json()["table"]
        assert table["providers"][CLASH_PROVIDER]["api_base"] == "http://clash.invalid:1002/v1"
        assert table["routes"]["clash-route"]["deployments"][0]["model"] == "m1002"
        assert "clash-new" in table["routes"]
    finally:
        for alias in ("clash-route", "clash-new"):
            await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", f"/providers/{CLASH_PROVIDER}")


@pytest.mark.unit
def test_a_stored_secret_clashes_only_when_a_provider_outside_the_import_uses_it() -> None:
    def provider(secret: str) -> Provider:
        return Provider(kind="openai-compatible", api_base="http://x/v1", secret=secret)

    live = RouteTable(
        providers={"mine": provider("s1"), "theirs": provider("s1"), "moved": provider("s2")}
    )
    # "mine" comes in again with s1 (meant to use the new key); "moved" comes in with s3, so it
    # still uses s2 unless the import replaces it.
    incoming = RouteTable(providers={"mine": provider("s1"), "moved": provider("s3")})
    stored = {"s1": 4, "s2": 1, "s3": 2}
    found = overwrites(live, incoming, ["s1", "s2", "s3", "never-stored"], stored)
    assert found == [
        StoredSecret("s1", 4, ("theirs",)),
        StoredSecret("s2", 1, ("moved",)),
        StoredSecret("s3", 2, ()),
    ]
    assert [s.name for s in in_use(found)] == ["s1", "s2"]
    out = io.StringIO()
    secrets_report(found, out)
    assert "secret s3: a new version of s3 will be stored" in out.getvalue()


@pytest.mark.unit
def test_the_check_looks_at_the_secrets_the_apply_would_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    literal = SecretPlaceholder(name="p-key", env_var=None, value="sk-x")
    env = SecretPlaceholder(name="team_key", env_var="TEAM_KEY")
    monkeypatch.setenv("TEAM_KEY", "sk-from-env")
    assert value_to_store(literal, from_env=False) == "sk-x"
    assert value_to_store(env, from_env=False) is None  # not read without --secrets-from-env
    assert value_to_store(env, from_env=True) == "sk-from-env"
    monkeypatch.delenv("TEAM_KEY")
    assert value_to_store(env, from_env=True) is None


SHARED_PROVIDER = "openai-compatible-secret-clash-invalid"
SHARED_SECRET = f"{SHARED_PROVIDER}-key"  # where the import stores the literal key below
OWNER = "secret-clash-owner"


async def _secret_version(stack: Stack, name: str) -> int:
    secrets = (await stack.admin("GET", "/secrets")).json()["secrets"]
    return next(s["version"] for s in secrets if s["name"] == name)


@pytest.mark.integration
async def test_apply_refuses_to_store_a_secret_a_live_provider_outside_it_uses(
    stack: Stack, tmp_path: Path
) -> None:
    """--apply stored each literal key as <provider>-key whatever was stored under that name:
    a live provider the import does not touch, using a secret of that name, silently got the
    imported key (and its calls 401s). Now the import names the secret and its users and
    stores nothing unless told to replace; a stored secret only the import's own providers
    use is no clash."""
    config = tmp_path / "config.yaml"
    params = {
        "model": "openai/shared",
        "api_base": "http://secret-clash.invalid/v1",
        "api_key": "sk-imported-" + "3" * 24,
    }
    config.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "secret-clash", "litellm_params": params}]})
    )
    owner = {"kind": "openai-compatible", "api_base": "http://owner.invalid/v1"}
    try:
        key = {"value": "sk-owner-" + "1" * 24}
        put = await stack.admin("PUT", f"/secrets/{SHARED_SECRET}", key)
        assert put.status_code == 200, put.text
        put = await stack.admin("PUT", f"/providers/{OWNER}", {**owner, "secret": SHARED_SECRET})
        assert put.status_code == 200, put.text
        version = await _secret_version(stack, SHARED_SECRET)

        in_use = f"secret {SHARED_SECRET}: used by live providers outside this import ({OWNER})"
        dry = await asyncio.to_thread(_run_cli, config, stack)
        assert dry.returncode == 0, dry.stderr
        assert in_use in dry.stdout
        assert "--apply refuses to store the 1 secrets" in dry.stdout

        refused = await asyncio.to_thread(_run_cli, config, stack, "--apply")
        assert refused.returncode == 1, refused.stdout
        assert in_use in refused.stdout
        assert f"secret {SHARED_SECRET} (used by {OWNER})" in refused.stderr
        assert "add --replace" in refused.stderr
        assert "stored secret" not in refused.stdout
        assert await _secret_version(stack, SHARED_SECRET) == version
        table = (await stack.admin("GET", "/routes")).json()["table"]
        assert "secret-clash" not in table["routes"]

        replaced = await asyncio.to_thread(_run_cli, config, stack, "--apply", "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert "applied: route table revision" in replaced.stdout
        assert await _secret_version(stack, SHARED_SECRET) == version + 1

        # With the other user gone only the imported provider uses it: no clash. The key it
        # holds again makes no new version (its deployments' cooldowns run on).
        assert (await stack.admin("DELETE", f"/providers/{OWNER}")).status_code == 200
        again = await asyncio.to_thread(_run_cli, config, stack, "--apply")
        assert again.returncode == 0, again.stderr
        assert f"a new version of {SHARED_SECRET} will be stored" in again.stdout
        assert f"secret {SHARED_SECRET} unchanged: it holds that key already" in again.stdout
        assert "End cooldown on the admin UI's Queues page" in again.stdout
        assert await _secret_version(stack, SHARED_SECRET) == version + 1
    finally:
        await stack.admin("DELETE", "/routes/secret-clash")
        for provider in (SHARED_PROVIDER, OWNER):
            await stack.admin("DELETE", f"/providers/{provider}")
        await stack.admin("DELETE", f"/secrets/{SHARED_SECRET}?force=true")


AZURE_PARAMS = {
    "model": "azure/my-gpt4o",
    "api_base": "https://example.openai.azure.com",
    "api_key": "os.environ/AZURE_API_KEY",
}


def _azure(**params: str) -> dict[str, object]:
    return {"model_name": "az-gpt", "litellm_params": {**AZURE_PARAMS, **params}}


def _versions(result: ImportResult) -> list[str | None]:
    return [p.api_version for p in result.table.providers.values()]


@pytest.mark.unit
def test_azure_without_api_version_gets_litellms_default() -> None:
    """LiteLLM accepts an Azure entry without api_version (it fills in its default); the import
    produced a table that failed validation (Azure needs an api-version), so --apply and the
    --output file were refused."""
    result = convert({"model_list": [_azure()]})
    assert _versions(result) == [LITELLM_AZURE_DEFAULT_API_VERSION]
    assert route_table_problems(result.table) == []
    out = io.StringIO()
    report(result, out)
    assert "filled in as LiteLLM does" in out.getvalue()
    expected = f"model_list[0] (az-gpt): no api_version; using {LITELLM_AZURE_DEFAULT_API_VERSION}"
    assert expected in out.getvalue()


@pytest.mark.unit
def test_azure_api_version_from_the_config_wins_over_the_default() -> None:
    assert _versions(convert({"model_list": [_azure(api_version="2024-10-21")]})) == ["2024-10-21"]
    from_settings = convert(
        {"model_list": [_azure()], "litellm_settings": {"api_version": "2024-06-01"}}
    )
    assert _versions(from_settings) == ["2024-06-01"]
    assert from_settings.defaults == []


@pytest.mark.unit
def test_azure_default_is_the_one_the_installed_litellm_uses() -> None:
    """Read from litellm's source, not imported (import litellm takes seconds and may fetch)."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).read_text(encoding="utf-8")
    found = re.search(r'^AZURE_DEFAULT_API_VERSION\s*=\s*"([^"]+)"', source, re.MULTILINE)
    assert found is not None, "litellm moved AZURE_DEFAULT_API_VERSION; find its new home"
    assert found.group(1) == LITELLM_AZURE_DEFAULT_API_VERSION, (
        f"litellm now defaults Azure to {found.group(1)}: update the import's default"
    )


MERGE_PROVIDER = "openai-compatible-merge-clash-invalid"  # the name the import gives it
MERGE_SECRET = f"{MERGE_PROVIDER}-key"  # where the import stores the literal key below


@pytest.mark.integration
async def test_apply_stores_no_secret_for_a_table_the_control_service_would_refuse(
    stack: Stack, tmp_path: Path
) -> None:
    """The imported route uses the deployment a live route uses, with other timeouts: the
    control service refuses that table (one deployment, one queue, one setting), but --apply
    had already stored the literal key. Now it checks the merged table first and stores
    nothing."""
    config = tmp_path / "config.yaml"
    params = {
        "model": "openai/shared",
        "api_base": "http://merge-clash.invalid/v1",
        "api_key": "sk-merge-" + "5" * 24,
        "timeout": 5,
    }
    config.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "merge-new", "litellm_params": params}]})
    )
    provider = {
        "kind": "openai-compatible",
        "api_base": "http://merge-clash.invalid/v1",
        "secret": MERGE_SECRET,
    }
    live = {"deployments": [{"provider": MERGE_PROVIDER, "model": "shared"}]}
    try:
        put = await stack.admin("PUT", f"/providers/{MERGE_PROVIDER}", provider)
        assert put.status_code == 200, put.text
        put = await stack.admin("PUT", "/routes/merge-live", live)
        assert put.status_code == 200, put.text

        refused = await asyncio.to_thread(_run_cli, config, stack, "--apply")
        assert refused.returncode == 1, refused.stdout
        assert "the route table refuses these" in refused.stdout
        assert "is also used by routes.merge-live" in refused.stdout
        assert "not applied: routes." in refused.stderr
        assert "stored secret" not in refused.stdout
        secrets = (await stack.admin("GET", "/secrets")).json()["secrets"]
        assert MERGE_SECRET not in [s["name"] for s in secrets]
        table = (await stack.admin("GET", "/routes")).json()["table"]
        assert "merge-new" not in table["routes"]
    finally:
        await stack.admin("DELETE", "/routes/merge-new")
        await stack.admin("DELETE", "/routes/merge-live")
        await stack.admin("DELETE", f"/providers/{MERGE_PROVIDER}")
        await stack.admin("DELETE", f"/secrets/{MERGE_SECRET}?force=true")


@pytest.mark.integration
async def test_apply_stores_no_secret_for_a_route_name_the_table_refuses(
    stack: Stack, tmp_path: Path
) -> None:
    """A route name the table's pattern refuses passed the rules checked before storing, so
    --apply stored the file's literal key and only then did the control service refuse the
    table (an explorer found the same in the admin UI's import)."""
    config = tmp_path / "config.yaml"
    params = {
        "model": "openai/m",
        "api_base": "http://badname.invalid/v1",
        "api_key": "sk-badname-" + "6" * 24,
    }
    config.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "<script>x", "litellm_params": params}]})
    )
    secret = "openai-compatible-badname-invalid-key"
    try:
        refused = await asyncio.to_thread(_run_cli, config, stack, "--apply")
        assert refused.returncode == 1, refused.stdout
        assert "is not a name the table takes" in refused.stdout, refused.stdout
        assert "stored secret" not in refused.stdout
        secrets = (await stack.admin("GET", "/secrets")).json()["secrets"]
        assert secret not in [s["name"] for s in secrets]
    finally:
        await stack.admin("DELETE", f"/secrets/{secret}?force=true")
