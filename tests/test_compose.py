"""docker-compose.yml: valid against the Compose specification, every file it mounts or
builds from exists, and its services point at each other the way the configs expect.

No Docker engine runs here; tests/data/compose_spec.json is the Compose specification's
JSON schema (see tests/data/README.md for where it comes from).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text(encoding="utf-8"))
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _errors(document: Any) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def _option(command: list[str], flag: str) -> str:
    """The value of ``--flag=value`` or ``--flag value`` in a command list."""
    for index, arg in enumerate(command):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return command[index + 1]
    raise AssertionError(f"{flag} not in {command}")


def _listens_on(service: str) -> int:
    """The port the service's process listens on (from its command or its image's default)."""
    defaults = {"postgres": 5432, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    command = SERVICES[service].get("command")
    if isinstance(command, list) and "--port" in command:
        return int(_option(command, "--port"))
    return defaults[service]


def test_compose_file_matches_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose specification's JSON schema."""
    assert _errors(COMPOSE) == []


def test_the_schema_check_rejects_a_broken_compose_file() -> None:
    """The schema check has teeth: a misspelt key or a wrongly typed value is reported."""
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["app"]["dependson"] = ["postgres"]
    broken["services"]["grafana"]["ports"] = "3000:3000"
    errors = _errors(broken)
    assert any("dependson" in e for e in errors), errors
    assert any(e.startswith("services/grafana/ports") for e in errors), errors


def test_the_stack_has_every_service() -> None:
    """The demo app, PostgreSQL, Prometheus, Alertmanager, its webhook and Grafana."""
    assert set(SERVICES) == {"app", "postgres", "prometheus", "alertmanager", "webhook", "grafana"}
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, (name, dependency)


def test_every_mounted_file_and_build_context_exists() -> None:
    """Every bind mount's host path and the app's build context and Dockerfile are in the repo."""
    named = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: named volume {source} is not declared"
    build = SERVICES["app"]["build"]
    context = ROOT / build["context"]
    assert context.is_dir()
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_the_dockerfile_copies_files_that_exist() -> None:
    """Each COPY source of the Dockerfile exists in the build context."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _destination = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_images_are_pinned_to_versions() -> None:
    """Every image has an explicit version tag (no implicit or explicit `latest`)."""
    for name, service in SERVICES.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_the_app_runs_the_demo_on_all_interfaces_against_the_postgres_service() -> None:
    """The app serves `tracker demo` on 0.0.0.0 with the PostgreSQL service's credentials."""
    app = SERVICES["app"]
    command = app["command"]
    assert command[:2] == ["tracker", "demo"]
    assert _option(command, "--host") == "0.0.0.0"
    url = urlsplit(_option(command, "--database-url"))
    postgres = SERVICES["postgres"]["environment"]
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port) == ("postgres", _listens_on("postgres"))
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == f"/{postgres['POSTGRES_DB']}"
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert f"{_listens_on('app')}:{_listens_on('app')}" in app["ports"]
    assert "/health" in " ".join(app["healthcheck"]["test"])


def test_prometheus_scrapes_the_app_and_loads_the_mounted_rules() -> None:
    """Prometheus's config, mounted from prometheus/, targets the app service and Alertmanager."""
    prometheus = SERVICES["prometheus"]
    config_file = _option(prometheus["command"], "--config.file")
    assert ("./prometheus", str(Path(config_file).parent)) in _bind_mounts(prometheus)
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == "tracker"]
    [target] = scrape["static_configs"][0]["targets"]
    assert _host_port(target) == ("app", _listens_on("app"))
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert _host_port(alertmanager) == ("alertmanager", _listens_on("alertmanager"))
    for pattern in config["rule_files"]:
        assert list((ROOT / "prometheus").glob(pattern)), pattern


def test_alertmanager_sends_to_the_webhook_service() -> None:
    """Alertmanager's config is mounted and its webhook receivers point at the webhook service."""
    alertmanager = SERVICES["alertmanager"]
    config_file = _option(alertmanager["command"], "--config.file")
    assert ("./alertmanager", str(Path(config_file).parent)) in _bind_mounts(alertmanager)
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls
    for url in urls:
        assert _host_port(url) == ("webhook", _listens_on("webhook"))
    webhook = SERVICES["webhook"]
    [(source, target)] = _bind_mounts(webhook)
    assert source == "./alertmanager/webhook_receiver.py"
    assert target in webhook["command"]


def test_grafana_gets_the_provisioning_and_its_datasources_reach_the_services() -> None:
    """Grafana mounts the provisioning; its datasources reach the Prometheus and SQL services."""
    grafana = SERVICES["grafana"]
    assert ("./grafana/provisioning", "/etc/grafana/provisioning") in _bind_mounts(grafana)
    document = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "tracker.yml").read_text()
    )
    by_type = {d["type"]: d for d in document["datasources"]}
    assert _host_port(by_type["prometheus"]["url"]) == ("prometheus", _listens_on("prometheus"))
    postgres = by_type["grafana-postgresql-datasource"]
    assert _host_port(postgres["url"]) == ("postgres", _listens_on("postgres"))
    assert postgres["jsonData"]["database"] == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
    # the read-only role's password reaches both the init script and the datasource
    variable = postgres["secureJsonData"]["password"].lstrip("$").strip("{}")
    assert variable in grafana["environment"]
    assert variable in SERVICES["postgres"]["environment"]
    init = [s for s, t in _bind_mounts(SERVICES["postgres"]) if "docker-entrypoint-initdb.d" in t]
    assert init == ["./grafana/postgres-init.sh"]
    assert postgres["user"] in (ROOT / "grafana" / "postgres-init.sh").read_text()


def test_webhook_receiver_prints_each_alert_it_is_sent() -> None:
    """The stand-in webhook answers 200 and prints one line per alert of an Alertmanager payload."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "alertmanager" / "webhook_receiver.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        port = int(re.search(r":(\d+)$", banner.strip()).group(1))  # type: ignore[union-attr]
        payload = {
            "version": "4",
            "status": "firing",
            "receiver": "webhook-critical",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "JobFailingRepeatedly",
                        "job": "report",
                        "severity": "critical",
                    },
                    "annotations": {"summary": "Job report failed 3 times in a row"},
                    "startsAt": "2024-06-01T02:00:00Z",
                },
                {
                    "status": "resolved",
                    "labels": {"alertname": "JobRunFailed", "job": "sync", "severity": "warning"},
                    "annotations": {"summary": "Job sync: 1 failed run(s) in the last 10 minutes"},
                    "startsAt": "2024-06-01T01:00:00Z",
                },
            ],
        }
        response = httpx.post(f"http://127.0.0.1:{port}/alerts/critical", json=payload, timeout=5)
        assert response.status_code == 200
        lines = [process.stdout.readline().strip() for _ in payload["alerts"]]
        assert lines[0].startswith(
            "[/alerts/critical] FIRING JobFailingRepeatedly severity=critical job=report"
        )
        assert lines[0].endswith("Job report failed 3 times in a row")
        assert lines[1].startswith(
            "[/alerts/critical] RESOLVED JobRunFailed severity=warning job=sync"
        )
        bad = httpx.post(f"http://127.0.0.1:{port}/alerts", content=b"not json", timeout=5)
        assert bad.status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("path", ["grafana/postgres-init.sh"])
def test_init_script_is_executable_shell(path: str) -> None:
    """The PostgreSQL init script is a POSIX shell script the postgres image can run."""
    script = ROOT / path
    assert script.read_text().startswith("#!/bin/sh\n")
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
