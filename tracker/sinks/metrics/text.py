"""Prometheus text exposition (format 0.0.4) of the job series, cached per job.

The text of a job is made from templates built once per job name (label values
escaped, ``le`` bounds formatted as prometheus-client does) and re-rendered only when
the job's values changed since the last scrape; a scrape joins the cached fragments.
This is what keeps ``/metrics`` with a thousand jobs far below prometheus-client's
generic, per-sample formatting (see ``bench/scrape.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from prometheus_client.utils import floatToGoString

from .families import (
    ALERTS,
    DURATION,
    FLOAT_GAUGES,
    GAUGES,
    JOB_FAMILIES,
    LATENESS,
    RECORDS_DROPPED,
    RECORDS_PENDING,
    RUN_STATUSES,
    RUNS,
    SINK_ERRORS,
    Family,
)
from .state import JobSeries

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of what :func:`~tracker.sinks.metrics.render` returns."""


def escape_label(value: str) -> str:
    """A label value as written between double quotes."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def go_float(value: float) -> str:
    """A float as Go (and so Prometheus and prometheus-client) writes it: ``le`` bounds."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def header(family: Family) -> str:
    doc = family.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {doc}\n# TYPE {family.name} {family.type}\n"


HEADERS: Final[tuple[str, ...]] = tuple(header(f) for f in JOB_FAMILIES)


_LABEL = "\x00"
"""Where the job label goes in a family's line template (split on it, joined with the label)."""


class Templates:
    """Line templates of every job family for one pair of bucket layouts, label left open."""

    __slots__ = ("pieces",)

    def __init__(self, duration: Sequence[float], lateness: Sequence[float]) -> None:
        job = f'{{job="{_LABEL}"}}'
        runs = "".join(
            f'{RUNS.name}{{job="{_LABEL}",status="{s.value}"}} %d\n' for s in RUN_STATUSES
        )
        templates = (
            runs,
            _histogram(DURATION.name, duration),
            _histogram(LATENESS.name, lateness),
            *(f"{g.name}{job} {'%r' if g in FLOAT_GAUGES else '%d'}\n" for g in GAUGES),
        )
        self.pieces: tuple[list[str], ...] = tuple(t.split(_LABEL) for t in templates)

    def for_job(self, name: str) -> JobText:
        label = escape_label(name).replace("%", "%%")
        return JobText(tuple(label.join(p) for p in self.pieces))


def _histogram(name: str, bounds: Sequence[float]) -> str:
    les = [go_float(b) for b in bounds] + ["+Inf"]
    lines = [f'{name}_bucket{{job="{_LABEL}",le="{le}"}} %d\n' for le in les]
    lines.append(f'{name}_count{{job="{_LABEL}"}} %d\n')
    lines.append(f'{name}_sum{{job="{_LABEL}"}} %r\n')
    return "".join(lines)


class JobText:
    """One job's line templates (``%``-format strings), one per family, and its last output.

    Floats are written with ``%r`` (Python's shortest repr, which Prometheus parses):
    :class:`~.state.JobSeries` keeps only finite floats.
    """

    __slots__ = ("fragments", "templates")

    def __init__(self, templates: tuple[str, ...]) -> None:
        self.templates = templates
        self.fragments: tuple[str, ...] = ()

    def render(self, series: JobSeries) -> tuple[str, ...]:
        v = series.values()
        t = self.templates
        self.fragments = (
            t[0] % tuple(v.runs),
            t[1] % (*v.duration, v.duration[-1], v.duration_sum),
            t[2] % (*v.lateness, v.lateness[-1], v.lateness_sum),
            t[3] % v.in_progress,
            t[4] % v.last_success,
            t[5] % v.last_failure,
            t[6] % v.next_run,
            t[7] % v.consecutive_failures,
            t[8] % v.paused,
        )
        return self.fragments


def render_jobs(jobs: Iterable[JobSeries]) -> str:
    """Every job family, each with its header and the cached fragments of every job."""
    fragments = [s.text.fragments for s in jobs]
    parts: list[str] = []
    for i, head in enumerate(HEADERS):
        parts.append(head)
        parts.extend([f[i] for f in fragments])
    return "".join(parts)


def render_health(
    pending: int | None,
    dropped: int | None,
    sink_errors: Mapping[str, int],
    alerts: Mapping[tuple[str, str], int],
) -> str:
    """The tracker's own families (records pending/dropped only when a hub is bound)."""
    parts: list[str] = []
    if pending is not None:
        parts.append(f"{header(RECORDS_PENDING)}{RECORDS_PENDING.name} {pending}\n")
    if dropped is not None:
        parts.append(f"{header(RECORDS_DROPPED)}{RECORDS_DROPPED.name} {dropped}\n")
        parts.append(header(SINK_ERRORS))
        parts.extend(
            f'{SINK_ERRORS.name}{{sink="{escape_label(sink)}"}} {count}\n'
            for sink, count in sorted(sink_errors.items())
        )
    parts.append(header(ALERTS))
    parts.extend(
        f'{ALERTS.name}{{channel="{escape_label(channel)}",outcome="{escape_label(outcome)}"}}'
        f" {count}\n"
        for (channel, outcome), count in sorted(alerts.items())
    )
    return "".join(parts)
