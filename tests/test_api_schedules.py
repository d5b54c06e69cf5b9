"""Schedule parsing: crontab semantics (0 and 7 are Sunday), 5/6 fields, macros, precise errors."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tracker import InvalidScheduleError
from tracker.integrations.fastapi.filters import (
    decode_execution_cursor,
    decode_id_cursor,
    encode_cursor,
    execution_cursor,
    parse_duration,
    parse_time,
)
from tracker.integrations.fastapi.schedules import (
    cron_trigger,
    crontab_weekdays,
    date_trigger,
    interval_trigger,
    resolve_timezone,
)

MONDAY = datetime(2024, 6, 3, 0, 0, 30, tzinfo=UTC)  # a Monday
NEW_YORK = timezone(timedelta(hours=-5))


def fire_days(expression: str) -> list[str]:
    """Weekday names of the next seven fire times of a daily-ish expression, from MONDAY."""
    trigger = cron_trigger(expression, UTC, now=MONDAY)
    days, previous = [], None
    now = MONDAY
    for _ in range(7):
        nxt = trigger.get_next_fire_time(previous, now)
        days.append(nxt.strftime("%a").lower())
        previous, now = nxt, nxt + timedelta(seconds=1)
    return days


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("0,6", "sat,sun"),
        ("5-7", "fri,sat,sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("1-5/2", "mon,wed,fri"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("sun,3", "wed,sun"),
        ("0-7", "*"),
        ("sun-tue", "mon,tue,sun"),
        ("SUN-SAT", "*"),
        ("sat-sun", "sat,sun"),
        ("sun-sat/2", "tue,thu,sat,sun"),
    ],
)
def test_crontab_weekdays_use_cron_numbering(field: str, expected: str) -> None:
    """Day-of-week numbers and names mean what crontab means (0/7/sun Sunday), not APScheduler
    3's week that starts on Monday (where sun-tue would be a backwards range)."""
    assert crontab_weekdays(field) == expected


def test_weekday_expression_fires_on_the_right_days() -> None:
    """'0 9 * * 1-5' fires Monday to Friday and '0 9 * * 0' on Sundays; names say the same."""
    assert fire_days("0 9 * * 1-5") == ["mon", "tue", "wed", "thu", "fri", "mon", "tue"]
    assert set(fire_days("0 9 * * 0")) == {"sun"}
    assert fire_days("0 9 * * sun-tue") == fire_days("0 9 * * 0-2")
    assert set(fire_days("0 9 * * sun-tue")) == {"sun", "mon", "tue"}


def test_six_fields_put_seconds_first_and_macros_work() -> None:
    """6-field expressions start with seconds; @hourly and friends are understood."""
    six = cron_trigger("15 30 8 * * *", UTC, now=MONDAY)
    assert six.get_next_fire_time(None, MONDAY) == MONDAY.replace(hour=8, minute=30, second=15)
    hourly = cron_trigger("@hourly", UTC, now=MONDAY)
    assert hourly.get_next_fire_time(None, MONDAY) == MONDAY.replace(hour=1, second=0)


