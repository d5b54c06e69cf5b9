"""The Job detail dashboard: one job (``$job``), its runs, and its run history from SQL."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, DashboardLink, QueryVariable, Row
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DynamicConfigValue,
    VariableRefresh,
    VariableSort,
)

from .common import (
    FAILED,
    JOB_DETAIL_UID,
    OVERVIEW_UID,
    POSTGRES,
    PROMETHEUS,
    STARTED,
    PanelBuilder,
    PanelIds,
    Sql,
    builtin_annotations,
    color_statuses,
    prom,
    stat_panel,
    status_value_mappings,
    table_panel,
    thresholds,
    timeseries_panel,
    value_text,
)

JOB = 'job="$job"'

RUN_HISTORY_SQL = """
    SELECT
      scheduled_at AS "Scheduled",
      started_at AS "Started",
      status AS "Status",
      duration_s AS "Duration",
      lateness_s AS "Lateness",
      origin AS "Origin",
      error_type AS "Error type",
      error_message AS "Error message",
      job_id AS "Job id",
      instance AS "Instance",
      run_id AS "Run id"
    FROM job_executions
    WHERE job_name = '$job'
      AND $__timeFilter(scheduled_at)
    ORDER BY scheduled_at DESC, run_id DESC
    LIMIT 200
"""

RUN_DURATIONS_SQL = """
    SELECT
      scheduled_at AS "time",
      status AS metric,
      duration_s AS value
    FROM job_executions
    WHERE job_name = '$job'
      AND $__timeFilter(scheduled_at)
      AND duration_s IS NOT NULL
    ORDER BY 1
"""

ERRORS_SQL = """
    SELECT
      COALESCE(error_type, status) AS "Error",
      count(*) AS "Runs",
      max(scheduled_at) AS "Last seen",
      (array_agg(error_message ORDER BY scheduled_at DESC))[1] AS "Latest message"
    FROM job_executions
    WHERE job_name = '$job'
      AND status IN ('failed', 'timed_out', 'interrupted', 'missed', 'skipped')
      AND $__timeFilter(scheduled_at)
    GROUP BY 1
    ORDER BY 2 DESC, 3 DESC
