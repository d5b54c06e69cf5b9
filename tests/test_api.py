"""The HTTP API through a real app: real AsyncIOScheduler, real Tracker on SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import support
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from tracker import Execution, Origin, Status, Tracker, TrackerSettings, tracked_job
from tracker._ids import new_run_id
from tracker.integrations.fastapi import ApiSettings, tracker_lifespan, tracker_router

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@tracked_job
def nightly() -> None:
    """A daily job: never fires during a test, so its schedule is stable."""


@tracked_job
def quick() -> None:
    """A job the tests run on demand."""


@dataclass
class Api:
    client: TestClient
    tracker: Tracker
    scheduler: Any

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def audit(self) -> list[dict[str, Any]]:
        return list(self.client.get("/audit", headers=AUTH).json()["items"])


def _build(
    url: str, settings: ApiSettings, scheduler: Any | None = None, metrics: bool = True
) -> tuple[FastAPI, Tracker, Any]:
    tracker = Tracker(
        url,
        # (tests write made-up history for the app's jobs, dated 2024: not a downtime)
        settings=TrackerSettings(flush_interval=0.02, missed_while_down=False),
        registry=CollectorRegistry(),
        metrics=metrics,
    )
    scheduler = scheduler or AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(nightly, "cron", hour=2, minute=0, id="nightly")
    scheduler.add_job(quick, "interval", hours=1, id="quick")
    app = FastAPI(lifespan=tracker_lifespan(tracker, scheduler))
    app.include_router(tracker_router(settings=settings))
    return app, tracker, scheduler


@pytest.fixture
def make_api(sqlite_url: str) -> Iterator[Callable[..., Api]]:
    """Starts apps (lifespan included) on SQLite; closes them after the test."""
    stack: list[TestClient] = []

    def make(
        url: str | None = None, scheduler: Any | None = None, metrics: bool = True, **options: Any
    ) -> Api:
        options.setdefault("token", SecretStr(TOKEN))
        app, tracker, sched = _build(url or sqlite_url, ApiSettings(**options), scheduler, metrics)
        client = TestClient(app)
        client.__enter__()
        stack.append(client)
        return Api(client, tracker, sched)

    yield make
    for client in reversed(stack):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The app on a SQLite file, token TOKEN."""
    return make_api()


@pytest.fixture
def api_db(make_api: Callable[..., Api], database_url: str) -> Api:
    """The app on SQLite and on PostgreSQL."""
    return make_api(database_url)


def record_runs(
    tracker: Tracker,
    job_id: str,
    specs: list[tuple[Status, float | None]],
    start: datetime | None = None,
) -> list[Execution]:
    """Publish finished runs through the hub (one a minute, oldest first) and flush them."""
    start = start or datetime.now(UTC) - timedelta(minutes=len(specs) + 1)
    made = []
    for i, (status, duration) in enumerate(specs):
        at = start + timedelta(minutes=i)
        execution = Execution(
            run_id=new_run_id(),
            job_id=job_id,
            job_name=job_id,
            status=status,
            scheduled_at=at,
            started_at=at,
            finished_at=at + timedelta(seconds=duration or 0),
            duration_s=duration,
            lateness_s=0.0,
            error_type="ValueError" if status is Status.FAILED else None,
            error_message="boom" if status is Status.FAILED else None,
            traceback="Traceback (most recent call last):\nValueError: boom"
            if status is Status.FAILED
            else None,
        )
        tracker.hub.record(execution)
        made.append(execution)
    assert tracker.flush(10)
    return made


def schedule_of(job: dict[str, Any]) -> tuple[Any, ...]:
    return (job["trigger"], job["next_run_at"], job["paused"])


# -- monitoring ---------------------------------------------------------------------------


def test_metrics_is_an_exact_route_with_prometheus_content(api: Api) -> None:
    """GET /metrics answers 200 itself (no redirect) with the text format and the jobs' series
    (which the metrics sink's thread adds as soon as the started scheduler's jobs are known)."""
    response = api.client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    series = 'jobtracker_runs_total{job="nightly",status="failed"} 0'
    support.wait_for(lambda: series in api.client.get("/metrics").text, timeout=5)


