"""rules: rule sets, lead scores, segment memberships, reps, assignments (with SLA deadline), lead effects

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
import hub.models

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hub.models.UTCDateTime(timezone=True)


def _workspace_fk():
    return sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE')


def _contact_fk():
    return sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='CASCADE')


def upgrade() -> None:
    op.create_table('rule_set',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'version')
    )
    op.create_table('lead_score',
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('decaying', sa.Float(), nullable=False),
    sa.Column('static', sa.Float(), nullable=False),
    sa.Column('fit_points', sa.Float(), nullable=False),
    sa.Column('contributions', sa.JSON(), nullable=False),
    sa.Column('decayed_at', UTC, nullable=False),
    sa.Column('evaluated_at', UTC, nullable=True),
    sa.Column('rule_version', sa.Integer(), nullable=True),
    sa.Column('recycled_at', UTC, nullable=True),
    sa.Column('recycle_reason', sa.Text(), nullable=True),
    _contact_fk(),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('contact_id')
    )
    op.create_index('ix_lead_score_ws', 'lead_score', ['workspace_id', 'contact_id'])
    op.create_table('segment_membership',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('segment', sa.String(length=100), nullable=False),
    sa.Column('entered_at', UTC, nullable=False),
    sa.Column('left_at', UTC, nullable=True),
    _contact_fk(),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_segment_membership_contact', 'segment_membership', ['contact_id', 'left_at'])
    op.create_index('ix_segment_membership_segment', 'segment_membership', ['workspace_id', 'segment', 'left_at'])
    op.create_table('rep',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('daily_cap', sa.Integer(), nullable=True),
    sa.Column('out_of_office_until', UTC, nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('rr_credit', sa.Float(), nullable=False),
    sa.Column('hubspot_owner_id', sa.String(length=64), nullable=True),
    sa.Column('salesforce_user_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'email')
    )
    op.create_table('assignment',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('rep_id', BigId, nullable=True),
    sa.Column('owner_email', sa.String(length=320), nullable=True),
    sa.Column('reason', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('assigned_at', UTC, nullable=False),
    sa.Column('due_at', UTC, nullable=True),
    sa.Column('closed_at', UTC, nullable=True),
    sa.Column('crm_refs', sa.JSON(), nullable=False),
    sa.Column('previous_id', BigId, nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    _contact_fk(),
    sa.ForeignKeyConstraint(['rep_id'], ['rep.id'], ondelete='SET NULL'),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'idempotency_key')
    )
    op.create_index('ix_assignment_sla', 'assignment', ['status', 'due_at'])
    op.create_index('ix_assignment_rep_day', 'assignment', ['rep_id', 'assigned_at'])
    op.create_index('ix_assignment_contact', 'assignment', ['contact_id'])
    op.create_table('lead_effect',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('done_at', UTC, nullable=True),
    _contact_fk(),
    _workspace_fk(),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'idempotency_key')
    )
    op.create_index('ix_lead_effect_status', 'lead_effect', ['status'])


def downgrade() -> None:
    op.drop_index('ix_lead_effect_status', table_name='lead_effect')
    op.drop_table('lead_effect')
    for name in ('ix_assignment_contact', 'ix_assignment_rep_day', 'ix_assignment_sla'):
        op.drop_index(name, table_name='assignment')
    op.drop_table('assignment')
    op.drop_table('rep')
    op.drop_index('ix_segment_membership_segment', table_name='segment_membership')
    op.drop_index('ix_segment_membership_contact', table_name='segment_membership')
    op.drop_table('segment_membership')
    op.drop_index('ix_lead_score_ws', table_name='lead_score')
    op.drop_table('lead_score')
    op.drop_table('rule_set')
