"""What both dashboards share: datasource references, a SQL query type, panel helpers.

The datasource uids are the ones grafana/provisioning/datasources/tracker.yml creates.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterator
from typing import Any, Self

from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import AnnotationQuery, ThresholdsConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    Panel,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

PanelBuilder = cogbuilder.Builder[Panel]
"""What ``Dashboard.with_panel`` takes: any panel builder."""

PROMETHEUS_UID = "tracker-prometheus"
POSTGRES_UID = "tracker-postgres"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid=POSTGRES_UID)

OVERVIEW_UID = "tracker-overview"
JOB_DETAIL_UID = "tracker-job"

STARTED = "succeeded|failed|timed_out|interrupted"
"""Statuses of runs that really started (``jobtracker_runs_total`` never counts ``running``)."""
FAILED = "failed|timed_out"
"""Statuses that count as failures (as the consecutive-failures gauge counts them)."""
OVERDUE_AFTER_S = 300
"""A next run time further in the past than this is overdue (as the JobOverdue alert says)."""

STATUS_COLORS = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "dark-red",
    "interrupted": "purple",
    "missed": "orange",
    "skipped": "yellow",
    "running": "blue",
}


class SqlQuery(cogvariants.Dataquery):
    """A query of Grafana's SQL datasources (PostgreSQL), written as raw SQL.

    The SDK ships no builder for them; this is the JSON Grafana stores for a query
    written in the code editor.
    """

    def __init__(self, raw_sql: str, fmt: str, ref_id: str) -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": POSTGRES,
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["rawSql"], data.get("format", "table"), data.get("refId", "A"))


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for :class:`SqlQuery` (``fmt`` is ``table`` or ``time_series``)."""

    def __init__(self, raw_sql: str, *, fmt: str = "table", ref_id: str = "A") -> None:
        self._internal = SqlQuery(dedent(raw_sql), fmt, ref_id)

    def build(self) -> SqlQuery:
        return self._internal


def dedent(query: str) -> str:
    """A query written indented in the code, as stored: no common indent, no blank ends."""
    return textwrap.dedent(query).strip()


class PanelIds:
    """Sequential panel ids, so the generated JSON is stable."""

    def __init__(self) -> None:
        self._ids: Iterator[int] = itertools.count(1)

    def __call__(self) -> int:
        return next(self._ids)


def builtin_annotations() -> AnnotationQuery:
    """Grafana's own annotations (the query every dashboard has by default)."""
    return (
        AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )


def prom(
    expr: str, legend: str = "__auto", *, ref_id: str = "A", instant: bool = False
) -> prometheus.Dataquery:
    """A Prometheus query on the provisioned Prometheus datasource."""
    query = (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .expr(dedent(expr))
        .legend_format(legend)
        .ref_id(ref_id)
    )
    return query.instant() if instant else query.range()


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds: ``(None, "green"), (1, "red")``."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def value_text(mapping: dict[str, tuple[str, str]]) -> ValueMap:
    """A value mapping: ``{"1": ("paused", "orange")}``."""
    return ValueMap(
        options={
            value: ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(mapping.items())
        }
    )


def stat_panel(
    ids: PanelIds, title: str, description: str, *queries: prometheus.Dataquery
) -> stat.Panel:
    """A single-value panel (last value, with a sparkline when the query is a range)."""
    panel = (
        stat.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .height(4)
        .span(3)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(_last_value())
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _last_value() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def timeseries_panel(
    ids: PanelIds,
    title: str,
    description: str,
    *queries: prometheus.Dataquery | Sql,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    datasource: DataSourceRef = PROMETHEUS,
    bars: bool = False,
) -> timeseries.Panel:
    """A time series panel; ``bars`` draws stacked bars (counts per status)."""
    panel = (
        timeseries.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(datasource)
        .height(height)
        .span(width)
        .unit(unit)
        .legend(
            VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(
                common.LegendPlacement.RIGHT if width >= 12 else common.LegendPlacement.BOTTOM
            )
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if bars:
        panel = (
            panel.draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
        )
    else:
        panel = panel.fill_opacity(10).line_width(1)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def color_statuses(panel: timeseries.Panel) -> timeseries.Panel:
    """Fixed colours per status series (legend ``{{status}}``)."""
    for status, color in STATUS_COLORS.items():
        panel = panel.override_by_name(status, [_fixed_color(color)])
    return panel


def _fixed_color(color: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def status_value_mappings() -> ValueMap:
    """Status names shown in their colour (tables)."""
    return value_text({status: (status, color) for status, color in STATUS_COLORS.items()})


def table_panel(
    ids: PanelIds,
    title: str,
    description: str,
    *queries: prometheus.Dataquery | Sql,
    datasource: DataSourceRef,
    width: int = 24,
    height: int = 10,
) -> table.Panel:
    """A table panel."""
    panel = (
        table.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(datasource)
        .height(height)
        .span(width)
        .align(common.FieldTextAlignment.AUTO)
        .inspect(False)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def job_link(job_field: str = "${__value.raw}") -> dict[str, object]:
    """A data link to the job detail dashboard for the job in the clicked cell."""
    return {
        "title": "Job detail",
        "url": f"/d/{JOB_DETAIL_UID}/?var-job={job_field}&${{__url_time_range}}",
    }
