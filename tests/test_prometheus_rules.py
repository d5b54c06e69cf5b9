"""The Prometheus configuration and alert rules, checked and unit-tested with promtool;
the Alertmanager configuration, checked and route-tested with amtool.

Evaluating the rules against a real Prometheus scraping the demo is tests/test_stack_e2e.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import need
from grafana_queries import exported_metric_names

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        need(f"{name} not installed (Debian package {package})")
    assert path is not None
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of every rule file."""
    found: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found.extend(rule for rule in group["rules"] if "alert" in rule)
    return found


def test_there_are_rules_for_every_failure_an_operator_must_hear_about() -> None:
    """Failed, failing again, overdue, no success, stuck, missed, records lost/unwritten, down."""
    names = {rule["alert"] for rule in rules()}
    assert {
        "JobRunFailed",
        "JobFailingRepeatedly",
        "JobOverdue",
        "JobNoRecentSuccess",
        "JobRunStuck",
        "JobRunsMissed",
        "JobRunsSkipped",
        "TrackerRecordsDropped",
        "TrackerSinkErrors",
        "TrackerWriteBacklog",
        "TrackerDown",
        "TrackerAbsent",
    } <= names
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert 'up{job="tracker"} == 0' in exprs["TrackerDown"]
    assert 'absent(up{job="tracker"})' in exprs["TrackerAbsent"]


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    """`promtool check rules` finds every rule file valid."""
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules` passes every firing and not-firing case in prometheus/tests/."""
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests have teeth: a rule with a wrong threshold makes them fail."""
    promtool = _tool("promtool", "prometheus")
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for path in RULE_FILES:
        text = path.read_text().replace(
            "jobtracker_consecutive_failures) >= 3", "jobtracker_consecutive_failures) >= 5"
        )
        (tmp_path / "rules" / path.name).write_text(text)
    shutil.copy(PROMETHEUS / "tests" / "tracker_jobs_test.yml", tmp_path / "tests")
    result = _run(promtool, "test", "rules", str(tmp_path / "tests" / "tracker_jobs_test.yml"))
    assert result.returncode != 0
    assert "JobFailingRepeatedly" in result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_fire_it_and_that_keep_it_quiet() -> None:
    """Each alert appears in a promtool case where it fires and in one where it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == [f"../rules/{p.name}" for p in RULE_FILES]
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    """Each alert says how bad it is and what happened, and links to its section of the docs."""
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", doc, flags=re.MULTILINE)
    }
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, (
            f"{rule['alert']}: docs/operations.md has no section #{anchor}"
        )


def test_rules_query_only_metrics_the_tracker_exports() -> None:
    """Each jobtracker_* name in the rules is one the metrics sink exports."""
    exported = exported_metric_names()
    for rule in rules():
        used = set(re.findall(r"\bjobtracker_\w+", rule["expr"]))
        # {__name__=~"jobtracker_last_(success|failure)_timestamp_seconds"} names two at once
        used = {name for name in used if not name.endswith("_")}
        assert used <= exported, f"{rule['alert']}: unknown metrics {used - exported}"


def test_prometheus_config_is_valid_and_scrapes_the_app_keeping_its_job_label() -> None:
    """prometheus.yml passes `promtool check config`, loads the rules and keeps the `job` label."""
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == "tracker"]
    # without it, the tracked job's name would become `exported_job`
    assert scrape["honor_labels"] is True
    assert scrape.get("metrics_path", "/metrics") == "/metrics"
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_alertmanager_config_is_valid() -> None:
    """`amtool check-config` accepts alertmanager/alertmanager.yml."""
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=JobOverdue", "job=report"], "webhook-critical"),
        (["severity=warning", "alertname=JobRunFailed", "job=report"], "webhook"),
        (["alertname=Watchdog"], "webhook"),
    ],
)
def test_alertmanager_routes_each_severity_to_a_webhook(labels: list[str], receiver: str) -> None:
    """Critical alerts go to the critical webhook receiver, everything else to the default one."""
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_every_severity_the_rules_use_has_a_route() -> None:
    """Every receiver the routing tree names exists, and each sends resolved notices too."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    for route in config["route"].get("routes", []):
        assert route["receiver"] in receivers
    for receiver in receivers.values():
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["send_resolved"] is True  # recoveries reach people too
    assert {r["labels"]["severity"] for r in rules()} == {"warning", "critical"}
