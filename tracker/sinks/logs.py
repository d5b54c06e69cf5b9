"""Structured logs (structlog): one event per lifecycle change, run ids on the job's own lines.

Three independent pieces:

* :class:`LifecycleLogSink` — every lifecycle change of every run (``job_started``,
  ``job_succeeded``, ``job_failed``, ``job_missed``, ``job_skipped``, ``job_timed_out``,
  ``job_interrupted``) becomes ONE structlog event with ``job_id``, ``run_id``,
  ``trace_id``, ``status`` and ``duration_s``. It runs on the sink's own thread: the
  formatting and writing never happen on the job's path. Events go through whatever
  structlog configuration is in place (logger name ``tracker.runs``).
* :class:`LogContextHook` — inside a run, binds ``job_id``, ``run_id`` and ``trace_id``
  with :func:`structlog.contextvars.bind_contextvars` (and unbinds them after), so the
  job's own structlog lines carry them under any config that merges contextvars (the
  default one does). :func:`add_run_context` (structlog processor) and
  :class:`RunContextFilter` (stdlib ``logging.Filter``) add them from the current run
  for configurations of your own.
* :func:`configure_logging` — opt-in: one pipeline for structlog and the standard library
  (APScheduler's records included), JSON for production or console for development
  (``TRACKER_LOG_FORMAT``), run ids on every line written inside a run.

With any of them on, APScheduler's own ``Job "..." raised an exception`` record is dropped
for instrumented jobs (see :mod:`tracker.sinks._job_errors`): ``job_failed`` reports the
failure once, with its traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from structlog.contextvars import bind_contextvars, reset_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from .. import _context
from .._hub import Hub
from .._record import Execution, JobState, Status
from .._run import Run
from .._sink import BaseSink, TrackerEvent
from ..settings import Settings
from . import _job_errors
from .iso import iso

__all__ = [
    "LifecycleLogSink",
    "LogContextHook",
    "LogSettings",
    "RunContextFilter",
    "add_run_context",
    "configure_logging",
    "enable_logs",
]

LogFormat = Literal["auto", "json", "console"]

EVENTS: dict[Status, tuple[str, str]] = {
    Status.RUNNING: ("job_started", "info"),
    Status.SUCCEEDED: ("job_succeeded", "info"),
    Status.FAILED: ("job_failed", "error"),
    Status.MISSED: ("job_missed", "warning"),
    Status.SKIPPED: ("job_skipped", "warning"),
    Status.TIMED_OUT: ("job_timed_out", "error"),
    Status.INTERRUPTED: ("job_interrupted", "warning"),
}
"""Event name and level of each lifecycle change."""


class LogSettings(Settings):
    """How :func:`configure_logging` writes logs; each has a ``TRACKER_LOG_`` variable."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKER_LOG_", extra="ignore", allow_inf_nan=False
    )

    format: LogFormat = Field(
        default="auto",
        description="`json` (production), `console` (development), or `auto`: console when "
        "writing to a terminal, JSON otherwise.",
    )
    level: str = Field(default="INFO", description="Lowest level written (root logger level).")
    file: Path | None = Field(
        default=None, description="Append to this file instead of writing to standard error."
    )
    apscheduler_level: str = Field(
        default="WARNING",
        description="Level of APScheduler's own loggers when you have not set one: its INFO "
        "lines ('Running job', 'executed successfully') repeat the lifecycle events.",
    )


# -- run context on the job's own lines ----------------------------------------------


def add_run_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: ``job_id``, ``run_id``, ``trace_id`` of the current run, if any."""
    run = _context._current.get()
    if run is not None and not run.ended:
        event_dict.setdefault("job_id", run.job_id)
        event_dict.setdefault("run_id", run.run_id)
        if run.trace_id is not None:
            event_dict.setdefault("trace_id", run.trace_id)
    return event_dict


class RunContextFilter(logging.Filter):
    """stdlib filter: sets ``record.job_id``, ``.run_id``, ``.trace_id`` inside a run.

    Add it to your handlers (``handler.addFilter(RunContextFilter())``) and use the
    attributes in your formatter, e.g. ``Formatter("%(message)s run=%(run_id)s",
    defaults={"run_id": "-"})``. Outside a run the record is left as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run = _context._current.get()
        if run is not None and not run.ended:
            record.job_id = run.job_id
            record.run_id = run.run_id
            record.trace_id = run.trace_id
        return True


