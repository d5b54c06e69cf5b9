"""The Grafana dashboards and their provisioning: generated from code, well-formed, wired.

What the queries return against real data is tests/test_stack_e2e.py's business.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from grafana_queries import (
    DASHBOARDS_DIR,
    GLOBAL_VARIABLES,
    GRAFANA,
    POSTGRES_TYPE,
    PROMETHEUS_TYPE,
    data_panels,
    expand_sql_macros,
    exported_metric_names,
    iter_panels,
    load_dashboards,
    queries,
    substitute,
    variables_used,
)

from tracker.sinks.database.schema import EXECUTIONS_TABLE, executions

PROVISIONING = GRAFANA / "provisioning"
DASHBOARDS = load_dashboards()


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tracker_grafana_generate", GRAFANA / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["apiVersion"] == 1, path
        for datasource in document["datasources"]:
            assert datasource["uid"] not in found, f"duplicate datasource uid {datasource['uid']}"
            found[datasource["uid"]] = datasource
    return found


def test_committed_json_is_what_the_code_generates() -> None:
    """grafana/dashboards/*.json is exactly what grafana/generate.py builds (else: regenerate)."""
    generated = _generator().render_all()
    assert sorted(generated) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")), (
        "grafana/dashboards/ holds a dashboard the code does not build, or misses one"
    )
    for name, text in generated.items():
        committed = (DASHBOARDS_DIR / name).read_text(encoding="utf-8")
        if committed != text:
            diff = "\n".join(
                list(
                    difflib.unified_diff(
                        committed.splitlines(),
                        text.splitlines(),
                        "committed",
                        "generated",
                        lineterm="",
                    )
                )[:60]
            )
            pytest.fail(f"{name} is out of date: run python grafana/generate.py\n{diff}")


def test_generate_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    """The --check logic flags a dashboard edited by hand, and regenerating fixes it."""
    generator = _generator()
    generator.write(tmp_path)
    assert generator.stale(tmp_path) == []
    edited = tmp_path / "tracker-overview.json"
    edited.write_text(edited.read_text().replace("Tracker / Overview", "Edited"), encoding="utf-8")
    assert generator.stale(tmp_path) == ["tracker-overview.json"]
    assert generator.write(tmp_path) == ["tracker-overview.json"]
    assert generator.stale(tmp_path) == []


def test_dashboards_round_trip_through_the_grafana_schema_models() -> None:
    """Every key is one Grafana's schema knows: the SDK's models parse the JSON back unchanged."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

    register_default_plugins()
    for name, dashboard in DASHBOARDS.items():
        parsed = DashboardModel.from_json(dashboard)
        again = json.loads(JSONEncoder(sort_keys=True).encode(parsed))
        assert again == dashboard, f"{name}: keys outside Grafana's dashboard schema were dropped"


def test_there_are_an_overview_and_a_job_detail_dashboard_with_unique_uids() -> None:
    """Both dashboards exist, with stable distinct uids and titles."""
    uids = {d["uid"]: d["title"] for d in DASHBOARDS.values()}
    assert uids == {"tracker-overview": "Tracker / Overview", "tracker-job": "Tracker / Job detail"}


def test_every_panel_uses_a_provisioned_datasource_of_the_right_type() -> None:
    """Each panel and each of its queries names a datasource uid that provisioning creates."""
    provisioned = _datasources()
    for name, dashboard in DASHBOARDS.items():
        for panel in data_panels(dashboard):
            refs = [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
            for ref in refs:
                assert ref, f"{name} panel {panel['title']!r}: no datasource"
                assert ref["uid"] in provisioned, f"{name} panel {panel['title']!r}: {ref}"
                assert provisioned[ref["uid"]]["type"] == ref["type"], (name, panel["title"], ref)


def test_every_panel_has_a_title_a_description_and_queries() -> None:
    """No empty panel: each has a title, a description for operators and non-empty queries."""
    for name, dashboard in DASHBOARDS.items():
        for panel in data_panels(dashboard):
            where = f"{name} panel {panel.get('id')}"
            assert panel.get("title"), where
            assert panel.get("description"), f"{where} {panel['title']!r} has no description"
            targets = panel.get("targets") or []
            assert targets, f"{where} {panel['title']!r} has no queries"
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), (where, ref_ids)
        for query in queries(name, dashboard):
            assert query.text.strip(), f"{query.label}: empty query"


def test_panel_ids_are_unique_and_the_grid_has_no_overlaps() -> None:
    """Panel ids are unique and every panel fits the 24-column grid without overlapping another."""
    for name, dashboard in DASHBOARDS.items():
        panels = list(iter_panels(dashboard))
        ids = [p["id"] for p in panels]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids {ids}"
        cells: dict[tuple[int, int], str] = {}
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, (name, panel)
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{name}: {panel['title']!r} overlaps {other!r}"


def test_overview_has_the_panels_operators_need() -> None:
    """The overview has runs by status, failure ratio, quantiles, in progress, attention, health."""
    overview = DASHBOARDS["tracker-overview.json"]
    text = json.dumps(overview)
    titles = {p["title"] for p in data_panels(overview)}
    for title in (
        "Runs per minute by status",
        "Failure ratio by job",
        "Run duration p50 / p95 / p99 by job",
        "Lateness p95 by job",
        "Runs in progress by job",
        "Jobs that need attention",
        "Records pending",
        "Records dropped",
        "Sink errors by sink",
        "Alerts sent by outcome",
    ):
        assert title in titles
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (job, le) (rate(jobtracker_run_duration" in text
        )


def test_attention_table_filters_and_names_columns_of_its_own_queries() -> None:
    """The attention table's transformations only refer to 'Value #X' columns of queries it has."""
    overview = DASHBOARDS["tracker-overview.json"]
    [panel] = [p for p in data_panels(overview) if p["title"] == "Jobs that need attention"]
    ref_ids = {t["refId"] for t in panel["targets"]}
    assert all(t["format"] == "table" and t["instant"] for t in panel["targets"])
    referenced = set(re.findall(r"Value #(\w+)", json.dumps(panel["transformations"])))
    assert referenced == ref_ids
    filters = next(t for t in panel["transformations"] if t["id"] == "filterByValue")
    assert filters["options"]["match"] == "any"
    renamed = next(t for t in panel["transformations"] if t["id"] == "organize")
    names = set(renamed["options"]["renameByName"].values())
    overridden = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
    assert overridden <= names, overridden - names


def test_job_detail_has_a_job_variable_from_prometheus_labels() -> None:
    """$job lists the `job` label values of jobtracker_runs_total, from Prometheus."""
    detail = DASHBOARDS["tracker-job.json"]
    [variable] = detail["templating"]["list"]
    assert variable["name"] == "job"
    assert variable["type"] == "query"
    assert variable["query"] == "label_values(jobtracker_runs_total, job)"
    assert variable["datasource"]["type"] == PROMETHEUS_TYPE
    assert not variable["multi"] and not variable["includeAll"]


def test_job_detail_reads_run_history_from_postgresql() -> None:
    """The job detail's history panels query job_executions for $job within the time range."""
    detail = DASHBOARDS["tracker-job.json"]
    sql = [q for q in queries("tracker-job.json", detail) if q.is_sql]
    titles = {q.panel_title for q in sql}
    assert {"Run history", "Errors in this range", "Each run's duration (run history)"} <= titles
    for query in sql:
        assert f"FROM {EXECUTIONS_TABLE}" in query.text, query.label
        assert "job_name = '$job'" in query.text, query.label
        assert "$__timeFilter(scheduled_at)" in query.text, query.label
    history = next(q for q in sql if q.panel_title == "Run history")
    for column in ("status", "duration_s", "error_message", "scheduled_at", "run_id"):
        assert column in history.text


def test_sql_queries_expand_and_use_only_columns_of_the_executions_table() -> None:
    """Every SQL macro is one the tests can expand, and every identifier is a real column."""
    from datetime import UTC, datetime, timedelta

    columns = {c.name for c in executions.columns}
    keywords = {
        "select", "as", "from", "where", "and", "order", "by", "desc", "limit", "between",
        "is", "not", "null", "in", "group", "count", "max", "coalesce", "array_agg",
        "metric", "value", "time", EXECUTIONS_TABLE,
    }  # fmt: skip
    end = datetime.now(UTC)
    for name, dashboard in DASHBOARDS.items():
        for query in (q for q in queries(name, dashboard) if q.is_sql):
            sql = expand_sql_macros(
                substitute(query.text, {"job": "x"}), end - timedelta(hours=1), end
            )
            bare = re.sub(r"'[^']*'|\"[^\"]*\"", " ", sql)
            words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare)}
            unknown = words - keywords - columns
            assert not unknown, f"{query.label}: unknown identifiers {unknown}"


def test_promql_uses_only_exported_metrics_and_known_variables() -> None:
    """Each metric a panel queries is one the metrics sink exports; each $variable exists."""
    exported = exported_metric_names() | {"ALERTS", "up"}
    for name, dashboard in DASHBOARDS.items():
        defined = {v["name"] for v in dashboard["templating"].get("list", [])}
        for query in (q for q in queries(name, dashboard) if not q.is_sql):
            used = set(re.findall(r"\b(jobtracker_\w+|ALERTS|up)\b", query.text))
            assert used, f"{query.label}: queries no metric"
            assert used <= exported, f"{query.label}: unknown metrics {used - exported}"
            unknown = variables_used(query.text) - defined - GLOBAL_VARIABLES
            assert not unknown, f"{query.label}: undefined variables {unknown}"


def test_datasource_provisioning_points_at_the_compose_services() -> None:
    """Provisioning creates the Prometheus and PostgreSQL datasources the dashboards use."""
    datasources = _datasources()
    assert set(datasources) == {"tracker-prometheus", "tracker-postgres"}
    prometheus = datasources["tracker-prometheus"]
    assert prometheus["type"] == PROMETHEUS_TYPE and prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True
    postgres = datasources["tracker-postgres"]
    assert postgres["type"] == POSTGRES_TYPE
    assert postgres["url"] == "postgres:5432"
    assert postgres["jsonData"]["database"] == "tracker"
    assert postgres["secureJsonData"]["password"].startswith("$")  # from the environment


def test_dashboard_provider_loads_the_committed_json() -> None:
    """The file provider reads the folder docker-compose mounts grafana/dashboards at."""
    document = yaml.safe_load((PROVISIONING / "dashboards" / "tracker.yml").read_text())
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((GRAFANA.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == f"{provider['options']['path']}/tracker-overview.json"


def test_links_between_dashboards_resolve() -> None:
    """The overview's job links and the detail's overview link point at dashboards that exist."""
    uids = {d["uid"] for d in DASHBOARDS.values()}
    tags = {tag for d in DASHBOARDS.values() for tag in d.get("tags", [])}
    for dashboard in DASHBOARDS.values():
        for link in dashboard.get("links", []):
            if link["type"] == "dashboards":
                assert set(link["tags"]) <= tags, link
            else:
                assert re.match(r"/d/([\w-]+)/", link["url"]).group(1) in uids, link  # type: ignore[union-attr]
        for url in re.findall(r'"url": "(/d/[^"]+)"', json.dumps(dashboard)):
            assert url.split("/")[2] in uids, url
