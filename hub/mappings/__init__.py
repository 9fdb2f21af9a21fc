"""Declarative field maps between the canonical contact and each CRM, and the transforms they use."""
