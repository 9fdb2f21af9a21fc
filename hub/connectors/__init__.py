"""Connectors to external systems, one module per kind, registered by explicit import in `registry`."""
