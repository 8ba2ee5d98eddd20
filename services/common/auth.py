"""Bearer tokens: HMAC-signed JWTs (HS256) that name a principal and its role.

Shared by intake (HTTP and the raw topic) and the websocket gateway. A token is a
standard JWT so that any client library can read it; its claims are

- ``sub``: the principal's name (a team, a device group, a feed, an operator),
  an :data:`~schemas.common.ActorId`;
- ``role``: one of :class:`Role`;
- ``iat`` / ``exp``: issue and expiry times (seconds since the epoch);
- ``jti``: a random id, so a leaked token can be named in a deny list later;
- ``iss``: always ``"sonae"``, so a token minted by another system that happens
  to share the secret is refused;
- ``areas`` (required in ``field`` and ``shelter_staff`` tokens, refused in
  others): the team's area ids; the gateway shows the team those areas' reports
  and shelters, and a websocket hello can only narrow them. A field or shelter
  token without them is refused by :func:`verify_token`, so a team never sees
  more than its token says;
- ``shelters`` (``shelter_staff`` tokens, optional, refused in others): the
  shelters and facilities the staff run. With it, the staff may check households
  in and out, request supplies and see household records only there (else at
  every site of their areas);
- ``senders`` (``sensor`` tokens, optional): the warning senders the feed may
  speak for besides itself (:func:`own_sender`), e.g. ``cap:jma.go.jp`` for the
  CAP sender ``jma.go.jp`` or ``jma:<editorial office>`` for JMA XML; see
  :func:`speaks_for`. ``<kind>:*`` speaks for every sender of that kind: the JMA
  feed poller's own token has ``jma:*``, as it relays what JMA's own feed carries;
  see :func:`may_speak_for`.

:func:`verify_token` checks the claims' shapes and hands them on as a
:class:`Principal`, so no service reads a token's claims itself. With
``max_lifetime`` it also refuses a token whose ``exp - iat`` is longer
(``SONAE_TOKEN_MAX_TTL_HOURS``): a leaked long-lived token cannot outlive the
policy. Revocation (a deny list of ``jti``) is :mod:`services.common.revocation`.

Exceptions::

    AuthError
    ├── TokenMissing    no token, or no ``Authorization: Bearer`` header
    ├── TokenInvalid    malformed, tampered, wrong secret, unknown role, bad claims
    ├── TokenExpired    signature fine, but ``exp`` has passed
    └── TokenRevoked    signature fine, but its ``jti`` is on the deny list
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import jwt
from pydantic import SecretStr

from schemas.common import SLUG_PATTERN
from schemas.hazards import SENDER_PATTERN

__all__ = [
    "ALGORITHM",
    "AREA_ROLES",
    "ISSUER",
    "AuthError",
    "Principal",
    "Role",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
    "TokenRevoked",
    "acts_at",
    "bearer_token",
    "issue_token",
    "own_sender",
    "speaks_for",
    "verify_token",
]

ALGORITHM: Final = "HS256"
"""The only algorithm issued or accepted (pinned: no ``alg=none``, no RSA/HMAC confusion)."""
ISSUER: Final = "sonae"
"""The ``iss`` claim of every Sonae token."""
MIN_SECRET_LENGTH: Final = 32
"""Shorter HMAC secrets are refused (HS256 wants at least 256 bits of key)."""
LEEWAY: Final = timedelta(seconds=30)
"""Clock skew tolerated between the issuer and the verifier."""

AREA_ROLES: Final = frozenset({"field", "shelter_staff"})
"""Roles whose tokens must carry the team's ``areas``."""
_SENDER = re.compile(SENDER_PATTERN)
_MAX_SENDERS = 50

# The same shape as schemas.common.ActorId: a subject ends up in events
# (issued_by, idempotency scopes), so it must be a safe identifier.
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")


class Role(StrEnum):
    """What a token holder is; each service decides what a role may do."""

    FIELD = "field"
    """A field team: damage reports."""
    SHELTER_STAFF = "shelter_staff"
    """Shelter staff: shelter status (and damage reports)."""
    SENSOR = "sensor"
    """A machine source: gauge feeds, JMA, CAP senders."""
    HQ = "hq"
    """Disaster-response headquarters: everything."""
    PUBLIC = "public"
    """A resident's read-only view (gateway); intake refuses it."""


class AuthError(Exception):
    """Base of the token errors; ``str()`` is safe to show to the caller."""


class TokenMissing(AuthError):
    """No bearer token was presented."""


