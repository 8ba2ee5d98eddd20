"""Bearer tokens: issue, verify, and refuse expired, tampered, foreign or missing ones."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from services.common.auth import (
    Principal,
    Role,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    bearer_token,
    issue_token,
    may_speak_for,
    own_sender,
    speaks_for,
    verify_token,
)

SECRET = "unit-test-secret-0123456789abcdef-xyz"
AREAS = ("kanda-koen",)
OTHER = "another-secret-0123456789abcdef-xyzzy"


def test_issued_token_verifies_to_its_principal() -> None:
    """A freshly issued token verifies to the same name and role."""
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1), areas=AREAS)
    principal = verify_token(SECRET, token)
    assert isinstance(principal, Principal)
    assert (principal.subject, principal.role) == ("kanda-team-1", Role.FIELD)
    assert principal.token_id
    assert principal.expires_at > datetime.now(UTC)


def test_secret_str_is_accepted() -> None:
    """The settings' SecretStr works as the key on both sides."""
    token = issue_token(SecretStr(SECRET), "hq", "duty-officer", timedelta(minutes=5))
    assert verify_token(SecretStr(SECRET), token).role is Role.HQ


def test_expired_token_is_refused() -> None:
    """A token past its expiry (beyond the leeway) is TokenExpired."""
    issued = datetime.now(UTC) - timedelta(hours=2)
    token = issue_token(SECRET, Role.SENSOR, "gauge-feed", timedelta(minutes=10), now=issued)
    with pytest.raises(TokenExpired):
        verify_token(SECRET, token)


def test_tampered_payload_is_refused() -> None:
    """Changing the role in the payload breaks the signature."""
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1), areas=AREAS)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "hq"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        verify_token(SECRET, f"{header}.{forged}.{signature}")


def test_wrong_secret_is_refused() -> None:
    """A token signed with another secret is invalid."""
    token = issue_token(OTHER, Role.HQ, "intruder", timedelta(hours=1))
    with pytest.raises(TokenInvalid):
        verify_token(SECRET, token)


def test_unsigned_and_foreign_tokens_are_refused() -> None:
    """alg=none, a foreign issuer, an unknown role and missing claims are all invalid."""
    now = int(datetime.now(UTC).timestamp())
    base = {"iss": "sonae", "sub": "x", "role": "hq", "iat": now, "exp": now + 60, "jti": "j"}
    unsigned = jwt.encode(base, key=None, algorithm="none")
    foreign = jwt.encode({**base, "iss": "elsewhere"}, SECRET, algorithm="HS256")
    bad_role = jwt.encode({**base, "role": "admin"}, SECRET, algorithm="HS256")
    no_jti = jwt.encode({k: v for k, v in base.items() if k != "jti"}, SECRET, algorithm="HS256")
    bad_sub = jwt.encode({**base, "sub": "has space"}, SECRET, algorithm="HS256")
    for token in (unsigned, foreign, bad_role, no_jti, bad_sub, "not-a-jwt", "a.b.c"):
        with pytest.raises(TokenInvalid):
            verify_token(SECRET, token)


def test_missing_token_is_refused() -> None:
    """No token at all is TokenMissing, distinct from an invalid one."""
    with pytest.raises(TokenMissing):
        verify_token(SECRET, None)
    with pytest.raises(TokenMissing):
        bearer_token(None)
    with pytest.raises(TokenInvalid):
        bearer_token("Basic dXNlcjpwYXNz")
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"


def test_issue_refuses_bad_inputs() -> None:
    """Short secrets, unsafe names, unknown roles and non-positive TTLs are refused at issue."""
    with pytest.raises(ValueError, match="at least 32"):
        issue_token("short", Role.FIELD, "a", timedelta(hours=1), areas=AREAS)
    with pytest.raises(ValueError, match="token name"):
        issue_token(SECRET, Role.FIELD, "神田 team", timedelta(hours=1), areas=AREAS)
    with pytest.raises(ValueError):
        issue_token(SECRET, "admin", "a", timedelta(hours=1))
    with pytest.raises(ValueError, match="ttl"):
        issue_token(SECRET, Role.FIELD, "a", timedelta(0), areas=AREAS)


