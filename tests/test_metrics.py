"""The Prometheus metrics sink: names, zero series, aggregation by job name, removal, rendering.

Events are fed to a real :class:`MetricsSink` on a fresh prometheus-client registry;
rendering is checked against prometheus-client's own parser and renderer, and promtool.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from conftest import need
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracker import ConfigurationError, Execution, JobState, MetricsSink, Status
from tracker.sinks.metrics import (
    CONTENT_TYPE,
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_LATENESS_BUCKETS,
    render,
)
from tracker.sinks.metrics.state import Seed

TERMINAL = ["failed", "interrupted", "missed", "skipped", "succeeded", "timed_out"]
JOB_GAUGES = [
    "jobtracker_runs_in_progress",
    "jobtracker_last_success_timestamp_seconds",
    "jobtracker_last_failure_timestamp_seconds",
    "jobtracker_next_run_timestamp_seconds",
    "jobtracker_consecutive_failures",
    "jobtracker_job_paused",
]
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
_run_ids = count()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- helpers -----------------------------------------------------------------------------


def state(job_id: str, name: str | None = None, **kw: object) -> JobState:
    kw.setdefault("next_run_at", NOW + timedelta(hours=1))
    return JobState(job_id=job_id, job_name=name or job_id, **kw)  # type: ignore[arg-type]


def run(
    job: str,
    status: Status,
    *,
    job_id: str | None = None,
    duration: float = 1.0,
    lateness: float = 0.2,
    finished: datetime = NOW,
) -> list[Execution]:
    """A started run: its ``running`` record, then its terminal one."""
    run_id = f"run-{next(_run_ids)}"
    common = {"run_id": run_id, "job_id": job_id or job, "job_name": job, "scheduled_at": NOW}
    return [
        Execution(**common, status=Status.RUNNING, started_at=NOW, lateness_s=lateness),  # type: ignore[arg-type]
        Execution(
            **common,  # type: ignore[arg-type]
            status=status,
            started_at=NOW,
            finished_at=finished,
            duration_s=duration,
            lateness_s=lateness,
        ),
    ]


def not_started(job: str, status: Status, coalesced: int = 0) -> Execution:
    """A ``missed`` or ``skipped`` record (no ``running`` record before it)."""
    return Execution(
        run_id=f"run-{next(_run_ids)}", job_id=job, job_name=job, status=status,
        scheduled_at=NOW, finished_at=NOW, lateness_s=30.0, coalesced=coalesced,
    )  # fmt: skip


def samples(body: bytes) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def job_samples(body: bytes, job: str) -> Samples:
    return {k: v for k, v in samples(body).items() if ("job", job) in k[1]}


def value(body: bytes, name: str, **labels: str) -> float | None:
    return samples(body).get((name, tuple(sorted(labels.items()))))


def families(body: bytes) -> dict[str, tuple[str, str, list[tuple[str, object, float]]]]:
    """Family name → (type, help, sorted samples): what a scraper understands."""
    return {
        f.name: (
            f.type,
            f.documentation,
            sorted((s.name, sorted(s.labels.items()), s.value) for s in f.samples),
        )
        for f in text_string_to_metric_families(body.decode())
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink(registry: CollectorRegistry) -> Iterator[MetricsSink]:
    made = MetricsSink(registry, removed_linger=0)
    yield made
    made.close(1)


# -- names, types, zero series -------------------------------------------------------------


def test_a_new_job_has_every_series_at_zero(sink: MetricsSink) -> None:
    """As soon as a job is known, each status, both histograms and every gauge exist at 0."""
    sink.handle([state("nightly", next_run_at=None, paused=True)])
    got = job_samples(sink.render(), "nightly")
    for status in TERMINAL:
        assert got[("jobtracker_runs_total", (("job", "nightly"), ("status", status)))] == 0
    assert not any(("status", "running") in labels for _, labels in got)
    for hist, bounds in (
        ("jobtracker_run_duration_seconds", DEFAULT_DURATION_BUCKETS),
        ("jobtracker_run_lateness_seconds", DEFAULT_LATENESS_BUCKETS),
    ):
        buckets = [k for k in got if k[0] == f"{hist}_bucket"]
        assert len(buckets) == len(bounds) + 1
        assert all(got[k] == 0 for k in buckets)
        assert got[(f"{hist}_count", (("job", "nightly"),))] == 0
        assert got[(f"{hist}_sum", (("job", "nightly"),))] == 0
    for gauge in JOB_GAUGES:
        assert (gauge, (("job", "nightly"),)) in got
    assert got[("jobtracker_job_paused", (("job", "nightly"),))] == 1


def test_families_have_the_designed_names_types_and_labels(sink: MetricsSink) -> None:
    """Every family has the name, type and label names of DESIGN.md."""
    sink.handle([state("a"), *run("a", Status.SUCCEEDED)])
    sink.count_alert("slack", "sent")
    sink.bind(_FakeHub())
    fams = {f.name: f for f in text_string_to_metric_families(sink.render().decode())}
    expected = {
        "jobtracker_runs": ("counter", {"job", "status"}),
        "jobtracker_run_duration_seconds": ("histogram", {"job", "le"}),
        "jobtracker_run_lateness_seconds": ("histogram", {"job", "le"}),
        **{g: ("gauge", {"job"}) for g in JOB_GAUGES},
        "jobtracker_records_pending": ("gauge", set()),
        "jobtracker_records_dropped": ("counter", set()),
        "jobtracker_sink_errors": ("counter", {"sink"}),
        "jobtracker_alerts": ("counter", {"channel", "outcome"}),
    }
    assert set(fams) == set(expected)
    for name, (mtype, labels) in expected.items():
        assert fams[name].type == mtype, name
        for s in fams[name].samples:
            assert set(s.labels) <= labels, (name, s.labels)
        assert fams[name].documentation


def test_runs_total_counts_terminal_statuses_and_coalesced_fire_times(sink: MetricsSink) -> None:
    """runs_total counts each finished run once; a coalesced missed record counts N."""
    sink.handle([
        state("j"),
        *run("j", Status.SUCCEEDED), *run("j", Status.SUCCEEDED), *run("j", Status.FAILED),
        *run("j", Status.TIMED_OUT), *run("j", Status.INTERRUPTED),
        not_started("j", Status.MISSED), not_started("j", Status.MISSED, coalesced=7),
        not_started("j", Status.SKIPPED),
    ])  # fmt: skip
    body = sink.render()
    got = {s: value(body, "jobtracker_runs_total", job="j", status=s) for s in TERMINAL}
    assert got == {
        "succeeded": 2, "failed": 1, "timed_out": 1, "interrupted": 1, "missed": 8, "skipped": 1,
    }  # fmt: skip
    # missed/skipped never started: no duration, no lateness observed for them
    assert value(body, "jobtracker_run_duration_seconds_count", job="j") == 5
    assert value(body, "jobtracker_run_lateness_seconds_count", job="j") == 5


def test_in_progress_follows_running_and_terminal_records(sink: MetricsSink) -> None:
    """A running record counts in progress until its own terminal record; missed never does."""
    first, second = run("j", Status.SUCCEEDED), run("j", Status.FAILED)
    sink.handle([state("j"), first[0], second[0]])
    assert value(sink.render(), "jobtracker_runs_in_progress", job="j") == 2
    sink.handle([first[1], not_started("j", Status.MISSED), not_started("j", Status.SKIPPED)])
    assert value(sink.render(), "jobtracker_runs_in_progress", job="j") == 1
    sink.handle([second[1], second[1]])  # a duplicate terminal record changes nothing more
    body = sink.render()
    assert value(body, "jobtracker_runs_in_progress", job="j") == 0
    assert value(body, "jobtracker_runs_total", job="j", status="failed") == 2


def test_consecutive_failures_and_last_timestamps(sink: MetricsSink) -> None:
    """failed/timed_out add up, missed/skipped/interrupted leave it, a success resets it."""
    t1, t2, t3 = NOW, NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    sink.handle([
        state("j"), *run("j", Status.FAILED, finished=t1), *run("j", Status.TIMED_OUT, finished=t2),
        *run("j", Status.INTERRUPTED, finished=t3), not_started("j", Status.MISSED),
        not_started("j", Status.SKIPPED),
    ])  # fmt: skip
    body = sink.render()
    assert value(body, "jobtracker_consecutive_failures", job="j") == 2
    assert value(body, "jobtracker_last_failure_timestamp_seconds", job="j") == t2.timestamp()
    assert value(body, "jobtracker_last_success_timestamp_seconds", job="j") == 0
    sink.handle(run("j", Status.SUCCEEDED, finished=t3))
    body = sink.render()
    assert value(body, "jobtracker_consecutive_failures", job="j") == 0
    assert value(body, "jobtracker_last_success_timestamp_seconds", job="j") == t3.timestamp()
    # an older run finishing late does not move the timestamp back
    sink.handle(run("j", Status.SUCCEEDED, finished=t1))
    assert value(sink.render(), "jobtracker_last_success_timestamp_seconds", job="j") == (
        t3.timestamp()
    )


def test_histograms_use_default_buckets_up_to_hours(sink: MetricsSink) -> None:
    """A 3-hour run lands in the 4 h bucket, not only in +Inf; lateness is observed at start."""
    sink.handle([state("r"), *run("r", Status.SUCCEEDED, duration=3 * 3600, lateness=45.0)])
    body = sink.render()
    bucket = "jobtracker_run_duration_seconds_bucket"
    assert value(body, bucket, job="r", le="7200.0") == 0
    assert value(body, bucket, job="r", le="14400.0") == 1
    assert value(body, "jobtracker_run_duration_seconds_sum", job="r") == 3 * 3600
    assert value(body, "jobtracker_run_lateness_seconds_bucket", job="r", le="30.0") == 0
    assert value(body, "jobtracker_run_lateness_seconds_bucket", job="r", le="60.0") == 1
    assert max(DEFAULT_DURATION_BUCKETS) >= 4 * 3600
    assert min(DEFAULT_DURATION_BUCKETS) <= 0.005


def test_buckets_are_configurable_in_code_and_environment(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buckets come from the constructor, else from TRACKER_METRICS_*_BUCKETS."""
    sink = MetricsSink(registry, duration_buckets=[1, 10, 100], lateness_buckets=[5])
    sink.handle([state("j"), *run("j", Status.SUCCEEDED, duration=50)])
    les = {dict(k[1])["le"] for k in samples(sink.render()) if k[0].endswith("_bucket")}
    assert les == {"1.0", "10.0", "100.0", "5.0", "+Inf"}
    assert value(sink.render(), "jobtracker_run_duration_seconds_bucket", job="j", le="100.0") == 1
    sink.close(1)

    monkeypatch.setenv("TRACKER_METRICS_DURATION_BUCKETS", "[60, 3600, 86400]")
    from_env = MetricsSink(CollectorRegistry())
    assert from_env.duration_buckets == (60.0, 3600.0, 86400.0)
    assert from_env.lateness_buckets == DEFAULT_LATENESS_BUCKETS
    from_env.close(1)

    # A list ending in +Inf (the bucket every histogram has) is taken, +Inf added once.
    monkeypatch.setenv("TRACKER_METRICS_DURATION_BUCKETS", '[60, 3600, "inf"]')
    with_inf = MetricsSink(CollectorRegistry())
    assert with_inf.duration_buckets == (60.0, 3600.0)
    with_inf.close(1)


