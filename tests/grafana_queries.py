"""Reading the committed Grafana dashboards the way Grafana does: panels, queries, variables.

Used by tests/test_dashboards.py (structure) and tests/test_stack_e2e.py (every query run
against a real Prometheus and PostgreSQL). Grafana substitutes its variables and expands
its SQL macros before a query reaches the datasource; so do these helpers, and they
refuse anything they do not know instead of passing it through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS_DIR = GRAFANA / "dashboards"
PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"

GLOBAL_VARIABLES = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
"""Grafana's built-in variables the dashboards may use in PromQL."""

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_SQL_MACRO = re.compile(r"\$__(\w+)\(([^)]*)\)")


@dataclass(frozen=True)
class Query:
    """One target of one panel."""

    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    datasource: Mapping[str, Any]
    text: str
    """The PromQL expression or the raw SQL."""
    instant: bool
    fmt: str

    @property
    def is_sql(self) -> bool:
        return str(self.datasource.get("type")) == POSTGRES_TYPE

    @property
    def label(self) -> str:
        return f"{self.dashboard} / {self.panel_title!r} (panel {self.panel_id}) / {self.ref_id}"


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Every committed dashboard: file name -> parsed JSON."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.json"))
    }


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The panels that query something (not rows)."""
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


def queries(name: str, dashboard: Mapping[str, Any]) -> list[Query]:
    """Every target of every panel of ``dashboard``."""
    found = []
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            is_sql = datasource.get("type") == POSTGRES_TYPE
            found.append(
                Query(
                    dashboard=name,
                    panel_id=int(panel["id"]),
                    panel_title=str(panel.get("title", "")),
                    ref_id=str(target.get("refId", "")),
                    datasource=datasource,
                    text=str(target.get("rawSql" if is_sql else "expr", "")),
                    instant=bool(target.get("instant")) and not target.get("range"),
                    fmt=str(target.get("format", "time_series")),
                )
            )
    return found


def variables_used(text: str) -> set[str]:
    """Names of the ``$var`` / ``${var}`` / ``[[var]]`` references in a query."""
    names = set()
    for match in _VARIABLE.finditer(text):
        names.add(next(g for g in match.groups() if g))
    return names


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with Grafana variables replaced; ``KeyError`` for one not in ``values``."""

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {text!r}")
        return values[name]

    # SQL macros look like variables ($__timeFilter(...)): leave them to expand_sql_macros
    return _VARIABLE.sub(lambda m: m.group(0) if _is_macro_call(text, m) else replace(m), text)


def _is_macro_call(text: str, match: re.Match[str]) -> bool:
    return bool(match.group(1)) and text[match.end() : match.end() + 1] == "("


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(interval: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    if not match:
        raise ValueError(f"unsupported interval {interval!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def expand_sql_macros(sql: str, start: datetime, end: datetime) -> str:
    """Expand Grafana's PostgreSQL macros as its datasource does; ``ValueError`` for others."""

    def expand(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        if name == "timeFilter" and len(args) == 1:
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "timeFrom" and not args:
            return f"'{_rfc3339(start)}'"
        if name == "timeTo" and not args:
            return f"'{_rfc3339(end)}'"
        if name in ("timeGroup", "timeGroupAlias") and len(args) == 2:
            step = _seconds(args[1])
            grouped = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return grouped + (' AS "time"' if name == "timeGroupAlias" else "")
        raise ValueError(f"unsupported Grafana SQL macro {match.group(0)!r}")

    expanded = _SQL_MACRO.sub(expand, sql)
    if "$__" in expanded:
        raise ValueError(f"unexpanded Grafana macro left in {expanded!r}")
    return expanded


def exported_metric_names() -> set[str]:
    """Every series name the metrics sink exports (histograms as _bucket/_sum/_count)."""
    from tracker.sinks.metrics.families import HEALTH_FAMILIES, JOB_FAMILIES

    names: set[str] = set()
    for family in (*JOB_FAMILIES, *HEALTH_FAMILIES):
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names
