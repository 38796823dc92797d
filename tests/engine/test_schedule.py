"""Weekly schedule windows and the gate, all with an injected clock (nothing here waits for time)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncdicom.engine.gates import WindowGate
from asyncdicom.engine.schedule import Schedule, Window

NY = ZoneInfo("America/New_York")
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})


def at(year: int, month: int, day: int, hh: int, mm: int = 0, zone: ZoneInfo = NY) -> datetime:
    return datetime(year, month, day, hh, mm, tzinfo=zone)


def daily(start: time, end: time, days: frozenset[int] = frozenset(range(7))) -> Schedule:
    return Schedule((Window(start, end, days),), NY)


class TestOneWindow:
    # 2026-03-10 is a Tuesday
    def test_inside_and_before(self) -> None:
        window = daily(time(17, 13), time(17, 15))
        assert window.seconds_until_open(at(2026, 3, 10, 17, 14)) == 0
        assert window.seconds_until_open(at(2026, 3, 10, 17, 0)) == 13 * 60
        assert window.seconds_until_close(at(2026, 3, 10, 17, 14)) == 60
        assert window.seconds_until_close(at(2026, 3, 10, 17, 0)) == 0

    def test_after_waits_until_next_day(self) -> None:
        window = daily(time(17, 13), time(17, 15))
        assert window.seconds_until_open(at(2026, 3, 10, 17, 15)) == (24 * 60 - 2) * 60

    def test_crossing_midnight(self) -> None:
        """A 19:00-06:00 window is open at 23:00 and 03:00, closed at 12:00."""
        window = daily(time(19, 0), time(6, 0))
        assert window.seconds_until_open(at(2026, 3, 10, 23)) == 0
        assert window.seconds_until_open(at(2026, 3, 10, 3)) == 0
        assert window.seconds_until_close(at(2026, 3, 10, 3)) == 3 * 3600
        assert window.seconds_until_open(at(2026, 3, 10, 12)) == 7 * 3600

    def test_midnight_window_belongs_to_the_day_it_starts(self) -> None:
        """Friday 19:00-06:00 runs into Saturday morning, and no Saturday window starts at 19:00."""
        window = daily(time(19, 0), time(6, 0), frozenset({4}))  # Friday only
        saturday_3am = at(2026, 3, 14, 3)
        assert window.seconds_until_open(saturday_3am) == 0
        assert window.seconds_until_close(saturday_3am) == 3 * 3600
        saturday_8pm = at(2026, 3, 14, 20)
        assert window.seconds_until_open(saturday_8pm) == (6 * 24 - 1) * 3600  # next Friday 19:00

    def test_end_equal_to_start_is_24_hours(self) -> None:
        window = daily(time(8, 0), time(8, 0), frozenset({2}))  # Wednesday 08:00 to Thursday 08:00
        assert window.seconds_until_close(at(2026, 3, 11, 8)) == 24 * 3600
        assert window.seconds_until_open(at(2026, 3, 12, 7, 59)) == 0
        assert window.seconds_until_open(at(2026, 3, 12, 8)) == 6 * 24 * 3600

    def test_other_zone_input(self) -> None:
        """The current instant may come in any zone: the schedule's own zone decides."""
        window = daily(time(9, 0), time(10, 0))
        assert window.seconds_until_open(datetime(2026, 6, 1, 13, 30, tzinfo=UTC)) == 0  # 09:30 EDT


class TestDaysAndWeek:
    def test_last_day_of_the_week_wraps_to_monday(self) -> None:
        """Weeknights only: Sunday afternoon waits for Monday 19:00, across the week's end."""
        weeknights = daily(time(19, 0), time(6, 0), WEEKDAYS)
        sunday = at(2026, 3, 15, 15)  # a Sunday
        assert weeknights.seconds_until_open(sunday) == 28 * 3600
        friday_night = at(2026, 3, 13, 23)
        assert weeknights.seconds_until_close(friday_night) == 7 * 3600  # Saturday 06:00

    def test_weeknights_and_whole_weekend_join(self) -> None:
        """'Weeknights 19:00-06:00 and all weekend': from Friday 19:00 to Sunday's end is one open
        period (Friday night's window and Saturday's touch). Monday 00:00-06:00 is closed: that
        night starts on Sunday, which has no weeknight window."""
        schedule = Schedule((Window(time(19, 0), time(6, 0), WEEKDAYS), Window(time(0, 0), time(0, 0), WEEKEND)), NY)
        friday_8pm = at(2026, 3, 13, 20)
        monday = at(2026, 3, 16, 0)
        assert schedule.seconds_until_close(friday_8pm) == (monday - friday_8pm).total_seconds()
        assert schedule.seconds_until_open(at(2026, 3, 14, 12)) == 0  # Saturday noon
        assert schedule.seconds_until_open(at(2026, 3, 16, 7)) == 12 * 3600  # Monday 07:00
        assert schedule.seconds_until_close(at(2026, 3, 16, 7)) == 0

    def test_overlapping_windows_join(self) -> None:
        schedule = Schedule((Window(time(18, 0), time(22, 0)), Window(time(20, 0), time(2, 0))), NY)
        assert schedule.seconds_until_close(at(2026, 3, 10, 19)) == 7 * 3600  # until 02:00
        assert schedule.seconds_until_open(at(2026, 3, 10, 3)) == 15 * 3600

    def test_always_open(self) -> None:
        schedule = Schedule((Window(time(0, 0), time(0, 0)),), NY)
        assert schedule.always_open(at(2026, 3, 10, 12))
        assert not daily(time(19, 0), time(6, 0)).always_open(at(2026, 3, 10, 20))

    @given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)))
    def test_open_means_inside_a_window(self, now: datetime) -> None:
        """For any instant: either open with a positive close time, or closed with a positive wait,
        and the instant the wait ends is open."""
        schedule = Schedule((Window(time(19, 0), time(6, 0), WEEKDAYS), Window(time(0, 0), time(0, 0), WEEKEND)), NY)
        wait = schedule.seconds_until_open(now)
        if wait == 0:
            assert schedule.seconds_until_close(now) > 0
        else:
            assert schedule.seconds_until_close(now) == 0
            assert schedule.seconds_until_open(now + timedelta(seconds=wait)) == 0


