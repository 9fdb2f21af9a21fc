"""SQLAlchemy 2 models: the canonical model of DESIGN.md. Every row belongs to one workspace."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Workspace(Base):
    __tablename__ = "workspace"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Connection(Base):
    """A connected CRM account (HubSpot portal, Salesforce org); credentials are Fernet-encrypted."""

    __tablename__ = "connection"
    __table_args__ = (UniqueConstraint("workspace_id", "kind"), Index("ix_connection_account", "kind", "account_id"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))            # hubspot | salesforce
    account_id: Mapped[str | None] = mapped_column(String(64))  # portal id | organization id
    source_key: Mapped[str] = mapped_column(String(64), unique=True)  # webhook path key
    credentials: Mapped[str] = mapped_column(Text)           # Fernet token of a JSON object
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Source(Base):
    """A form or store that posts signed webhooks; its secret is Fernet-encrypted."""

    __tablename__ = "source"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))            # typeform | webflow | shopify | woocommerce | generic | html
    source_key: Mapped[str] = mapped_column(String(64), unique=True)
    secret: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Contact(Base):
    """The canonical contact: one per person per workspace."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("workspace_id", "email"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    mobile_phone: Mapped[str | None] = mapped_column(String(32))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(2))
    state: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    website: Mapped[str | None] = mapped_column(String(255))
    company_size: Mapped[int | None] = mapped_column(Integer)
    industry: Mapped[str | None] = mapped_column(String(100))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(50))
    owner: Mapped[str | None] = mapped_column(String(320))   # owner's email
    consent: Mapped[dict] = mapped_column(JSON, default=dict)  # {"email": {"granted": true, "source": .., "at": ..}}
    score: Mapped[float] = mapped_column(Float, default=0.0)
    grade: Mapped[str | None] = mapped_column(String(2))
    score_reasons: Mapped[list] = mapped_column(JSON, default=list)
    mql: Mapped[bool] = mapped_column(Boolean, default=False)
    custom: Mapped[dict] = mapped_column(JSON, default=dict)
    field_updated_at: Mapped[dict] = mapped_column(JSON, default=dict)  # field -> epoch ms of the value's change
    field_sources: Mapped[dict | None] = mapped_column(JSON, default=dict)  # field -> {"system", "event"} (tie-break)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Identity(Base):
    """(workspace, system, external id) -> contact."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("workspace_id", "system", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(20))          # hubspot | salesforce | form | shop | api
    external_id: Mapped[str] = mapped_column(String(128))
    object_type: Mapped[str | None] = mapped_column(String(40))  # e.g. Lead | Contact
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Erasure(Base):
    """One-way hashes of erased people, so a late event does not recreate them."""

    __tablename__ = "erasure"
    __table_args__ = (UniqueConstraint("workspace_id", "subject_hash"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    subject_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdentityTombstone(Base):
    """An identity the CRM deleted: late events about it are ignored; a later change (restore) relinks it."""

    __tablename__ = "identity_tombstone"
    __table_args__ = (UniqueConstraint("workspace_id", "system", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[str | None] = mapped_column(String(32))   # the contact it was unlinked from
    deleted_at_ms: Mapped[int] = mapped_column(BigInteger)        # vendor time of the deletion
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """A verified incoming event, stored raw before anything else happens."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("workspace_id", "dedupe_key"),
        Index("ix_event_status", "status"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))          # vendor: hubspot, salesforce, typeform, ...
    kind: Mapped[str] = mapped_column(String(60))            # vendor event type
    dedupe_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending|processed|failed|ignored|malformed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    contact_id: Mapped[str | None] = mapped_column(String(32), index=True)  # the contact it was applied to


