"""Answers the receivers give: JSON bodies with a machine-readable reason."""
from __future__ import annotations

from flask import jsonify

JSON_HEADERS = {"Content-Type": "application/json"}


def error(status: int, reason: str, detail: str = ""):
    body = {"error": reason}
    if detail:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    return response


def accepted(result):
    # Every delivery gets this answer: built directly rather than through jsonify (measurably cheaper).
    body = b'{"accepted":%d,"duplicates":%d}\n' % (len(result.accepted), result.duplicates)
    return body, 200, JSON_HEADERS
