"""Blackout windows on a fake clock: when they are open, how long runs wait, what fails."""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetflow import InBlackout
from fleetflow.engine.blackouts import Blackouts, enforce_blackouts, gate_run, load_blackouts
from fleetflow.exceptions import ConfigurationError
from fleetflow.ops.check.repository import _blackouts

LOG = logging.getLogger("test.blackouts")
LONDON = ZoneInfo("Europe/London")
HOSTS = {"lab-01": ["payments", "web"], "lab-02": ["payments"], "lab-03": ["db"]}
PEAK = {
    "name": "payment peak",
    "groups": ["payments"],
    "timezone": "Europe/London",
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "start": "11:30",
    "end": "14:00",
}


def london(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def blackouts(*windows: dict[str, Any], **top: Any) -> Blackouts:
    return Blackouts.model_validate({**top, "windows": list(windows)})


def window(**fields: Any) -> dict[str, Any]:
    return {**PEAK, **fields}


def one_off(name: str, start: datetime, end: datetime, **fields: Any) -> dict[str, Any]:
    return {"name": name, "groups": ["all"], "from": start, "until": end, **fields}


class Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: datetime) -> None:
        self.at = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 60, seconds
        self.slept.append(seconds)
        self.at += timedelta(seconds=seconds)

    def enforce(self, rules: Blackouts, hosts: dict[str, list[str]] = HOSTS, **kw: Any) -> None:
        enforce_blackouts(rules, hosts, LOG, now=self.now, sleep=self.sleep, **kw)


def closes(rules: Blackouts, at: datetime, hosts: dict[str, list[str]] = HOSTS) -> list[datetime]:
    return [blocked.until for blocked in rules.blocking(hosts, at)]


# -- when windows are open ---------------------------------------------------------------


def test_recurring_window_open_inside_closed_outside() -> None:
    rules = blackouts(window())
    assert closes(rules, london(2026, 11, 23, 11, 29)) == []
    assert closes(rules, london(2026, 11, 23, 11, 30)) == [utc(2026, 11, 23, 14)]
    assert closes(rules, london(2026, 11, 23, 13, 59, 59)) == [utc(2026, 11, 23, 14)]
    assert closes(rules, london(2026, 11, 23, 14, 0)) == []


def test_blocked_names_the_window_hosts_and_groups() -> None:
    [blocked] = blackouts(window()).blocking(HOSTS, london(2026, 11, 23, 12))
    assert (blocked.window.name, blocked.hosts, blocked.groups) == (
        "payment peak",
        ("lab-01", "lab-02"),
        ("payments",),
    )
    assert blocked.policy == "wait"


def test_days_filter() -> None:
    rules = blackouts(window())
    assert closes(rules, london(2026, 11, 27, 12)) != []  # Friday
    assert closes(rules, london(2026, 11, 28, 12)) == []  # Saturday


def test_overnight_window_belongs_to_the_day_it_opens() -> None:
    rules = blackouts(window(days=["mon"], start="22:00", end="02:00"))
    assert closes(rules, london(2026, 11, 23, 1)) == []  # Monday 01:00: Sunday opened none
    assert closes(rules, london(2026, 11, 23, 23)) == [utc(2026, 11, 24, 2)]
    assert closes(rules, london(2026, 11, 24, 1, 59)) == [utc(2026, 11, 24, 2)]  # Tuesday
    assert closes(rules, london(2026, 11, 24, 2)) == []


def test_local_wall_time_on_both_sides_of_a_clock_change() -> None:
    rules = blackouts(window(days=None))
    # Saturday 28 March 2026 is GMT (UTC+0), Sunday 29 March BST (UTC+1).
    assert closes(rules, utc(2026, 3, 28, 11, 45)) == [utc(2026, 3, 28, 14)]
    assert closes(rules, utc(2026, 3, 29, 10, 45)) == [utc(2026, 3, 29, 13)]
    assert closes(rules, utc(2026, 3, 29, 13, 30)) == []
    [blocked] = rules.blocking(HOSTS, utc(2026, 3, 29, 12))
    assert str(blocked).endswith("until 2026-03-29 14:00 BST")


def test_start_the_clocks_skip_opens_the_window_when_they_jump() -> None:
    # 29 March 2026: 01:00 GMT is followed by 02:00 BST, so there is no 01:30.
    rules = blackouts(window(days=None, start="01:30", end="03:00"))
    assert closes(rules, utc(2026, 3, 29, 0, 59, 59)) == []
    assert closes(rules, utc(2026, 3, 29, 1, 0)) == [utc(2026, 3, 29, 2)]  # 03:00 BST


