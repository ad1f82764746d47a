"""accounts: confirmed e-mail addresses, a registration's link

Revision ID: 477e87584489
Revises: c9729462c3c7
Create Date: 2026-12-03 19:50:00.000000

A new account stays unconfirmed (and cannot log in) until its address's owner opens the
link sent on registering. Every account from before this revision counts as confirmed (since
it was created). Downgrading deletes the accounts still unconfirmed (and their reset links):
without the column they could log in, though nobody proved they own the address.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '477e87584489'
down_revision: str | None = 'c9729462c3c7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_confirmed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('confirmation_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('confirmation_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_users_confirmation_hash'), ['confirmation_hash'])

    op.execute('UPDATE users SET email_confirmed_at = created_at')


def downgrade() -> None:
    op.execute(
        'DELETE FROM password_resets WHERE user_id IN '
        '(SELECT id FROM users WHERE email_confirmed_at IS NULL)'
    )
    op.execute('DELETE FROM users WHERE email_confirmed_at IS NULL')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_users_confirmation_hash'), type_='unique')
        batch_op.drop_column('confirmation_expires_at')
        batch_op.drop_column('confirmation_hash')
        batch_op.drop_column('email_confirmed_at')
