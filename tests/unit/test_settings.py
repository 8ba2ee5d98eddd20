"""Settings come from SONAE_* variables and bad values name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import KafkaProfile, SettingsError, load_settings, load_stack_location


def test_defaults_describe_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no variables set, settings point at the embedded broker and database."""
    for var in ("SONAE_KAFKA_BOOTSTRAP", "SONAE_KAFKA_PROFILE", "SONAE_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.kafka_profile is KafkaProfile.EMBEDDED
    assert s.namespace == ""


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """SONAE_* variables override the defaults."""
    monkeypatch.setenv("SONAE_KAFKA_BOOTSTRAP", "kafka-1:9092, kafka-2:9092")
    monkeypatch.setenv("SONAE_KAFKA_PROFILE", "apache")
    monkeypatch.setenv("SONAE_NAMESPACE", "drill-kanda")
    s = load_settings()
    assert s.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert s.kafka_profile is KafkaProfile.APACHE
    assert s.namespace == "drill-kanda"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SONAE_KAFKA_BOOTSTRAP", "not a host"),
        ("SONAE_KAFKA_PROFILE", "redpanda"),
        ("SONAE_DATABASE_URL", "mysql://x"),
        ("SONAE_NAMESPACE", "Drill_1"),
        ("SONAE_TOKEN_SECRET", "short"),
        ("SONAE_INTAKE_PORT", "70000"),
        ("SONAE_LOG_LEVEL", "LOUD"),
        ("SONAE_INTAKE_RATE_PER_SECOND", "0"),
        ("SONAE_INTAKE_RATE_BURST", "many"),
        ("SONAE_INTAKE_MAX_JSON_BYTES", "10"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str,
                                      value: str) -> None:
    """An invalid value fails at once with the variable's name in the message."""
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_env_round_trips_to_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings exported for a child process read back as the same settings."""
    s = load_settings(namespace="drill-a", intake_port=9000)
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s


def test_field_outbox_defaults_and_refuses_a_directory(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """SONAE_FIELD_OUTBOX unset or empty is ~/.sonae/field-outbox.jsonl; a directory is named."""
    monkeypatch.delenv("SONAE_FIELD_OUTBOX", raising=False)
    assert load_settings().field_outbox == Path("~/.sonae/field-outbox.jsonl")
    monkeypatch.setenv("SONAE_FIELD_OUTBOX", "")
    assert load_settings().field_outbox == Path("~/.sonae/field-outbox.jsonl")
    monkeypatch.setenv("SONAE_FIELD_OUTBOX", str(tmp_path / "outbox.jsonl"))
    assert load_settings().field_outbox == tmp_path / "outbox.jsonl"
    monkeypatch.setenv("SONAE_FIELD_OUTBOX", str(tmp_path))
    with pytest.raises(SettingsError, match="SONAE_FIELD_OUTBOX"):
        load_settings()


def test_the_development_secret_is_refused_outside_development_mode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The token secret in the source works only with SONAE_DEVELOPMENT=true."""
    monkeypatch.delenv("SONAE_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("SONAE_DEVELOPMENT", "false")
    with pytest.raises(SettingsError, match="SONAE_TOKEN_SECRET: the development secret") as e:
        load_settings()
    assert "SONAE_DEVELOPMENT=true" in str(e.value)
    assert load_settings(token_secret="a-secret-of-our-own-0123456789abcdef").development is False
    monkeypatch.setenv("SONAE_DEVELOPMENT", "true")
    assert load_settings().development is True


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "sonae.example.org"])
def test_development_mode_binds_loopback_only(monkeypatch: pytest.MonkeyPatch,
                                              host: str) -> None:
    """In development mode SONAE_HOST must be a loopback address."""
    monkeypatch.setenv("SONAE_DEVELOPMENT", "true")
    with pytest.raises(SettingsError, match=r"SONAE_HOST: .* loopback"):
        load_settings(host=host)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert load_settings(host=loopback).host == loopback


def test_the_longest_token_lifetime_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """SONAE_TOKEN_MAX_TTL_HOURS is read as a duration and must be positive."""
    monkeypatch.setenv("SONAE_TOKEN_MAX_TTL_HOURS", "12")
    assert load_settings().token_max_ttl.total_seconds() == 12 * 3600
    monkeypatch.setenv("SONAE_TOKEN_MAX_TTL_HOURS", "0")
    with pytest.raises(SettingsError, match="SONAE_TOKEN_MAX_TTL_HOURS"):
        load_settings()


def test_the_stack_location_needs_no_other_setting(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """Where a stack lives is read alone: the development secret outside development mode
    (refused for running a stack) does not stop ``sonae down`` from finding it."""
    monkeypatch.delenv("SONAE_DEVELOPMENT", raising=False)
    monkeypatch.delenv("SONAE_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("SONAE_DATA_DIR", str(tmp_path / "stack"))
    with pytest.raises(SettingsError):
        load_settings()
    assert load_stack_location() == tmp_path / "stack"
    assert load_stack_location(tmp_path / "other") == tmp_path / "other"
