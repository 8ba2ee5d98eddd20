"""Schemathesis against intake's own OpenAPI document, served by a running intake.

The real tool (``st run``, in a subprocess so its blocking HTTP client cannot stall
the intake under test) generates valid and invalid requests for every operation from
``/v1/openapi.json`` and checks each answer: no 5xx, status codes, content types,
headers and bodies as documented, invalid input refused, authentication not ignored.
The seed is fixed and the example database off, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common.auth import Role
from services.intake.ratelimit import RateLimiter
from tests.support import Running, make_settings, start_intake, token

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
# Rules JSON Schema cannot state, each refused as invalid (422, documented, with the
# pointer): a CAP or JMA body is XML valid against the OASIS or JMA schemas (the
# document can only say "a string"); a warning expires after it was issued, a seismic
# report names each area once; a shelter's needs report names at least one need; a
# supply request names a site that can request (or a registered generator), a step
# names a request whose status allows it, a generator's area is its site's; a
# household command is checked against the household's state (404 unknown_household,
# 409 household_checked_in, 422 for a time before its check-in); a welfare check
# (``people/wel.*``) names a household reported at home, in its area (else 404 or 422).
# For these operations a schema-valid case may be answered 404, 409 or 422. A report
# (every rule of which the document states) must be accepted whenever the document
# allows it.
[[operations]]
include-path-regex = "^/v1/(cap|jma|hazards/.*|shelters/.*|supplies/.*|generators.*|people/wel.*)$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "401", "403", "404", "409", "422", "429"]
"""

EXAMPLES_PER_OPERATION = 25
"""Enough to reach every documented answer of each operation; bounded so a run stays
well under a minute on a loaded 2-core machine."""


@pytest.fixture
async def running(kafka_bootstrap: str, database_url: str, namespace: str,
                  db_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    """Intake with its rate limits (per token and per address) raised out of the
    fuzzer's way; every other limit as configured by default."""
    settings = make_settings(kafka_bootstrap, database_url, namespace)
    async for r in start_intake(
            settings, db_pool, limiter=RateLimiter(10**6, 10**6),
            app_options={"unauthenticated_limiter": RateLimiter(10**6, 10**6)}):
        yield r


@pytest.mark.timeout(240)
async def test_schemathesis_finds_nothing(running: Running, tmp_path: Path) -> None:
    """Every operation, positive and negative data, every check: no failure."""
    st = Path(sys.executable).with_name("st")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(config), "run", f"{running.url}/v1/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {token(Role.HQ)}",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", "20261204",
        "--generation-database", "none",
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path, env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
                           "PYTHONPATH": str(ROOT)})
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