def test_end_the_clocks_pass_twice_closes_the_window_the_second_time() -> None:
    # 25 October 2026: 01:00-02:00 happens in BST, then again in GMT.
    rules = blackouts(window(days=None, start="00:30", end="01:30"))
    assert closes(rules, utc(2026, 10, 24, 23, 30)) == [utc(2026, 10, 25, 1, 30)]  # 00:30 BST
    assert closes(rules, utc(2026, 10, 25, 1, 0)) == [utc(2026, 10, 25, 1, 30)]  # 01:00 GMT
    assert closes(rules, utc(2026, 10, 25, 1, 30)) == []


def test_one_off_window_from_inclusive_until_exclusive() -> None:
    rules = blackouts(one_off("freeze", utc(2026, 12, 24), utc(2027, 1, 2)))
    assert closes(rules, utc(2026, 12, 23, 23, 59)) == []
    assert closes(rules, utc(2026, 12, 24)) == [utc(2027, 1, 2)]
    assert closes(rules, utc(2027, 1, 2)) == []


def test_all_covers_every_host_grouped_or_not() -> None:
    rules = blackouts(one_off("freeze", utc(2026, 12, 24), utc(2027, 1, 2)))
    [blocked] = rules.blocking({"lab-02": ["db"], "lone": []}, utc(2026, 12, 25))
    assert (blocked.hosts, blocked.groups) == (("lab-02", "lone"), ("all",))


def test_hosts_outside_the_windows_groups_are_not_blocked() -> None:
    clock = Clock(london(2026, 11, 23, 12))
    clock.enforce(blackouts(window()), {"lab-03": ["db"]})
    assert clock.slept == []


def test_back_to_back_windows_close_when_the_last_does() -> None:
    rules = blackouts(
        window(name="first", start="10:00", end="11:00"),
        window(name="second", start="11:00", end="12:00"),
        window(name="overlapping", start="11:45", end="12:30", groups=["web"]),
    )
    [first] = rules.blocking({"lab-02": ["payments"]}, london(2026, 11, 23, 10, 30))
    assert first.until == utc(2026, 11, 23, 12)
    [first] = rules.blocking({"lab-01": ["payments", "web"]}, london(2026, 11, 23, 10, 30))
    assert first.until == utc(2026, 11, 23, 12, 30)


# -- what runs do --------------------------------------------------------------------------


def test_fail_policy_raises_a_clear_message_and_does_not_sleep() -> None:
    clock = Clock(london(2026, 11, 23, 12))
    with pytest.raises(InBlackout) as caught:
        clock.enforce(blackouts(window(policy="fail")))
    assert str(caught.value) == (
        "blackout window 'payment peak' (mon-fri 11:30-14:00 Europe/London) is open for "
        "lab-01, lab-02 (group payments) until 2026-11-23 14:00 GMT: nothing was run. "
        "Run again after it closes, or in check mode (check mode changes nothing and is allowed)."
    )
    assert caught.value.until == utc(2026, 11, 23, 14)
    assert clock.slept == []
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.until) == (str(caught.value), caught.value.until)


def test_wait_policy_sleeps_exactly_until_the_window_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(london(2026, 11, 23, 11, 35, 30))
    with caplog.at_level(logging.INFO, logger=LOG.name):
        clock.enforce(blackouts(window()))
    assert clock.at == utc(2026, 11, 23, 14)
    assert sum(clock.slept) == pytest.approx(2 * 3600 + 24 * 60 + 30)
    waiting, over = caplog.messages
    assert waiting == (
        "blackout window 'payment peak' (mon-fri 11:30-14:00 Europe/London) is open for "
        "lab-01, lab-02 (group payments) until 2026-11-23 14:00 GMT: waiting 2 h 24 min "
        "before starting (no host lock is held meanwhile)"
    )
    assert over == "blackout over after waiting 2 h 24 min: starting"


def test_waiting_across_a_clock_change_sleeps_the_real_length() -> None:
    # Saturday 22:00 GMT to Sunday 03:00 BST is four hours, not five.
    clock = Clock(utc(2026, 3, 28, 22))
    clock.enforce(blackouts(window(days=["sat"], start="22:00", end="03:00")))
    assert sum(clock.slept) == pytest.approx(4 * 3600)


