"""Command-line tools: `flask --app donation_portal users|db ...`.

Each command is one unit of work with an explicit commit (in the command, or in the use case
it calls); nothing is committed by the boundary.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

import consent as consents
import storage
from donation_portal.adapters import migrate, services
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import ROLES, StoredObject, UploadPart, stored_info
from donation_portal.adapters.request_session import get_session
from donation_portal.web import receipt_pages as receipts
from donation_portal.workflows import accounts, maintenance

users = AppGroup("users", help="Manage accounts.")
database = AppGroup("db", help="Apply schema migrations.")
keys = AppGroup("keys", help="Manage the master key-encryption keys.")
objects = AppGroup("storage", help="Check the encrypted object storage.")
consent_cli = AppGroup("consent", help="Publish consent templates, verify receipts.")
audit_cli = AppGroup("audit", help="Check the audit trail.")
SYSTEM_ACTOR = "system:cli"


def init_app(app: Flask) -> None:
    for group in (users, database, keys, objects, consent_cli, audit_cli):
        app.cli.add_command(group)


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The account's role.")
@click.password_option(help="Asked for when not given.")
def create_user(email: str, role: str, password: str) -> None:
    """Create an account with ROLE for EMAIL."""
    session = get_session()
    try:
        accounts.create_user(session, email, password, role)
    except accounts.AccountError as error:
        raise click.ClickException(str(error)) from error
    session.commit()
    click.echo(f"Created {role} account {accounts.normalise_email(email)}.")


@database.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Migrate the database to REVISION."""
    migrate.upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"Database migrated to {revision}.")


def _key_file() -> str:
    if current_app.config.get("KEK"):
        raise click.ClickException(
            "the key ring comes from PORTAL_KEK: rotate it where that variable is managed"
        )
    path: str = current_app.config["KEY_FILE"]
    return path


@keys.command("status")
def key_status() -> None:
    """Show the KEK versions and how many scope keys each one wraps."""
    counts = storage.key_status(services.keyring(), DatabaseKeyStore(get_session()))
    current = services.keyring().current_version
    known = set(services.keyring().versions())
    for version, count in counts.items():
        marks = [
            m
            for m, on in (("current", version == current), ("MISSING", version not in known))
            if on
        ]
        label = f" ({', '.join(marks)})" if marks else ""
        click.echo(f"KEK version {version}{label}: {count} wrapped key(s)")
    if not known.issuperset(counts):
        raise SystemExit(1)


@keys.command("rotate")
def rotate() -> None:
    """Add a KEK version and re-wrap every scope key under it, in one transaction."""
    key_file = _key_file()
    keyring = storage.KeyRing.load(key_file)
    session = get_session()
    count = storage.rotate_keys(keyring, DatabaseKeyStore(session), save_to=key_file)
    consents.audit.record(
        session,
        "keys.rotated",
        actor=SYSTEM_ACTOR,
        subject_type="kek",
        subject_id=str(keyring.current_version),
        detail={"rewrapped": count},
    )
    session.commit()
    services.forget(current_app)
    click.echo(f"KEK version {keyring.current_version} is current; re-wrapped {count} key(s).")


@keys.command("retire")
@click.argument("version", type=int)
def retire(version: int) -> None:
    """Remove KEK VERSION from the key file once no scope key uses it."""
    key_file = _key_file()
    keyring = storage.KeyRing.load(key_file)
    try:
        storage.retire_kek_version(keyring, DatabaseKeyStore(get_session()), version)
    except storage.StorageError as error:
        raise click.ClickException(str(error)) from error
    keyring.save(key_file)
    session = get_session()
    consents.audit.record(
        session, "keys.retired", actor=SYSTEM_ACTOR, subject_type="kek", subject_id=str(version)
    )
    session.commit()
    services.forget(current_app)
    click.echo(f"KEK version {version} retired.")


@objects.command("verify")
def verify() -> None:
    """Authenticate every recorded object and reconcile the database with the backend.

    Exit 1 on damage (a recorded object missing, corrupted or unreadable). Objects nothing
    records (orphans) are reported but harmless: `storage reconcile` removes them.
    """
    session = get_session()
    infos = [stored_info(row) for row in session.scalars(select(StoredObject))]
    in_flight = set(session.scalars(select(UploadPart.object_id)))  # recorded, short-lived
    report = services.object_store(session).verify(infos)
    orphans = [object_id for object_id in report.orphaned if object_id not in in_flight]
    click.echo(f"checked {report.checked} object(s)")
    damage = {
        "missing": report.missing,
        "corrupted": report.corrupted,
        "unreadable": report.unreadable,
    }
    for kind, object_ids in damage.items():
        for object_id in object_ids:
            click.echo(f"{kind}: {object_id}")
    for object_id in orphans:
        click.echo(f"orphaned: {object_id}")
    if orphans:
        click.echo(
            f"{len(orphans)} orphaned object(s): stored but recorded nowhere, harmless; "
            "the reconciler removes them (`flask storage reconcile`)"
        )
    if any(damage.values()):
        click.echo(f"DAMAGE: {sum(len(ids) for ids in damage.values())} recorded object(s)")
        raise SystemExit(1)
    click.echo("all recorded objects authentic")


