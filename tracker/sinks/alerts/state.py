"""Alert state in the database: one row per job, one row per flip, one per delivery.

Healthchecks' model: every change of a job's state is a *flip* row, written in the
same transaction as the job's new state (optimistic: ``UPDATE … WHERE version = :v``,
so two replicas can't both flip the same job). A flip is then *claimed* with a
conditional update (``processed_at IS NULL``) by exactly one replica, which records
one *delivery* row per channel and sends. A restart or a second replica therefore
never claims a flip twice; deliveries unfinished at a clean shutdown (queued,
retrying, or still being sent) are *released*, and the next instance (or another
replica) takes and sends them. Those a crashed instance left unfinished are taken
over once that instance is known to be dead (see :meth:`AlertStore.resumable`).

Delivery statuses: ``queued`` → ``sending`` → ``sent`` | ``failed`` | ``retrying`` →
…; ``dropped`` (queue full), ``skipped`` (channel inactive), ``released`` (handed back
at shutdown). Delivery is at least once: an attempt interrupted by a shutdown or a
crash is made again, and may then reach its receiver twice (with the same alert id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    false,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..database.schema import UTCDateTime, instances, metadata
from ..storable import storable_text
from .model import Alert, AlertKind, JobHealth
from .policy import Health

JOBS_TABLE = "tracker_alert_jobs"
FLIPS_TABLE = "tracker_alert_flips"
DELIVERIES_TABLE = "tracker_alert_deliveries"

alert_jobs = Table(
    JOBS_TABLE,
    metadata,
    Column("job_id", String(255), primary_key=True),
    Column("job_name", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("kind", String(16)),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("recent", String(100), nullable=False, server_default=""),
    Column("down_since", UTCDateTime()),
    Column("last_alert_at", UTCDateTime()),
    Column("last_run_id", String(36)),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_tracker_alert_jobs_updated_at", "updated_at"),
)

alert_flips = Table(
    FLIPS_TABLE,
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(255), nullable=False),
    Column("job_name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("old_state", String(16), nullable=False),
    Column("new_state", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("reminder", Boolean, nullable=False, server_default=false()),
    Column("payload", JSON, nullable=False),
    Column("processed_at", UTCDateTime()),
    Column("processed_by", String(255)),
    Index("ix_tracker_alert_flips_job_id_created_at", "job_id", "created_at"),
)
Index(
    "ix_tracker_alert_flips_unprocessed",
    alert_flips.c.created_at,
    postgresql_where=alert_flips.c.processed_at.is_(None),
    sqlite_where=alert_flips.c.processed_at.is_(None),
)

alert_deliveries = Table(
    DELIVERIES_TABLE,
    metadata,
    Column("flip_id", String(36), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("instance", String(255)),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("error", Text),
    Index("ix_tracker_alert_deliveries_status", "status"),
)

QUEUED, SENDING, RETRYING, RELEASED = "queued", "sending", "retrying", "released"
SENT, FAILED, DROPPED, SKIPPED = "sent", "failed", "dropped", "skipped"
_UNFINISHED = (QUEUED, SENDING, RETRYING)
"""Statuses of a delivery its owner still has to finish (or hand back)."""
_MAX_ERROR = 1_000


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery to (re)start: the flip's alert and the channel it goes to."""

    alert: Alert
    channel: str
    attempts: int = 0


def _health(row: Any) -> Health:
    return Health(
        job_id=row.job_id,
        job_name=row.job_name,
        state=JobHealth(row.state),
        kind=AlertKind(row.kind) if row.kind else None,
        consecutive_failures=row.consecutive_failures,
        recent=row.recent or "",
        down_since=row.down_since,
        last_alert_at=row.last_alert_at,
        last_run_id=row.last_run_id,
        version=row.version,
        stored=True,
    )


def _values(health: Health, now: datetime) -> dict[str, Any]:
    return {
        "job_name": health.job_name[:255],
        "state": health.state.value,
        "kind": health.kind.value if health.kind else None,
        "consecutive_failures": health.consecutive_failures,
        "recent": health.recent,
        "down_since": health.down_since,
        "last_alert_at": health.last_alert_at,
        "last_run_id": health.last_run_id,
        "updated_at": now,
    }