def test_cron_reads_times_in_its_timezone() -> None:
    """A cron schedule in Europe/Paris fires at Paris wall-clock time, across DST."""
    trigger = cron_trigger("0 9 * * *", ZoneInfo("Europe/Paris"), now=MONDAY)
    summer = trigger.get_next_fire_time(None, MONDAY)
    winter = trigger.get_next_fire_time(None, datetime(2024, 12, 2, tzinfo=UTC))
    assert (summer.astimezone(UTC).hour, winter.astimezone(UTC).hour) == (7, 8)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "the cron expression is empty"),
        ("@sometimes", "unknown cron macro '@sometimes'"),
        ("1 2 3", "has 3 field(s); expected 5"),
        ("0 25 * * *", "hour field '25'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * fri-mon", "day-of-week field 'fri-mon'"),
        ("0 0 * * 5-1", "day-of-week field '5-1': the range goes backwards (5 > 1)"),
        ("0 0 * * */0", "day-of-week field '*/0': the step must be at least 1"),
        ("0 0 * * x1", "day-of-week field 'x1': 'x1' is not a weekday"),
        ("0 0 * * sun-fun", "day-of-week field 'sun-fun': 'fun' is not a weekday"),
        ("0 0 * * sat-fri", "day-of-week field 'sat-fri': the range goes backwards (6 > 5)"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_cron_errors_name_the_field(expression: str, message: str) -> None:
    """Each invalid expression raises InvalidScheduleError naming the field and value."""
    with pytest.raises(InvalidScheduleError) as caught:
        cron_trigger(expression, UTC, now=MONDAY)
    assert message in str(caught.value)


def test_interval_and_date_checks() -> None:
    """Intervals need a positive length; end must follow start; dates must be in the future."""
    trigger = interval_trigger(minutes=1.5, timezone=UTC, now=MONDAY)
    assert trigger.interval == timedelta(seconds=90)
    with pytest.raises(InvalidScheduleError, match="must be a finite number"):
        interval_trigger(seconds=float("nan"), timezone=UTC)
    with pytest.raises(InvalidScheduleError, match=r"end_date .* must be after start_date"):
        interval_trigger(hours=1, start_date=MONDAY, end_date=MONDAY, timezone=UTC)
    with pytest.raises(InvalidScheduleError, match="interval is too long"):
        interval_trigger(weeks=1e12, timezone=UTC)
    naive = date_trigger(datetime(2030, 1, 1, 9), ZoneInfo("Asia/Tokyo"), now=MONDAY)
    assert naive.run_date.astimezone(UTC) == datetime(2030, 1, 1, 0, tzinfo=UTC)
    with pytest.raises(InvalidScheduleError, match="is in the past"):
        date_trigger(MONDAY - timedelta(seconds=1), UTC, now=MONDAY)
    assert resolve_timezone(None, ZoneInfo("Europe/Paris")) == ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: date_trigger(datetime(9999, 12, 31, 23, 59, 59, tzinfo=NEW_YORK), UTC),
            "run_at 9999-12-31T23:59:59-05:00 is out of range: in UTC it falls outside "
            "the years 1 to 9999",
            id="date-offset",
        ),
        pytest.param(
            lambda: date_trigger(datetime(9999, 12, 31, 23), ZoneInfo("America/New_York")),
            "run_at 9999-12-31T23:00:00-05:00 is out of range",
            id="date-naive-in-timezone",
        ),
        pytest.param(
            lambda: interval_trigger(
                seconds=10, start_date=datetime(9999, 12, 31, 23, tzinfo=NEW_YORK), timezone=UTC
            ),
            "start_date 9999-12-31T23:00:00-05:00 is out of range",
            id="interval-start",
        ),
        pytest.param(
            lambda: interval_trigger(
                seconds=10,
                start_date=datetime(9999, 12, 31, 23, 59),
                timezone=ZoneInfo("America/New_York"),
            ),
            "start_date 9999-12-31T23:59:00-05:00 is out of range",
            id="interval-start-naive",
        ),
        pytest.param(
            lambda: interval_trigger(
                hours=1,
                start_date=datetime(2030, 1, 1, tzinfo=UTC),
                end_date=datetime(9999, 12, 31, 23, tzinfo=NEW_YORK),
                timezone=UTC,
            ),
            "end_date 9999-12-31T23:00:00-05:00 is out of range",
            id="interval-end",
        ),
        pytest.param(
            lambda: interval_trigger(
                hours=1,
                start_date=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
                timezone=UTC,
            ),
            "start_date 0001-01-01T00:00:00+05:00 is out of range",
            id="interval-start-before-year-1",
        ),
        pytest.param(
            lambda: interval_trigger(
                seconds=10,
                start_date=datetime(9999, 12, 31, 20, tzinfo=UTC),
                timezone=ZoneInfo("Pacific/Kiritimati"),
            ),
            "the interval first fires out of range: after the year 9999",
            id="interval-first-fire-in-its-timezone",
        ),
    ],
)
def test_times_without_a_utc_form_are_refused(make: Any, message: str) -> None:
    """A date, start or end (or first fire time) outside the years 1-9999 once in UTC is an
    InvalidScheduleError saying so, before any job is touched (its store would fail half-way)."""
    with pytest.raises(InvalidScheduleError) as caught:
        make()
    assert message in str(caught.value)


