"""The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json` (no key needed)."""
from __future__ import annotations

from flask import jsonify

from hub.api import PREFIX, PROBLEM_TYPE, bp
from hub.api.contacts import MAX_PAGE
from hub.changes import CONTACT_FIELDS

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _json(schema_ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


CONTACT_ID = {"name": "contact_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 32}}
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}, "page size")

CONTACT_SCHEMA = {
    "type": "object",
    "required": ["id", "score", "mql"],
    "properties": {
        "id": {"type": "string"},
        **{name: {"type": ["integer", "null"]} if name == "company_size" else {"type": ["string", "null"]}
           for name in CONTACT_FIELDS},
        "score": {"type": "number"},
        "grade": {"type": ["string", "null"], "description": "fit grade A-F"},
        "score_reasons": {"type": "array", "items": {"type": "object"},
                          "description": "the rules that gave the most points"},
        "mql": {"type": "boolean"},
        "consent": {"type": "object"},
        "custom": {"type": "object"},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "lead hub API", "version": "1",
             "description": "The unified contact, its score and history; erasure requests. "
                            "Authenticate with `Authorization: Bearer <api key>` (printed by "
                            "`hub workspace create`). Errors are application/problem+json with a `reason`."},
    "servers": [{"url": PREFIX}],
    "security": [{"apiKey": []}],
    "paths": {
        "/contacts": {"get": {
            "summary": "List contacts, or find one by email",
            "parameters": [_query("email", {"type": "string"}, "exact address (normalised before matching)"),
                           LIMIT, _query("after", {"type": "string"}, "the `next_after` of the previous page")],
            "responses": {"200": _json("ContactPage", "a page of contacts"), "400": _PROBLEM, "401": _PROBLEM},
        }},
        "/contacts/{contact_id}": {"get": {
            "summary": "One contact with its CRM identities and current segments",
            "parameters": [CONTACT_ID],
            "responses": {"200": _json("ContactDetail", "the contact"), "401": _PROBLEM, "404": _PROBLEM},
        }},
        "/contacts/{contact_id}/events": {"get": {
            "summary": "Events applied to the contact, newest first (no payloads)",
            "parameters": [CONTACT_ID, LIMIT,
                           _query("before", {"type": "integer", "minimum": 1}, "the `next_before` of the previous page")],
            "responses": {"200": _json("EventPage", "a page of events"), "400": _PROBLEM, "401": _PROBLEM,
                          "404": _PROBLEM},
        }},
        "/erasures": {"post": {
            "summary": "Erase a person's data (GDPR/CCPA); only one-way hashes are kept",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErasureRequest"}}}},
            "responses": {"200": _json("ErasureResult", "erased"), "400": _PROBLEM, "401": _PROBLEM,
                          "404": _PROBLEM, "415": _PROBLEM},
        }},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
    "components": {
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        "responses": {"Problem": {"description": "an error (RFC 9457)", "content": {
            PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
        "schemas": {
            "Problem": {"type": "object", "required": ["status", "reason"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "reason": {"type": "string", "description": "machine-readable"}, "detail": {"type": "string"},
                "errors": {"type": "object", "description": "invalid_request: the bad fields"}}},
            "Contact": CONTACT_SCHEMA,
            "ContactDetail": {"allOf": [{"$ref": "#/components/schemas/Contact"}, {"type": "object", "properties": {
                "identities": {"type": "array", "items": {"type": "object", "properties": {
                    "system": {"type": "string"}, "external_id": {"type": "string"},
                    "object_type": {"type": ["string", "null"]}}}},
                "segments": {"type": "array", "items": {"type": "object", "properties": {
                    "segment": {"type": "string"}, "entered_at": {"type": "string", "format": "date-time"}}}}}}]},
            "ContactPage": {"type": "object", "properties": {
                "contacts": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}},
                "next_after": {"type": ["string", "null"]}}},
            "EventPage": {"type": "object", "properties": {
                "events": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "source": {"type": "string"}, "kind": {"type": "string"},
                    "status": {"type": "string"}, "occurred_at": {"type": ["string", "null"]},
                    "received_at": {"type": ["string", "null"]}, "processed_at": {"type": ["string", "null"]},
                    "attempts": {"type": "integer"}}}},
                "next_before": {"type": ["integer", "null"]}}},
            "ErasureRequest": {"type": "object", "description": "exactly one of email and contact_id",
                               "properties": {"email": {"type": "string"}, "contact_id": {"type": "string"}}},
            "ErasureResult": {"type": "object", "properties": {
                "erased_contact_id": {"type": ["string", "null"]}, "subjects_remembered": {"type": "integer"}}},
        },
    },
}


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(DOCUMENT)