@pytest.mark.parametrize(
    "buckets", [[], [3, 2], [1, 1], [float("nan")], [-1, 1], ["soon"]], ids=str
)
def test_unusable_buckets_are_rejected(registry: CollectorRegistry, buckets: list[object]) -> None:
    """Empty, unsorted, duplicated, NaN, negative or non-numeric bounds raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match="buckets"):
        MetricsSink(registry, duration_buckets=buckets)  # type: ignore[arg-type]


# -- one series per job name -------------------------------------------------------------


def test_job_label_is_the_name_and_one_shot_jobs_share_one_series(sink: MetricsSink) -> None:
    """A thousand one-shot jobs of one function are one series; no job id appears anywhere."""
    events: list[JobState | Execution] = [
        state(f"reminder-{i}", "send_reminder", next_run_at=NOW + timedelta(minutes=i + 1))
        for i in range(1000)
    ]
    for i in range(0, 1000, 100):
        events += run("send_reminder", Status.SUCCEEDED, job_id=f"reminder-{i}")
    sink.handle(events)
    body = sink.render()
    assert b"reminder-" not in body
    jobs = {dict(k[1]).get("job") for k in samples(body)} - {None}
    assert jobs == {"send_reminder"}
    assert value(body, "jobtracker_runs_total", job="send_reminder", status="succeeded") == 10
    assert (
        value(body, "jobtracker_next_run_timestamp_seconds", job="send_reminder")
        == (NOW + timedelta(minutes=1)).timestamp()
    )


def test_gauges_aggregate_over_job_ids_sharing_a_name(sink: MetricsSink) -> None:
    """Next run is the earliest live one; paused only when all are; in progress is the sum."""
    early, late = NOW + timedelta(minutes=5), NOW + timedelta(minutes=50)
    a, b = (
        run("sync", Status.SUCCEEDED, job_id="sync-a"),
        run("sync", Status.FAILED, job_id="sync-b"),
    )
    sink.handle(
        [state("sync-a", "sync", next_run_at=late), state("sync-b", "sync", next_run_at=early)]
    )
    sink.handle([a[0], b[0]])
    body = sink.render()
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="sync") == early.timestamp()
    assert value(body, "jobtracker_runs_in_progress", job="sync") == 2
    sink.handle([state("sync-b", "sync", next_run_at=None, paused=True)])
    body = sink.render()
    assert value(body, "jobtracker_job_paused", job="sync") == 0
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="sync") == late.timestamp()
    sink.handle([state("sync-a", "sync", next_run_at=None, paused=True), a[1], b[1]])
    body = sink.render()
    assert value(body, "jobtracker_job_paused", job="sync") == 1
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="sync") == 0
    assert value(body, "jobtracker_runs_in_progress", job="sync") == 0


# -- removal -----------------------------------------------------------------------------


def test_removed_job_series_go_away_once_no_id_is_left(sink: MetricsSink) -> None:
    """Series stay while any job id of the name remains, and vanish with the last one."""
    sink.handle(
        [state("a1", "a"), state("a2", "a"), state("b"), *run("a", Status.FAILED, job_id="a1")]
    )
    sink.handle([state("a1", "a", removed=True, next_run_at=None)])
    assert job_samples(sink.render(), "a")
    sink.handle([state("a2", "a", removed=True, next_run_at=None)])
    body = sink.render()
    assert job_samples(body, "a") == {}
    assert job_samples(body, "b")
    assert b'{job="a"' not in body


def test_removal_waits_for_the_run_in_progress(sink: MetricsSink) -> None:
    """A job removed while it runs keeps its series until that run ends."""
    running, finished = run("slow", Status.SUCCEEDED)
    sink.handle([state("slow"), running, state("slow", removed=True, next_run_at=None)])
    assert value(sink.render(), "jobtracker_runs_in_progress", job="slow") == 1
    sink.handle([finished])
    assert job_samples(sink.render(), "slow") == {}


def test_one_shot_jobs_last_run_is_counted_then_goes_away(registry: CollectorRegistry) -> None:
    """APScheduler removes a date job before its run is published: the run still shows, then
    the series go away once ``removed_linger`` has passed."""
    sink = MetricsSink(registry, removed_linger=0.3)
    sink.handle([state("once"), state("once", removed=True, next_run_at=None)])
    sink.tick()
    sink.handle(run("once", Status.FAILED))
    body = sink.render()
    assert value(body, "jobtracker_runs_total", job="once", status="failed") == 1
    assert value(body, "jobtracker_runs_in_progress", job="once") == 0
    deadline = time.monotonic() + 5
    while job_samples(sink.render(), "once") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job_samples(sink.render(), "once") == {}
    sink.close(1)


def test_a_removed_jobs_late_state_does_not_revive_it(sink: MetricsSink) -> None:
    """A job state without a next run that arrives after the removal leaves the job removed."""
    sink.handle([state("once"), state("once", removed=True, next_run_at=None)])
    sink.handle([*run("once", Status.SUCCEEDED), state("once", next_run_at=None, paused=True)])
    assert job_samples(sink.render(), "once") == {}
    sink.handle([state("once")])  # really added again (it has a next run): back
    assert value(sink.render(), "jobtracker_job_paused", job="once") == 0


def test_a_job_re_added_paused_under_the_same_id_is_shown_paused(sink: MetricsSink) -> None:
    """remove_job then add_job(..., next_run_time=None) with the same id: a paused job, whose
    series stay (no run came between, so it is not a removed one-shot job's late echo)."""
    sink.handle([state("nightly"), state("nightly", removed=True, next_run_at=None)])
    sink.handle([state("nightly", next_run_at=None, paused=True)])
    sink.tick()  # removed_linger=0: a job taken for gone would vanish here
    body = sink.render()
    assert value(body, "jobtracker_job_paused", job="nightly") == 1
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="nightly") == 0


