"""First-run setup for development (`make run`): keys, database, consent text, demo accounts.

Safe to run again: everything that exists is reused, nothing is overwritten, and demo
passwords are printed only when the accounts are created.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from donation_portal.adapters.keyfiles import create_secret_file

DEMO_ROLES = ("donor", "steward", "researcher", "admin")
DEMO_DOMAIN = "demo.example"


def prepare_instance(instance: Path) -> None:
    """Create instance/ (mode 0700) with the secret key and the key files, if missing."""
    from consent import ReceiptSigner
    from storage import KeyRing

    instance.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(instance, 0o700)
    create_secret_file(instance / "secret_key", 32)
    keys = instance / "keys"
    keys.mkdir(exist_ok=True, mode=0o700)
    KeyRing.create_file(keys / "kek.json")
    create_secret_file(keys / "deid.key", 32)
    create_secret_file(keys / "seal.key", 32)
    ReceiptSigner.load_or_create(keys / "receipt.pem")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from flask import Flask

    from donation_portal import create_app
    from donation_portal.adapters import migrate
    from donation_portal.adapters.request_session import get_session
    from donation_portal.workflows import accounts, mfa

    parser = argparse.ArgumentParser(prog="python -m donation_portal.cli.dev_setup")
    parser.add_argument(
        "--keys-only",
        action="store_true",
        help="only create the instance folder's secret key and key files (any environment)",
    )
    args = parser.parse_args([] if argv is None else argv)
    default_instance = Flask("donation_portal").instance_path
    instance = Path(os.environ.get("PORTAL_INSTANCE_PATH") or default_instance)
    prepare_instance(instance)
    if args.keys_only:
        print(f"Keys in {instance / 'keys'} (existing files were kept).")
        return 0
    app = create_app({"INSTANCE_PATH": str(instance)})
    if app.config["ENV"] != "development":
        print("dev-setup only runs in the development environment", file=sys.stderr)
        return 2
    migrate.upgrade(app.config["DATABASE_URL"])
    with app.app_context():
        session = get_session()
        publish_default_template(session)
        created = []
        for role in DEMO_ROLES:
            email = f"{role}@{DEMO_DOMAIN}"
            if accounts.find_user(session, email) is None:
                password = secrets.token_urlsafe(12)
                user = accounts.create_user(session, email, password, role)
                session.commit()
                totp = _enrol_demo_app(app, session, user) if mfa.required_for(user) else ""
                created.append((role, email, password, totp))
    if created:
        print("\nDemo accounts (shown once; keep them or create others with `users create`).")
        print("Staff log in with a code from an authenticator app set up with the key shown:")
        for role, email, password, totp in created:
            print(f"  {role:<11} {email:<24} {password:<18} {totp}")
        print()
    else:
        print("Demo accounts exist already (their passwords were shown when they were created).")
    return 0


def _enrol_demo_app(app, session, user) -> str:  # type: ignore[no-untyped-def]
    """Give a demo staff account an authenticator app at once, so the demo needs no
    enrolment; returns the key to type into the app (the only time it is shown)."""
    import time

    from donation_portal.workflows import mfa

    key = mfa.seal_key(str(app.config["SECRET_KEY"]).encode("utf-8"))
    return mfa.enrol_without_code(session, user, key=key, at=time.time())


def publish_default_template(session) -> None:  # type: ignore[no-untyped-def]
    """Publish the shipped consent text in every language it comes in (idempotent)."""
    from consent import default_template_specs, publish_template

    for spec in default_template_specs():
        publish_template(session, spec)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
