"""Alembic migrations (run on PostgreSQL and SQLite): `hub db upgrade`."""