def test_seeded_history_carries_the_failure_streak_over_a_restart(sink: MetricsSink) -> None:
    """A restarted process starts from the history: its failures add to the streak; a name
    only in the history stays hidden until a scheduler or a run shows it again."""
    before = (NOW - timedelta(days=1)).timestamp(), (NOW - timedelta(hours=1)).timestamp()
    sink.handle([state("etl"), *run("etl", Status.FAILED)])  # failed again before the seed came
    sink.seed({"etl": Seed(*before, 4), "old": Seed(*before, 7)})
    body = sink.render()
    assert value(body, "jobtracker_consecutive_failures", job="etl") == 5
    assert value(body, "jobtracker_last_success_timestamp_seconds", job="etl") == before[0]
    assert value(body, "jobtracker_last_failure_timestamp_seconds", job="etl") == NOW.timestamp()
    assert job_samples(body, "old") == {}
    sink.handle([state("old")])
    assert value(sink.render(), "jobtracker_consecutive_failures", job="old") == 7
    sink.handle(run("etl", Status.SUCCEEDED))
    assert value(sink.render(), "jobtracker_consecutive_failures", job="etl") == 0


def test_a_success_since_the_start_wins_over_the_seeded_streak(sink: MetricsSink) -> None:
    """The history only knows runs before this process started: a success seen since ends
    the streak it reports."""
    sink.handle([state("etl"), *run("etl", Status.SUCCEEDED), *run("etl", Status.FAILED)])
    sink.seed({"etl": Seed((NOW - timedelta(days=1)).timestamp(), 0.0, 9)})
    body = sink.render()
    assert value(body, "jobtracker_consecutive_failures", job="etl") == 1
    assert value(body, "jobtracker_last_success_timestamp_seconds", job="etl") == NOW.timestamp()