class LogContextHook:
    """Binds the run's ids as structlog contextvars for the run's duration (job's path).

    Not where :func:`add_run_context` is among structlog's processors (it reads the run, and
    only while it is in progress): bound contextvars are copied into the tasks and callbacks
    the run starts, and stay there after it ended."""

    name = "logs"

    def enter(self, run: Run) -> object:
        if (
            _active_pipeline() is not None
            or add_run_context in structlog.get_config()["processors"]
        ):
            return None  # add_run_context reads the run itself (configure_logging's, or yours)
        if run.trace_id is None:
            return bind_contextvars(job_id=run.job_id, run_id=run.run_id)
        return bind_contextvars(job_id=run.job_id, run_id=run.run_id, trace_id=run.trace_id)

    def exit(self, run: Run, token: object, status: Status, error: BaseException | None) -> None:
        self.release(run, token)

    def release(self, run: Run, token: object) -> None:
        """Unbind the run's ids, where they were bound."""
        if token is None:
            return
        # ValueError: called from another context (the hub closing the run at shutdown):
        # nothing of ours to undo there. RuntimeError: undone already.
        with contextlib.suppress(ValueError, RuntimeError):
            reset_contextvars(**token)  # type: ignore[arg-type]


# -- lifecycle events ------------------------------------------------------------------


def lifecycle_event(record: Execution, *, started: bool = False) -> tuple[str, str, dict[str, Any]]:
    """(event name, level, fields) of the log event for one record.

    With ``started``, the ``job_started`` event of a finished record's run.
    """
    if started or record.status is Status.RUNNING:
        name, level = EVENTS[Status.RUNNING]
        return name, level, _started_from(_final_fields(record))
    name, level = EVENTS[record.status]
    return name, level, _final_fields(record)


def _final_fields(record: Execution) -> dict[str, Any]:
    status = record.status
    fields: dict[str, Any] = {
        "job_id": record.job_id,
        "job_name": record.job_name,
        "run_id": record.run_id,
        "trace_id": record.trace_id,
        "status": status._value_,
        "duration_s": record.duration_s,
        "scheduled_at": iso(record.scheduled_at),
    }
    if record.lateness_s is not None:
        fields["lateness_s"] = round(record.lateness_s, 6)
    fields["origin"] = record.origin._value_
    if record.coalesced:
        fields["coalesced"] = record.coalesced
    if record.error_type is not None:
        fields["error_type"] = record.error_type
    if record.error_message is not None:
        key = "reason" if status in (Status.MISSED, Status.SKIPPED) else "error_message"
        fields[key] = record.error_message
    if record.traceback:
        fields["exception"] = record.traceback
    if record.tags:
        fields["tags"] = dict(record.tags)
    return fields


def _started_from(final: dict[str, Any]) -> dict[str, Any]:
    """The ``job_started`` fields of a run, from the fields of its final event (a short run's
    two events then read its record once)."""
    fields = {
        "job_id": final["job_id"],
        "job_name": final["job_name"],
        "run_id": final["run_id"],
        "trace_id": final["trace_id"],
        "status": _RUNNING,
        "scheduled_at": final["scheduled_at"],
    }
    if "lateness_s" in final:
        fields["lateness_s"] = final["lateness_s"]
    fields["origin"] = final["origin"]
    return fields


_RUNNING = Status.RUNNING.value

_ANNOUNCED_KEPT = 100_000


