"""Passwords are masked wherever a URL is printed: the masking function, settings errors, logs."""

from __future__ import annotations

import io
import logging

import pytest

from infra.logs import FORMAT, MaskingFormatter
from infra.redact import mask_passwords
from infra.settings import SettingsError, load_settings


@pytest.mark.parametrize(("text", "shown"), [
    ("postgresql://sonae:s3cret@db:5432/sonae", "postgresql://sonae:***@db:5432/sonae"),
    ("postgres://u:p@ss@db/x?sslmode=require", "postgres://u:***@db/x?sslmode=require"),
    ("postgresql://u@db/x?password=s3cret&sslmode=require",
     "postgresql://u@db/x?password=***&sslmode=require"),
    ("cannot reach postgresql://a:b@h/d (SONAE_DATABASE_URL): refused",
     "cannot reach postgresql://a:***@h/d (SONAE_DATABASE_URL): refused"),
    ("https://hook:tok@example.org/in", "https://hook:***@example.org/in"),
])
def test_the_password_of_every_url_is_masked(text: str, shown: str) -> None:
    """user:PASSWORD@ and password=PASSWORD become ***; the rest of the text stays."""
    assert mask_passwords(text) == shown


@pytest.mark.parametrize("text", [
    "postgresql://postgres@127.0.0.1:15432/sonae", "http://127.0.0.1:8080/healthz",
    "127.0.0.1:19092", "ratio 3:2 @ noon",
])
def test_text_without_a_password_is_unchanged(text: str) -> None:
    """Host:port, a user without a password and ordinary text are left alone."""
    assert mask_passwords(text) == text


def test_a_settings_error_does_not_echo_the_password() -> None:
    """A wrong SONAE_DATABASE_URL is named and shown, with its password masked."""
    with pytest.raises(SettingsError) as caught:
        load_settings(database_url="mysql://sonae:s3cret@db/sonae")
    assert "SONAE_DATABASE_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "sonae:***@db" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        load_settings(cap_base_url="ftp://feed:s3cret@cdn/")
    assert "s3cret" not in str(caught.value)


def test_log_lines_and_tracebacks_are_masked() -> None:
    """What the one logging set-up writes carries no password, tracebacks included."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(MaskingFormatter(FORMAT))
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s", "postgresql://u:s3cret@db/x")
        try:
            raise OSError("refused: postgresql://u:s3cret@db/x")
        except OSError:
            logger.exception("start-up failed")
    finally:
        logger.removeHandler(handler)
    assert "s3cret" not in out.getvalue()
    assert "connecting to postgresql://u:***@db/x" in out.getvalue()
    assert "OSError: refused: postgresql://u:***@db/x" in out.getvalue()