class TokenInvalid(AuthError):
    """The token is malformed, tampered with, signed with another secret, or has bad claims."""


class TokenExpired(AuthError):
    """The token was valid but its ``exp`` has passed."""


class TokenRevoked(AuthError):
    """The token was valid but has been revoked (``sonae token revoke``)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of a token."""

    subject: str
    """The ``sub`` claim: the name the token was issued to."""
    role: Role
    """The ``role`` claim."""
    token_id: str
    """The ``jti`` claim."""
    expires_at: datetime
    """When the token expires (UTC)."""
    areas: frozenset[str] | None = None
    """The ``areas`` claim: the team's areas (``None``: the token names none)."""
    senders: frozenset[str] = frozenset()
    """The ``senders`` claim: the warning senders a sensor token may speak for."""
    shelters: frozenset[str] | None = None
    """The ``shelters`` claim of a shelter_staff token: the sites its staff run
    (``None``: the token names none, so every site of its areas)."""


def acts_at(principal: Principal, site_id: str | None, area_id: str) -> bool:
    """Whether ``principal`` may act at a site (check households in, ask for supplies).

    HQ everywhere; a shelter_staff token at the sites its ``shelters`` claim names,
    or, without that claim, at every site of its ``areas``; nobody else. ``site_id``
    None is a place at no site (e.g. a generator standing on its own): only HQ, or
    staff by area.
    """
    if principal.role is Role.HQ:
        return True
    if principal.role is not Role.SHELTER_STAFF:
        return False
    if principal.shelters is not None:
        return site_id in principal.shelters
    return principal.areas is not None and area_id in principal.areas


def own_sender(principal: Principal) -> str:
    """The sender a principal is when it speaks for itself: ``token:<subject>``."""
    return f"token:{principal.subject}"


def speaks_for(principal: Principal) -> frozenset[str]:
    """Every sender ``principal`` may issue, update or cancel warnings for.

    Its own (:func:`own_sender`) and those its token's ``senders`` claim lists. HQ is
    not limited by this set (it may override any sender, audited); intake decides that.
    """
    return principal.senders | {own_sender(principal)}


def may_speak_for(principal: Principal, sender: str) -> bool:
    """Whether ``principal``'s token lets it speak for ``sender`` (HQ overrides aside).

    Its own sender, a sender its ``senders`` claim lists, or any sender of a kind
    the claim lists as ``<kind>:*``.
    """
    kind = sender.split(":", 1)[0]
    return sender in speaks_for(principal) or f"{kind}:*" in principal.senders


def _secret_text(secret: str | SecretStr) -> str:
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if len(text) < MIN_SECRET_LENGTH:
        raise ValueError(f"the token secret must be at least {MIN_SECRET_LENGTH} characters")
    return text


