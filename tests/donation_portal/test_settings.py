"""Configuration: file defaults, PORTAL_* overrides, and production's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from donation_portal.adapters.settings import ConfigError, load_settings


def test_development_defaults_put_everything_under_the_instance_folder(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("s" * 44)
    settings = load_settings(tmp_path, environ={})
    assert settings["ENV"] == "development"
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    assert settings["STORAGE_DIR"] == str(tmp_path / "storage")
    assert settings["MAX_FILE_BYTES"] == 512 * 2**20
    assert settings["SECRET_KEY"] == "s" * 44


def test_environment_variables_override_and_are_typed(tmp_path: Path) -> None:
    environ = {
        "PORTAL_ENV": "test",
        "PORTAL_MAX_FILE_BYTES": "1024",
        "PORTAL_SESSION_COOKIE_SECURE": "yes",
        "PORTAL_STORAGE_DIR": "/srv/objects",
    }
    settings = load_settings(tmp_path, environ=environ)
    assert settings["MAX_FILE_BYTES"] == 1024
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["STORAGE_DIR"] == "/srv/objects"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORTAL_MAX_FILE_BYTES", "lots", "whole number"),
        ("PORTAL_SESSION_COOKIE_SECURE", "maybe", "true or false"),
        ("PORTAL_ENV", "staging", "PORTAL_ENV"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, environ={"PORTAL_ENV": "test", name: value})


def test_development_without_a_secret_key_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make run"):
        load_settings(tmp_path, environ={})


def _production(tmp_path: Path, **overrides: str) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    for name in ("kek.json", "deid.key", "seal.key", "receipt.pem"):
        (keys / name).write_text("x")
    environ = {
        "PORTAL_ENV": "production",
        "PORTAL_SECRET_KEY": "p" * 48,
        "PORTAL_DATABASE_URL": "postgresql+psycopg://portal@db/portal",
        "PORTAL_CONTROLLER_NAME": "Example Hospital",
        "PORTAL_CONTROLLER_ADDRESS": "Beispielstraße 1, 12345 Musterstadt",
        "PORTAL_CONTROLLER_CONTACT": "datenschutz@example.org",
    }
    environ.update(overrides)
    return environ


def test_production_starts_with_a_real_secret_database_and_key_files(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ=_production(tmp_path))
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["DATABASE_URL"].startswith("postgresql")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PORTAL_SECRET_KEY": "test-secret-key-not-for-production"}, "SECRET_KEY"),
        ({"PORTAL_SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"PORTAL_SECRET_KEY": ""}, "SECRET_KEY"),
        ({"PORTAL_DATABASE_URL": ""}, "DATABASE_URL"),
        ({"PORTAL_KEY_FILE": "/nonexistent/kek.json"}, "key file KEY_FILE"),
        ({"PORTAL_RECEIPT_KEY_FILE": "/nonexistent/receipt.pem"}, "RECEIPT_KEY_FILE"),
        ({"PORTAL_CONTROLLER_NAME": ""}, "CONTROLLER_NAME"),
        ({"PORTAL_CONTROLLER_ADDRESS": " "}, "CONTROLLER_ADDRESS"),
    ],
)
def test_production_refuses_to_start_insecurely(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, environ=_production(tmp_path, **overrides))


def test_four_eyes_is_on_by_default_and_can_be_switched_off(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={"PORTAL_ENV": "test"})["RESEARCH_FOUR_EYES"] is True
    environ = {"PORTAL_ENV": "test", "PORTAL_RESEARCH_FOUR_EYES": "false"}
    assert load_settings(tmp_path, environ=environ)["RESEARCH_FOUR_EYES"] is False
