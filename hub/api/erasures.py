"""`POST /erasures`: a GDPR/CCPA erasure request, `{"email": ..}` or `{"contact_id": ..}` (hub.privacy)."""
from __future__ import annotations

from flask import g, jsonify
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import privacy
from hub.api import Problem, bp, json_body, validated
from hub.exceptions import InvalidValueError
from hub.runtime import current_runtime


class ErasureRequest(Schema):
    email = fields.String(load_default=None, validate=validate.Length(min=1, max=320))
    contact_id = fields.String(load_default=None, validate=validate.Length(min=1, max=32))

    @validates_schema
    def _exactly_one(self, data, **_kwargs):
        if (data.get("email") is None) == (data.get("contact_id") is None):
            raise ValidationError("give exactly one of email and contact_id")


@bp.post("/erasures")
def request_erasure():
    wanted = validated(ErasureRequest(), json_body())
    try:
        erased = privacy.erase_person(current_runtime(), g.workspace_id, **wanted)
    except InvalidValueError as exc:
        raise Problem(400, "invalid_email", str(exc)) from exc
    except privacy.UnknownContact as exc:
        raise Problem(404, "contact_not_found", str(exc)) from exc
    return jsonify({"erased_contact_id": erased.contact_id, "subjects_remembered": erased.subjects_remembered})