def issue_token(
    secret: str | SecretStr,
    role: Role | str,
    name: str,
    ttl: timedelta,
    *,
    areas: Sequence[str] = (),
    senders: Sequence[str] = (),
    shelters: Sequence[str] = (),
    max_ttl: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """Sign a token for ``name`` with ``role``, valid for ``ttl`` from ``now``.

    ``areas`` (required for field and shelter_staff tokens, refused for others) names
    the team's areas: the gateway shows the team those areas' reports and shelters.
    ``senders`` (sensor tokens only) names the warning senders the feed may speak for.
    ``shelters`` (shelter_staff tokens only) names the sites the staff run.
    ``max_ttl`` is the deployment's longest lifetime (``SONAE_TOKEN_MAX_TTL_HOURS``).
    """
    the_role = Role(role)
    if the_role.value in AREA_ROLES and not areas:
        raise ValueError(f"a {the_role.value} token must carry the team's areas")
    if areas and the_role.value not in AREA_ROLES:
        raise ValueError(f"areas belong in field and shelter_staff tokens only, not in a "
                         f"{the_role.value} token")
    if senders and the_role is not Role.SENSOR:
        raise ValueError(f"senders belong in sensor tokens only, not in a {the_role.value} "
                         "token")
    bad = [s for s in senders if not _SENDER.fullmatch(s)]
    if bad or len(senders) > _MAX_SENDERS:
        raise ValueError(f"sender {bad[0]!r} is not '<kind>:<name>', e.g. cap:jma.go.jp"
                         if bad else f"at most {_MAX_SENDERS} senders")
    if shelters and the_role is not Role.SHELTER_STAFF:
        raise ValueError(f"shelters belong in shelter_staff tokens only, not in a "
                         f"{the_role.value} token")
    for shelter in shelters:
        if not re.fullmatch(SLUG_PATTERN, shelter):
            raise ValueError(f"shelter {shelter!r} is not a site id (lowercase letters, "
                             "digits, - and _)")
    if len(set(shelters)) != len(shelters):
        raise ValueError("a shelter is named twice")
    for area in areas:
        if not re.fullmatch(SLUG_PATTERN, area):
            raise ValueError(f"area {area!r} is not an area id (lowercase letters, digits, "
                             "- and _)")
    if len(set(areas)) != len(areas):
        raise ValueError("an area is named twice")
    if not _SUBJECT.fullmatch(name):
        raise ValueError(
            f"token name {name!r} must be 1-128 characters of letters, digits and ._@:+- "
            "starting with a letter or digit"
        )
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    if max_ttl is not None and ttl > max_ttl:
        raise ValueError(f"ttl {ttl} is longer than the longest token lifetime {max_ttl} "
                         "(SONAE_TOKEN_MAX_TTL_HOURS)")
    issued = (now or datetime.now(UTC)).astimezone(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": name,
        "role": the_role.value,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if areas:
        claims["areas"] = list(areas)
    if senders:
        claims["senders"] = list(dict.fromkeys(senders))
    if shelters:
        claims["shelters"] = list(shelters)
    return jwt.encode(claims, _secret_text(secret), algorithm=ALGORITHM)


def verify_token(secret: str | SecretStr, token: str | None, *,
                 max_lifetime: timedelta | None = None) -> Principal:
    """Check ``token``'s signature, issuer, expiry and claims; return its principal.

    With ``max_lifetime``, a token issued for longer (``exp - iat``) is refused.
    """
    if not token:
        raise TokenMissing("a bearer token is required")
    try:
        claims = jwt.decode(
            token,
            _secret_text(secret),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "iat", "sub", "role", "jti", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired; ask for a new one") from None
    except jwt.PyJWTError as e:
        # The library's message names the failing check without echoing the token.
        raise TokenInvalid(f"the token is not valid: {e}") from None
    subject, role, jti = claims.get("sub"), claims.get("role"), claims.get("jti")
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise TokenInvalid("the token's subject is not a valid name")
    if not isinstance(jti, str) or not jti:
        raise TokenInvalid("the token has no id")
    try:
        the_role = Role(str(role))
    except ValueError:
        raise TokenInvalid(f"the token's role {role!r} is unknown") from None
    areas = claims.get("areas")
    if areas is not None and (not isinstance(areas, list)
                              or not all(isinstance(a, str) for a in areas)):
        raise TokenInvalid("the token's areas claim is not a list of area ids")
    if the_role.value in AREA_ROLES and not areas:
        raise TokenInvalid(f"a {the_role.value} token must carry the team's areas "
                           "(issue it with --area)")
    senders = claims.get("senders", [])
    if not isinstance(senders, list) or not all(
            isinstance(s, str) and _SENDER.fullmatch(s) for s in senders):
        raise TokenInvalid("the token's senders claim is not a list of '<kind>:<name>'")
    if senders and the_role is not Role.SENSOR:
        raise TokenInvalid("only a sensor token may name senders")
    shelters = claims.get("shelters")
    if shelters is not None and (not isinstance(shelters, list) or not shelters or not all(
            isinstance(x, str) and re.fullmatch(SLUG_PATTERN, x) for x in shelters)):
        raise TokenInvalid("the token's shelters claim is not a list of site ids")
    if shelters is not None and the_role is not Role.SHELTER_STAFF:
        raise TokenInvalid("only a shelter_staff token may name shelters")
    issued_at, expires = claims["iat"], claims["exp"]
    if max_lifetime is not None and (
            not isinstance(issued_at, int | float)
            or expires - issued_at > max_lifetime.total_seconds()):
        raise TokenInvalid(f"the token lives longer than the longest lifetime allowed "
                           f"({max_lifetime}); ask for a shorter one")
    return Principal(
        subject=subject,
        role=the_role,
        token_id=jti,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        areas=None if areas is None else frozenset(areas),
        senders=frozenset(senders),
        shelters=None if shelters is None else frozenset(shelters),
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if authorization is None or not authorization.strip():
        raise TokenMissing("a bearer token is required (Authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("the Authorization header must be 'Bearer <token>'")
    return token.strip()