def test_a_field_token_can_name_its_areas() -> None:
    """The areas claim travels in a field token; other roles and bad ids are refused."""
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1),
                        areas=["kanda-koen", "jimbocho"])
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="sonae")
    assert claims["areas"] == ["kanda-koen", "jimbocho"]
    assert verify_token(SECRET, token).role is Role.FIELD
    with pytest.raises(ValueError, match="field and shelter_staff tokens only"):
        issue_token(SECRET, Role.HQ, "duty", timedelta(hours=1), areas=["kanda-koen"])
    with pytest.raises(ValueError, match="'Kanda Koen' is not an area id"):
        issue_token(SECRET, Role.FIELD, "t", timedelta(hours=1), areas=["Kanda Koen"])
    with pytest.raises(ValueError, match="named twice"):
        issue_token(SECRET, Role.FIELD, "t", timedelta(hours=1), areas=["fujimi", "fujimi"])


def test_the_verified_principal_carries_the_areas_claim() -> None:
    """verify_token hands on the areas claim (None in an hq token); a malformed claim is invalid."""
    token = issue_token(SECRET, Role.FIELD, "kanda-team-1", timedelta(hours=1),
                        areas=["kanda-koen", "jimbocho"])
    assert verify_token(SECRET, token).areas == frozenset({"kanda-koen", "jimbocho"})
    plain = issue_token(SECRET, Role.HQ, "t", timedelta(hours=1))
    assert verify_token(SECRET, plain).areas is None
    now = int(datetime.now(UTC).timestamp())
    base = {"iss": "sonae", "sub": "x", "role": "field", "iat": now, "exp": now + 60, "jti": "j"}
    for claim in ("kanda-koen", [1, 2], {"kanda-koen": True}):
        malformed = jwt.encode({**base, "areas": claim}, SECRET, algorithm="HS256")
        with pytest.raises(TokenInvalid, match="areas"):
            verify_token(SECRET, malformed)


def test_team_tokens_must_carry_their_areas() -> None:
    """A field or shelter_staff token without areas is neither issued nor accepted."""
    for role in (Role.FIELD, Role.SHELTER_STAFF):
        with pytest.raises(ValueError, match=f"a {role.value} token must carry"):
            issue_token(SECRET, role, "team", timedelta(hours=1))
        now = int(datetime.now(UTC).timestamp())
        forged = jwt.encode({"iss": "sonae", "sub": "team", "role": role.value, "iat": now,
                             "exp": now + 60, "jti": "j"}, SECRET, algorithm="HS256")
        with pytest.raises(TokenInvalid, match="must carry the team's areas"):
            verify_token(SECRET, forged)
    staff = issue_token(SECRET, Role.SHELTER_STAFF, "fujimi-desk", timedelta(hours=1),
                        areas=["fujimi"])
    assert verify_token(SECRET, staff).areas == frozenset({"fujimi"})