def test_metrics_render_off_the_event_loop(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendering runs in a worker thread: no event loop is running where it happens."""
    seen: list[bool] = []
    sink = api.tracker.metrics
    assert sink is not None
    original = sink.render

    def render() -> bytes:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return original()

    monkeypatch.setattr(sink, "render", render)
    assert api.client.get("/metrics").status_code == 200
    assert seen == [False]


def test_metrics_turned_off_is_a_404_that_says_so(make_api: Callable[..., Api]) -> None:
    """A tracker built with metrics=False answers /metrics with 404 and the reason."""
    api = make_api(metrics=False)
    response = api.client.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {"detail": "Metrics are turned off on this tracker"}


def test_router_without_tracker_or_lifespan_says_what_is_missing() -> None:
    """tracker_router() with nothing to work on answers 503 naming the fix, not a 500."""
    app = FastAPI()
    app.include_router(tracker_router(settings=ApiSettings(token=SecretStr(TOKEN))))
    with TestClient(app) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert "pass them to tracker_router() or use tracker_lifespan()" in response.json()["detail"]


def test_health_reports_scheduler_database_and_pending(api: Api) -> None:
    """A running scheduler and a writable database make /health 200 with its figures."""
    body = api.client.get("/health").json()
    assert body["status"] == "ok"
    assert body["reasons"] == []
    assert body["scheduler"] == {"state": "running", "jobs": 2}
    assert body["database"]["healthy"] is True
    assert isinstance(body["records"]["pending"], int)


def test_health_is_503_when_the_scheduler_stopped(api: Api) -> None:
    """A stopped scheduler makes /health 503 and says so; job routes say so with 503."""
    api.scheduler.shutdown(wait=False)
    support.wait_for(lambda: not api.scheduler.running)
    response = api.client.get("/health")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["the scheduler is not running"]
    refused = api.client.post("/jobs/quick/run", headers=AUTH)
    assert refused.status_code == 503
    assert refused.json()["detail"].startswith("The scheduler is not running")
    assert api.client.get("/jobs/quick", headers=AUTH).status_code == 503
    listed = api.client.get("/jobs", headers=AUTH)  # not an empty list: the jobs still exist
    assert listed.status_code == 503
    assert listed.json()["detail"].startswith("The scheduler is not running")


def test_health_is_503_while_the_database_is_locked(api: Api, sqlite_url: str) -> None:
    """While SQLite is locked /health is 503 with the database error; it recovers after."""
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        record_runs_async(api.tracker, "nightly")

        def unhealthy() -> Any:
            response = api.client.get("/health")
            return response if response.status_code == 503 else None

        body = support.wait_for(unhealthy).json()
        assert "database is locked" in body["reasons"][0]
        assert body["database"]["healthy"] is False
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    support.wait_for(lambda: api.client.get("/health").status_code == 200)


def record_runs_async(tracker: Tracker, job_id: str) -> None:
    at = datetime.now(UTC)
    tracker.hub.record(
        Execution(
            run_id=new_run_id(),
            job_id=job_id,
            job_name=job_id,
            status=Status.SUCCEEDED,
            scheduled_at=at,
            finished_at=at,
        )
    )


# -- authentication -----------------------------------------------------------------------

PROTECTED = [
    ("GET", "/jobs"),
    ("GET", "/jobs/nightly"),
    ("POST", "/jobs/nightly/run"),
    ("POST", "/jobs/nightly/pause"),
    ("POST", "/jobs/nightly/resume"),
    ("PUT", "/jobs/nightly/schedule"),
    ("DELETE", "/jobs/nightly"),
    ("GET", "/executions"),
    ("GET", "/executions/some-run"),
    ("GET", "/audit"),
]
BODY = {"type": "interval", "hours": 2}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_need_the_bearer_token(api: Api, method: str, path: str) -> None:
    """No token: 401 + WWW-Authenticate; wrong token: 403; other scheme: 401; job intact."""
    before = api.job("nightly")
    body = BODY if method == "PUT" else None
    missing = api.client.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Missing bearer token" in missing.json()["detail"]
    wrong = api.client.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "The bearer token is not valid"}
    basic = api.client.request(method, path, json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert schedule_of(api.job("nightly")) == schedule_of(before)
    assert api.audit() == []


def test_named_tokens_are_the_actor_in_the_audit_trail(make_api: Callable[..., Api]) -> None:
    """A token from TRACKER_API_TOKENS is accepted and its name is recorded as who acted."""
    api = make_api(tokens={"alice": SecretStr("alice-token")})
    response = api.client.post(
        "/jobs/nightly/pause", headers={"Authorization": "Bearer alice-token"}
    )
    assert response.status_code == 200
    assert api.audit()[0]["actor"] == "alice"


def test_without_a_configured_token_management_refuses(make_api: Callable[..., Api]) -> None:
    """No token configured: protected routes answer 503 saying how to set one; /metrics works."""
    api = make_api(token=None)
    response = api.client.get("/jobs", headers=AUTH)
    assert response.status_code == 503
    assert "TRACKER_API_TOKEN" in response.json()["detail"]
    assert api.client.post("/jobs/nightly/pause").status_code == 503
    assert api.client.get("/metrics").status_code == 200
    assert api.client.get("/health").status_code == 200


def test_allow_unauthenticated_opens_the_api_for_demos(make_api: Callable[..., Api]) -> None:
    """allow_unauthenticated serves without a token and audits the actor as anonymous."""
    api = make_api(token=None, allow_unauthenticated=True)
    assert api.client.post("/jobs/nightly/pause").status_code == 200
    assert api.client.get("/audit").json()["items"][0]["actor"] == "anonymous"


def test_metrics_and_health_can_be_protected(make_api: Callable[..., Api]) -> None:
    """protect_metrics / protect_health put /metrics and /health behind the token."""
    api = make_api(protect_metrics=True, protect_health=True)
    for path in ("/metrics", "/health"):
        assert api.client.get(path).status_code == 401
        assert api.client.get(path, headers={"Authorization": "Bearer x"}).status_code == 403
        assert api.client.get(path, headers=AUTH).status_code == 200


# -- jobs ---------------------------------------------------------------------------------


def test_jobs_lists_schedule_and_options(api: Api) -> None:
    """GET /jobs shows each job's trigger, next run, paused, function and tracking."""
    body = api.client.get("/jobs", headers=AUTH).json()
    assert [j["id"] for j in body["items"]] == ["nightly", "quick"]
    job = body["items"][0]
    assert job["trigger"]["type"] == "cron"
    assert "hour='2'" in job["trigger"]["description"]
    nxt = datetime.fromisoformat(job["next_run_at"])
    assert (nxt.hour, nxt.minute) == (2, 0)
    assert job["paused"] is False
    assert job["tracked"] is True
    assert job["func"] == "test_api:nightly"
    assert job["last_run"] is None
    assert job["stats"]["runs"] == 0
    assert job["stats"]["success_rate"] is None
    assert body["next_cursor"] is None


def test_jobs_pages_with_a_cursor(api: Api) -> None:
    """limit=1 returns one job and a cursor to the next; the last page has none."""
    first = api.client.get("/jobs?limit=1", headers=AUTH).json()
    assert [j["id"] for j in first["items"]] == ["nightly"]
    second = api.client.get(f"/jobs?limit=1&cursor={first['next_cursor']}", headers=AUTH).json()
    assert [j["id"] for j in second["items"]] == ["quick"]
    assert second["next_cursor"] is None


def test_job_detail_has_last_run_success_rate_and_percentiles(api_db: Api) -> None:
    """Success rate counts runs that ran; p50/p95 are nearest-rank over recent durations."""
    specs: list[tuple[Status, float | None]] = [(Status.SUCCEEDED, float(d)) for d in range(1, 20)]
    specs += [(Status.FAILED, 20.0), (Status.MISSED, None), (Status.SKIPPED, None)]
    specs += [(Status.TIMED_OUT, 30.0)]
    record_runs(api_db.tracker, "nightly", specs)
    job = api_db.job("nightly")
    stats = job["stats"]
    assert stats["runs"] == 23
    assert stats["by_status"] == {
        "succeeded": 19,
        "failed": 1,
        "missed": 1,
        "skipped": 1,
        "timed_out": 1,
    }
    assert stats["success_rate"] == pytest.approx(19 / 21)
    assert stats["duration_p50_s"] == 11.0
    assert stats["duration_p95_s"] == 20.0
    assert job["last_run"]["status"] == "timed_out"


def test_stats_cover_only_the_recent_window(make_api: Callable[..., Api]) -> None:
    """With stats_window=3, only the three newest finished runs count."""
    api = make_api(stats_window=3)
    specs = [(Status.FAILED, 1.0)] * 5 + [(Status.SUCCEEDED, 2.0)] * 3
    record_runs(api.tracker, "quick", specs)
    stats = api.job("quick")["stats"]
    assert (stats["window"], stats["runs"], stats["success_rate"]) == (3, 3, 1.0)


def test_run_now_records_a_manual_run_and_keeps_the_schedule(api_db: Api) -> None:
    """POST /run runs once, recorded under the job's id with origin manual; schedule untouched."""
    before = api_db.job("nightly")
    response = api_db.client.post("/jobs/nightly/run", headers=AUTH)
    assert response.status_code == 202
    body = response.json()
    assert body["manual_job_id"].startswith("nightly#manual-")

    def manual_run() -> Any:
        api_db.tracker.flush()
        runs = api_db.client.get("/executions?job=nightly&status=succeeded", headers=AUTH)
        return runs.json()["items"]

    run = support.wait_for(manual_run)[0]
    assert run["origin"] == "manual"
    assert schedule_of(api_db.job("nightly")) == schedule_of(before)
    jobs = [j["id"] for j in api_db.client.get("/jobs", headers=AUTH).json()["items"]]
    assert jobs == ["nightly", "quick"]
    entry = api_db.audit()[0]
    assert (entry["action"], entry["job_id"], entry["actor"]) == ("run", "nightly", "api")
    assert body["manual_job_id"] in entry["detail"]
    assert entry["id"] == body["audit_id"]


def test_run_now_of_a_job_with_its_max_instances_going_is_a_conflict(api_db: Api) -> None:
    """A job that must not overlap (max_instances=1) is not run again while its run goes on:
    409 with the reason, nothing started; once it ended, running it now works."""
    release = threading.Event()
    api_db.scheduler.add_job(
        support.wait_job, "interval", hours=1, args=[release], id="exclusive", max_instances=1
    )
    assert api_db.client.post("/jobs/exclusive/run", headers=AUTH).status_code == 202
    try:
        support.wait_for(lambda: api_db.tracker.hub.live_runs())
        refused = api_db.client.post("/jobs/exclusive/run", headers=AUTH)
        assert refused.status_code == 409
        assert "1 run(s) in progress (max_instances=1)" in refused.json()["detail"]
        assert len(api_db.tracker.hub.live_runs()) == 1
    finally:
        release.set()
    support.wait_for(lambda: not api_db.tracker.hub.live_runs())
    support.wait_for(
        lambda: api_db.client.post("/jobs/exclusive/run", headers=AUTH).status_code == 202
    )
    api_db.tracker.flush()
    support.wait_for(
        lambda: len(api_db.tracker.executions(job_id="exclusive", status="succeeded")) == 2
    )
    assert [a["action"] for a in api_db.audit()].count("run") == 2


def test_pause_and_resume_are_applied_and_audited(api_db: Api) -> None:
    """Pause clears the next run; resume restores it; both audited with before and after."""
    paused = api_db.client.post("/jobs/nightly/pause", headers=AUTH).json()
    assert paused["changed"] is True
    assert paused["job"]["paused"] is True
    assert paused["job"]["next_run_at"] is None
    assert api_db.scheduler.get_job("nightly").next_run_time is None
    again = api_db.client.post("/jobs/nightly/pause", headers=AUTH).json()
    assert again["changed"] is False
    resumed = api_db.client.post("/jobs/nightly/resume", headers=AUTH).json()
    assert resumed["job"]["paused"] is False
    assert datetime.fromisoformat(resumed["job"]["next_run_at"]).hour == 2
    actions = [(e["action"], e["before"]["paused"], e["after"]["paused"]) for e in api_db.audit()]
    assert actions == [("resume", True, False), ("pause", True, True), ("pause", False, True)]


def test_a_pause_racing_a_new_schedule_leaves_the_job_paused(
    make_api: Callable[..., Api], tmp_path: Any
) -> None:
    """A pause and a schedule change sent together, both answered 200: the schedule change read
    the job before the pause landed and rescheduled it, which un-paused it (12 times in 60 on a
    SQLAlchemyJobStore). A paused job keeps its new schedule and stays paused."""
    from concurrent.futures import ThreadPoolExecutor

    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store = SQLAlchemyJobStore(url=f"sqlite:///{tmp_path}/jobs.sqlite3")
    api = make_api(scheduler=BackgroundScheduler(jobstores={"default": store}, timezone="UTC"))
    new_schedule = {"type": "cron", "expression": "0 9 * * 1-5", "timezone": "Europe/Paris"}
    unpaused = []
    for i in range(30):
        job_id = f"report-{i}"
        api.scheduler.add_job(quick, "interval", hours=1, id=job_id)
        together = threading.Barrier(2)

        def pause(job_id: str = job_id, together: Any = together) -> int:
            together.wait()
            return api.client.post(f"/jobs/{job_id}/pause", headers=AUTH).status_code

        def reschedule(job_id: str = job_id, together: Any = together) -> int:
            together.wait()
            return api.client.put(
                f"/jobs/{job_id}/schedule", headers=AUTH, json=new_schedule
            ).status_code

        with ThreadPoolExecutor(2) as both:
            answers = [both.submit(pause), both.submit(reschedule)]
            assert [a.result() for a in answers] == [200, 200]
        job = api.scheduler.get_job(job_id)
        assert "cron" in str(job.trigger)
        if job.next_run_time is not None:
            unpaused.append(job_id)
    assert unpaused == []


def test_a_job_id_past_the_columns_length_is_audited_and_found(api_db: Api) -> None:
    """APScheduler takes job ids of any length; the audit entry of pausing one with a 300-character
    id is kept (its id cut to the column's 255 characters, with a hash of the whole id), and the
    audit trail, the job's figures and its run history are found by the whole id."""
    long_id = "nightly-" + "x" * 292
    api_db.scheduler.add_job(quick, "interval", hours=1, id=long_id)
    support.wait_for(lambda: api_db.scheduler.get_job(long_id))
    response = api_db.client.post(f"/jobs/{long_id}/pause", headers=AUTH)
    assert response.status_code == 200
    (entry,) = [e for e in api_db.audit() if e["action"] == "pause"]
    assert entry["id"] == response.json()["audit_id"]
    assert len(entry["job_id"]) == 255 and entry["job_id"].startswith(long_id[:200])
    found = api_db.client.get("/audit", params={"job_id": long_id}, headers=AUTH).json()["items"]
    assert [e["id"] for e in found] == [entry["id"]]
    record_runs(api_db.tracker, long_id, [(Status.SUCCEEDED, 1.0), (Status.FAILED, 2.0)])
    job = api_db.client.get(f"/jobs/{long_id}", headers=AUTH).json()
    assert job["stats"]["runs"] == 2, job
    runs = api_db.client.get("/executions", params={"job_id": long_id}, headers=AUTH).json()
    assert len(runs["items"]) == 2


def test_resume_refuses_a_date_job_whose_time_has_passed(api: Api) -> None:
    """A paused one-shot job whose run time went by while paused is a 409 too: its trigger
    still answers that time, and APScheduler would drop the job once resumed."""
    api.scheduler.add_job(
        quick,
        "date",
        run_date=datetime.now(UTC) - timedelta(minutes=5),
        id="once",
        next_run_time=None,
    )
    support.wait_for(lambda: api.scheduler.get_job("once"))
    response = api.client.post("/jobs/once/resume", headers=AUTH)
    assert response.status_code == 409
    assert "Job 'once' has no fire time left" in response.json()["detail"]
    assert api.job("once")["paused"] is True
    assert api.audit() == []


def test_resume_refuses_a_job_with_no_fire_time_left(api: Api) -> None:
    """Resuming a paused job whose schedule ended is 409; the job stays (APScheduler drops it)."""
    ended = datetime.now(UTC) - timedelta(hours=1)
    api.scheduler.add_job(
        quick,
        "interval",
        hours=1,
        start_date=ended - timedelta(days=1),
        end_date=ended,
        id="late_once",
        next_run_time=None,
    )
    support.wait_for(lambda: api.scheduler.get_job("late_once"))
    response = api.client.post("/jobs/late_once/resume", headers=AUTH)
    assert response.status_code == 409
    assert "no fire time left" in response.json()["detail"]
    assert api.scheduler.get_job("late_once") is not None


@pytest.mark.parametrize(
    ("schedule", "check"),
    [
        pytest.param(
            {"type": "cron", "expression": "0 9 * * 1-5", "timezone": "Europe/Paris"},
            lambda t: (
                t.astimezone(ZoneInfo("Europe/Paris")).hour == 9
                and t.astimezone(ZoneInfo("Europe/Paris")).weekday() < 5
            ),
            id="cron5-weekdays-paris",
        ),
        pytest.param(
            {"type": "cron", "expression": "0 12 * * 0"},
            lambda t: t.weekday() == 6 and t.hour == 12,
            id="cron5-sunday-is-0",
        ),
        pytest.param(
            {"type": "cron", "expression": "0 12 * * sun-tue"},
            lambda t: t.weekday() in (6, 0, 1) and t.hour == 12,
            id="cron5-names-sunday-first",
        ),
        pytest.param(
            {"type": "cron", "expression": "30 15 10 * * *"},
            lambda t: (t.hour, t.minute, t.second) == (10, 15, 30),
            id="cron6-seconds-first",
        ),
        pytest.param(
            {"type": "interval", "hours": 1, "minutes": 30},
            lambda t: timedelta(minutes=89) < t - datetime.now(UTC) <= timedelta(minutes=90),
            id="interval",
        ),
        pytest.param(
            {"type": "date", "run_at": "2099-01-01T09:00:00", "timezone": "Asia/Tokyo"},
            lambda t: t == datetime(2099, 1, 1, 0, 0, tzinfo=UTC),
            id="date-in-timezone",
        ),
    ],
)
def test_schedule_is_replaced(
    api: Api, schedule: dict[str, Any], check: Callable[[datetime], bool]
) -> None:
    """PUT /schedule installs cron (5 or 6 fields), interval or date triggers, in a timezone."""
    response = api.client.put("/jobs/quick/schedule", headers=AUTH, json=schedule)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job"]["trigger"]["type"] == schedule["type"]
    next_run = datetime.fromisoformat(body["job"]["next_run_at"])
    assert check(next_run)
    stored = api.scheduler.get_job("quick").next_run_time
    assert stored.astimezone(UTC) == next_run
    entry = api.audit()[0]
    assert entry["action"] == "reschedule"
    assert entry["before"]["trigger_type"] == "interval"
    assert entry["after"]["trigger_type"] == schedule["type"]


def test_rescheduling_a_paused_job_keeps_it_paused(api: Api) -> None:
    """A paused job gets its new trigger but no next run until it is resumed."""
    api.client.post("/jobs/quick/pause", headers=AUTH)
    body = api.client.put(
        "/jobs/quick/schedule", headers=AUTH, json={"type": "cron", "expression": "*/5 * * * *"}
    ).json()
    assert body["job"]["paused"] is True
    assert body["job"]["trigger"]["type"] == "cron"
    resumed = api.client.post("/jobs/quick/resume", headers=AUTH).json()
    assert datetime.fromisoformat(resumed["job"]["next_run_at"]).minute % 5 == 0


BAD_SCHEDULES = [
    (
        {"type": "cron", "expression": "61 * * * *"},
        "cron expression '61 * * * *': minute field '61': Error validating expression '61': "
        "the last value (61) is higher than the maximum value (59)",
    ),
    (
        {"type": "cron", "expression": "* * * *"},
        "cron expression '* * * *' has 4 field(s); expected 5",
    ),
    (
        {"type": "cron", "expression": "0 0 * * 8"},
        "day-of-week field '8': 8 is not a weekday number",
    ),
    ({"type": "cron", "expression": "0 0 31 2 *"}, "never fires"),
    ({"type": "cron", "expression": "*/0 * * * *"}, "minute field '*/0'"),
    (
        {"type": "cron", "expression": "0 0 * * *", "timezone": "Mars/Olympus"},
        "unknown timezone 'Mars/Olympus'",
    ),
    ({"type": "interval", "seconds": -5}, "interval seconds must not be negative, got -5"),
    ({"type": "interval"}, "the interval must be at least 1 second(s); got nothing"),
    ({"type": "interval", "seconds": 0.2}, "must be at least 1 second(s); got seconds=0.2"),
    (
        {"type": "date", "run_at": "2001-01-01T00:00:00Z"},
        "run_at 2001-01-01T00:00:00+00:00 is in the past",
    ),
    ({"type": "weekly", "day": "mon"}, "type"),
    ({"type": "interval", "minute": 5}, "Extra inputs are not permitted"),
    ({"type": "date", "run_at": "tomorrow"}, "run_at"),
    (
        {"type": "date", "run_at": "9999-12-31T23:59:59-05:00"},
        "run_at 9999-12-31T23:59:59-05:00 is out of range: in UTC it falls outside "
        "the years 1 to 9999",
    ),
    (
        {"type": "date", "run_at": "9999-12-31T23:00:00", "timezone": "America/New_York"},
        "run_at 9999-12-31T23:00:00-05:00 is out of range",
    ),
    (
        {"type": "interval", "seconds": 10, "start_date": "9999-12-31T23:00:00-05:00"},
        "start_date 9999-12-31T23:00:00-05:00 is out of range",
    ),
    (
        {
            "type": "interval",
            "seconds": 10,
            "start_date": "9999-12-31T23:59:00",
            "timezone": "America/New_York",
        },
        "start_date 9999-12-31T23:59:00-05:00 is out of range",
    ),
    (
        {"type": "cron", "expression": "0 9 * * sun-fun"},
        "day-of-week field 'sun-fun': 'fun' is not a weekday",
    ),
]


@pytest.mark.parametrize(
    ("schedule", "message"), BAD_SCHEDULES, ids=[str(s[0]) for s in BAD_SCHEDULES]
)
def test_bad_schedules_are_422_and_change_nothing(
    api: Api, schedule: dict[str, Any], message: str
) -> None:
    """Each invalid schedule gets a 422 naming the problem; job and audit trail are untouched,
    and the job still lists, pauses and reschedules."""
    before = api.job("quick")
    response = api.client.put("/jobs/quick/schedule", headers=AUTH, json=schedule)
    assert response.status_code == 422
    assert message in str(response.json()["detail"])
    assert "Traceback" not in response.text
    assert schedule_of(api.job("quick")) == schedule_of(before)
    assert api.audit() == []
    assert api.client.get("/jobs", headers=AUTH).status_code == 200
    assert api.client.post("/jobs/quick/pause", headers=AUTH).status_code == 200
    assert api.client.put("/jobs/quick/schedule", headers=AUTH, json=BODY).status_code == 200


SURROGATE_BODIES = [
    ('{"type": "cron", "expression": "\\ud800 * * * *"}', "cron expression '\\ud800 * * * *'"),
    ('{"type": "cron", "expression": "0 0 * * \\ud800"}', "day-of-week field '\\ud800'"),
    ('{"type": "date", "run_at": "\\ud800"}', "run_at"),
    ('{"type": "\\ud800"}', "type"),
]


@pytest.mark.parametrize(
    ("body", "message"), SURROGATE_BODIES, ids=[b for b, _ in SURROGATE_BODIES]
)
def test_a_lone_surrogate_in_the_body_is_a_422_that_can_be_sent(
    api: Api, body: str, message: str
) -> None:
    """JSON may spell a lone surrogate ("\\ud800"), which UTF-8 can't carry: the 422 that
    quotes it writes it escaped instead of failing with a 500; the job is untouched."""
    before = api.job("quick")
    response = api.client.put(
        "/jobs/quick/schedule",
        headers={**AUTH, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422
    assert message in str(response.json()["detail"])
    assert schedule_of(api.job("quick")) == schedule_of(before)
    assert api.audit() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/ghost"),
        ("POST", "/jobs/ghost/run"),
        ("POST", "/jobs/ghost/pause"),
        ("POST", "/jobs/ghost/resume"),
        ("PUT", "/jobs/ghost/schedule"),
        ("DELETE", "/jobs/ghost"),
    ],
)
def test_unknown_job_is_404(api: Api, method: str, path: str) -> None:
    """Every job route answers 404 with the id for a job that does not exist; nothing changes."""
    jobs_before = [schedule_of(api.job(j)) for j in ("nightly", "quick")]
    response = api.client.request(method, path, headers=AUTH, json=BODY)
    assert response.status_code == 404
    assert response.json() == {"detail": "No job by the id of 'ghost' was found"}
    assert [schedule_of(api.job(j)) for j in ("nightly", "quick")] == jobs_before
    assert api.audit() == []


def test_delete_removes_the_job_and_keeps_its_history(api_db: Api) -> None:
    """DELETE removes the job from the scheduler; its runs stay queryable; it is audited."""
    record_runs(api_db.tracker, "quick", [(Status.SUCCEEDED, 1.0)])
    response = api_db.client.delete("/jobs/quick", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["job"] is None
    assert api_db.scheduler.get_job("quick") is None
    assert api_db.client.get("/jobs/quick", headers=AUTH).status_code == 404
    runs = api_db.client.get("/executions?job=quick", headers=AUTH).json()["items"]
    assert len(runs) == 1
    entry = api_db.audit()[0]
    assert (entry["action"], entry["after"]) == ("remove", None)
    assert entry["before"]["trigger_type"] == "interval"


def test_job_ids_with_slashes_and_spaces_are_addressable(api: Api) -> None:
    """Job ids like 'reports/daily eu' work in every job route."""
    api.scheduler.add_job(quick, "interval", hours=3, id="reports/daily eu")
    assert api.job("reports/daily eu")["id"] == "reports/daily eu"
    paused = api.client.post("/jobs/reports/daily%20eu/pause", headers=AUTH)
    assert paused.json()["job"]["paused"] is True
    body = {"type": "interval", "hours": 4}
    moved = api.client.put("/jobs/reports/daily eu/schedule", headers=AUTH, json=body)
    assert moved.json()["job"]["trigger"]["description"] == "interval[4:00:00]"
    assert api.client.get("/jobs/reports/daily eu/run", headers=AUTH).status_code == 404
    assert api.client.delete("/jobs/reports/daily eu", headers=AUTH).status_code == 200
    assert api.scheduler.get_job("reports/daily eu") is None


def test_a_job_id_with_a_lone_surrogate_is_listed(api_db: Api) -> None:
    """A job id from os.fsdecode may hold a lone surrogate, which no JSON response can carry:
    the job is listed with U+FFFD in its place (as its runs are stored), not a 500 for all."""
    api_db.scheduler.add_job(quick, "interval", hours=1, id="report-\udcff.csv")
    support.wait_for(lambda: api_db.scheduler.get_job("report-\udcff.csv"))
    response = api_db.client.get("/jobs", headers=AUTH)
    assert response.status_code == 200
    ids = [j["id"] for j in response.json()["items"]]
    assert ids == ["nightly", "quick", "report-\ufffd.csv"]


def test_a_next_run_time_without_a_utc_form_does_not_break_the_listing(api: Api) -> None:
    """A job whose next fire time has no UTC form (past year 9999) is listed in its own offset
    instead of making GET /jobs a 500 for every job."""
    end = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    api.scheduler.get_job("nightly").next_run_time = end  # the memory store's own object
    response = api.client.get("/jobs", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["items"][0]["next_run_at"] == "9999-12-31T23:59:59-05:00"


def test_a_failing_setup_closes_the_tracker(sqlite_url: str) -> None:
    """When job registration fails at startup the app doesn't start and the tracker is closed."""
    tracker = Tracker(sqlite_url, registry=CollectorRegistry())
    scheduler = AsyncIOScheduler(timezone="UTC")

    def setup(s: Any) -> None:
        raise RuntimeError("bad job config")

    app = FastAPI(lifespan=tracker_lifespan(tracker, scheduler, setup=setup))
    with pytest.raises(RuntimeError, match="bad job config"), TestClient(app):
        pass
    assert tracker.hub.closed
    assert not scheduler.running


def test_management_works_on_a_persistent_job_store(
    make_api: Callable[..., Api], tmp_path: Any
) -> None:
    """With a SQLAlchemyJobStore, pause/reschedule are stored and a manual run is recorded."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store = SQLAlchemyJobStore(url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    api = make_api(scheduler=AsyncIOScheduler(timezone="UTC", jobstores={"default": store}))
    api.client.put(
        "/jobs/nightly/schedule", headers=AUTH, json={"type": "cron", "expression": "15 3 * * *"}
    )
    api.client.post("/jobs/nightly/pause", headers=AUTH)
    stored = store.lookup_job("nightly")
    assert (stored.next_run_time, "hour='3'" in str(stored.trigger)) == (None, True)
    assert api.client.post("/jobs/quick/run", headers=AUTH).status_code == 202

    def manual() -> Any:
        api.tracker.flush()
        items = api.client.get("/executions?job=quick", headers=AUTH).json()["items"]
        return [r for r in items if r["status"] == "succeeded" and r["origin"] == "manual"]

    support.wait_for(manual)
    assert sorted(j.id for j in api.scheduler.get_jobs()) == ["nightly", "quick"]


def test_api_works_with_a_background_scheduler(make_api: Callable[..., Api]) -> None:
    """The lifespan and router work the same with a BackgroundScheduler."""
    api = make_api(scheduler=BackgroundScheduler(timezone="UTC"))
    assert api.client.get("/health").json()["scheduler"]["state"] == "running"
    assert api.client.post("/jobs/quick/pause", headers=AUTH).json()["job"]["paused"] is True


# -- history ------------------------------------------------------------------------------


def test_executions_filter_and_page_newest_first(api_db: Api) -> None:
    """Filters by job/status/time; pages follow the cursor without gaps or repeats."""
    t0 = datetime(2024, 6, 1, tzinfo=UTC)
    made = record_runs(
        api_db.tracker, "quick", [(Status.SUCCEEDED, 1.0), (Status.FAILED, 2.0)] * 6, start=t0
    )
    record_runs(api_db.tracker, "nightly", [(Status.SUCCEEDED, 1.0)], start=t0)
    seen: list[str] = []
    url = "/executions?job=quick&limit=5"
    while url:
        page = api_db.client.get(url, headers=AUTH).json()
        seen += [r["run_id"] for r in page["items"]]
        url = (
            f"/executions?job=quick&limit=5&cursor={page['next_cursor']}"
            if page["next_cursor"]
            else ""
        )
    assert seen == [e.run_id for e in reversed(made)]
    failed = api_db.client.get("/executions?status=failed", headers=AUTH).json()["items"]
    assert {r["status"] for r in failed} == {"failed"}
    assert len(failed) == 6
    both = api_db.client.get("/executions?status=failed,succeeded&job=nightly", headers=AUTH)
    assert len(both.json()["items"]) == 1
    window = api_db.client.get(
        "/executions?job=quick&since=2024-06-01T00:02:00Z&until=2024-06-01T00:05:00Z",
        headers=AUTH,
    ).json()["items"]
    assert [r["scheduled_at"] for r in window] == [
        "2024-06-01T00:04:00Z",
        "2024-06-01T00:03:00Z",
        "2024-06-01T00:02:00Z",
    ]


def test_execution_detail_has_the_traceback(api: Api) -> None:
    """GET /executions/{run_id} returns the run with its traceback; an unknown id is 404."""
    (run,) = record_runs(api.tracker, "quick", [(Status.FAILED, 1.0)])
    body = api.client.get(f"/executions/{run.run_id}", headers=AUTH).json()
    assert body["status"] == "failed"
    assert body["traceback"].endswith("ValueError: boom")
    listed = api.client.get("/executions", headers=AUTH).json()["items"][0]
    assert "traceback" not in listed
    missing = api.client.get("/executions/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No run by the id of 'nope' was found"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "unknown status 'exploded'; valid statuses: running, succeeded"),
        ("since=yesterday", "since 'yesterday' is not a time"),
        ("until=2024-13-01", "until '2024-13-01' is not a time"),
        ("since=2024-06-02&until=2024-06-01", "until (2024-06-01T00:00:00+00:00) must be after"),
        ("cursor=garbage", "cursor is not valid"),
        ("cursor=WyJ4IiwxXQ", "cursor is not valid"),
        ("limit=0", "limit must be between 1 and 1000, got 0"),
        ("limit=5000", "limit must be between 1 and 1000, got 5000"),
        ("limit=ten", "Input should be a valid integer"),
    ],
)
def test_malformed_history_filters_are_422(api: Api, query: str, message: str) -> None:
    """Malformed filters and cursors get a 422 saying what is wrong, never a 500."""
    response = api.client.get(f"/executions?{query}", headers=AUTH)
    assert response.status_code == 422
    assert message in str(response.json()["detail"])


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


NESTED = _cursor(b"[" * 3000)
OUT_OF_RANGE = [
    ("since=9999-12-31T23:59:59-05:00", "since '9999-12-31T23:59:59-05:00' is out of range"),
    ("since=0001-01-01T00:00:00%2B05:00", "since '0001-01-01T00:00:00+05:00' is out of range"),
    ("until=0001-01-01T00:00:00%2B01:00", "until '0001-01-01T00:00:00+01:00' is out of range"),
    ("since=1000000d", "since '1000000d' reaches back before the year 1"),
    ("since=999999999999d", "since '999999999999d' is too long: at most 999999999 days"),
    ("since=99999999999999999999w", "since '99999999999999999999w' is too long"),
    (f"cursor={NESTED}", "cursor is not valid"),
]
OUT_OF_RANGE_IDS = [q if len(q) < 40 else "cursor=[[[[..." for q, _ in OUT_OF_RANGE]


@pytest.mark.parametrize("path", ["/executions", "/audit"])
@pytest.mark.parametrize(("query", "message"), OUT_OF_RANGE, ids=OUT_OF_RANGE_IDS)
def test_times_past_the_calendar_and_forged_cursors_are_422(
    api: Api, path: str, query: str, message: str
) -> None:
    """Times that overflow a datetime, and cursors nested too deep to parse, are a 422."""
    response = api.client.get(f"{path}?{query}", headers=AUTH)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        pytest.param("/jobs", NESTED, id="jobs-nested"),
        pytest.param("/audit", _cursor(b"[9223372036854775808]"), id="audit-id-2**63"),
        pytest.param("/audit", _cursor(json.dumps([10**30]).encode()), id="audit-id-10**30"),
        pytest.param(
            "/executions",
            _cursor(json.dumps(["9999-12-31T23:59:59-05:00", "x"]).encode()),
            id="executions-after-year-9999",
        ),
        pytest.param(
            "/executions",
            _cursor(json.dumps(["0001-01-01T00:00:00+05:00", "x"]).encode()),
            id="executions-before-year-1",
        ),
        pytest.param(
            "/executions",
            _cursor(json.dumps(["2024-06-01T00:00:00+00:00", "a\x00b"]).encode()),
            id="executions-nul-run-id",
        ),
    ],
)
def test_forged_cursors_are_422_on_every_database(api_db: Api, path: str, cursor: str) -> None:
    """A cursor the API didn't make is a 422 (not a 500, nor PostgreSQL's 'bigint out of range'
    or NUL refusal as a 503)."""
    response = api_db.client.get(path, params={"cursor": cursor}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("cursor is not valid")


def test_nul_in_text_filters_is_matched_as_stored(
    make_api: Callable[..., Api], database_url: str
) -> None:
    """A NUL in a filter (which PostgreSQL refuses even in a query) is matched as the history
    stores it, U+FFFD: an answer (empty, 404, or what was written), not 'database unavailable'."""
    api = make_api(database_url, tokens={"ops\x00bot": SecretStr(TOKEN)})
    missing = api.client.get("/executions/a%00b", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No run by the id of 'a\\x00b' was found"}
    assert api.client.get("/audit?actor=%00", headers=AUTH).json()["items"] == []
    assert api.client.post("/jobs/nightly/pause", headers=AUTH).status_code == 200
    found = api.client.get("/audit?actor=ops%00bot", headers=AUTH).json()["items"]
    assert [(e["action"], e["actor"]) for e in found] == [("pause", "ops\ufffdbot")]


def test_history_reads_are_503_when_the_table_is_unreadable(api: Api, sqlite_url: str) -> None:
    """A database error while reading history is a 503 with the reason, not a 500."""
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("ALTER TABLE job_executions RENAME TO moved_away")
    response = api.client.get("/executions", headers=AUTH)
    assert response.status_code == 503
    assert "The tracker database is unavailable" in response.json()["detail"]
    assert "no such table" in response.json()["detail"]


def test_audit_pages_and_filters(api_db: Api) -> None:
    """GET /audit lists actions newest first, filters by job/action, pages with a cursor."""
    for _ in range(3):
        api_db.client.post("/jobs/nightly/pause", headers=AUTH)
        api_db.client.post("/jobs/nightly/resume", headers=AUTH)
    api_db.client.post("/jobs/quick/pause", headers=AUTH)
    first = api_db.client.get("/audit?job=nightly&limit=4", headers=AUTH).json()
    rest = api_db.client.get(
        f"/audit?job=nightly&limit=4&cursor={first['next_cursor']}", headers=AUTH
    ).json()
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert len(ids) == 6
    assert ids == sorted(ids, reverse=True)
    assert rest["next_cursor"] is None
    pauses = api_db.client.get("/audit?action=pause", headers=AUTH).json()["items"]
    assert len(pauses) == 4
    entry = pauses[0]
    assert (entry["job_id"], entry["actor"], entry["client"]) == ("quick", "api", "testclient")
    assert datetime.fromisoformat(entry["at"]) > datetime.now(UTC) - timedelta(minutes=1)
    bad = api_db.client.get("/audit?action=explode", headers=AUTH)
    assert bad.status_code == 422
    assert "unknown action 'explode'" in bad.json()["detail"]


# -- OpenAPI ------------------------------------------------------------------------------


def test_openapi_describes_every_route_and_its_security(api: Api) -> None:
    """/openapi.json lists each route with response models and the bearer scheme where needed."""
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    expected = {
        ("get", "/metrics"): False,
        ("get", "/health"): False,
        ("get", "/jobs"): True,
        ("get", "/jobs/{job_id}"): True,
        ("post", "/jobs/{job_id}/run"): True,
        ("post", "/jobs/{job_id}/pause"): True,
        ("post", "/jobs/{job_id}/resume"): True,
        ("put", "/jobs/{job_id}/schedule"): True,
        ("delete", "/jobs/{job_id}"): True,
        ("get", "/executions"): True,
        ("get", "/executions/{run_id}"): True,
        ("get", "/audit"): True,
    }
    found = {
        (method, path): op for path, ops in schema["paths"].items() for method, op in ops.items()
    }
    assert set(found) == set(expected)
    for key, secured in expected.items():
        op = found[key]
        assert (op.get("security") == [{"bearerAuth": []}]) is secured, key
        if secured:
            assert {"401", "403"} <= set(op["responses"]), key
        ok = next(code for code in op["responses"] if code.startswith("2"))
        assert op["responses"][ok]["content"], key
    assert found[("get", "/health")]["responses"]["503"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/HealthOut"}
    put = found[("put", "/jobs/{job_id}/schedule")]
    assert put["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorOut"
    }
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert {v["$ref"].rsplit("/", 1)[1] for v in body["oneOf"]} == {
        "CronSchedule",
        "IntervalSchedule",
        "DateSchedule",
    }
    for name in (
        "JobOut",
        "JobPage",
        "ActionOut",
        "ExecutionOut",
        "ExecutionPage",
        "AuditPage",
        "ErrorOut",
        "HealthOut",
    ):
        assert name in schema["components"]["schemas"]


def test_origin_is_reported(api: Api) -> None:
    """Runs recorded directly (outside the scheduler) say so in the API."""
    quick()
    api.tracker.flush()
    runs = api.client.get("/executions", headers=AUTH).json()["items"]
    assert runs[0]["origin"] == Origin.DIRECT.value


def test_wait_lets_async_runs_in_progress_finish(sqlite_url: str) -> None:
    """``scheduler_running(..., wait=True)`` (``tracker_lifespan``'s default) with an
    AsyncIOScheduler: a run in progress when the block ends finishes and is recorded
    ``succeeded``, with the job's work done (APScheduler's asyncio executor cancelled it, and it
    was recorded ``interrupted``); no run starts meanwhile."""
    import asyncio

    from tracker.integrations.fastapi import scheduler_running

    done: list[int] = []
    started = asyncio.Event()

    @tracked_job
    async def half_second() -> None:
        started.set()
        await asyncio.sleep(0.5)
        done.append(1)

    async def main() -> Tracker:
        scheduler = AsyncIOScheduler(timezone="UTC")
        tracker = Tracker(sqlite_url, settings=TrackerSettings(flush_interval=0.02))

        def setup(s: Any) -> None:
            s.add_job(half_second, "interval", seconds=0.3, id="slow", max_instances=2)

        async with scheduler_running(tracker, scheduler, setup=setup, close_tracker=False):
            await asyncio.wait_for(started.wait(), 5)
        return tracker

    tracker = asyncio.run(main())
    try:
        rows = tracker.executions(job_id="slow")
        assert rows and [r.status for r in rows] == [Status.SUCCEEDED] * len(rows)
        assert len(done) == len(rows)
    finally:
        tracker.close()
