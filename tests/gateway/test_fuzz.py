"""Fuzzing the live gateway (a real process, auth on) with schemathesis over its published
OpenAPI document: valid and invalid requests to every operation, with an admin key and without
one. Nothing may answer 5xx or hang, and every refusal must be in the documented error shape."""

from __future__ import annotations

import os
from collections import Counter

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from llmcell.protocol.auth import new_key
from llmcell.protocol.openapi import OPENAI_ERROR, SAXML_ERROR, gateway_openapi
from tests.cell.conftest import HEARTBEAT, Cell, Proc

TOKEN = "fuzz-cell-credential-" + "f" * 24
ADMIN_KEY = new_key()
SCHEMA = schemathesis.openapi.from_dict(gateway_openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES = int(os.environ.get("LLMCELL_FUZZ_EXAMPLES", "200"))
"""Generated requests per operation with a key (and a third of that without)."""


@pytest.fixture()
def gateway(tmp_path):
    cell = Cell(tmp_path, TOKEN)
    cell.admin = Proc("admin", "--state", str(tmp_path / "admin.sqlite3"), "--heartbeat-interval",
                      HEARTBEAT, env=dict(cell.env, LLMCELL_ADMIN_KEY=ADMIN_KEY)).wait()
    cell.procs.append(cell.admin)
    yield cell.start_gateway()
    cell.stop()


def fuzz(base: str, headers: dict, examples: int) -> Counter:
    seen: Counter = Counter()
    for op in OPERATIONS:
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                             op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=strategy)
        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def one(case) -> None:
            response = case.call(base_url=base, headers=headers, timeout=30)
            seen[response.status_code] += 1
            status = response.status_code
            assert status < 500, f"{case.method} {case.path}: {status} {response.text[:300]}"
            if status >= 400 and status != 405:
                shape = OPENAI_ERROR if case.path.startswith("/v1/") else SAXML_ERROR
                jsonschema.validate(response.json(), shape)

        one()
    return seen


@pytest.mark.slow
def test_no_generated_request_gets_a_5xx_or_an_undocumented_error(gateway):
    served = httpx.get(gateway.url + "/openapi.json").json()
    assert served == gateway_openapi()  # what the gateway publishes is what is fuzzed
    with_key = fuzz(gateway.url, {"Authorization": f"Bearer {ADMIN_KEY}"}, EXAMPLES)
    without = fuzz(gateway.url, {}, max(10, EXAMPLES // 3))
    assert sum(with_key.values()) >= EXAMPLES * len(OPERATIONS) * 0.5
    assert with_key[400] > 0 and with_key[404] > 0  # invalid bodies, and valid ones for no model
    assert without[401] > 0 and set(without) <= {200, 401, 405}
    print("statuses with a key:", dict(with_key), "without:", dict(without))
