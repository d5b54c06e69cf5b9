"""What every route module shares: the error responses, the request context, input checks."""

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError

from ..._tracker import Tracker
from .auth import Authenticator
from .filters import parse_time
from .schemas import (
    ErrorOut,
    ValidationErrorOut,
)
from .settings import ApiSettings

T = TypeVar("T")

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token"},
    403: {"model": ErrorOut, "description": "Wrong bearer token"},
    503: {
        "model": ErrorOut,
        "description": "No token configured, database unavailable, or scheduler not running",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorOut, "description": "Invalid input, said precisely"}
}
NOT_RUNNING = "The scheduler is not running: start it (tracker_lifespan does) and try again"
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The job cannot do that in its current state"}
}

JobId = Annotated[str, Path(description="The APScheduler job id (it may contain slashes).")]

_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(value: Any) -> Any:
    """``value`` with each lone surrogate in its text written as ``\\udXXX`` (as :func:`ascii`
    writes it), through lists, tuples and dicts: UTF-8, hence a JSON response, can carry it.

    A JSON request body may hold ``"\\ud800"``; an error message quoting it as is could not
    be sent, and the client would get a 500 instead of the message.
    """
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    if isinstance(value, tuple):
        return tuple(encodable(v) for v in value)
    return value


class EncodableErrorsRoute(APIRoute):
    """A route whose errors can always be sent: the ``detail`` of an :class:`HTTPException`,
    and the errors (which echo the input) of a request that doesn't fit the schema, have
    their lone surrogates escaped by :func:`encodable` on their way to the app's handlers.

    (Exception handlers belong to the app, not to a router: this is the router's way.)
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                context = getattr(exc, "endpoint_ctx", None)  # newer FastAPI: the endpoint
                extra: dict[str, Any] = {"endpoint_ctx": context} if context is not None else {}
                raise RequestValidationError(
                    encodable(exc.errors()), body=encodable(exc.body), **extra
                ) from None
            except HTTPException as exc:
                exc.detail = encodable(exc.detail)
                raise

        return handle


class Bound:
    """The tracker and scheduler a request works on (given, or found on ``app.state``)."""

    def __init__(self, tracker: Tracker | None, scheduler: Any | None) -> None:
        self.tracker = tracker
        self.scheduler = scheduler

    def __call__(self, request: Request) -> tuple[Tracker, Any]:
        tracker = self.tracker or getattr(request.app.state, "tracker", None)
        scheduler = self.scheduler or getattr(request.app.state, "scheduler", None)
        if tracker is None or scheduler is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "tracker_router has no tracker/scheduler: pass them to tracker_router() "
                "or use tracker_lifespan()",
            )
        return tracker, scheduler


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


def db_read(call: Callable[[], T]) -> T:
    """Run a database read; an unreachable database is a 503 with the reason, not a 500."""
    try:
        return call()
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"The tracker database is unavailable: {first}"
        ) from None


def filter_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except ValueError as exc:
        raise unprocessable(str(exc)) from None


def page_limit(value: int | None, settings: ApiSettings) -> int:
    if value is None:
        return settings.page_size
    if value < 1 or value > settings.max_page_size:
        raise unprocessable(f"limit must be between 1 and {settings.max_page_size}, got {value}")
    return value


def time_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = filter_time(since, "since"), filter_time(until, "until")
    if start is not None and end is not None and end <= start:
        raise unprocessable(f"until ({end.isoformat()}) must be after since ({start.isoformat()})")
    return start, end


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the route modules need: settings, the authentication dependency, the context."""

    settings: ApiSettings
    authorize: Authenticator
    bound: Bound