def test_renamed_job_moves_to_its_new_name(sink: MetricsSink) -> None:
    """modify_job(name=...) moves the job id; the old name, with no id left, goes away."""
    sink.handle([state("j1", "old_name")])
    sink.handle([state("j1", "new_name")])
    body = sink.render()
    assert job_samples(body, "old_name") == {}
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="new_name") > 0  # type: ignore[operator]


def test_a_renamed_jobs_failure_streak_moves_with_it(registry: CollectorRegistry) -> None:
    """JobFailingRepeatedly must not keep firing for the old name while its series linger:
    the streak is the new name's (the job still fails), the old name's is 0 at once."""
    sink = MetricsSink(registry, removed_linger=300)
    sink.handle(
        [
            state("j1", "old_name"),
            *(e for _ in range(3) for e in run("old_name", Status.FAILED, job_id="j1")),
        ]
    )
    sink.handle([state("j1", "new_name")])
    body = sink.render()
    assert value(body, "jobtracker_consecutive_failures", job="old_name") == 0
    assert value(body, "jobtracker_runs_total", job="old_name", status="failed") == 3  # lingers
    assert value(body, "jobtracker_consecutive_failures", job="new_name") == 3
    sink.close(1)


def test_jobs_known_only_from_runs_stay(sink: MetricsSink) -> None:
    """A tracked function called directly (no scheduler) keeps its series: nothing removes it."""
    sink.handle(run("direct_call", Status.SUCCEEDED))
    sink.tick()
    assert value(sink.render(), "jobtracker_runs_total", job="direct_call", status="succeeded") == 1