class LifecycleLogSink(BaseSink):
    """One structlog event per lifecycle change of every run, written off the job's path.

    Events go through the structlog configuration in place. Under the JSON pipeline of
    :func:`configure_logging` they take a shortcut with the same output: rendered here
    and written once per batch (their ``timestamp`` is when the change happened).

    The hub publishes a short run only when it ends; its ``job_started`` event is then
    written from the finished record, just before the final event, with the run's true
    start as its timestamp.
    """

    name = "logs"

    def __init__(self, logger_name: str = "tracker.runs") -> None:
        self.logger_name = logger_name
        self._announced: dict[str, None] = {}  # runs whose job_started was written

    def _changes(self, events: Sequence[TrackerEvent]) -> list[tuple[Execution, bool]]:
        """(record, is a synthesised job_started) for each event to write, in order."""
        changes: list[tuple[Execution, bool]] = []
        announced = self._announced
        jobs_seen = False
        for event in events:
            if type(event) is Execution:
                if event.status is Status.RUNNING:
                    if event.run_id in announced:
                        continue
                    announced[event.run_id] = None
                    if len(announced) > _ANNOUNCED_KEPT:
                        del announced[next(iter(announced))]
                elif event.started_at is not None:
                    if event.run_id in announced:
                        del announced[event.run_id]
                    else:
                        changes.append((event, True))
                changes.append((event, False))
            elif type(event) is JobState:
                jobs_seen = True
        if jobs_seen:
            _job_errors.attach_filter()  # executors of newly seen schedulers
        return changes

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        changes = self._changes(events)
        if not changes:
            return
        pipeline = _active_pipeline()
        if pipeline is not None and pipeline.json:
            lines = []
            final: dict[str, Any] | None = None  # of a run whose job_started comes first
            for record, started in changes:
                if started:  # a short run: both events from one reading of the record
                    final = _final_fields(record)
                    name, level = EVENTS[Status.RUNNING]
                    fields = _started_from(final)
                elif final is not None:
                    name, level = EVENTS[record.status]
                    fields, final = final, None
                else:
                    name, level, fields = lifecycle_event(record)
                if _LEVELS[level] >= pipeline.level:
                    fields["event"] = name
                    fields["level"] = level
                    lines.append(_line(fields, _moment(record, started)))
            if lines:
                pipeline.write("\n".join(lines))
            return
        log = structlog.get_logger(self.logger_name).bind()
        for record, started in changes:
            name, level, fields = lifecycle_event(record, started=started)
            getattr(log, level)(name, **fields)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _moment(record: Execution, started: bool = False) -> datetime:
    """When the change happened (UTC)."""
    running = started or record.status is Status.RUNNING
    moment = (record.started_at if running else record.finished_at) or record.scheduled_at
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _line(fields: dict[str, Any], moment: datetime) -> str:
    """One lifecycle event as a JSON line, ``timestamp`` last (``moment`` is UTC).

    orjson writes the timestamp itself (``OPT_UTC_Z``: the ``...Z`` form structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes), at a fifth of ``isoformat``'s cost: two
    per run on the logs thread (``bench/overhead.py``, every signal on)."""
    if _orjson_dumps is not None:
        fields["timestamp"] = moment
        try:
            return _orjson_dumps(fields, default=_fallback, option=_UTC_Z).decode()
        except TypeError:
            pass
    fields["timestamp"] = moment.replace(tzinfo=None).isoformat() + "Z"
    return _ENCODER.encode(fields)


# -- one pipeline: configure_logging ----------------------------------------------------

_HANDLER_MARK = "_tracker_handler"


class _Pipeline:
    """What :func:`configure_logging` installed: where lines go and how they are rendered."""

    def __init__(self, stream: TextIO, lock: Any, level: int, renderer: Processor) -> None:
        self.stream = stream
        self.lock = lock
        self.level = level
        self.renderer = renderer
        self.json = isinstance(renderer, structlog.processors.JSONRenderer)

    def write(self, text: str) -> None:
        """Write whole lines, flushed, under the stdlib handler's lock (lines never mix)."""
        with self.lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except ValueError:  # the stream was closed under us (handler removed): drop
                pass


_pipeline: _Pipeline | None = None

_PROCESSORS: list[Processor] = []
"""structlog's processors under configure_logging. Loggers cached on first use keep this
very list, so a later configure_logging call (updating it in place) reaches them too."""


class _Output:
    """structlog's logger under configure_logging: a line to the current pipeline."""

    def msg(self, message: str) -> None:
        pipeline = _pipeline
        if pipeline is not None:
            pipeline.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_OUTPUT = _Output()


def _output(*args: Any) -> _Output:
    return _OUTPUT


def _active_pipeline() -> _Pipeline | None:
    """The pipeline of :func:`configure_logging` if it is still structlog's configuration."""
    pipeline = _pipeline
    if pipeline is None:
        return None
    config = structlog.get_config()
    processors = config["processors"]
    if (
        processors is not _PROCESSORS
        or not processors
        or processors[-1] is not pipeline.renderer  # e.g. structlog.testing.capture_logs()
        or config["logger_factory"] is not _output
    ):
        return None
    return pipeline


