"""The baseline for bench/ingest: a trivial Flask endpoint on the same path, under the same gunicorn
settings, that reads the body and answers the same JSON shape without verifying or storing anything."""
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/webhooks/hubspot")
def hubspot_webhook():
    request.get_data()
    return jsonify({"accepted": 10, "duplicates": 0})
