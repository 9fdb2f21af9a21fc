"""Answers the receivers give: JSON bodies with a machine-readable reason."""
from __future__ import annotations

from flask import jsonify


def error(status: int, reason: str, detail: str = ""):
    body = {"error": reason}
    if detail:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    return response


def accepted(result):
    return jsonify({"accepted": len(result.accepted), "duplicates": result.duplicates}), 200