# -- registry ----------------------------------------------------------------------------


def test_a_second_sink_on_the_same_registry_replaces_the_first(registry: CollectorRegistry) -> None:
    """No 'Duplicated timeseries': the newest open sink is exported, the previous on its close."""
    first = MetricsSink(registry)
    first.handle([state("from_first")])
    second = MetricsSink(registry)
    second.handle([state("from_second")])
    body = generate_latest(registry)
    assert b"from_second" in body
    assert b"from_first" not in body
    second.close(1)
    assert b"from_first" in generate_latest(registry)
    first.close(1)
    assert b"jobtracker" not in generate_latest(registry)


def test_a_real_name_clash_with_the_users_metrics_is_reported(registry: CollectorRegistry) -> None:
    """A user metric already registered under one of our names is a genuine conflict: it raises."""
    Counter("jobtracker_runs", "the user's own", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        MetricsSink(registry)


def test_render_includes_the_registrys_other_collectors(registry: CollectorRegistry) -> None:
    """The user's own metrics on the same registry are served too, each family once."""
    mine = Counter("app_orders_total", "Orders.", registry=registry)
    mine.inc(3)
    sink = MetricsSink(registry)
    sink.handle([state("j")])
    body = sink.render()
    assert value(body, "app_orders_total") == 3
    names = [line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))
    assert render(registry) == body
    sink.close(1)