"""


def build() -> Dashboard:
    ids = PanelIds()
    dashboard = (
        Dashboard("Tracker / Job detail")
        .uid(JOB_DETAIL_UID)
        .description(
            "One job: its runs, durations against their history, lateness, failures, and its "
            "run history from the database."
        )
        .tags(["tracker", "jobs", "tracker-job"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .annotation(builtin_annotations())
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .description("The job's name (the `job` label of the jobtracker_* series).")
            .datasource(PROMETHEUS)
            .query("label_values(jobtracker_runs_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        )
        .link(
            DashboardLink("Overview")
            .type(DashboardLinkType.LINK)
            .url(f"/d/{OVERVIEW_UID}/")
            .icon("dashboard")
            .keep_time(True)
        )
    )

    dashboard = dashboard.with_row(Row("$job").id(ids()))
    for panel in _glance(ids):
        dashboard = dashboard.with_panel(panel)

    dashboard = dashboard.with_row(Row("Runs and failures").id(ids()))
    dashboard = dashboard.with_panel(
        color_statuses(
            timeseries_panel(
                ids,
                "Runs per minute by status",
                "Finished runs of $job per minute, by final status.",
                prom(
                    f"sum by (status) (rate(jobtracker_runs_total{{{JOB}}}[$__rate_interval])) * "
                    "60",
                    "{{status}}",
                ),
                bars=True,
            )
        )
    )
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Failures",
            "Consecutive failures of $job (the streak the alerts look at) and its failed or "
            "timed-out runs per minute.",
            prom(
                f"max(jobtracker_consecutive_failures{{{JOB}}})", "consecutive failures", ref_id="A"
            ),
            prom(
                f'sum(rate(jobtracker_runs_total{{{JOB}, status=~"{FAILED}"}}[$__rate_interval]))'
                " * 60",
                "failed runs / min",
                ref_id="B",
            ),
        )
    )

    dashboard = dashboard.with_row(Row("Duration and lateness").id(ids()))
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Duration against its history",
            "p50/p95/p99 of the runs that finished in each interval, and the p95 over the 24 "
            "hours before (dashed): the line to compare with.",
            *(
                prom(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(jobtracker_run_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    f"p{label}",
                    ref_id=ref,
                )
                for q, label, ref in ((0.5, "50", "A"), (0.95, "95", "B"), (0.99, "99", "C"))
            ),
            prom(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(jobtracker_run_duration_seconds_bucket{{{JOB}}}[1d])))",
                "p95 over 24 h",
                ref_id="D",
            ),
            unit="s",
        ).override_by_name(
            "p95 over 24 h",
            [
                DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "text"}),
            ],
        )
    )
    dashboard = dashboard.with_panel(
        timeseries_panel(
            ids,
            "Lateness",
            "How long after the due fire time the runs of $job really started.",
            *(
                prom(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(jobtracker_run_lateness_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    f"p{label}",
                    ref_id=ref,
                )
                for q, label, ref in ((0.5, "50", "A"), (0.95, "95", "B"))
            ),
            unit="s",
        )
    )
    dashboard = dashboard.with_panel(
        color_statuses(
            timeseries_panel(
                ids,
                "Each run's duration (run history)",
                "One point per run of $job from the job_executions table, coloured by status.",
                Sql(RUN_DURATIONS_SQL, fmt="time_series"),
                unit="s",
                width=24,
                datasource=POSTGRES,
            )
            .draw_style(common.GraphDrawStyle.POINTS)
            .point_size(6)
        )
    )

    dashboard = dashboard.with_row(Row("Run history").id(ids()))
    dashboard = dashboard.with_panel(_history(ids))
    dashboard = dashboard.with_panel(_errors(ids))
    return dashboard


def _glance(ids: PanelIds) -> list[PanelBuilder]:
    return [
        stat_panel(
            ids,
            "Since last success",
            "Time since the last successful run of $job finished.",
            prom(f"time() - max(jobtracker_last_success_timestamp_seconds{{{JOB}}} > 0)"),
        )
        .unit("s")
        .no_value("never")
        .thresholds(thresholds((None, "blue"))),
        stat_panel(
            ids,
            "Next run in",
            "Time until the next fire time; negative means it is already in the past (overdue).",
            prom(f"max(jobtracker_next_run_timestamp_seconds{{{JOB}}} > 0) - time()"),
        )
        .unit("s")
        .no_value("not scheduled")
        .thresholds(thresholds((None, "red"), (-60, "green"))),
        stat_panel(
            ids,
            "Consecutive failures",
            "Failed or timed-out runs since the last success.",
            prom(f"max(jobtracker_consecutive_failures{{{JOB}}})"),
        ).thresholds(thresholds((None, "green"), (1, "orange"), (3, "red"))),
        stat_panel(
            ids,
            "Success ratio",
            "Succeeded runs over runs that started, over the dashboard's time range.",
            prom(
                f"""
                sum(increase(jobtracker_runs_total{{{JOB}, status="succeeded"}}[$__range]))
                /
                (sum(increase(jobtracker_runs_total{{{JOB}, status=~"{STARTED}"}}[$__range])) > 0)
                """,
                instant=True,
            ),
        )
        .unit("percentunit")
        .no_value("no runs")
        .thresholds(thresholds((None, "red"), (0.9, "orange"), (0.99, "green"))),
        stat_panel(
            ids,
            "In progress",
            "Runs of $job in progress right now.",
            prom(f"sum(jobtracker_runs_in_progress{{{JOB}}})"),
        ).thresholds(thresholds((None, "blue"))),
        stat_panel(
            ids,
            "State",
            "Paused or active.",
            prom(f"max(jobtracker_job_paused{{{JOB}}})"),
        )
        .mappings([value_text({"0": ("active", "green"), "1": ("paused", "orange")})])
        .thresholds(thresholds((None, "green"))),
        stat_panel(
            ids,
            "Missed / skipped",
            "Fire times of $job that were missed or skipped over the dashboard's time range.",
            prom(
                f'sum(increase(jobtracker_runs_total{{{JOB}, status=~"missed|skipped"}}'
                "[$__range]))",
                instant=True,
            ),
        )
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "orange"))),
        stat_panel(
            ids,
            "Runs",
            "Finished runs of $job over the dashboard's time range, every status.",
            prom(f"sum(increase(jobtracker_runs_total{{{JOB}}}[$__range]))", instant=True),
        )
        .decimals(0)
        .thresholds(thresholds((None, "blue"))),
    ]


def _history(ids: PanelIds) -> PanelBuilder:
    color_text = DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"})
    return (
        table_panel(
            ids,
            "Run history",
            "The latest 200 runs of $job in the time range, newest first, read from the "
            "job_executions table.",
            Sql(RUN_HISTORY_SQL),
            datasource=POSTGRES,
            height=12,
        )
        .override_by_name(
            "Status",
            [DynamicConfigValue(id_val="mappings", value=[status_value_mappings()]), color_text],
        )
        .override_by_name("Duration", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Lateness", [DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "Error message",
            [
                DynamicConfigValue(id_val="custom.inspect", value=True),
                DynamicConfigValue(id_val="custom.minWidth", value=300),
            ],
        )
    )


def _errors(ids: PanelIds) -> PanelBuilder:
    return table_panel(
        ids,
        "Errors in this range",
        "Runs of $job that failed, timed out, were interrupted, missed or skipped, grouped by "
        "error type (or status), with the latest message.",
        Sql(ERRORS_SQL),
        datasource=POSTGRES,
        height=8,
    ).override_by_name("Latest message", [DynamicConfigValue(id_val="custom.inspect", value=True)])
