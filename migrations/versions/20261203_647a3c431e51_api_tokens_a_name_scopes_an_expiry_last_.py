"""API tokens: a name, scopes, an expiry, last use and revocation

Revision ID: 647a3c431e51
Revises: e0dc6e739c93
Create Date: 2026-12-03 17:46:35.072556

A token made before this revision never expired and carried every right; it is revoked
here (no scopes, expired and revoked now), so its owner sees it listed and makes a new one.
Downgrading deletes every token: the older schema could not hold back a revoked, expired or
narrowly scoped token from full rights.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '647a3c431e51'
down_revision: str | None = 'e0dc6e739c93'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_NAME = 'Made before tokens had scopes and an expiry'


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_by', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_api_tokens_revoked_by_users'), 'users', ['revoked_by'], ['id'])

    tokens = sa.table(
        'api_tokens',
        sa.column('name', sa.String),
        sa.column('scopes', sa.JSON),
        sa.column('expires_at', sa.DateTime(timezone=True)),
        sa.column('revoked_at', sa.DateTime(timezone=True)),
    )
    op.execute(
        tokens.update().values(
            name=LEGACY_NAME, scopes=[], expires_at=sa.func.now(), revoked_at=sa.func.now()
        )
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('name', existing_type=sa.String(length=100), nullable=False)
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column(
            'expires_at', existing_type=sa.DateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    op.execute(sa.table('api_tokens').delete())
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_api_tokens_revoked_by_users'), type_='foreignkey')
        batch_op.drop_column('revoked_by')
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('scopes')
        batch_op.drop_column('name')