def test_the_last_second_of_year_9999_in_utc_is_accepted() -> None:
    """The range check refuses only what can't be converted: 9999-12-31T23:59:59Z is fine."""
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert date_trigger(last, UTC, now=MONDAY).run_date == last
    trigger = interval_trigger(seconds=10, start_date=last.astimezone(NEW_YORK), timezone=UTC)
    assert trigger.get_next_fire_time(None, MONDAY) == last


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    """Ages like 30d or 1h30m parse to the right length."""
    assert parse_duration(text) == expected


def test_times_and_cursors_parse_or_say_why_not() -> None:
    """ISO times (naive = UTC), dates and ages parse; cursors round-trip; garbage is refused."""
    now = datetime(2024, 6, 3, 12, tzinfo=UTC)
    assert parse_time("2h", "since", now=now) == now - timedelta(hours=2)
    assert parse_time("2024-06-01", "since") == datetime(2024, 6, 1, tzinfo=UTC)
    assert parse_time("2024-06-01T14:00:00+02:00", "since") == datetime(2024, 6, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="'soon' is not a time"):
        parse_time("soon", "since")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("30 days")
    cursor = execution_cursor(now, "run-1")
    assert decode_execution_cursor(cursor) == (now, "run-1")
    for bad in ("", "!!!", "WyJ4Il0", "WzEsMl0"):
        with pytest.raises(ValueError, match="cursor is not valid"):
            decode_execution_cursor(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9999-12-31T23:59:59-05:00", "since '9999-12-31T23:59:59-05:00' is out of range"),
        ("0001-01-01T00:00:00+05:00", "since '0001-01-01T00:00:00+05:00' is out of range"),
        ("1000000d", "since '1000000d' reaches back before the year 1"),
        ("999999999999d", "since '999999999999d' is too long: at most 999999999 days"),
        ("99999999999999999999w", "is too long"),
        ("1" * 400 + "s", "is too long"),
    ],
)
def test_times_past_the_calendar_say_so(text: str, message: str) -> None:
    """Times and ages that exist as text but not as a UTC datetime are a ValueError (the API's
    422, the command line's error), never an OverflowError."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_time(text, "since")


def test_a_duration_too_long_is_said_so() -> None:
    """parse_duration (tracker prune --older-than) says a too long age is too long."""
    with pytest.raises(ValueError, match="'999999999999d' is too long"):
        parse_duration("999999999999d", "--older-than")


def _forged(*values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(base64.urlsafe_b64encode(b"[" * 3000).decode(), id="nested-json"),
        pytest.param(_forged("9999-12-31T23:59:59-05:00", "x"), id="after-year-9999-in-utc"),
        pytest.param(_forged("0001-01-01T00:00:00+05:00", "x"), id="before-year-1-in-utc"),
        pytest.param(_forged("2024-06-01T00:00:00+00:00", "a\x00b"), id="nul-in-run-id"),
        pytest.param(_forged("2024-06-01T00:00:00+00:00", "a\ud800"), id="surrogate-in-run-id"),
    ],
)
def test_forged_execution_cursors_are_refused(cursor: str) -> None:
    """Cursors the API never makes are a ValueError, not a RecursionError or OverflowError."""
    with pytest.raises(ValueError, match="cursor is not valid"):
        decode_execution_cursor(cursor)


def test_id_cursors_hold_64_bit_ids() -> None:
    """An audit cursor holds an id a BIGINT column can compare with; others are refused."""
    assert decode_id_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    assert decode_id_cursor(encode_cursor(7)) == 7
    for bad in (2**63, 10**30, -(2**63) - 1):
        with pytest.raises(ValueError, match="cursor is not valid"):
            decode_id_cursor(encode_cursor(bad))
    with pytest.raises(ValueError, match="cursor is not valid"):
        decode_id_cursor(base64.urlsafe_b64encode(b"[" * 3000).decode())