class TestDaylightSaving:
    def test_spring_forward_night_is_23_real_hours(self) -> None:
        """The night of 8 March 2026 in New York is an hour shorter: waits and closes are real
        seconds (a sleep of wall-clock hours would wake an hour late)."""
        window = daily(time(3, 0), time(4, 0))
        before = at(2026, 3, 7, 4)
        wait = window.seconds_until_open(before)
        assert wait == 22 * 3600  # 04:00 EST to 03:00 EDT the next day
        assert (before.astimezone(UTC) + timedelta(seconds=wait)) == at(2026, 3, 8, 3).astimezone(UTC)

    def test_overnight_window_across_spring_forward(self) -> None:
        window = daily(time(22, 0), time(6, 0))
        assert window.seconds_until_close(at(2026, 3, 7, 22)) == 7 * 3600  # 8 wall hours, 7 real

    def test_overnight_window_across_fall_back(self) -> None:
        window = daily(time(22, 0), time(6, 0))
        assert window.seconds_until_close(at(2026, 10, 31, 22)) == 9 * 3600  # 1 November: 9 real hours

    def test_start_in_the_skipped_hour(self) -> None:
        """02:30 does not exist on 8 March 2026 in New York: the window opens at 03:30 EDT."""
        window = daily(time(2, 30), time(5, 0))
        opening = at(2026, 3, 8, 1).astimezone(UTC) + timedelta(seconds=window.seconds_until_open(at(2026, 3, 8, 1)))
        assert opening.astimezone(NY).strftime("%H:%M %Z") == "03:30 EDT"


class Clock:
    """A settable 'now' for the gate."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class TestWindowGate:
    """The async gate with an injected clock: what it says, that it says it once, and that it
    follows the clock (polling every few milliseconds here instead of every minute)."""

    def _gate(self, clock: Clock, calls: list[float] | None = None) -> WindowGate:
        schedule = daily(time(19, 0), time(6, 0))
        return WindowGate(schedule, on_wait=(calls if calls is not None else []).append, now=clock, poll=0.005)

    def test_announcement_names_the_zone_and_utc(self) -> None:
        gate = self._gate(Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC)))  # 07:00 in New York
        assert gate.describe() == "closed, opens in 12h 00m"
        assert gate.opening_text() == "19:00 America/New_York (2026-12-01; 2026-12-02T00:00:00Z), in 12h 00m"

    def test_eight_waiting_workers_announce_the_wait_once(self) -> None:
        """The wait was printed once per thread (8 times); now once per closed period."""
        calls: list[float] = []
        clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
        gate = self._gate(clock, calls)

        async def main() -> None:
            with anyio.fail_after(5):
                await within(gate, clock)

        async def within(gate: WindowGate, clock: Clock) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(gate.wait_open)
                await anyio.wait_all_tasks_blocked()
                clock.now = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)  # 19:00: every waiter returns

        anyio.run(main)
        assert calls == [12 * 3600.0]

    def test_wait_closed_returns_at_closing_time(self) -> None:
        clock = Clock(datetime(2026, 12, 2, 1, 0, tzinfo=UTC))  # 20:00 in New York: open
        gate = self._gate(clock)
        assert gate.is_open()
        assert gate.describe() == "open, closes in 10h 00m"

        async def main() -> None:
            with anyio.fail_after(5):
                await within(gate, clock)

        async def within(gate: WindowGate, clock: Clock) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(gate.wait_closed)
                await anyio.wait_all_tasks_blocked()
                clock.now = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 06:00: closed

        anyio.run(main)
        assert not gate.is_open()

    def test_without_schedule(self) -> None:
        gate = WindowGate(None)
        assert gate.is_open()
        assert gate.describe() == ""

    @pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
    def test_always_open_says_so(self, zone: str) -> None:
        gate = WindowGate(Schedule((Window(time(0, 0), time(0, 0)),), ZoneInfo(zone)))
        assert gate.describe() == "open all week"