def test_waits_through_back_to_back_windows() -> None:
    clock = Clock(london(2026, 11, 23, 10, 30))
    rules = blackouts(
        window(name="first", start="10:00", end="11:00"),
        window(name="second", start="11:00", end="12:00"),
    )
    clock.enforce(rules)
    assert sum(clock.slept) == pytest.approx(90 * 60)


def test_a_window_opening_while_waiting_holds_the_run_too() -> None:
    clock = Clock(london(2026, 11, 23, 10, 30))
    rules = blackouts(
        window(name="web", groups=["web"], start="10:00", end="11:00"),
        window(name="db", groups=["db"], start="10:45", end="11:15"),
    )
    clock.enforce(rules)
    assert clock.at == london(2026, 11, 23, 11, 15)


@pytest.mark.parametrize(
    ("window_policy", "file_policy", "override", "raises"),
    [
        ("fail", "wait", None, True),
        (None, "fail", None, True),
        ("wait", "fail", None, False),
        ("fail", "wait", "wait", False),
        ("wait", "wait", "fail", True),
        (None, "fail", "wait", False),
    ],
)
def test_override_beats_window_policy_beats_file_policy(
    window_policy: str | None, file_policy: str, override: Any, raises: bool
) -> None:
    clock = Clock(london(2026, 11, 23, 12))
    rules = blackouts(window(policy=window_policy), policy=file_policy)
    if raises:
        with pytest.raises(InBlackout, match="payment peak"):
            clock.enforce(rules, policy=override)
    else:
        clock.enforce(rules, policy=override)
        assert clock.at == london(2026, 11, 23, 14)


def test_bad_policy_override_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'wait' or 'fail', not 'Fail'"):
        Clock(london(2026, 11, 23, 12)).enforce(blackouts(window()), policy="Fail")


def test_window_closing_after_the_maximum_wait_fails_at_once() -> None:
    clock = Clock(london(2026, 11, 23, 12))
    with pytest.raises(InBlackout, match="longer than the maximum wait of 1 h: nothing was run"):
        clock.enforce(blackouts(window()), max_wait_seconds=3600)
    assert clock.slept == []


def test_still_in_blackout_after_the_maximum_wait() -> None:
    clock = Clock(london(2026, 11, 23, 10, 30))
    rules = blackouts(
        window(name="web", groups=["web"], start="10:00", end="11:00"),
        window(name="db", groups=["db"], start="10:45", end="12:00"),
    )
    with pytest.raises(InBlackout, match=r"still in blackout after waiting 15 min \(at most 1 h\)"):
        clock.enforce(rules, max_wait_seconds=3600)
    assert clock.at == london(2026, 11, 23, 10, 45)


def test_gate_reads_groups_only_when_the_inventory_has_windows(tmp_path: Path) -> None:
    def no_groups() -> dict[str, list[str]]:
        raise AssertionError("groups read without windows")

    gate_run(tmp_path, ["lab-01"], no_groups, LOG)
    (tmp_path / "hosts.yml").write_text("all: {}\n")
    (tmp_path / "blackouts.yml").write_text(yaml.safe_dump({"windows": [window()]}))
    with pytest.raises(ConfigurationError, match="cannot read the host groups"):
        gate_run(tmp_path / "hosts.yml", ["lab-01"], dict, LOG)  # a file: its directory's
    with pytest.raises(ConfigurationError, match="not 'later'"):
        gate_run(tmp_path, ["lab-01"], no_groups, LOG, policy="later")  # type: ignore[arg-type]


# -- the file ------------------------------------------------------------------------------


def test_absent_or_empty_file_has_no_windows(tmp_path: Path) -> None:
    assert load_blackouts(tmp_path).windows == ()
    (tmp_path / "blackouts.yml").write_text("# nothing yet\n")
    assert load_blackouts(tmp_path) == Blackouts()


def test_file_as_documented_loads(tmp_path: Path) -> None:
    (tmp_path / "blackouts.yml").write_text(
        Path(__file__).parents[3].joinpath("docs/blackouts.example.yml").read_text()
    )
    rules = load_blackouts(tmp_path)
    assert [w.describe() for w in rules.windows] == [
        "mon-fri 11:30-14:00 Europe/London",
        "sat 22:00-04:00 America/New_York",
        "2026-12-24 00:00 UTC to 2027-01-02 00:00 UTC",
    ]