@objects.command("reconcile")
@click.option(
    "--grace",
    type=click.IntRange(min=0),
    help="Seconds an unrecorded object is left alone (default: the ORPHAN_GRACE setting).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def reconcile(grace: int | None, dry_run: bool) -> None:
    """Remove objects nothing records (older than the grace), finish deletions that failed
    after a commit, and remove stale partial writes. The workers run it every few minutes."""
    session = get_session()
    seconds = int(current_app.config["ORPHAN_GRACE"]) if grace is None else grace
    report = maintenance.reconcile_storage(
        session, services.object_store(session), seconds, dry_run=dry_run
    )
    verb = "would remove" if dry_run else "removed"
    for object_id in report.deletions_finished:
        click.echo(f"{verb} deleted object {object_id}")
    for object_id in report.orphans_deleted:
        click.echo(f"{verb} unrecorded object {object_id}")
    for object_id in report.failed:
        click.echo(f"could not remove {object_id} (the next run retries)")
    click.echo(
        f"{verb} {len(report.orphans_deleted)} unrecorded object(s) older than {seconds} s, "
        f"{len(report.deletions_finished)} pending deletion(s), "
        f"{report.partials_removed} partial write(s); "
        f"{report.orphans_within_grace} unrecorded object(s) within the grace left alone"
    )
    if report.failed:
        raise SystemExit(1)


@objects.command("sweep")
@click.option(
    "--older-than",
    type=click.IntRange(min=0),
    help="Age in seconds (default: the QUARANTINE_MAX_AGE setting).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be destroyed.")
def sweep(older_than: int | None, dry_run: bool) -> None:
    """Destroy raw-upload quarantine keys and unrecorded objects that processing left behind.

    The workers run it hourly; the age must exceed the longest upload's processing time.
    """
    session = get_session()
    age = int(current_app.config["QUARANTINE_MAX_AGE"]) if older_than is None else older_than
    report = maintenance.sweep_quarantine(
        session, services.object_store(session), age, dry_run=dry_run
    )
    verb = "would destroy" if dry_run else "destroyed"
    for scope_id in report.shredded_scopes:
        click.echo(f"{verb} quarantine key {scope_id}")
    for object_id in report.deleted_objects:
        click.echo(f"{verb} unrecorded object {object_id}")
    click.echo(
        f"{verb} {len(report.shredded_scopes)} quarantine key(s), "
        f"{len(report.deleted_objects)} unrecorded object(s), "
        f"{report.removed_partials} partial write(s) older than {age} s"
    )


@consent_cli.command("publish")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def publish(path: str) -> None:
    """Publish the consent template in PATH (YAML or JSON) as a new immutable version."""
    session = get_session()
    try:
        spec = consents.load_template_file(path)
        before = {t.id for t in consents.templates(session)}
        template = consents.publish_template(session, spec, actor=SYSTEM_ACTOR)
    except consents.ConsentError as error:
        raise click.ClickException(str(error)) from error
    session.commit()
    verb = "Already published" if template.id in before else "Published"
    click.echo(
        f"{verb}: {template.name} {template.version} ({template.language}) sha256:{template.id}"
    )


def _anchor(_ctx: click.Context, _param: click.Parameter, value: str | None):  # type: ignore[no-untyped-def]
    if value is None:
        return None
    entry_id, _, digest = value.partition(":")
    if not entry_id.isdigit() or len(digest) != 64:
        raise click.BadParameter("expected ID:HASH as printed by an earlier `audit verify`")
    return int(entry_id), digest


@audit_cli.command("verify")
@click.option(
    "--anchor",
    callback=_anchor,
    metavar="ID:HASH",
    help="A head printed earlier and kept elsewhere: detects a trail cut short.",
)
def verify_audit(anchor: tuple[int, str] | None) -> None:
    """Recompute the hash chain; exit 1 naming the first broken entry.

    Keep the printed anchor outside the database (a ticket, an e-mail to the ethics
    board): the chain alone cannot show that its newest entries were deleted.
    """
    session = get_session()
    result = consents.audit.verify(session, anchor)
    click.echo(result.message())
    if not result.ok:
        raise SystemExit(1)
    entry_id, digest = consents.audit.head(session)
    click.echo(f"anchor: {entry_id}:{digest}")


@consent_cli.command("verify-receipt")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def verify_receipt(path: str) -> None:
    """Check that the receipt in PATH was signed by this portal and not altered."""
    try:
        content = receipts.verify(Path(path).read_bytes())
    except consents.InvalidReceipt as error:
        click.echo(f"INVALID: {error}", err=True)
        raise SystemExit(1) from error
    click.echo(
        f"valid receipt: consent {content['consent_id']}, {content['event']['kind']} "
        f"at {content['event']['at']}, template sha256:{content['template']['sha256']}"
    )


@consent_cli.command("expire")
def expire() -> None:
    """Record 'expired' for every consent past its end (run daily, e.g. from cron)."""
    session = get_session()
    recorded = consents.expire_due(session)
    session.commit()
    click.echo(f"{len(recorded)} consent(s) recorded as expired.")
