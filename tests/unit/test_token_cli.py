"""`sonae token issue`: areas are checked against the region pack before anything is signed."""

from __future__ import annotations

import jwt
from click.testing import CliRunner

from services.common.token_cli import token

SECRET = "cli-test-secret-0123456789abcdef-xyz"


def test_issue_with_areas_puts_them_in_the_token() -> None:
    """`--area` twice puts both areas, in order, in the signed token's claims."""
    result = CliRunner().invoke(
        token, ["issue", "--role", "field", "--name", "kanda-team", "--area", "kanda-koen",
                "--area", "jimbocho"], env={"SONAE_TOKEN_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"], issuer="sonae")
    assert claims["areas"] == ["kanda-koen", "jimbocho"] and claims["role"] == "field"


def test_an_unknown_area_names_itself_and_the_region() -> None:
    """An area the region pack lacks is a usage error naming it, the region and its areas."""
    result = CliRunner().invoke(
        token, ["issue", "--role", "field", "--name", "kanda-team", "--area", "atlantis"],
        env={"SONAE_TOKEN_SECRET": SECRET})
    assert result.exit_code == 2
    assert "'atlantis'" in result.output and "chiyoda" in result.output
    assert "kanda-koen" in result.output  # the areas it could have been


def test_areas_in_a_non_field_token_are_refused() -> None:
    """Areas belong to field tokens only: an hq token with --area is refused."""
    result = CliRunner().invoke(
        token, ["issue", "--role", "hq", "--name", "duty", "--area", "kanda-koen"],
        env={"SONAE_TOKEN_SECRET": SECRET})
    assert result.exit_code == 1
    assert "field and shelter_staff tokens only" in result.output


def test_issue_refuses_a_ttl_over_the_longest_lifetime() -> None:
    """--ttl longer than SONAE_TOKEN_MAX_TTL_HOURS is refused, naming the setting."""
    result = CliRunner().invoke(
        token, ["issue", "--role", "hq", "--name", "duty", "--ttl", "3d"],
        env={"SONAE_TOKEN_SECRET": SECRET, "SONAE_TOKEN_MAX_TTL_HOURS": "24"})
    assert result.exit_code == 1 and "SONAE_TOKEN_MAX_TTL_HOURS" in result.output


def test_issue_puts_senders_in_a_sensor_token() -> None:
    """`--sender` names the warning senders a sensor token may speak for."""
    result = CliRunner().invoke(
        token, ["issue", "--role", "sensor", "--name", "jma-feed", "--sender", "cap:jma.go.jp",
                "--sender", "jma:気象庁本庁"], env={"SONAE_TOKEN_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"], issuer="sonae")
    assert claims["senders"] == ["cap:jma.go.jp", "jma:気象庁本庁"]
