"""Intake's memory of verified tokens: faster, never more permissive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.auth import (
    LEEWAY,
    Role,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    issue_token,
)
from services.intake.http import _TokenVerifier

SECRET = "unit-test-secret-0123456789abcdef0123456789"
AREAS = ("kanda-koen",)


def test_a_remembered_token_gives_the_same_principal() -> None:
    """A token seen before is answered from memory with the principal it verified to."""
    verify = _TokenVerifier(SECRET)
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1), areas=AREAS)
    first = verify(token)
    assert verify(token) is first
    assert first.subject == "kanda-team-1" and first.role is Role.FIELD


def test_a_remembered_token_is_not_trusted_past_its_expiry() -> None:
    """Past its expiry and the leeway, a remembered token is verified afresh."""
    now = [datetime.now(UTC)]
    verify = _TokenVerifier(SECRET, clock=lambda: now[0])
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(seconds=60), areas=AREAS)
    principal = verify(token)
    now[0] = principal.expires_at + LEEWAY
    assert verify(token) is not principal  # not from memory (the real clock still allows it)


def test_an_expired_token_is_refused() -> None:
    """A token past its expiry and the leeway is refused as expired, as without memory."""
    verify = _TokenVerifier(SECRET)
    issued = datetime.now(UTC) - LEEWAY - timedelta(seconds=120)
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(seconds=60), now=issued,
                        areas=AREAS)
    for _ in range(2):
        with pytest.raises(TokenExpired):
            verify(token)


def test_bad_tokens_are_never_remembered() -> None:
    """A tampered token is refused every time, even after the genuine one was seen."""
    verify = _TokenVerifier(SECRET)
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1), areas=AREAS)
    verify(token)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}x"
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            verify(tampered)


def test_memory_is_bounded() -> None:
    """The oldest token is forgotten once the bound is reached."""
    verify = _TokenVerifier(SECRET, size=2)
    tokens = [issue_token(SECRET, Role.FIELD, f"team-{i}", timedelta(hours=1), areas=AREAS)
              for i in range(3)]
    principals = [verify(t) for t in tokens]
    assert verify(tokens[2]) is principals[2]
    assert verify(tokens[0]) is not principals[0]  # verified afresh
    assert verify(tokens[0]).subject == "team-0"


def test_a_revoked_token_is_refused_even_when_remembered() -> None:
    """The deny list is consulted on every call, so a remembered token stops at revocation."""
    denied: set[str] = set()
    verify = _TokenVerifier(SECRET, denylist=denied)
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1), areas=AREAS)
    principal = verify(token)
    denied.add(principal.token_id)
    with pytest.raises(TokenRevoked, match="revoked"):
        verify(token)
