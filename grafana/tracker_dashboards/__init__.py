"""The tracker's Grafana dashboards, as code (grafana-foundation-sdk).

``grafana/generate.py`` writes them to ``grafana/dashboards/*.json``, which Grafana loads
through ``grafana/provisioning/dashboards/tracker.yml``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from . import job_detail, overview

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "tracker-overview.json": overview.build,
    "tracker-job.json": job_detail.build,
}
"""File name under grafana/dashboards/ -> the function that builds it."""


def render(build: Callable[[], Dashboard]) -> str:
    """The dashboard as the JSON text committed to the repository (stable, sorted keys)."""
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(build().build())
    # round-trip through json so that the text never depends on the SDK's encoder details
    return json.dumps(json.loads(encoded), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """Every dashboard: file name -> JSON text."""
    return {name: render(build) for name, build in DASHBOARDS.items()}
