"""Typeform webhooks: `form_response` deliveries signed `sha256=` + base64 HMAC-SHA256 of the raw body.

No timestamp is signed, so a replay is stopped by deduplication on the response token. Answers
are mapped by `field.ref` (stable and set by the form's author), falling back to the answer type
for email and phone questions; unknown refs and hidden fields go to custom attributes.
"""
from __future__ import annotations

import logging

from hub.changes import ActivitySpec, ContactChange
from hub.exceptions import PayloadError
from webhooks.common import (
    FormAnswers,
    IncomingEvent,
    bounded_key,
    form_activity_kind,
    form_field_for,
    from_iso,
    hmac_sha256_b64,
    load_json,
    verify_hmac,
)

logger = logging.getLogger(__name__)

SOURCE = "typeform"
SIGNATURE_HEADER = "Typeform-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac_sha256_b64(secret, body)


def verify(request, secret: str) -> None:
    verify_hmac(signature(secret, request.get_data(cache=True)), request.headers.get(SIGNATURE_HEADER))


def parse(body: bytes) -> list[IncomingEvent]:
    document = load_json(body)
    if not isinstance(document, dict) or not document.get("event_type"):
        raise PayloadError("malformed_payload", "expected a Typeform webhook object with event_type")
    response = document.get("form_response")
    if not isinstance(response, dict):
        raise PayloadError("malformed_payload", "form_response is missing")
    # The token names the response; event_id names a delivery event. Either identifies a redelivery.
    identity = response.get("token") or document.get("event_id")
    if not identity:
        raise PayloadError("malformed_payload", "neither form_response.token nor event_id is present")
    return [IncomingEvent(source=SOURCE, kind=str(document["event_type"]),
                          dedupe_key=bounded_key(SOURCE, response.get("form_id"), identity),
                          payload=document, occurred_at=from_iso(response.get("submitted_at")))]


# --- handlers -------------------------------------------------------------------------------------

def _choice(answer: dict):
    choice = answer.get("choice") or {}
    return choice.get("label") or choice.get("other")


def _choices(answer: dict):
    choices = answer.get("choices") or {}
    labels = list(choices.get("labels") or [])
    return labels + ([choices["other"]] if choices.get("other") else [])


# answers[].type -> how its value is read (Typeform "JSON response explanation").
ANSWER_VALUES = {
    "text": lambda a: a.get("text"),
    "email": lambda a: a.get("email"),
    "phone_number": lambda a: a.get("phone_number"),
    "number": lambda a: a.get("number"),
    "boolean": lambda a: a.get("boolean"),
    "date": lambda a: a.get("date"),
    "url": lambda a: a.get("url"),
    "file_url": lambda a: a.get("file_url"),
    "choice": _choice,
    "choices": _choices,
    "payment": lambda a: a.get("payment"),
}
# When a ref is not a known field name, the question type still tells email and phone apart.
FIELD_BY_ANSWER_TYPE = {"email": "email", "phone_number": "phone"}


def _collect(response: dict) -> FormAnswers:
    answers, by_type_only = FormAnswers(), []
    for answer in response.get("answers") or []:
        read = ANSWER_VALUES.get(answer.get("type"))
        if read is None:
            continue
        question = answer.get("field") or {}
        ref = question.get("ref") or question.get("id") or ""
        by_type = FIELD_BY_ANSWER_TYPE.get(answer.get("type"))
        if by_type and form_field_for(ref) is None:
            by_type_only.append((by_type, ref, read(answer)))
        else:
            answers.add(ref, read(answer))
    # Type fallbacks come last so a question whose ref names the field always wins.
    for by_type, ref, value in by_type_only:
        answers.add(ref if by_type in answers.fields else by_type, value)
    for name, value in (response.get("hidden") or {}).items():
        answers.add(name, value)
    return answers.finish()


def form_response(payload: dict) -> list[ContactChange]:
    response = payload["form_response"]
    answers = _collect(response)
    definition = response.get("definition") or {}
    form_name = definition.get("title") or response.get("form_id")
    submitted_at = from_iso(response.get("submitted_at"))
    activity = ActivitySpec(kind=form_activity_kind(form_name), occurred_at=submitted_at,
                            properties={"form": form_name, "form_id": response.get("form_id"),
                                        "source": SOURCE, "response_token": response.get("token")})
    return [ContactChange(system="form", fields=answers.fields, consent=answers.consent, custom=answers.custom,
                          changed_at=submitted_at, activity=activity)]


HANDLERS = {"form_response": form_response}
