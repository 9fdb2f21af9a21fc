"""Read the unified contact: its fields, score, grade and reasons, CRM records, segments, history.

`GET /contacts` lists a workspace's contacts (by id, cursor-paged; `?email=` finds one person),
`GET /contacts/<id>` returns one with its identities and open segments, and `GET /contacts/<id>/events`
lists the events applied to it (what, from where, when; payloads are never returned).
"""
from __future__ import annotations

from flask import g, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from hub.api import Problem, bp, validated
from hub.changes import CONTACT_FIELDS
from hub.db import transaction
from hub.exceptions import InvalidValueError
from hub.mappings import transforms
from hub.models import Contact, Event, Identity, SegmentMembership
from hub.runtime import current_runtime

MAX_PAGE = 200


class ListQuery(Schema):
    email = fields.String(load_default=None)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))
    after = fields.String(load_default=None, validate=validate.Length(max=32))


class HistoryQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))
    before = fields.Integer(load_default=None, validate=validate.Range(min=1))


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def contact_summary(contact: Contact) -> dict:
    summary = {"id": contact.id}
    summary.update({name: getattr(contact, name) for name in CONTACT_FIELDS})
    summary.update(score=contact.score, grade=contact.grade, score_reasons=contact.score_reasons or [],
                   mql=contact.mql, consent=contact.consent or {}, custom=contact.custom or {},
                   created_at=_iso(contact.created_at), updated_at=_iso(contact.updated_at))
    return summary


def normalised_email(value: str) -> str:
    try:
        return transforms.email(value)
    except InvalidValueError as exc:
        raise Problem(400, "invalid_email", str(exc)) from exc


@bp.get("/contacts")
def list_contacts():
    query = validated(ListQuery(), request.args)
    statement = select(Contact).where(Contact.workspace_id == g.workspace_id).order_by(Contact.id)
    if query["email"] is not None:
        statement = statement.where(Contact.email == normalised_email(query["email"]))
    if query["after"]:
        statement = statement.where(Contact.id > query["after"])
    with transaction(current_runtime().engine) as session:
        found = session.scalars(statement.limit(query["limit"] + 1)).all()
    page = found[:query["limit"]]
    following = page[-1].id if len(found) > query["limit"] else None
    return jsonify({"contacts": [contact_summary(c) for c in page], "next_after": following})


def _contact(session, contact_id: str) -> Contact:
    contact = session.get(Contact, contact_id) if len(contact_id) <= 32 else None
    if contact is None or contact.workspace_id != g.workspace_id:     # another workspace's id is not found
        raise Problem(404, "contact_not_found", f"no contact {contact_id} in this workspace")
    return contact


@bp.get("/contacts/<contact_id>")
def get_contact(contact_id: str):
    with transaction(current_runtime().engine) as session:
        contact = _contact(session, contact_id)
        identities = session.scalars(select(Identity).where(Identity.contact_id == contact.id)
                                     .order_by(Identity.system, Identity.external_id)).all()
        segments = session.scalars(select(SegmentMembership).where(
            SegmentMembership.contact_id == contact.id, SegmentMembership.left_at.is_(None))
            .order_by(SegmentMembership.segment)).all()
        body = contact_summary(contact)
        body["identities"] = [{"system": i.system, "external_id": i.external_id, "object_type": i.object_type}
                              for i in identities]
        body["segments"] = [{"segment": s.segment, "entered_at": _iso(s.entered_at)} for s in segments]
    return jsonify(body)


@bp.get("/contacts/<contact_id>/events")
def contact_events(contact_id: str):
    query = validated(HistoryQuery(), request.args)
    statement = select(Event).order_by(Event.id.desc()).limit(query["limit"] + 1)
    if query["before"]:
        statement = statement.where(Event.id < query["before"])
    with transaction(current_runtime().engine) as session:
        contact = _contact(session, contact_id)
        found = session.scalars(statement.where(Event.workspace_id == g.workspace_id,
                                                Event.contact_id == contact.id)).all()
    page = found[:query["limit"]]
    return jsonify({
        "events": [{"id": e.id, "source": e.source, "kind": e.kind, "status": e.status,
                    "occurred_at": _iso(e.occurred_at), "received_at": _iso(e.received_at),
                    "processed_at": _iso(e.processed_at), "attempts": e.attempts} for e in page],
        "next_before": page[-1].id if len(found) > query["limit"] else None,
    })
