"""The ``tracker`` command: ``demo``, ``history``, ``prune``, ``db upgrade``.

Every command takes ``--database-url`` (default ``TRACKER_DATABASE_URL``, else the SQLite
file ``tracker.sqlite3`` in the working directory). Problems are one line on stderr and
exit status 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, NoReturn, TextIO

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from ._exceptions import ConfigurationError
from ._record import Execution
from .sinks.database.engine import create_tracker_engine, default_url, normalise_url, redact

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
CONNECT_TIMEOUT_S = 5
MAX_LIMIT = 1_000_000_000
"""Most runs ``tracker history`` prints (beyond it SQLite can't even take the number)."""
MAX_SCALE = 1000.0
"""Most the demo's intervals may be stretched (beyond it they overflow APScheduler's times)."""


class CliError(Exception):
    """A problem to report in one line (no traceback)."""


# -- databases ----------------------------------------------------------------------------


def database_url(given: str | None) -> str:
    """``--database-url``, else ``TRACKER_DATABASE_URL``, else the SQLite default."""
    return given or os.environ.get("TRACKER_DATABASE_URL") or default_url()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_engine(url: str, *, must_exist: bool) -> Engine:
    """An engine on ``url`` that answers, or :class:`CliError` saying why not."""
    url = normalise_url(url)
    options: dict[str, Any] = {}
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_tracker_engine(url, **options)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    if must_exist and engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            raise CliError(
                f"no tracker database at {Path(path).resolve()} "
                "(run `tracker demo` or `tracker db upgrade` first, or pass --database-url)"
            )
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        engine.dispose()
        raise CliError(f"cannot connect to {redact(url)}: {_first_line(exc)}") from None
    return engine


def _need_tables(engine: Engine, url: str) -> None:
    from .sinks.database.schema import EXECUTIONS_TABLE

    if not inspect(engine).has_table(EXECUTIONS_TABLE):
        raise CliError(
            f"{redact(url)} has no tracker tables: run `tracker db upgrade "
            f"--database-url {redact(url)}` first"
        )


# -- history ------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{value / 60:.1f}m"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def history_table(runs: Sequence[Execution]) -> str:
    """Runs as an aligned text table, newest first."""
    header = ("SCHEDULED (UTC)", "JOB", "STATUS", "DURATION", "LATE", "ORIGIN", "RUN ID", "ERROR")
    rows = [
        (
            e.scheduled_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _clip(e.job_id, 40),
            e.status.value,
            _seconds(e.duration_s),
            _seconds(e.lateness_s),
            e.origin.value,
            e.run_id,
            _clip(f"{e.error_type}: {e.error_message or ''}" if e.error_type else "", 60),
        )
        for e in runs
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    from .integrations.fastapi.filters import parse_statuses, parse_time
    from .sinks.database.queries import select_executions

    try:
        statuses = parse_statuses(args.status) if args.status else None
        since = parse_time(args.since, "--since") if args.since else None
        until = parse_time(args.until, "--until") if args.until else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not 1 <= args.limit <= MAX_LIMIT:
        raise CliError(f"--limit must be from 1 to {MAX_LIMIT:,}, got {args.limit}")
    url = database_url(args.database_url)
    engine = open_engine(url, must_exist=True)
    try:
        _need_tables(engine, url)
        runs = select_executions(
            engine, job_id=args.job, status=statuses, since=since, until=until, limit=args.limit
        )
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read {redact(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    if args.json:
        for e in runs:
            out.write(json.dumps(_as_json(e)) + "\n")
    elif runs:
        out.write(history_table(runs) + "\n")
    else:
        out.write("no runs match\n")
    return 0


def _as_json(e: Execution) -> dict[str, Any]:
    from .integrations.fastapi.schemas import ExecutionOut

    return ExecutionOut.of(e).model_dump(mode="json")


# -- prune, db upgrade --------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace, out: TextIO) -> int:
    from .integrations.fastapi.filters import parse_duration
    from .sinks.database.queries import prune

    if args.older_than is None and args.keep_last is None:
        raise CliError("say what to delete: --older-than (e.g. 30d), --keep-last N, or both")
    try:
        older = parse_duration(args.older_than, "--older-than") if args.older_than else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.keep_last is not None and args.keep_last < 0:
        raise CliError(f"--keep-last must be 0 or more, got {args.keep_last}")
    url = database_url(args.database_url)
    engine = open_engine(url, must_exist=True)
    try:
        _need_tables(engine, url)
        deleted = prune(engine, older_than=older, keep_last=args.keep_last)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot prune {redact(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    out.write(f"deleted {deleted} run(s) from {redact(url)}\n")
    return 0


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    from alembic.runtime.migration import MigrationContext

    from .sinks.database.migrate import upgrade
    from .sinks.database.schema import VERSION_TABLE

    url = database_url(args.database_url)
    engine = open_engine(url, must_exist=False)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            heads = sorted(context.get_current_heads())
    except SQLAlchemyError as exc:
        raise CliError(f"cannot upgrade {redact(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    out.write(f"{redact(url)} is at revision {', '.join(heads)}\n")
    return 0


# -- demo ---------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise CliError(f"--port must be from 0 to 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = f" (try --port {port + 1})" if exc.errno in (98, 48) else ""
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def _urls(host: str, port: int, token: str, url: str, out: TextIO) -> Callable[[Any], None]:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"

    def ready(_tracker: Any) -> None:
        out.write(
            f"tracker demo: sample jobs running, every run recorded to {redact(url)}\n\n"
            f"  metrics     {base}/metrics\n"
            f"  health      {base}/health\n"
            f"  jobs        {base}/jobs            (bearer token)\n"
            f"  executions  {base}/executions      (bearer token)\n"
            f"  audit       {base}/audit           (bearer token)\n"
            f"  API docs    {base}/docs            (Authorize with the token)\n"
            f"  token       {token}\n\n"
            f"  curl -H 'Authorization: Bearer {token}' {base}/jobs\n\n"
            "Runs appear below as they are recorded. Press Ctrl-C to stop.\n\n"
        )
        out.flush()

    return ready


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn

        from .demo.app import FAST_SCALE, create_app
        from .demo.console import ConsoleSink
    except ImportError as exc:
        raise CliError(f"tracker demo needs {exc.name}: pip install 'tracker[fastapi]'") from None
    scale = FAST_SCALE if args.fast else args.interval_scale
    if not 0 < scale <= MAX_SCALE:  # NaN fails too
        raise CliError(f"--interval-scale must be above 0 and at most {MAX_SCALE:g}, got {scale}")
    url = database_url(args.database_url)
    open_engine(url, must_exist=False).dispose()  # fail now, in one line, if it can't work
    token = args.token or os.environ.get("TRACKER_API_TOKEN") or secrets.token_urlsafe(16)
    sock = _listen(args.host, args.port)
    # Only once it will run (a refused argument leaves the process's logging as it was).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)  # the console shows every run
    port = sock.getsockname()[1]
    console = ConsoleSink(out)
    stopped: list[Any] = []
    try:
        app = create_app(
            url,
            token=token,
            scale=scale,
            sinks=[console],
            on_ready=_urls(args.host, port, token, url, out),
            on_stopped=stopped.append,
        )
    except ConfigurationError as exc:
        sock.close()
        raise CliError(str(exc)) from None
    config = uvicorn.Config(
        app, log_level=args.log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if not stopped:
        raise CliError("the demo did not start (see the messages above)")
    tracker = stopped[0]
    pending = tracker.database.pending
    if pending:
        out.write(f"\ntracker demo stopped: {pending} record(s) could not be written\n")
        return 1
    out.write(
        f"\ntracker demo stopped: {console.total} run(s) recorded this time, "
        f"everything flushed to {redact(url)}\n"
    )
    return 0


# -- parser -------------------------------------------------------------------------------


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL of the history database "
        "(default: $TRACKER_DATABASE_URL, else sqlite:///tracker.sqlite3)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker", description="Every run of every APScheduler job, recorded."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="serve sample jobs with the HTTP API and print each run",
        description="Run sample jobs of every kind on an AsyncIOScheduler, tracked, behind "
        "the HTTP API (uvicorn). Ctrl-C stops cleanly with everything flushed.",
    )
    demo.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    _database_option(demo)
    demo.add_argument(
        "--token", help="bearer token of the API (default $TRACKER_API_TOKEN, else random)"
    )
    speed = demo.add_mutually_exclusive_group()
    speed.add_argument(
        "--interval-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply every job interval and duration by X (default 1: every 5 s)",
    )
    speed.add_argument("--fast", action="store_true", help="jobs fire about every second")
    demo.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level",
    )
    demo.set_defaults(func=cmd_demo)

    history = commands.add_parser(
        "history",
        help="recent runs as a table",
        description="Recent runs, newest first. Times are ISO 8601 (naive = UTC) or ages "
        "like 2h or 7d.",
    )
    _database_option(history)
    history.add_argument("--job", metavar="ID", help="only this job id")
    history.add_argument("--status", help="a status or several: failed,timed_out")
    history.add_argument(
        "--since", metavar="TIME", help="fire time at or after (e.g. 1h, 2024-06-01)"
    )
    history.add_argument("--until", metavar="TIME", help="fire time before")
    history.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(func=cmd_history)

    prune = commands.add_parser(
        "prune",
        help="delete old runs",
        description="Delete finished runs in small batches (running ones are never deleted). "
        "With both options, a run goes when it is old and beyond the newest N of its job.",
    )
    _database_option(prune)
    prune.add_argument("--older-than", metavar="AGE", help="runs due before this age: 30d, 12h, 2w")
    prune.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N runs per job")
    prune.set_defaults(func=cmd_prune)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade",
        help="create or upgrade the tracker's tables (Alembic)",
        description="Bring the tracker's tables to the latest revision. Safe to run on a live "
        "database and from several replicas at once.",
    )
    _database_option(upgrade)
    upgrade.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the ``tracker`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        return int(args.func(args, stream))
    except CliError as exc:
        print(f"tracker: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop, as a killed writer would
        # Python flushes stdout once more at exit: send that nowhere rather than fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
