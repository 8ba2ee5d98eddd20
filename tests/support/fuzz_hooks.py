"""Schemathesis hooks: a rule of intake's contract that JSON Schema cannot state.

Integers are written as JSON integers: ``5``, not ``5.0`` (JSON Schema counts 5.0 as
an integer; intake's strict models do not). The OpenAPI document says so in words;
this hook keeps the fuzzer's *positive* cases (those it asserts must be accepted)
inside the rule and leaves negative cases alone.

Loaded by ``st run`` through ``SCHEMATHESIS_HOOKS=tests.support.fuzz_hooks``.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.hooks import HookContext


def _as_written(value: Any) -> Any:
    """``value`` with every integral float written as an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    return value


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    """Positive cases only: integral floats as integers."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return case
    if isinstance(case.body, dict):
        case.body = _as_written(case.body)
    return case
