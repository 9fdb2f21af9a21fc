"""Prometheus metrics. Set PROMETHEUS_MULTIPROC_DIR to aggregate gunicorn workers and RQ work horses.

Counters and histograms live in process memory (or the multiprocess folder) and never touch Redis
or the database, so the request path keeps counting while either is down. Gauges are read from
Redis and the database when /metrics is scraped.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, multiprocess

EVENTS_RECEIVED = Counter("hub_events_received_total", "Events stored", ["source"])
EVENTS_DEDUPED = Counter("hub_events_deduped_total", "Deliveries of events already stored", ["source"])
EVENTS_REJECTED = Counter("hub_events_rejected_total", "Deliveries refused", ["source", "reason"])
INGEST_LATENCY = Histogram("hub_ingest_seconds", "Receiver time from request to commit", ["source"])
PROCESSING_LATENCY = Histogram(
    "hub_processing_seconds", "Time from an event's receipt to its processed commit",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
EVENTS_PROCESSED = Counter("hub_events_processed_total", "Events processed by workers", ["status"])
EVENTS_IGNORED = Counter("hub_events_ignored_total", "Events stored but not applied, by reason", ["source", "reason"])
# Set at scrape time by whichever process answers it: the most recent value is the true one.
QUEUE_DEPTH = Gauge("hub_queue_depth", "Jobs waiting in the RQ queues", multiprocess_mode="mostrecent")
FAILED_JOBS = Gauge("hub_queue_failed_jobs", "Jobs in RQ's failed registry", multiprocess_mode="mostrecent")
OUTBOX_PENDING = Gauge("hub_outbox_pending", "Outbox rows not yet done", multiprocess_mode="mostrecent")
OUTBOX_OLDEST_SECONDS = Gauge("hub_outbox_oldest_seconds", "Age of the oldest outbox row not yet done",
                              multiprocess_mode="mostrecent")
EVENTS_FAILED = Gauge("hub_events_failed", "Events that ran out of attempts (see `hub replay --failed`)",
                      multiprocess_mode="mostrecent")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
