"""The audit trail: who did what to which job, when, and the job before and after.

One row per management action in ``tracker_audit`` (migration ``0002_audit``), kept
apart from run history and from APScheduler's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    select,
)

from ...sinks.database.schema import UTCDateTime, metadata
from ...sinks.storable import ID_LENGTH, storable_text

AUDIT_TABLE = "tracker_audit"

audit_log = Table(
    AUDIT_TABLE,
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("client", String(255)),
    Column("action", String(32), nullable=False),
    Column("job_id", String(255)),
    Column("before_state", JSON),
    Column("after_state", JSON),
    Column("detail", Text),
    Index("ix_tracker_audit_at", "at"),
    Index("ix_tracker_audit_job_id_id", "job_id", "id"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """One management action."""

    actor: str
    """Who: the name of the bearer token used (``api`` for ``TRACKER_API_TOKEN``)."""
    action: str
    """What: ``run``, ``pause``, ``resume``, ``reschedule``, ``remove``."""
    job_id: str | None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    client: str | None = None
    """The client's address, as the server saw it."""
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: int | None = None


def _storable(text: str | None, limit: int | None = None) -> str | None:
    """Text as the audit table holds it (a job id past 255 characters, a NUL: see
    :func:`~tracker.sinks.storable.storable_text`); ``None`` stays ``None``."""
    return None if text is None else storable_text(text, limit)


class AuditLog:
    """Writes and reads the audit trail on the tracker's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, entry: AuditEntry) -> int:
        """Store ``entry``; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(audit_log).values(
                    at=entry.at,
                    actor=storable_text(entry.actor, ID_LENGTH),
                    client=_storable(entry.client, ID_LENGTH),
                    action=entry.action,
                    job_id=_storable(entry.job_id, ID_LENGTH),
                    before_state=dict(entry.before) if entry.before is not None else None,
                    after_state=dict(entry.after) if entry.after is not None else None,
                    detail=_storable(entry.detail),
                )
            )
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def entries(
        self,
        *,
        job_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """Entries matching the filters, newest first; ``before_id`` is the keyset cursor.

        ``job_id`` and ``actor`` match as :meth:`write` stores them (a NUL character or a lone
        surrogate as U+FFFD, cut past 255 characters), so a filter finds what was written."""
        t = audit_log
        conditions = []
        if job_id is not None:
            conditions.append(t.c.job_id == _storable(job_id, ID_LENGTH))
        if action is not None:
            conditions.append(t.c.action == action)
        if actor is not None:
            conditions.append(t.c.actor == _storable(actor, ID_LENGTH))
        if since is not None:
            conditions.append(t.c.at >= since)
        if until is not None:
            conditions.append(t.c.at < until)
        if before_id is not None:
            conditions.append(t.c.id < before_id)
        query = select(t).where(*conditions).order_by(t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(
                id=row["id"],
                at=row["at"],
                actor=row["actor"],
                client=row["client"],
                action=row["action"],
                job_id=row["job_id"],
                before=row["before_state"],
                after=row["after_state"],
                detail=row["detail"],
            )
            for row in rows
        ]
