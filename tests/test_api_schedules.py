"""Schedule parsing: crontab semantics (0 and 7 are Sunday), 5/6 fields, macros, precise errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tracker import InvalidScheduleError
from tracker.integrations.fastapi.filters import (
    decode_execution_cursor,
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
        ("mon-fri", "mon-fri"),
        ("sun,3", "wed,sun"),
        ("0-7", "*"),
    ],
)
def test_crontab_weekdays_use_cron_numbering(field: str, expected: str) -> None:
    """Day-of-week numbers mean what crontab means (0/7 Sunday), not APScheduler 3's 0=Monday."""
    assert crontab_weekdays(field) == expected


def test_weekday_expression_fires_on_the_right_days() -> None:
    """'0 9 * * 1-5' fires Monday to Friday and '0 9 * * 0' on Sundays."""
    assert fire_days("0 9 * * 1-5") == ["mon", "tue", "wed", "thu", "fri", "mon", "tue"]
    assert set(fire_days("0 9 * * 0")) == {"sun"}


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