def test_global_registry_keeps_process_metrics() -> None:
    """On the default REGISTRY, render() still carries the process/platform collectors."""
    sink = MetricsSink(removed_linger=0)
    try:
        assert sink.registry is REGISTRY
        sink.handle([state("global_job")])
        body = render()
        assert value(body, "jobtracker_runs_total", job="global_job", status="failed") == 0
        assert b"python_info" in body
    finally:
        sink.close(1)
    assert b"global_job" not in generate_latest(REGISTRY)


# -- rendering ---------------------------------------------------------------------------

AWKWARD = ['quote"d', "back\\slash", "new\nline", "per%cent %s %d", "ünïcödé ✓", '{le="x"}']


def test_render_equals_prometheus_clients_rendering(sink: MetricsSink) -> None:
    """render() parses to exactly the families prometheus-client renders from the collector."""
    sink.bind(_FakeHub())
    sink.count_alert("webhook", "failed")
    events: list[JobState | Execution] = []
    for i, name in enumerate(AWKWARD):
        events += [state(f"id{i}", name), *run(name, Status.FAILED, job_id=f"id{i}", duration=i)]
        events.append(not_started(name, Status.MISSED, coalesced=i))
    sink.handle(events)
    body = sink.render()
    assert families(body) == families(generate_latest(sink.registry))
    assert {dict(k[1]).get("job") for k in samples(body)} >= set(AWKWARD)


def test_an_unencodable_job_name_does_not_break_the_scrape(sink: MetricsSink) -> None:
    """A job name with a lone surrogate is served with a replacement character; others intact."""
    sink.handle([state("bad\udce9name"), state("good")])
    body = sink.render()
    assert value(body, "jobtracker_job_paused", job="bad?name") == 0
    assert value(body, "jobtracker_job_paused", job="good") == 0


def test_render_reflects_each_change_and_caches_the_rest(sink: MetricsSink) -> None:
    """Scrapes see every change; with nothing changed the body is byte-for-byte the same."""
    sink.handle([state(f"job{i}") for i in range(50)])
    first = sink.render()
    assert sink.render() == first
    sink.handle(run("job7", Status.FAILED))
    second = sink.render()
    assert value(second, "jobtracker_runs_total", job="job7", status="failed") == 1
    before = samples(first)
    changed = {k for k, v in samples(second).items() if before.get(k) != v}
    assert changed
    assert all(("job", "job7") in labels for _, labels in changed)