def _fallback(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return repr(value)


_ENCODER = json.JSONEncoder(default=_fallback, ensure_ascii=True)
"""ASCII out: what orjson refuses includes lone surrogates (an undecodable file name in an error
message), which the log file's UTF-8 cannot hold; escaped, the line (and its batch) is written."""

_orjson_dumps: Callable[..., bytes] | None
_UTC_Z = 0
try:  # structlog's recommendation for fast JSON; about ten times faster than json here
    from orjson import OPT_UTC_Z as _UTC_Z
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - the logging extra installs it
    _orjson_dumps = None


def _dumps(value: object, **_: Any) -> str:
    """JSON text of one log event: orjson when installed (the ``logging`` extra has it), the
    standard library otherwise or for what orjson refuses (integers past 64 bits, keys that
    are not strings). Values JSON does not know are written as their ``str()``; with orjson,
    datetimes, enums and dataclasses are written as RFC 3339 text, values and objects."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(value, default=_fallback).decode()
        except TypeError:
            pass
    return _ENCODER.encode(value)


def _resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    return fmt


def configure_logging(
    format: LogFormat | None = None,
    *,
    level: str | int | None = None,
    file: str | Path | None = None,
    stream: TextIO | None = None,
    settings: LogSettings | None = None,
) -> None:
    """One log pipeline for structlog and the standard library, JSON or console. Opt-in.

    * structlog is configured to add the log level, an ISO timestamp (UTC), contextvars
      and the current run's ``job_id``/``run_id``/``trace_id``, then render;
    * one handler on the root logger renders stdlib records (APScheduler's, your
      libraries') with the same processors — replacing the handler an earlier call
      installed; handlers of your own are left alone;
    * APScheduler's loggers get ``apscheduler_level`` (default WARNING) unless you set a
      level on them: its INFO lines repeat the lifecycle events;
    * APScheduler's ``Job "..." raised an exception`` record is dropped for instrumented
      jobs whose tracker logs lifecycle events (``job_failed`` reports the failure).

    Arguments left out come from :class:`LogSettings` (``TRACKER_LOG_FORMAT``,
    ``TRACKER_LOG_LEVEL``, ``TRACKER_LOG_FILE``...). ``format="auto"`` is console on a
    terminal, JSON otherwise. ``stream`` (default standard error) is ignored with ``file``.
    """
    global _pipeline
    settings = settings or LogSettings()
    level = level if level is not None else settings.level
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    path = file if file is not None else settings.file
    handler: logging.StreamHandler[Any] = (
        logging.FileHandler(path, encoding="utf-8")  # closed with the handler
        if path is not None
        else logging.StreamHandler(stream or sys.stderr)
    )
    out: TextIO = handler.stream
    fmt = _resolve_format(format or settings.format, out)
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        exc: list[Processor] = [structlog.processors.format_exc_info]
    else:
        isatty = getattr(out, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))
        exc = []
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_run_context,
        structlog.processors.add_log_level,
        timestamper,
    ]

    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exc, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    aps = logging.getLogger("apscheduler")
    if aps.level == logging.NOTSET:
        aps.setLevel(settings.apscheduler_level.upper())

    lock = handler.lock
    assert lock is not None
    _pipeline = _Pipeline(out, lock, numeric, renderer)
    _PROCESSORS[:] = [*shared, structlog.processors.StackInfoRenderer(), *exc, renderer]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_output,
        cache_logger_on_first_use=True,
    )
    _job_errors.attach_filter(force=True)


def enable_logs(hub: Hub, format: LogFormat | None = None) -> LifecycleLogSink:
    """Lifecycle events and run ids on job lines for every run of ``hub``.

    ``Tracker(logs=True)`` does this; ``logs="json"``/``"console"``/``"auto"`` also calls
    :func:`configure_logging` with that format.
    """
    if format is not None:
        configure_logging(format)
    hub.add_hook(LogContextHook())
    sink = LifecycleLogSink()
    hub.add_sink(sink)
    _job_errors.report_lifecycle(hub)
    return sink
