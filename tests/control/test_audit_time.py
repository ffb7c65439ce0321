"""``since``/``until`` times: an age before now, or an RFC 3339 time; anything else says what is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.control import parse_time

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - 30),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86400),
        ("0s", NOW),
        (" 5m ", NOW - 300),
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp()),
        ("2026-01-31t09:30:00z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp()),
        ("2026-01-31 09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp()),
        ("2026-01-31T10:30:00+01:00", datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp()),
        ("2026-01-31T09:30:00.25Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp() + 0.25),
        (
            "2026-01-31T09:30:00.123456789Z",
            datetime(2026, 1, 31, 9, 30, tzinfo=UTC).timestamp() + 0.123456,
        ),
    ],
    ids=[
        "seconds ago",
        "minutes ago",
        "hours ago",
        "days ago",
        "zero age is now",
        "spaces around",
        "UTC with Z",
        "lower-case t and z",
        "space instead of T",
        "an offset",
        "fractional seconds",
        "nanoseconds cut to microseconds",
    ],
)
def test_valid_times(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "5w",
        "-5m",
        "1.5h",
        "5 m",
        "yesterday",
        "2026-01-31",
        "2026-01-31T09:30:00",
        "2026-01-31T09:30Z",
        "2026-13-31T09:30:00Z",
        "2026-01-31T25:30:00Z",
        "1800000000",
    ],
    ids=[
        "empty",
        "no unit",
        "weeks are not a unit",
        "negative",
        "fraction",
        "space before the unit",
        "words",
        "a date alone",
        "no time zone",
        "no seconds",
        "month 13",
        "hour 25",
        "a bare unix time",
    ],
)
def test_anything_else_is_refused_naming_the_valid_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"30s, 10m, 2h or 7d .* RFC 3339 time like"):
        parse_time(text, NOW)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]),
)
def test_an_age_is_that_long_before_now(n: int, unit: tuple[str, int]) -> None:
    assert parse_time(f"{n}{unit[0]}", NOW) == NOW - n * unit[1]


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
            lambda m: timezone(timedelta(minutes=m))
        ),
    )
)
def test_an_rfc3339_time_means_that_instant(when: datetime) -> None:
    text = when.isoformat()
    assert parse_time(text, NOW) == pytest.approx(when.timestamp(), abs=1e-6)


@given(st.text(max_size=30))
def test_any_text_is_a_time_or_a_clear_error(text: str) -> None:
    message = ""
    try:
        parse_time(text, NOW)
    except ValueError as e:
        message = str(e)
    assert message == "" or ("RFC 3339" in message and "30s" in message)


def test_digits_of_other_scripts_are_not_ages() -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("\u0663s", NOW)  # ARABIC-INDIC DIGIT THREE
