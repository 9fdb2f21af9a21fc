"""processing: per-field change sources, event -> contact, identity tombstones

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import hub.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contact') as batch:
        batch.add_column(sa.Column('field_sources', sa.JSON(), nullable=True))
    with op.batch_alter_table('event') as batch:
        batch.add_column(sa.Column('contact_id', sa.String(length=32), nullable=True))
        batch.create_index('ix_event_contact_id', ['contact_id'])
    op.create_table('identity_tombstone',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('system', sa.String(length=20), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('contact_id', sa.String(length=32), nullable=True),
    sa.Column('deleted_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_at', hub.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'system', 'external_id')
    )


def downgrade() -> None:
    op.drop_table('identity_tombstone')
    with op.batch_alter_table('event') as batch:
        batch.drop_index('ix_event_contact_id')
        batch.drop_column('contact_id')
    with op.batch_alter_table('contact') as batch:
        batch.drop_column('field_sources')
