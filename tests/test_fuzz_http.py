"""HTTP fuzzing: generated requests against the OpenAPI documents both edges publish.

Schemathesis reads ``/openapi.json`` from a running tail and gateway (the LLM API, models,
health, metrics, and the gateway's ``/admin/v1``) and sends every operation generated requests,
valid (positive) and invalid (negative), with a credential and without. Every response must
pass schemathesis's checks: no 5xx, status code, content type, headers and body as documented
(SSE events too), invalid data refused, a declared credential really required. Each request
has a 15 s budget, far under the edge's default deadline: a hang fails the case.

One check is left out: ``positive_data_acceptance`` (a schema-valid request must not get a
4xx). The documents describe shapes; meaning is checked after decoding (a provider that is not
defined, a key name outside its pattern, a negative limit) and the provider itself is the last
judge of a completion request. Those answers are 400s naming the field, which is what the
documents promise.

The stack is this module's own: generated admin calls replace routes, delete providers and
create keys. The LLM API is fuzzed first (with the session's routes in place, and a model
drawn now and then from the routed aliases so requests reach a provider), the admin API last.
``SY_FUZZ_EXAMPLES`` sets the cases per operation and mode (default 15); the totals
are printed at the end of the module.
"""

from __future__ import annotations

import collections
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import ignored_auth, positive_data_acceptance
from schemathesis.schemas import APIOperation

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

EXAMPLES = int(os.environ.get("SY_FUZZ_EXAMPLES", "15"))
CASE_TIMEOUT_S = 15
# Aliases whose provider answers (2xx, or a 400 the provider decided): a 5xx through them
# would be Switchyard's fault. Aliases of failing providers (502 by design) are not drawn.
ALIASES = ["echo", "paced", "refuses", "embed"]
# An SSE stream that never ends (the overview once a second): its auth is tested below.
ENDLESS = {"/admin/v1/stream"}
COUNTS: collections.Counter[str] = collections.Counter()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    behaviours = {"echo": "echo", "paced": "paced:5", "refuses": "status:400", "embed": "echo"}
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 16}
        },
        "routes": {
            alias: {"deployments": [{"provider": "fake", "model": model}]}
            for alias, model in behaviours.items()
        },
        # Generated cases present thousands of invalid keys from one address: the limit on
        # failed authentications (test_http_protocol) would answer them 429 after the first 20.
        "ingress": {"failed_auth_limit": 1_000_000},
    }
    stack = await start_stack(tmp_path_factory.mktemp("fuzz"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    total = sum(COUNTS.values())
    lines = "\n".join(f"  {name}: {count}" for name, count in sorted(COUNTS.items()))
    print(f"\nHTTP fuzz cases per interface ({total} in all):\n{lines}")


def _operations(base: str, prefix: str) -> list[APIOperation[Any, Any, Any, Any]]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    return [op for op in ops if op.path.startswith(prefix) and op.path not in ENDLESS]


def _fuzz(
    op: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    headers: dict[str, str],
    label: str,
    excluded: tuple[Any, ...] = (),
) -> None:
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode), alias=st.sampled_from([None, *ALIASES]))
    def run(case: Any, alias: str | None) -> None:
        # Positive cases only: a negative case's invalid model must stay invalid.
        positive = mode is GenerationMode.POSITIVE
        if alias and positive and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = alias
        COUNTS[label] += 1
        try:
            case.call_and_validate(
                headers=headers,
                timeout=CASE_TIMEOUT_S,
                excluded_checks=[positive_data_acceptance, *excluded],
            )
        except Exception as exc:  # every failure of every case, reported together below
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(f"{first}\n    {case.as_curl_command(headers=headers)[:600]}")

    try:
        run()
    except Unsatisfiable:  # negative mode, and the operation has nothing to get wrong (/health)
        assert mode is GenerationMode.NEGATIVE, f"{op.method.upper()} {op.path}"
    assert failures == [], f"{op.method.upper()} {op.path} ({mode.value}):\n" + "\n".join(
        failures[:5]
    )


def _llm_auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("edge", ["tail", "gateway"])
@pytest.mark.parametrize("authenticated", [True, False], ids=["key", "anonymous"])
def test_llm_api_conforms_to_its_document(
    fuzz_stack: Stack, edge: str, mode: GenerationMode, authenticated: bool
) -> None:
    base = fuzz_stack.tail_url if edge == "tail" else fuzz_stack.gateway_url
    headers = _llm_auth(fuzz_stack) if authenticated else {}
    label = f"{edge} LLM API ({'key' if authenticated else 'anonymous'})"
    for op in _operations(base, "/"):
        if not op.path.startswith("/admin/"):
            _fuzz(op, mode, headers, label)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_admin_api_refuses_everyone_without_the_token(
    fuzz_stack: Stack, mode: GenerationMode
) -> None:
    wrong = {"Authorization": f"Bearer {fuzz_stack.api_key}"}  # a client key is not the token
    for op in _operations(fuzz_stack.gateway_url, "/admin/v1"):
        _fuzz(op, mode, {}, "gateway /admin/v1 (anonymous)")
        _fuzz(op, mode, wrong, "gateway /admin/v1 (client key)")


async def test_endless_admin_stream_needs_the_token(fuzz_stack: Stack) -> None:
    # An address of its own: the wrong tokens fuzzed above, from 127.0.0.1, have it waiting
    # (429 too_many_failed_authentications) for wrong ones, as the sign-in's guard counts them.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.212.1")
    async with httpx.AsyncClient(timeout=10, transport=transport) as http:
        for headers, code in (
            ({}, "missing_admin_token"),
            ({"Authorization": "Bearer nope"}, "invalid_admin_token"),
        ):
            got = await http.get(f"{fuzz_stack.gateway_url}/admin/v1/stream", headers=headers)
            assert got.status_code == 401, got.text
            assert got.json()["error"]["code"] == code


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_admin_api_conforms_to_its_document(fuzz_stack: Stack, mode: GenerationMode) -> None:
    """Runs after the LLM API tests (file order): generated admin calls rewrite the routes."""
    # schemathesis's ignored_auth check sends each operation a wrong token too: from one
    # address, the eleventh is 429 (wrong admin tokens count per address, as at sign-in).
    # Wrong and missing tokens are the test above's, and tests/test_admin_api_token_guard.py's.
    for op in _operations(fuzz_stack.gateway_url, "/admin/v1"):
        _fuzz(
            op,
            mode,
            fuzz_stack.admin_headers(),
            "gateway /admin/v1 (admin token)",
            excluded=(ignored_auth,),
        )
