"""sync tables: pending pushes, echo ledger, CRM snapshots, sync cursors

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
import hub.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pending_push",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspace.id", ondelete="CASCADE"), nullable=False),
        sa.Column("contact_id", sa.String(32), sa.ForeignKey("contact.id", ondelete="CASCADE"), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("origins", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("due_at", hub.models.UTCDateTime(), nullable=False),
        sa.Column("claimed_until", hub.models.UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", hub.models.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "contact_id"),
    )
    op.create_index("ix_pending_push_due", "pending_push", ["workspace_id", "due_at"])
    op.create_table(
        "echo_ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspace.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("contact_id", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=True),
        sa.Column("field", sa.String(60), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        sa.Column("written_at", hub.models.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_echo_ledger_lookup", "echo_ledger", ["workspace_id", "system", "contact_id", "field"])
    op.create_index("ix_echo_ledger_time", "echo_ledger", ["written_at"])
    op.create_table(
        "crm_snapshot",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspace.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("field_times", sa.JSON(), nullable=False),
        sa.Column("previous", sa.JSON(), nullable=False),
        sa.Column("record_time_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", hub.models.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "system", "object_id"),
    )
    op.create_table(
        "sync_cursor",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspace.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("finished_at", hub.models.UTCDateTime(), nullable=True),
        sa.Column("updated_at", hub.models.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "system", "name"),
    )


def downgrade() -> None:
    op.drop_table("sync_cursor")
    op.drop_table("crm_snapshot")
    op.drop_index("ix_echo_ledger_time", table_name="echo_ledger")
    op.drop_index("ix_echo_ledger_lookup", table_name="echo_ledger")
    op.drop_table("echo_ledger")
    op.drop_index("ix_pending_push_due", table_name="pending_push")
    op.drop_table("pending_push")
