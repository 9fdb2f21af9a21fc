"""outbox: waiting_key, at most one waiting row per key (rule evaluations coalesce per contact)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

from hub.models import OUTBOX_WAITING

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('waiting_key', sa.String(length=80), nullable=True))
    op.create_index('ux_outbox_waiting_key', 'outbox', ['workspace_id', 'waiting_key'], unique=True,
                    postgresql_where=sa.text(OUTBOX_WAITING), sqlite_where=sa.text(OUTBOX_WAITING))


def downgrade() -> None:
    op.drop_index('ux_outbox_waiting_key', table_name='outbox')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('waiting_key')
