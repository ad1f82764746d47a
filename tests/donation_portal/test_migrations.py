"""The schema only changes through alembic, and the models never drift from the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from consent.db import ConsentBase
from donation_portal.adapters import migrate
from donation_portal.adapters.db import make_engine


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, ConsentBase.metadata)
    assert differences == []


def test_migrations_downgrade_to_nothing_and_upgrade_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate.upgrade(empty_database_url)
        tables = set(inspect(engine).get_table_names())
        assert set(ConsentBase.metadata.tables) <= tables
        migrate.downgrade(empty_database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(empty_database_url)
        assert set(ConsentBase.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
