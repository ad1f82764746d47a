"""Configuration: defaults from ``config/<env>.toml``, overridden by ``PORTAL_*`` variables.

Values are validated once, at start-up, so a misconfigured production server refuses to
start instead of running with a development secret.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "PORTAL_"
ENVIRONMENTS = ("development", "test", "production")
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
_TEST_SECRET = "test-secret-key-not-for-production"  # noqa: S105 (refused in production)
_FILE_KEYS = (
    "STORAGE_DIR",
    "KEY_FILE",
    "DEID_KEY_FILE",
    "SEAL_KEY_FILE",
    "RECEIPT_KEY_FILE",
    "MAIL_DIR",
)

# the data controller shown on the consent page and on receipts; DATA_PROTECTION_OFFICER is optional
CONTROLLER_KEYS = ("CONTROLLER_NAME", "CONTROLLER_ADDRESS", "CONTROLLER_CONTACT")


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which setting and why."""


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ENV_PREFIX + "CONFIG_DIR", DEFAULT_CONFIG_DIR))


def load_settings(
    instance_path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Merge file defaults, environment variables and explicit overrides (in that order)."""
    overrides = dict(overrides or {})
    env = str(overrides.get("ENV") or environ.get(ENV_PREFIX + "ENV") or "development")
    if env not in ENVIRONMENTS:
        raise ConfigError(f"PORTAL_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    path = config_dir(environ) / f"{env}.toml"
    try:
        settings: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} is missing") from exc
    for key, default in list(settings.items()):
        raw = environ.get(ENV_PREFIX + key)
        if raw is not None and key != "ENV":
            settings[key] = _coerce(key, raw, default)
    settings.update(overrides)
    settings["ENV"] = env
    _resolve_paths(settings, Path(instance_path))
    validate(settings)
    return settings


def _coerce(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{ENV_PREFIX}{key} must be true or false")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}{key} must be a whole number") from exc
    return raw


def _resolve_paths(settings: dict[str, Any], instance: Path) -> None:
    settings["INSTANCE_PATH"] = str(instance)
    for key in _FILE_KEYS:
        value = Path(str(settings[key]))
        settings[key] = str(value if value.is_absolute() else instance / value)
    if not settings.get("DATABASE_URL") and settings["ENV"] != "production":
        settings["DATABASE_URL"] = f"sqlite:///{instance / 'portal.sqlite3'}"
    if not settings.get("BROKER_URL") and settings["ENV"] != "production":
        # the embedded broker: no server to run for `make run`
        settings["BROKER_URL"] = f"sqla+sqlite:///{instance / 'broker.sqlite3'}"
    if not settings.get("SECRET_KEY"):
        secret_file = instance / "secret_key"
        if secret_file.exists():
            settings["SECRET_KEY"] = secret_file.read_text(encoding="utf-8").strip()


def validate(settings: Mapping[str, Any]) -> None:
    """Refuse settings that would run insecurely or not at all."""
    for key in (
        "MAX_FILE_BYTES",
        "MAX_ARCHIVE_BYTES",
        "MAX_REQUEST_BYTES",
        "MAX_BODY_BYTES",
        "MAX_FORM_MEMORY_SIZE",
        "MAX_FORM_PARTS",
        "QUARANTINE_MAX_AGE",
        "UPLOAD_EXPIRY",
        "UPLOAD_MAX_BYTES_IN_FLIGHT",
        "UPLOAD_MAX_FILES_PER_DAY",
        "JOB_MAX_ATTEMPTS",
        "JOB_STALLED_AFTER",
        "ORPHAN_GRACE",
        "SESSION_IDLE_MINUTES",
        "SESSION_IDLE_MINUTES_STAFF",
        "SESSION_ABSOLUTE_HOURS",
        "SMTP_PORT",
    ):
        if int(settings[key]) <= 0:
            raise ConfigError(f"{key} must be positive")
    _validate_session_cookie(settings)
    if int(settings["HSTS_SECONDS"]) < 0:
        raise ConfigError("HSTS_SECONDS must be 0 (no HSTS) or positive")
    secret = settings.get("SECRET_KEY") or ""
    if not secret:
        raise ConfigError(
            "no SECRET_KEY: set PORTAL_SECRET_KEY, or run `make run` once "
            "to create instance/secret_key"
        )
    if settings.get("STORAGE_BACKEND") not in ("local", "s3"):
        raise ConfigError("STORAGE_BACKEND must be local or s3")
    if settings["STORAGE_BACKEND"] == "s3" and not settings.get("S3_BUCKET"):
        raise ConfigError("STORAGE_BACKEND=s3 needs PORTAL_S3_BUCKET")
    public_url = str(settings["PUBLIC_URL"])
    if public_url and not public_url.startswith(("https://", "http://")):
        raise ConfigError("PUBLIC_URL must start with https:// (the address links in e-mails use)")
    _validate_webauthn(settings)
    if settings["ENV"] != "production":
        return
    if not settings.get("BROKER_URL"):
        raise ConfigError("production needs PORTAL_BROKER_URL (redis://... or amqp://...)")
    if settings.get("JOBS_INLINE"):
        raise ConfigError("production runs jobs on workers: PORTAL_JOBS_INLINE must be false")
    if secret == _TEST_SECRET or len(secret) < 32:
        raise ConfigError(
            "production refuses the default or a short SECRET_KEY (use 32+ random chars)"
        )
    if not settings.get("DATABASE_URL"):
        raise ConfigError("production needs PORTAL_DATABASE_URL")
    _validate_controller(settings)
    if not settings.get("KEK") and not Path(settings["KEY_FILE"]).is_file():
        raise ConfigError(
            f"production needs the key file KEY_FILE ({settings['KEY_FILE']}) or PORTAL_KEK"
        )
    for key in ("DEID_KEY_FILE", "SEAL_KEY_FILE", "RECEIPT_KEY_FILE"):
        if not Path(settings[key]).is_file():
            raise ConfigError(f"production needs the key file {key} ({settings[key]})")


def _validate_session_cookie(settings: Mapping[str, Any]) -> None:
    """A browser silently drops a ``__Host-`` or ``__Secure-`` cookie sent without ``Secure``
    (nobody could log in), and production must name its cookie ``__Host-`` so that neither
    plain HTTP nor another host under the same domain can plant or overwrite it."""
    name = str(settings["SESSION_COOKIE_NAME"])
    if name.startswith(("__Host-", "__Secure-")) and not settings["SESSION_COOKIE_SECURE"]:
        raise ConfigError(f"SESSION_COOKIE_NAME {name!r} needs SESSION_COOKIE_SECURE=true")
    if settings["ENV"] == "production" and not name.startswith("__Host-"):
        raise ConfigError("production needs a SESSION_COOKIE_NAME starting with __Host-")


def _validate_controller(settings: Mapping[str, Any]) -> None:
    """A consent that does not name who controls the data, where and how to reach them, is not
    informed consent (GDPR Art. 13(1)(a)): production never asks for one without them."""
    for key in CONTROLLER_KEYS:
        if not str(settings.get(key) or "").strip():
            raise ConfigError(
                f"production needs PORTAL_{key}: the consent page names the controller"
            )


def webauthn_origin(settings: Mapping[str, Any]) -> str:
    """The origin (``scheme://host[:port]``) security keys are used at: WEBAUTHN_ORIGIN, or
    else PUBLIC_URL's; empty if neither is set."""
    configured = str(settings.get("WEBAUTHN_ORIGIN") or settings.get("PUBLIC_URL") or "")
    if not configured:
        return ""
    parts = urlsplit(configured)
    return f"{parts.scheme}://{parts.netloc}"


def _validate_webauthn(settings: Mapping[str, Any]) -> None:
    """Browsers refuse keys for a relying party ID that is neither the origin's host nor a
    domain above it: every key registration would fail, so refuse to start instead."""
    origin = webauthn_origin(settings)
    if origin and not origin.startswith(("https://", "http://")):
        raise ConfigError("WEBAUTHN_ORIGIN must start with https://")
    rp_id = str(settings.get("WEBAUTHN_RP_ID") or "")
    host = urlsplit(origin).hostname or ""
    if rp_id and origin and host != rp_id and not host.endswith("." + rp_id):
        raise ConfigError(f"WEBAUTHN_RP_ID {rp_id!r} must be the host of {origin} or above it")
