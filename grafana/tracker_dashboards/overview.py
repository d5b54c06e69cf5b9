"""The Overview dashboard: every job at once, and the tracker's own health."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, DashboardLink, Row
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataTransformerConfig,
    DynamicConfigValue,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from .common import (
    FAILED,
    OVERDUE_AFTER_S,
    OVERVIEW_UID,
    PROMETHEUS,
    STARTED,
    PanelBuilder,
    PanelIds,
    builtin_annotations,
    color_statuses,
    job_link,
    prom,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    value_text,
)

ATTENTION_OVERDUE_S = 60
"""The attention table lists a job whose next run is this late (the alert waits longer)."""


def build() -> Dashboard:
    ids = PanelIds()
    dashboard = (
        Dashboard("Tracker / Overview")
        .uid(OVERVIEW_UID)
        .description(
            "Every scheduled job tracked by tracker: runs, failures, durations, lateness, and "
            "the tracker's own health."
        )
        .tags(["tracker", "jobs"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .annotation(builtin_annotations())
        .link(
            DashboardLink("Job detail")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["tracker-job"])
            .as_dropdown(False)
            .include_vars(False)
            .keep_time(True)
        )
    )

    dashboard = dashboard.with_row(Row("At a glance").id(ids()))
    for panel in _glance(ids):
        dashboard = dashboard.with_panel(panel)

    dashboard = dashboard.with_row(Row("Runs").id(ids()))
    dashboard = dashboard.with_panel(
        color_statuses(
            timeseries_panel(
                ids,
                "Runs per minute by status",
                "Finished runs per minute of all jobs, by final status (missed counts every "
                "fire time it stands for).",
                prom(
                    "sum by (status) (rate(jobtracker_runs_total[$__rate_interval])) * 60",
                    "{{status}}",
                ),
                unit="short",
                bars=True,
            )
        )
    )
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Failure ratio by job",
            "Failed and timed-out runs over runs that started (succeeded, failed, timed out, "
            "interrupted); 0 when a job did not run.",
            prom(
                f"""
                sum by (job) (rate(jobtracker_runs_total{{status=~"{FAILED}"}}[$__rate_interval]))
                /
                clamp_min(
                  sum by (job) (
                    rate(jobtracker_runs_total{{status=~"{STARTED}"}}[$__rate_interval])
                  ),
                  1e-9
                )
                """,
                "{{job}}",
            ),
            unit="percentunit",
        )
        .min(0)
        .max(1)
    )

    dashboard = dashboard.with_row(Row("Duration and lateness").id(ids()))
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Run duration p50 / p95 / p99 by job",
            "Quantiles of the duration of runs that finished in each interval (estimated from "
            "the histogram buckets).",
            *(
                prom(
                    f"histogram_quantile({q}, sum by (job, le) "
                    "(rate(jobtracker_run_duration_seconds_bucket[$__rate_interval])))",
                    f"{{{{job}}}} p{label}",
                    ref_id=ref,
                )
                for q, label, ref in ((0.5, "50", "A"), (0.95, "95", "B"), (0.99, "99", "C"))
            ),
            unit="s",
        )
    )
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Lateness p95 by job",
            "How long after its due fire time a run really started (95th percentile); growth "
            "means a saturated executor or a blocked scheduler.",
            prom(
                "histogram_quantile(0.95, sum by (job, le) "
                "(rate(jobtracker_run_lateness_seconds_bucket[$__rate_interval])))",
                "{{job}}",
            ),
            unit="s",
        )
    )

    dashboard = dashboard.with_row(Row("Now").id(ids()))
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Runs in progress by job",
            "Runs started and not finished. A flat line above 0 that never drops is a stuck run.",
            prom("sum by (job) (jobtracker_runs_in_progress)", "{{job}}"),
            width=8,
            height=10,
        )
    )
    dashboard = dashboard.with_panel(_attention(ids))

    dashboard = dashboard.with_row(Row("Tracker health").id(ids()))
    for panel in _health(ids):
        dashboard = dashboard.with_panel(panel)
    return dashboard


def _glance(ids: PanelIds) -> list[PanelBuilder]:
    return [
        stat_panel(
            ids,
            "Jobs",
            "Jobs known to the tracker (by name).",
            prom("count(count by (job) (jobtracker_job_paused)) or on() vector(0)"),
        ).thresholds(thresholds((None, "blue"))),
        stat_panel(
            ids,
            "Runs / min",
            "Finished runs per minute, all jobs and statuses.",
            prom("sum(rate(jobtracker_runs_total[$__rate_interval])) * 60 or on() vector(0)"),
        )
        .thresholds(thresholds((None, "blue")))
        .decimals(1),
        stat_panel(
            ids,
            "Failure ratio",
            "Failed and timed-out runs over runs that started, over the dashboard's time range.",
            prom(
                f"""
                sum(increase(jobtracker_runs_total{{status=~"{FAILED}"}}[$__range]))
                /
                clamp_min(
                  sum(increase(jobtracker_runs_total{{status=~"{STARTED}"}}[$__range])), 1e-9
                )
                """,
                instant=True,
            ),
        )
        .unit("percentunit")
        .thresholds(thresholds((None, "green"), (0.01, "orange"), (0.1, "red"))),
        stat_panel(
            ids,
            "Failing now",
            "Jobs whose last run failed (consecutive failures above 0).",
            prom("count(max by (job) (jobtracker_consecutive_failures) > 0) or on() vector(0)"),
        ).thresholds(thresholds((None, "green"), (1, "red"))),
        stat_panel(
            ids,
            "Overdue",
            f"Jobs whose next run time is more than {OVERDUE_AFTER_S} s in the past (the "
            "scheduler is not firing them).",
            prom(
                "count((time() - max by (job) (jobtracker_next_run_timestamp_seconds > 0)) > "
                f"{OVERDUE_AFTER_S}) or on() vector(0)"
            ),
        ).thresholds(thresholds((None, "green"), (1, "red"))),
        stat_panel(
            ids,
            "In progress",
            "Runs in progress right now, all jobs.",
            prom("sum(jobtracker_runs_in_progress) or on() vector(0)"),
        ).thresholds(thresholds((None, "blue"))),
        stat_panel(
            ids,
            "Paused",
            "Jobs paused (every job id with that name).",
            prom("sum(max by (job) (jobtracker_job_paused)) or on() vector(0)"),
        ).thresholds(thresholds((None, "green"), (1, "orange"))),
        stat_panel(
            ids,
            "Alerts firing",
            "Alerts of prometheus/rules/tracker.yml firing now in Prometheus.",
            prom(
                'count(ALERTS{alertstate="firing", alertname=~"Job.+|Tracker.+"}) or on() vector(0)'
            ),
        ).thresholds(thresholds((None, "green"), (1, "red"))),
    ]


def _attention(ids: PanelIds) -> PanelBuilder:
    """Jobs failing now, failing in a row, overdue or paused: one row per job."""
    queries = [
        prom("max by (job) (jobtracker_consecutive_failures)", ref_id="A", instant=True),
        prom(
            "max by (job) (jobtracker_last_failure_timestamp_seconds)"
            " > bool max by (job) (jobtracker_last_success_timestamp_seconds)",
            ref_id="B",
            instant=True,
        ),
        prom(
            "time() - max by (job) (jobtracker_last_success_timestamp_seconds > 0)",
            ref_id="C",
            instant=True,
        ),
        prom(
            "time() - max by (job) (jobtracker_next_run_timestamp_seconds > 0)",
            ref_id="D",
            instant=True,
        ),
        prom("max by (job) (jobtracker_job_paused)", ref_id="E", instant=True),
    ]
    for query in queries:
        query.format(PromQueryFormat.TABLE)
    panel = table_panel(
        ids,
        "Jobs that need attention",
        "Jobs failing now, failing in a row, whose next run is more than "
        f"{ATTENTION_OVERDUE_S} s in the past, or paused. Empty when all is well. Click a job "
        "for its detail.",
        *queries,
        datasource=PROMETHEUS,
        width=16,
        height=10,
    ).no_value("No job needs attention")
    transformations = [
        DataTransformerConfig(id_val="merge", options={}),
        DataTransformerConfig(
            id_val="filterByValue",
            options={
                "type": "include",
                "match": "any",
                "filters": [
                    {"fieldName": "Value #A", "config": {"id": "greater", "options": {"value": 0}}},
                    {"fieldName": "Value #B", "config": {"id": "equal", "options": {"value": 1}}},
                    {
                        "fieldName": "Value #D",
                        "config": {"id": "greater", "options": {"value": ATTENTION_OVERDUE_S}},
                    },
                    {"fieldName": "Value #E", "config": {"id": "equal", "options": {"value": 1}}},
                ],
            },
        ),
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True},
                "indexByName": {
                    "job": 0,
                    "Value #B": 1,
                    "Value #A": 2,
                    "Value #C": 3,
                    "Value #D": 4,
                    "Value #E": 5,
                },
                "renameByName": {
                    "job": "Job",
                    "Value #A": "Consecutive failures",
                    "Value #B": "Failing now",
                    "Value #C": "Since last success",
                    "Value #D": "Next run in the past by",
                    "Value #E": "Paused",
                },
            },
        ),
        DataTransformerConfig(
            id_val="sortBy", options={"sort": [{"field": "Consecutive failures", "desc": True}]}
        ),
    ]
    panel = panel.transformations(transformations)
    yes_no = value_text({"0": ("no", "green"), "1": ("yes", "red")})
    color_text = DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"})
    return (
        panel.override_by_name("Job", [DynamicConfigValue(id_val="links", value=[job_link()])])
        .override_by_name(
            "Failing now", [DynamicConfigValue(id_val="mappings", value=[yes_no]), color_text]
        )
        .override_by_name(
            "Paused",
            [
                DynamicConfigValue(
                    id_val="mappings",
                    value=[value_text({"0": ("no", "green"), "1": ("paused", "orange")})],
                ),
                color_text,
            ],
        )
        .override_by_name(
            "Consecutive failures",
            [
                DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds((None, "green"), (1, "orange"), (3, "red")).build(),
                ),
                DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
                color_text,
            ],
        )
        .override_by_name("Since last success", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "Next run in the past by",
            [
                DynamicConfigValue(id_val="unit", value="s"),
                DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds((None, "green"), (ATTENTION_OVERDUE_S, "red")).build(),
                ),
                DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
                color_text,
            ],
        )
    )


def _health(ids: PanelIds) -> list[PanelBuilder]:
    return [
        timeseries_panel(
            ids,
            "Records pending",
            "Records accepted and not yet written by every sink. Grows when the database is "
            "down or slow (alert TrackerWriteBacklog).",
            prom("sum by (instance) (jobtracker_records_pending)", "{{instance}}"),
            width=6,
        ),
        timeseries_panel(
            ids,
            "Records dropped",
            "Records thrown away because a sink's buffer was full (alert "
            "TrackerRecordsDropped). 0 is the only good value.",
            prom(
                "sum by (instance) (increase(jobtracker_records_dropped_total[$__rate_interval]))",
                "{{instance}}",
            ),
            width=6,
        ).thresholds(thresholds((None, "green"), (1, "red"))),
        timeseries_panel(
            ids,
            "Sink errors by sink",
            "Exceptions raised by each sink (database, metrics, ...); the jobs are never "
            "affected (alert TrackerSinkErrors).",
            prom(
                "sum by (sink) (increase(jobtracker_sink_errors_total[$__rate_interval]))",
                "{{sink}}",
            ),
            width=6,
        ),
        timeseries_panel(
            ids,
            "Alerts sent by outcome",
            "Notifications the tracker's own alerting sent, by channel and outcome (0 when no "
            "channel is configured).",
            prom(
                "sum by (channel, outcome) "
                "(increase(jobtracker_alerts_total[$__rate_interval])) or on() vector(0)",
                "{{channel}} {{outcome}}",
            ),
            width=6,
        ),
    ]
