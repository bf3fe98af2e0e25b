"""schemathesis (property-based API testing) against the gateway's own /openapi.json, through
the real Envoy, authorization server, services, Postgres and NATS, with a valid token holding
every scope: 0 server errors and 0 responses that contradict the document.

The budget is bounded for `make test` (CARTAGE_SCHEMATHESIS_EXAMPLES per operation, default
15; `make fuzz` runs more). CARTAGE_FUZZ_SEED fixes the seed to reproduce a run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import all_scopes
from tests.e2e.harness import EnvoyProcess

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The httpx module is deprecated")]

EXAMPLES = int(os.environ.get("CARTAGE_SCHEMATHESIS_EXAMPLES", "15"))
SEED = os.environ.get("CARTAGE_FUZZ_SEED", "20261202")
ST = Path(sys.executable).parent / "st"

# Checks that are not run, each with why (issue 13):
EXCLUDED_CHECKS = {
    # "TRACE/HEAD/OPTIONS on a path get 405 with Allow, not 404": the gateway's error
    # uniformity item, another change.
    "unsupported_method": "issue 13: 405 with Allow",
    "allow_header_conformance": "issue 13: 405 with Allow",
    # Schema-valid requests the services refuse for rules JSON Schema cannot state (a window
    # ends after it starts, windows do not overlap, a break inside the shift, delivery after
    # pickup) or for the caller's state (no AVAILABLE vehicle, no active plan to replan: a
    # FAILED_PRECONDITION, which the gateway answers with 400).
    "positive_data_acceptance": "cross-field and state rules",
}
# schemathesis 4.32's coverage phase fails inside itself on this document ("AST constructor
# recursion depth mismatch" while it compiles a pattern); the other phases run.
PHASES = "examples,fuzzing,stateful"
CONFIG = """
[generation]
# A NUL is refused by every text field that reaches Postgres (400 UNSTORABLE_CHARACTER); the
# document says so in its description rather than on every string.
allow-x00 = false

# BatchCreateOrders answers 200 with a result per item (AIP-233 partial success): an invalid
# item is that item's error, not the call's, so an invalid item is not "accepted".
[[operations]]
include-operation-id = "BatchCreateOrders"
checks.negative_data_rejection.enabled = false
"""


async def test_schemathesis_finds_no_server_error_and_no_contradiction(
        envoy: EnvoyProcess, partner_factory: Any, tmp_path: Path) -> None:
    partner = await partner_factory(tuple(all_scopes()), tier="internal")
    config = tmp_path / "schemathesis.toml"
    # Every check runs (schemathesis 4's default) except those named above; set here, not with
    # --checks on the command line, which would override the per-operation setting.
    config.write_text(CONFIG + "\n[checks]\n" + "".join(
        f"{check}.enabled = false\n" for check in EXCLUDED_CHECKS))
    base = f"http://127.0.0.1:{envoy.port}"
    report = tmp_path / "report.xml"
    args = [str(ST), "--config-file", str(config), "run", f"{base}/openapi.json", "--url", base,
            "--header", f"Authorization: Bearer {partner.token}",
            "--phases", PHASES, "--max-examples", str(EXAMPLES), "--seed", SEED,
            "--workers", "2", "--request-timeout", "20", "--no-color",
            "--report", "junit", "--report-junit-path", str(report)]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    elapsed = time.monotonic() - started
    print(text)
    print(f"schemathesis: {EXAMPLES} examples per operation, {elapsed:.1f} s")
    assert process.returncode == 0, text[-20000:]