class AlertStore:
    """Reads and writes the alert tables for one tracker instance."""

    def __init__(self, engine: Engine, instance: str) -> None:
        self.engine = engine
        self.instance = instance

    # -- job state -----------------------------------------------------------------

    def load_all(self) -> dict[str, Health]:
        with self.engine.connect() as conn:
            return {row.job_id: _health(row) for row in conn.execute(select(alert_jobs))}

    def load_changed(self, since: datetime) -> list[Health]:
        query = select(alert_jobs).where(alert_jobs.c.updated_at >= since)
        with self.engine.connect() as conn:
            return [_health(row) for row in conn.execute(query)]

    def load_many(self, job_ids: Sequence[str]) -> list[Health]:
        """The stored states of those of ``job_ids`` that have one (500 ids a query)."""
        found: list[Health] = []
        with self.engine.connect() as conn:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                query = select(alert_jobs).where(alert_jobs.c.job_id.in_(chunk))
                found.extend(_health(row) for row in conn.execute(query))
        return found

    def load(self, job_id: str) -> Health | None:
        query = select(alert_jobs).where(alert_jobs.c.job_id == job_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _health(row)

    def save(self, health: Health, alerts: Sequence[tuple[Alert, bool]], now: datetime) -> bool:
        """Write ``health`` and its new flips in one transaction.

        ``alerts`` pairs each flip's alert with whether it is to be notified (a flip
        that is not is stored already processed). Returns ``False``, writing nothing,
        when another writer changed the job first (reload and try again).
        """
        values = _values(health, now)
        try:
            with self.engine.begin() as conn:
                if health.stored:
                    result = conn.execute(
                        update(alert_jobs)
                        .where(
                            and_(
                                alert_jobs.c.job_id == health.job_id,
                                alert_jobs.c.version == health.version,
                            )
                        )
                        .values(version=health.version + 1, **values)
                    )
                    if result.rowcount != 1:
                        conn.rollback()
                        return False
                else:
                    conn.execute(
                        insert(alert_jobs).values(job_id=health.job_id, version=1, **values)
                    )
                if alerts:
                    conn.execute(
                        insert(alert_flips),
                        [
                            {
                                "id": alert.id,
                                "job_id": alert.job_id,
                                "job_name": alert.job_name[:255],
                                "created_at": alert.at,
                                "old_state": alert.previous_state.value,
                                "new_state": alert.state.value,
                                "kind": alert.kind.value,
                                "severity": alert.severity.value,
                                "reminder": alert.reminder,
                                "payload": alert.to_payload(),
                                "processed_at": None if notify else now,
                                "processed_by": None if notify else self.instance,
                            }
                            for alert, notify in alerts
                        ],
                    )
        except IntegrityError:  # another replica inserted the job's row first
            return False
        health.version += 1
        health.stored = True
        return True

    # -- flips ---------------------------------------------------------------------

    def claim(self, flip_id: str, channels: Iterable[str], now: datetime) -> bool:
        """Take a flip for delivery (only one instance ever succeeds) and queue its deliveries."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(alert_flips)
                .where(and_(alert_flips.c.id == flip_id, alert_flips.c.processed_at.is_(None)))
                .values(processed_at=now, processed_by=self.instance)
            )
            if result.rowcount != 1:
                return False
            rows = [
                {
                    "flip_id": flip_id,
                    "channel": name,
                    "status": QUEUED,
                    "attempts": 0,
                    "instance": self.instance,
                    "updated_at": now,
                }
                for name in channels
            ]
            if rows:
                conn.execute(insert(alert_deliveries), rows)
        return True

    def unprocessed(self, older_than: datetime, limit: int = 100) -> list[tuple[str, Alert]]:
        """Flips nobody claimed (their creator died before it could)."""
        query = (
            select(alert_flips.c.id, alert_flips.c.payload)
            .where(
                and_(alert_flips.c.processed_at.is_(None), alert_flips.c.created_at < older_than)
            )
            .order_by(alert_flips.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(row.id, Alert.from_payload(row.payload)) for row in conn.execute(query)]

    # -- deliveries ----------------------------------------------------------------

    def set_delivery(
        self,
        flip_id: str,
        channel: str,
        status: str,
        *,
        attempts: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record the progress of a delivery while it is this instance's.

        Once handed back (``released``) or taken over by another instance, a delivery
        is no longer written to from here: a late outcome of an interrupted attempt
        must not overwrite its new owner's.
        """
        values: dict[str, Any] = {"status": status, "updated_at": datetime.now(UTC)}
        if attempts is not None:
            values["attempts"] = attempts
        if error is not None:  # a channel's error text: it may hold a NUL or a lone surrogate
            values["error"] = storable_text(error[:_MAX_ERROR])
        with self.engine.begin() as conn:
            conn.execute(
                update(alert_deliveries)
                .where(
                    and_(
                        alert_deliveries.c.flip_id == flip_id,
                        alert_deliveries.c.channel == channel,
                        alert_deliveries.c.instance == self.instance,
                        alert_deliveries.c.status != RELEASED,
                    )
                )
                .values(**values)
            )

    def release(self, deliveries: Iterable[tuple[str, str]]) -> None:
        """Hand back deliveries this instance could not finish before shutting down.

        Queued and retrying ones, and one still being sent: its attempt may yet reach
        the receiver, so the next sender may deliver it a second time (same alert id).
        """
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for flip_id, channel in deliveries:
                conn.execute(
                    update(alert_deliveries)
                    .where(
                        and_(
                            alert_deliveries.c.flip_id == flip_id,
                            alert_deliveries.c.channel == channel,
                            alert_deliveries.c.instance == self.instance,
                            alert_deliveries.c.status.in_(_UNFINISHED),
                        )
                    )
                    .values(status=RELEASED, updated_at=now)
                )

    def resumable(
        self,
        channels: Sequence[str],
        stale_before: datetime,
        started_at: datetime,
        limit: int = 100,
    ) -> list[tuple[str, str, str, str | None, int, Alert]]:
        """Deliveries to take over: released ones, and ones a dead instance left unfinished.

        An instance is dead once its row in ``tracker_instances`` is marked stopped (a
        clean shutdown, or a live writer found its heartbeat stale or its process gone);
        its deliveries still queued, retrying or being sent, untouched since
        ``stale_before``, are taken over. A live instance's deliveries are never taken,
        except this instance id's own from before ``started_at`` (this start): a
        process given a fixed ``instance`` that crashed and started again.

        Rows: (flip id, channel, status, instance, attempts, alert).
        """
        if not channels:
            return []
        d = alert_deliveries
        alive = select(instances.c.instance).where(instances.c.stopped_at.is_(None))
        query = (
            select(
                d.c.flip_id,
                d.c.channel,
                d.c.status,
                d.c.instance,
                d.c.attempts,
                alert_flips.c.payload,
            )
            .join(alert_flips, alert_flips.c.id == d.c.flip_id)
            .where(
                d.c.channel.in_(list(channels)),
                or_(
                    d.c.status == RELEASED,
                    and_(
                        d.c.status.in_(_UNFINISHED),
                        d.c.updated_at < stale_before,
                        d.c.instance != self.instance,
                        d.c.instance.not_in(alive),
                    ),
                    and_(
                        d.c.status.in_(_UNFINISHED),
                        d.c.instance == self.instance,
                        d.c.updated_at < started_at,
                    ),
                ),
            )
            .order_by(d.c.updated_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                (
                    r.flip_id,
                    r.channel,
                    r.status,
                    r.instance,
                    r.attempts,
                    Alert.from_payload(r.payload),
                )
                for r in conn.execute(query)
            ]

    def take(self, flip_id: str, channel: str, status: str, instance: str | None) -> bool:
        """Claim one resumable delivery (conditional: only one instance succeeds)."""
        d = alert_deliveries
        owner = d.c.instance.is_(None) if instance is None else d.c.instance == instance
        with self.engine.begin() as conn:
            result = conn.execute(
                update(d)
                .where(
                    and_(
                        d.c.flip_id == flip_id, d.c.channel == channel, d.c.status == status, owner
                    )
                )
                .values(status=QUEUED, instance=self.instance, updated_at=datetime.now(UTC))
            )
            return result.rowcount == 1

    def deliveries(self, flip_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery rows (newest flips first), for inspection and tests."""
        query = select(alert_deliveries).order_by(alert_deliveries.c.flip_id.desc())
        if flip_id is not None:
            query = query.where(alert_deliveries.c.flip_id == flip_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def flips(self, job_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Flip rows, newest first."""
        query = (
            select(alert_flips)
            .order_by(alert_flips.c.created_at.desc(), alert_flips.c.id.desc())
            .limit(limit)
        )
        if job_id is not None:
            query = query.where(alert_flips.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def prune(self, older_than: timedelta) -> int:
        """Delete processed flips (and their deliveries) older than ``older_than``."""
        cutoff = datetime.now(UTC) - older_than
        old = (
            select(alert_flips.c.id)
            .where(and_(alert_flips.c.created_at < cutoff, alert_flips.c.processed_at.is_not(None)))
            .limit(1_000)
        )
        total = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(old).scalars())
                if not ids:
                    return total
                conn.execute(delete(alert_deliveries).where(alert_deliveries.c.flip_id.in_(ids)))
                conn.execute(delete(alert_flips).where(alert_flips.c.id.in_(ids)))
            total += len(ids)
