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
    assert "field tokens only" in result.output