def test_promtool_accepts_the_exposition(sink: MetricsSink) -> None:
    """`promtool check metrics` (Prometheus's own linter) accepts the rendered text."""
    promtool = shutil.which("promtool")
    if promtool is None:
        need("promtool not installed (Debian package prometheus)")
    sink.bind(_FakeHub())
    sink.count_alert("slack", "sent")
    sink.handle([state("id0", "report"), *run("report", Status.SUCCEEDED, job_id="id0")])
    sink.handle([state(f"id{i}", name) for i, name in enumerate(AWKWARD, 1)])
    body = sink.render()
    assert body.count(b"\n") > 300
    result = subprocess.run(
        [str(promtool), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_render_is_safe_while_events_are_applied(sink: MetricsSink) -> None:
    """Scrapes from other threads during heavy updates always get a complete, parseable body."""
    stop = threading.Event()
    bodies: list[bytes] = []

    def scrape() -> None:
        while not stop.is_set():
            bodies.append(sink.render())

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for t in scrapers:
        t.start()
    for i in range(200):
        sink.handle([state(f"j{i % 20}"), *run(f"j{i % 20}", Status.SUCCEEDED)])
    stop.set()
    for t in scrapers:
        t.join()
    assert bodies
    for body in bodies[:: max(1, len(bodies) // 20)]:
        text_string_to_metric_families(body.decode())
    final = sink.render()
    total = sum(
        v for k, v in samples(final).items()
        if k[0] == "jobtracker_runs_total" and ("status", "succeeded") in k[1]
    )  # fmt: skip
    assert total == 200


# -- the tracker's own health --------------------------------------------------------------


class _FakeHub:
    """A hub stand-in with fixed stats (the real one is exercised in test_metrics_tracker)."""

    def __init__(self) -> None:
        from tracker import BaseSink

        self.sinks = [BaseSink(), type("Db", (BaseSink,), {"name": "database"})()]

    def stats(self):  # type: ignore[no-untyped-def]
        from tracker import HubStats

        return HubStats(
            pending=4, dropped={"database": 2, "metrics": 1}, sink_errors={"tracing": 5},
            live_runs=0,
        )  # fmt: skip


def test_health_metrics_come_from_the_hub(sink: MetricsSink) -> None:
    """Pending, dropped (all sinks) and errors per sink (0 for every sink) are exported."""
    sink.bind(_FakeHub())
    body = sink.render()
    assert value(body, "jobtracker_records_pending") == 4
    assert value(body, "jobtracker_records_dropped_total") == 3
    assert value(body, "jobtracker_sink_errors_total", sink="tracing") == 5
    assert value(body, "jobtracker_sink_errors_total", sink="database") == 0
    assert value(body, "jobtracker_sink_errors_total", sink="sink") == 0


def test_alerts_are_counted_by_channel_and_outcome(sink: MetricsSink) -> None:
    """count_alert adds up per (channel, outcome); amount=0 creates the series at zero."""
    assert value(sink.render(), "jobtracker_alerts_total", channel="slack", outcome="sent") is None
    sink.count_alert("slack", "sent")
    sink.count_alert("slack", "sent")
    sink.count_alert("email", "failed", 0)
    body = sink.render()
    assert value(body, "jobtracker_alerts_total", channel="slack", outcome="sent") == 2
    assert value(body, "jobtracker_alerts_total", channel="email", outcome="failed") == 0


def test_run_rows_count_as_the_records_made_of_them() -> None:
    """When every sink takes run rows (database and metrics, the default), the hub sends the
    metrics sink run rows, not records: every family — runs by status, durations, lateness,
    last success and failure, failure streaks, runs in progress — comes out as it does from
    the records made of the same rows."""
    import random

    from tracker._hub import Hub
    from tracker._ids import new_run_id
    from tracker._plain import from_run_row
    from tracker._record import Origin
    from tracker._run import Run

    rng = random.Random(3)
    by_rows, by_records = MetricsSink(CollectorRegistry()), MetricsSink(CollectorRegistry())
    hub = Hub()
    try:
        rows, records = [], []
        for n in range(2_000):
            wall = 1.7e9 + n * 0.37 + rng.random()
            scheduled = None
            if n % 5:
                scheduled = datetime.fromtimestamp(wall - rng.choice([0.0, 0.004, 7.5, 900]), UTC)
            run = Run(
                None, f"job-{n % 7}", f"name-{n % 4}", scheduled, hub.instance, Origin.SCHEDULED
            )
            run._wall0 = wall
            if n % 9 == 0:  # announced: its running record came first, under the run's id
                running = run.snapshot()
                by_rows.handle([running])
                by_records.handle([running])
            error = RuntimeError("x") if n % 3 == 0 else None
            final = rng.choice([Status.FAILED, Status.TIMED_OUT]) if error else None
            row = hub._final_run_row(run, final, error, rng.choice([0.0002, 0.6, 45.0, 4000.0]))
            rows.append(row)
            records.append(from_run_row((row[0] or new_run_id(), *row[1:]), 0, 0, 0))
            if n % 50 == 49:
                by_rows.handle(rows)
                by_records.handle(records)
                rows, records = [], []
        by_rows.handle(rows)
        by_records.handle(records)
    finally:
        hub.close()
    rendered = by_rows.render_own()
    assert b'jobtracker_runs_total{job="name-1",status="timed_out"}' in rendered
    for name in range(4):  # each announced run was ended by its run row (same id)
        assert f'jobtracker_runs_in_progress{{job="name-{name}"}} 0\n'.encode() in rendered
    assert rendered == by_records.render_own()