def test_a_shelter_staff_token_can_name_its_shelters() -> None:
    """The shelters claim narrows staff to their sites; other roles and bad claims are refused."""
    staff = issue_token(SECRET, Role.SHELTER_STAFF, "sports-desk", timedelta(hours=1),
                        areas=["kanda-koen"], shelters=["e1310100006201"])
    assert verify_token(SECRET, staff).shelters == frozenset({"e1310100006201"})
    wide = issue_token(SECRET, Role.SHELTER_STAFF, "desk", timedelta(hours=1),
                       areas=["kanda-koen"])
    assert verify_token(SECRET, wide).shelters is None
    with pytest.raises(ValueError, match="shelter_staff tokens only"):
        issue_token(SECRET, Role.FIELD, "t", timedelta(hours=1), areas=["fujimi"],
                    shelters=["e1310100006201"])
    with pytest.raises(ValueError, match="named twice"):
        issue_token(SECRET, Role.SHELTER_STAFF, "t", timedelta(hours=1), areas=["fujimi"],
                    shelters=["a", "a"])
    now = int(datetime.now(UTC).timestamp())
    base = {"iss": "sonae", "sub": "x", "iat": now, "exp": now + 60, "jti": "j",
            "areas": ["fujimi"]}
    for role, claim in (("shelter_staff", []), ("shelter_staff", ["Not A Site"]),
                        ("shelter_staff", "e1310100006201"), ("field", ["e1310100006201"])):
        forged = jwt.encode({**base, "role": role, "shelters": claim}, SECRET,
                            algorithm="HS256")
        with pytest.raises(TokenInvalid, match="shelters"):
            verify_token(SECRET, forged)


def test_the_longest_lifetime_bounds_issue_and_verification() -> None:
    """A token living longer than max_lifetime is refused; issue refuses to sign one."""
    long_lived = issue_token(SECRET, Role.HQ, "duty", timedelta(hours=48))
    assert verify_token(SECRET, long_lived, max_lifetime=timedelta(hours=48)).subject == "duty"
    with pytest.raises(TokenInvalid, match="longest lifetime"):
        verify_token(SECRET, long_lived, max_lifetime=timedelta(hours=24))
    with pytest.raises(ValueError, match="SONAE_TOKEN_MAX_TTL_HOURS"):
        issue_token(SECRET, Role.HQ, "duty", timedelta(hours=48), max_ttl=timedelta(hours=24))


def test_a_sensor_token_names_the_senders_it_speaks_for() -> None:
    """The senders claim is a sensor's; speaks_for adds the token's own sender."""
    feed = issue_token(SECRET, Role.SENSOR, "jma-feed", timedelta(hours=1),
                       senders=["cap:jma.go.jp", "jma:気象庁本庁"])
    principal = verify_token(SECRET, feed)
    assert own_sender(principal) == "token:jma-feed"
    assert speaks_for(principal) == {"token:jma-feed", "cap:jma.go.jp", "jma:気象庁本庁"}
    with pytest.raises(ValueError, match="sensor tokens only"):
        issue_token(SECRET, Role.HQ, "duty", timedelta(hours=1), senders=["cap:x"])
    with pytest.raises(ValueError, match="'<kind>:<name>'"):
        issue_token(SECRET, Role.SENSOR, "feed", timedelta(hours=1), senders=["jma.go.jp"])
    now = int(datetime.now(UTC).timestamp())
    forged = jwt.encode({"iss": "sonae", "sub": "duty", "role": "hq", "iat": now,
                         "exp": now + 60, "jti": "j", "senders": ["cap:x"]}, SECRET,
                        algorithm="HS256")
    with pytest.raises(TokenInvalid, match="only a sensor token"):
        verify_token(SECRET, forged)


def test_a_kind_wildcard_speaks_for_every_sender_of_that_kind_only() -> None:
    """``jma:*`` (the feed poller's claim) covers any JMA office, no CAP sender, no token."""
    poller = verify_token(SECRET, issue_token(SECRET, Role.SENSOR, "jma-feed",
                                              timedelta(hours=1), senders=["jma:*"]))
    assert may_speak_for(poller, "jma:気象庁予報部")
    assert may_speak_for(poller, "token:jma-feed")
    assert not may_speak_for(poller, "cap:jma.go.jp")
    assert not may_speak_for(poller, "token:someone-else")
    named = verify_token(SECRET, issue_token(SECRET, Role.SENSOR, "feed", timedelta(hours=1),
                                             senders=["jma:気象庁本庁"]))
    assert may_speak_for(named, "jma:気象庁本庁") and not may_speak_for(named, "jma:気象庁予報部")