BAD = [
    ("colour: red", "payment peak", "colour: unknown key"),
    ('start: "25:00"', "payment peak", "'25:00' is not a time"),
    ("start: 11:30", "payment peak", 'write times in quotes, "HH:MM" (YAML read this one as 690)'),
    ("timezone: Mars/Olympus", "payment peak", "unknown time zone 'Mars/Olympus'"),
    ("timezone: null", "payment peak", "needs a timezone"),
    ('end: "11:30"', "payment peak", "start and end are equal"),
    ("groups: []", "payment peak", "groups: give at least one"),
    ("days: []", "payment peak", "days: give at least one"),
    ("days: [mon, fry]", "payment peak", "days.1: Input should be"),
    ("from: 2026-12-24T00:00:00+00:00", "payment peak", "not both"),
    ("policy: later", "payment peak", "policy: Input should be 'wait' or 'fail'"),
]


@pytest.mark.parametrize(("line", "name", "reason"), BAD)
def test_bad_window_names_the_file_the_window_and_the_reason(
    tmp_path: Path, line: str, name: str, reason: str
) -> None:
    entry = {**window(), **yaml.safe_load(line)}
    (tmp_path / "blackouts.yml").write_text(yaml.safe_dump({"windows": [entry]}))
    with pytest.raises(ConfigurationError) as caught:
        load_blackouts(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "blackouts.yml") in message
    assert f"window {name!r}" in message
    assert reason in message


FREEZE = "{name: freeze, groups: [all], from: 2026-12-24T00:00:00Z, until: 2027-01-02T00:00:00Z}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (FREEZE.replace("2027-01-02", "2026-12-24"), "window 'freeze': from must be before until"),
        (FREEZE.replace("00:00:00Z,", "00:00:00,"), "window 'freeze' from: give a date, time and"),
        ("{name: freeze, groups: [all]}", "window 'freeze': give start and end"),
        ("{groups: [all], start: '10:00'}", "window #1 name: Field required"),
        (f"{FREEZE}, {FREEZE}", "window names repeat: 'freeze'"),
    ],
)
def test_bad_window_in_file(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "blackouts.yml").write_text(f"windows: [{text}]\n")
    with pytest.raises(ConfigurationError, match="invalid blackout windows") as caught:
        load_blackouts(tmp_path)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("polcy: fail\n", "polcy: unknown key"),
        ("- just a list\n", "Input should be a valid dictionary"),
        ("windows: [\n", "cannot read blackout windows"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "blackouts.yml").write_text(text)
    with pytest.raises(ConfigurationError, match="blackout windows") as caught:
        load_blackouts(tmp_path)
    assert reason in str(caught.value)


def test_check_reports_a_bad_file_and_warns_about_unknown_groups(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory/staging"
    inventory.mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        w1:\n")
    (inventory / "blackouts.yml").write_text(yaml.safe_dump({"windows": [window()]}))
    [problem] = _blackouts(tmp_path, inventory)
    assert not problem.error
    assert str(problem) == (
        "warning inventory/staging/blackouts.yml: window 'payment peak': "
        "no host of staging is in group 'payments'"
    )
    (inventory / "blackouts.yml").write_text("windows: [{name: x}]\n")
    [problem] = _blackouts(tmp_path, inventory)
    assert problem.error and "window 'x'" in problem.message


# -- a property ----------------------------------------------------------------------------

PROPERTY_WINDOWS = blackouts(
    window(name="day", start="11:30", end="14:00"),
    window(name="night", days=["sat", "sun"], start="22:00", end="03:00"),
)


def _open_by_wall_clock(at: datetime) -> bool:
    """The windows above by their definition: local wall time between start and end."""
    local = at.astimezone(LONDON)
    hhmm, day = local.strftime("%H:%M"), local.strftime("%a").lower()
    yesterday = (local - timedelta(days=1)).strftime("%a").lower()
    weekdays = ("mon", "tue", "wed", "thu", "fri")
    return (
        (day in weekdays and "11:30" <= hhmm < "14:00")
        or (day in ("sat", "sun") and hhmm >= "22:00")
        or (yesterday in ("sat", "sun") and hhmm < "03:00")
    )


@settings(max_examples=400, deadline=None, database=None)
@given(st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)))
def test_blocked_exactly_when_a_window_contains_the_instant(at: datetime) -> None:
    found = PROPERTY_WINDOWS.blocking(HOSTS, at)
    assert bool(found) == _open_by_wall_clock(at)
    for blocked in found:
        assert PROPERTY_WINDOWS.blocking(HOSTS, blocked.until - timedelta(seconds=1))
        assert not PROPERTY_WINDOWS.blocking(HOSTS, blocked.until)
