"""Intake's HTTP contract: every refusal has one status, every body is a documented model."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import services.intake
from services.intake import errors
from services.intake.contract import REFUSALS, ErrorBody, refusal
from services.intake.errors import FieldError, InputRefused, IntakeError, RateLimited


def _refusal_classes() -> list[type[InputRefused]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, InputRefused) and c is not InputRefused]


def test_every_refusal_has_a_status_in_the_one_table() -> None:
    """A new refusal cannot quietly answer as a generic 400: it must be in REFUSALS."""
    assert set(_refusal_classes()) == set(REFUSALS)


@pytest.mark.parametrize("cls", _refusal_classes(), ids=lambda c: c.__name__)
def test_a_refusal_body_is_an_error_body(cls: type[InputRefused]) -> None:
    """The body of each refusal is exactly an ErrorBody's JSON, with its field errors."""
    error = (RateLimited("slow down", retry_after=2) if cls is RateLimited
             else cls("refused", errors=[FieldError("/severity", "too big")]))
    answer = refusal(error)
    assert answer.status == REFUSALS[cls][0]
    assert answer.body == ErrorBody.model_validate(answer.body).as_json()
    assert answer.body["error"] == REFUSALS[cls][1]


def test_rate_limited_says_when_to_retry() -> None:
    """429 carries Retry-After in whole seconds."""
    answer = refusal(RateLimited("slow down", retry_after=3))
    assert (answer.status, dict(answer.headers)) == (429, {"Retry-After": "3"})


def test_intake_has_one_exception_root() -> None:
    """Every public exception class defined in services.intake derives from IntakeError."""
    # Private ones (the JSON decoder's hooks in parsing.py) never leave the function
    # that translates them into MalformedInput.
    roots = []
    for info in pkgutil.iter_modules(services.intake.__path__, "services.intake."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == module.__name__ and issubclass(cls, BaseException)
                    and not cls.__name__.startswith("_") and not issubclass(cls, IntakeError)):
                roots.append(cls.__qualname__)
    assert roots == []