class Activity(Base):
    """Normalised behaviour used by scoring; one per (event, kind)."""

    __tablename__ = "activity"
    __table_args__ = (UniqueConstraint("workspace_id", "idempotency_key"), Index("ix_activity_contact", "contact_id", "occurred_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))            # form_submit | page_view | email_open | email_click | purchase | ...
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    properties: Mapped[dict] = mapped_column(JSON, default=dict)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("event.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str] = mapped_column(String(255))


class SyncLog(Base):
    """Every outbound call: target, object ids, request id, status, latency, error."""

    __tablename__ = "sync_log"
    __table_args__ = (Index("ix_sync_log_ws_time", "workspace_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(40))          # hubspot | salesforce | slack | ...
    operation: Mapped[str] = mapped_column(String(60))
    object_ids: Mapped[list] = mapped_column(JSON, default=list)
    request_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20))          # ok | error | partial | truncated | decision
    http_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


OUTBOX_WAITING = "waiting_key IS NOT NULL AND done_at IS NULL AND enqueued_at IS NULL"


class Outbox(Base):
    """Work committed with the events it concerns; the relay hands it to RQ.

    A row is done only when its job's effects are committed, so a lost job (Redis down,
    a worker killed) is handed out again once its lease runs out.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_ready", "done_at", "available_at"),
        # At most one waiting row (not yet handed to RQ) per key: work that covers everything up to
        # the moment it runs (a rule evaluation) is scheduled once however often it is asked for.
        Index("ux_outbox_waiting_key", "workspace_id", "waiting_key", unique=True,
              postgresql_where=text(OUTBOX_WAITING), sqlite_where=text(OUTBOX_WAITING)),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    job: Mapped[str] = mapped_column(String(60), default="process_events")
    payload: Mapped[dict] = mapped_column(JSON)              # {"event_ids": [...]}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    waiting_key: Mapped[str | None] = mapped_column(String(80))


# --- lead rules (hub/rules; migration 0004) -----------------------------------------------------

class RuleSet(Base):
    """A workspace's rule document (scoring, grading, segments, MQL, routing, SLA); newest version is live."""

    __tablename__ = "rule_set"
    __table_args__ = (UniqueConstraint("workspace_id", "version"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadScore(Base):
    """A contact's score split for decay: `decaying` is halved every half-life by the periodic pass."""

    __tablename__ = "lead_score"
    __table_args__ = (Index("ix_lead_score_ws", "workspace_id", "contact_id"),)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    decaying: Mapped[float] = mapped_column(Float, default=0.0)
    static: Mapped[float] = mapped_column(Float, default=0.0)
    fit_points: Mapped[float] = mapped_column(Float, default=0.0)
    contributions: Mapped[dict] = mapped_column(JSON, default=dict)  # rule -> {"label", "points", "decays"}
    decayed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rule_version: Mapped[int | None] = mapped_column(Integer)
    recycled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)   # behaviour before this is not scored
    recycle_reason: Mapped[str | None] = mapped_column(Text)


class SegmentMembership(Base):
    """One stay of a contact in a segment; `left_at` is set when it leaves (history is kept)."""

    __tablename__ = "segment_membership"
    __table_args__ = (Index("ix_segment_membership_contact", "contact_id", "left_at"),
                      Index("ix_segment_membership_segment", "workspace_id", "segment", "left_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    segment: Mapped[str] = mapped_column(String(100))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Rep(Base):
    """A sales rep leads can be routed to (weighted round robin, daily cap, out of office)."""

    __tablename__ = "rep"
    __table_args__ = (UniqueConstraint("workspace_id", "email"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    daily_cap: Mapped[int | None] = mapped_column(Integer)
    out_of_office_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    rr_credit: Mapped[float] = mapped_column(Float, default=0.0)   # smooth weighted round robin state
    hubspot_owner_id: Mapped[str | None] = mapped_column(String(64))
    salesforce_user_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assignment(Base):
    """An MQL handed to a rep, with its SLA deadline; reassignment closes it and opens another."""

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("workspace_id", "idempotency_key"),
                      Index("ix_assignment_sla", "status", "due_at"),
                      Index("ix_assignment_rep_day", "rep_id", "assigned_at"),
                      Index("ix_assignment_contact", "contact_id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    rep_id: Mapped[int | None] = mapped_column(ForeignKey("rep.id", ondelete="SET NULL"))
    owner_email: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(100))          # account_owner | territory:<name> | round_robin
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|acted|reassigned|escalated|recycled
    idempotency_key: Mapped[str] = mapped_column(String(255))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    crm_refs: Mapped[dict] = mapped_column(JSON, default=dict)   # {"hubspot_task": id, "salesforce_task": id, ...}
    previous_id: Mapped[int | None] = mapped_column(BigId)
    note: Mapped[str | None] = mapped_column(Text)


class LeadEffect(Base):
    """A side effect a rule decided (handoff, notice, CRM field update, message), done at most once."""

    __tablename__ = "lead_effect"
    __table_args__ = (UniqueConstraint("workspace_id", "idempotency_key"), Index("ix_lead_effect_status", "status"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- two-way CRM sync (hub/sync; migration 0003) ----------------------------------------------------

class PendingPush(Base):
    """A contact whose canonical fields changed and wait to be pushed (coalesced per contact)."""

    __tablename__ = "pending_push"
    __table_args__ = (UniqueConstraint("workspace_id", "contact_id"), Index("ix_pending_push_due", "workspace_id", "due_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    fields: Mapped[list] = mapped_column(JSON, default=list)          # canonical fields changed (union)
    origins: Mapped[list] = mapped_column(JSON, default=list)         # systems the changes came from
    generation: Mapped[int] = mapped_column(Integer, default=0)       # bumped by every schedule
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EchoLedger(Base):
    """A value the hub wrote to a CRM field; the webhook that echoes it back is recognised by it."""

    __tablename__ = "echo_ledger"
    __table_args__ = (Index("ix_echo_ledger_lookup", "workspace_id", "system", "contact_id", "field"),
                      Index("ix_echo_ledger_time", "written_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(20))
    contact_id: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128))       # filled once the CRM id is known
    field: Mapped[str] = mapped_column(String(60))                    # canonical field
    value_hash: Mapped[str] = mapped_column(String(64))
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CrmSnapshot(Base):
    """What the hub last knew a CRM record to hold (canonical field -> the CRM's raw value)."""

    __tablename__ = "crm_snapshot"
    __table_args__ = (UniqueConstraint("workspace_id", "system", "object_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(20))
    object_id: Mapped[str] = mapped_column(String(128))
    values: Mapped[dict] = mapped_column(JSON, default=dict)
    field_times: Mapped[dict] = mapped_column(JSON, default=dict)      # field -> epoch ms
    previous: Mapped[dict] = mapped_column(JSON, default=dict)         # field -> the value it held before
    record_time_ms: Mapped[int | None] = mapped_column(BigInteger)      # Salesforce LastModifiedDate
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SyncCursor(Base):
    """Where a backfill or a polling loop resumes (opaque to the hub, given by the connector)."""

    __tablename__ = "sync_cursor"
    __table_args__ = (UniqueConstraint("workspace_id", "system", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspace.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(40))                       # backfill | poll
    cursor: Mapped[str | None] = mapped_column(Text)
    done: Mapped[int] = mapped_column(Integer, default=0)              # records handled so far
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
