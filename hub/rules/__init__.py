"""Lead rules: scoring, grading, decay, MQL, segments, handoff and SLA."""
