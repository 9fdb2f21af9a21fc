"""What processing asks of a workspace's set-up several times per event, read once per transaction
or once per job: the CRMs it has connected with their (non-secret) settings (echo markers, push
targets) and its field map (echo judgement, owner rules).

Answers are kept in `session.info` for the life of the transaction's session; inside
`once_per_job()` (hub.sync.jobs.one_job wraps every event, sync and rules job in it) they are kept
for the whole job, whose events or rows each run in their own transaction. A job runs for seconds
at most: a change an admin makes meanwhile applies from the next one.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from sqlalchemy import select

from hub.mappings import fields as field_map
from hub.models import Connection, Workspace

_CACHE_KEY = "hub.connected"
_MAPPING_KEY = "hub.mapping"
_job_answers: ContextVar[dict | None] = ContextVar("hub.connected.job", default=None)


@contextmanager
def once_per_job() -> Iterator[None]:
    """Within this block, every transaction shares one set of answers."""
    token = _job_answers.set({})
    try:
        yield
    finally:
        _job_answers.reset(token)


def _answers(session, key: str) -> dict:
    shared = _job_answers.get()
    return (shared if shared is not None else session.info).setdefault(key, {})


def connections(session, workspace_id: str) -> dict[str, dict]:
    """CRM kind -> Connection.settings for the workspace."""
    cache = _answers(session, _CACHE_KEY)
    if workspace_id not in cache:
        cache[workspace_id] = {kind: settings or {} for kind, settings in session.execute(
            select(Connection.kind, Connection.settings).where(Connection.workspace_id == workspace_id))}
    return cache[workspace_id]


def settings_of(session, workspace_id: str, kind: str) -> dict:
    return connections(session, workspace_id).get(kind, {})


def workspace_mapping(session, workspace_id: str) -> field_map.Mapping:
    """The workspace's field map (defaults plus its `hub mapping` overrides)."""
    cache = _answers(session, _MAPPING_KEY)
    if workspace_id not in cache:
        workspace = session.get(Workspace, workspace_id)
        cache[workspace_id] = field_map.load_mapping(workspace.settings if workspace else {})
    return cache[workspace_id]
