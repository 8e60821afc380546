"""Blackout windows: times in which no fleetflow run may change the hosts of some groups.

They live beside the hosts they protect, in ``inventory/<env>/blackouts.yml``::

    policy: wait                  # wait | fail (default wait)
    windows:
      - name: payment peak
        groups: [payments]        # inventory groups; "all" = every host
        timezone: Europe/London   # IANA name; start/end are local wall time
        days: [mon, tue, wed, thu, fri]   # the day the window opens on (default every day)
        start: "11:30"
        end: "14:00"              # earlier than start: it closes the next day
        policy: fail              # optional, this window only
      - name: year-end freeze
        groups: [all]
        from: 2026-12-24T00:00:00+00:00
        until: 2027-01-02T00:00:00+00:00

Only a run's start is gated, after its preflight and before it takes host locks (waiting
holds none): a run already going when a window opens is not stopped. Check-mode runs change
nothing and are never gated. On days the clocks change, a recurring window covers every
instant whose local time is between start and end: a start the clocks skip opens it when
they jump, an end they pass twice closes it the second time. Free of Prefect.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fleetflow.engine._ansible import natural_key
from fleetflow.engine._log import Logger
from fleetflow.exceptions import ConfigurationError, InBlackout

__all__ = [
    "BLACKOUTS_FILE",
    "BlackoutPolicy",
    "Blackouts",
    "Blocked",
    "Window",
    "enforce_blackouts",
    "gate_run",
    "load_blackouts",
]

BLACKOUTS_FILE = "blackouts.yml"
BlackoutPolicy = Literal["wait", "fail"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_SLICE = 60.0  # longest sleep between looks at the clock and the windows
_HORIZON = timedelta(days=400)  # windows chained back to back are followed this far at most
_MAX_HOSTS_SHOWN = 10
_HINT = "or in check mode (check mode changes nothing and is allowed)"


class Window(BaseModel):
    """One blackout window: recurring (start, end, days, timezone) or one-off (from, until)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Named in every message.")
    groups: tuple[Annotated[str, Field(pattern=r"^\S+$")], ...] = Field(
        description='Inventory groups whose hosts it protects; "all" = every host.'
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of start/end (recurring windows need one); one-off: for display.",
    )
    days: tuple[Day, ...] | None = Field(
        default=None, description="Days a recurring window opens on (default: every day)."
    )
    start: time | None = Field(default=None, description='Local time it opens, "HH:MM".')
    end: time | None = Field(
        default=None, description='Local time it closes, "HH:MM"; before start: the next day.'
    )
    from_: datetime | None = Field(
        default=None, alias="from", description="One-off window: opens (with a UTC offset)."
    )
    until: datetime | None = Field(default=None, description="One-off window: closes.")
    policy: BlackoutPolicy | None = Field(
        default=None, description="This window's, over the file's."
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 11:30 as the base-60 number 690.
            raise ValueError(f'write times in quotes, "HH:MM" (YAML read this one as {value})')
        if not isinstance(value, str) or not (match := _HHMM.match(value)):
            raise ValueError(f'{value!r} is not a time "HH:MM" between 00:00 and 23:59')
        return time(int(match[1]), int(match[2]))

    @field_validator("groups", "days")
    @classmethod
    def _some(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError('give at least one (groups: "all" for every host)')
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
                raise ValueError(
                    f"unknown time zone {value!r} (an IANA name: Europe/London)"
                ) from exc
        return value

    @field_validator("from_", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("give a date, time and UTC offset: 2026-12-24T00:00:00+00:00")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        recurring = any(v is not None for v in (self.start, self.end, self.days))
        if recurring and (self.from_ is not None or self.until is not None):
            raise ValueError("a window is recurring (start/end) or one-off (from/until), not both")
        if not recurring and self.from_ is None and self.until is None:
            raise ValueError("give start and end (recurring) or from and until (one-off)")
        if recurring:
            if self.start is None or self.end is None:
                raise ValueError("a recurring window needs both start and end")
            if self.start == self.end:
                raise ValueError("start and end are equal: give a window of some length")
            if self.timezone is None:
                raise ValueError("a recurring window needs a timezone (an IANA name)")
        elif self.from_ is None or self.until is None:
            raise ValueError("a one-off window needs both from and until")
        elif self.from_ >= self.until:
            raise ValueError("from must be before until")
        return self

    @property
    def zone(self) -> tzinfo | None:
        """Where its times are shown: its timezone, else the offset its one-off times carry."""
        if self.timezone is not None:
            return ZoneInfo(self.timezone)
        return self.until.tzinfo if self.until is not None else None

    def closes(self, at: datetime) -> datetime | None:
        """When the window, if open at `at`, closes (UTC); None when it is closed then."""
        at = at.astimezone(UTC)
        if self.from_ is not None and self.until is not None:
            return self.until.astimezone(UTC) if self.from_ <= at < self.until else None
        if self.start is None or self.end is None or self.timezone is None:
            return None  # not reached: validation requires them
        zone = ZoneInfo(self.timezone)
        today = at.astimezone(zone).date()
        # An occurrence is shorter than a day, so only yesterday's or today's can be open.
        for day in (today - timedelta(days=1), today):
            if self.days is not None and DAYS[day.weekday()] not in self.days:
                continue
            opens = _instant(datetime.combine(day, self.start), zone, last=False)
            end_day = day + timedelta(days=1) if self.end < self.start else day
            closes = _instant(datetime.combine(end_day, self.end), zone, last=True)
            if opens <= at < closes:
                return closes
        return None

    def describe(self) -> str:
        """ "mon-fri 11:30-14:00 Europe/London", or "2026-12-24 00:00 UTC to ..." """
        if self.from_ is not None and self.until is not None:
            return f"{_show(self.from_, self.zone)} to {_show(self.until, self.zone)}"
        hours = f"{self.start:%H:%M}-{self.end:%H:%M}"
        return f"{_days(self.days)} {hours} {self.timezone}"


@dataclass(frozen=True)
class Blocked:
    """A window open over some of a run's hosts, and when those hosts are free again."""

    window: Window
    hosts: tuple[str, ...]
    groups: tuple[str, ...]  # the window's groups these hosts are in
    until: datetime  # when no window covers any of these hosts any more (UTC)
    policy: BlackoutPolicy  # the window's own, else the file's

    def __str__(self) -> str:
        shown = ", ".join(self.hosts[:_MAX_HOSTS_SHOWN])
        if len(self.hosts) > _MAX_HOSTS_SHOWN:
            shown += f" and {len(self.hosts) - _MAX_HOSTS_SHOWN} more"
        label = "group" if len(self.groups) == 1 else "groups"
        until = _show(self.until, self.window.zone)
        return (
            f"blackout window {self.window.name!r} ({self.window.describe()}) is open for "
            f"{shown} ({label} {', '.join(self.groups)}) until {until}"
        )


class Blackouts(BaseModel):
    """An inventory's blackout windows and the default policy for runs that hit one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: BlackoutPolicy = Field(
        default="wait", description="What a run that would start inside does."
    )
    windows: tuple[Window, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Blackouts:
        names = [window.name for window in self.windows]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"window names repeat: {', '.join(map(repr, repeated))}")
        return self

    def blocking(self, hosts_groups: Mapping[str, Sequence[str]], now: datetime) -> list[Blocked]:
        """The windows open at `now` over any of the hosts (host -> its inventory groups)."""
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        found = []
        for window in self.windows:
            if window.closes(now) is None:
                continue
            hosts = [h for h in hosts_groups if _matched(window, hosts_groups[h])]
            if not hosts:
                continue
            groups = set().union(*(_matched(window, hosts_groups[h]) for h in hosts))
            until = self._free_at(hosts, hosts_groups, now)
            order = tuple(sorted(hosts, key=natural_key))
            found.append(
                Blocked(window, order, tuple(sorted(groups)), until, window.policy or self.policy)
            )
        return found

    def _free_at(
        self, hosts: Sequence[str], hosts_groups: Mapping[str, Sequence[str]], now: datetime
    ) -> datetime:
        """The first instant from `now` at which no window covers any of `hosts`."""
        relevant = [w for w in self.windows if any(_matched(w, hosts_groups[h]) for h in hosts)]
        at, horizon = now.astimezone(UTC), now + _HORIZON
        while at < horizon:
            ends = [end for window in relevant if (end := window.closes(at)) is not None]
            if not ends:
                break
            at = max(ends)
        return at


def load_blackouts(inventory_dir: Path) -> Blackouts:
    """The windows of `inventory_dir`/blackouts.yml: none without the file; ConfigurationError
    naming the file and the window when it is not valid."""
    path = inventory_dir / BLACKOUTS_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return Blackouts()
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read blackout windows {path}: {exc}") from exc
    try:
        return Blackouts.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigurationError(f"invalid blackout windows {path}: {_reasons(exc, data)}") from exc


def enforce_blackouts(
    blackouts: Blackouts,
    hosts_groups: Mapping[str, Sequence[str]],
    logger: Logger,
    *,
    policy: BlackoutPolicy | None = None,
    max_wait_seconds: float | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = _time.sleep,
) -> None:
    """Return once no window is open over the hosts: at once, after waiting for the windows
    to close (policy wait), or never (InBlackout: policy fail, or past `max_wait_seconds`).

    `policy` overrides the windows' and the file's. Call it only for runs that may change
    hosts: check mode changes nothing and is never held back. The clock is read again after
    every slice of sleep (at most a minute), so a window that opens meanwhile holds the run
    too, and a clock that jumps is followed.
    """
    _check_policy(policy)
    started = now()
    told: set[tuple[str, datetime]] = set()
    while blocked := blackouts.blocking(hosts_groups, current := now()):
        if failing := [b for b in blocked if (policy or b.policy) == "fail"]:
            closes = "it closes" if len(failing) == 1 else "they close"
            raise InBlackout(
                f"{'; '.join(map(str, failing))}: nothing was run. "
                f"Run again after {closes}, {_HINT}.",
                max(b.until for b in failing),
            )
        until = max(b.until for b in blocked)
        if max_wait_seconds is not None and (until - started).total_seconds() > max_wait_seconds:
            raise InBlackout(_too_long(blocked, current - started, max_wait_seconds), until)
        if new := {(b.window.name, b.until) for b in blocked} - told:
            told |= new
            logger.info(
                "%s: waiting %s before starting (no host lock is held meanwhile)",
                "; ".join(map(str, blocked)), _duration(until - current),
            )  # fmt: skip
        sleep(min(_SLICE, max((until - current).total_seconds(), 0.0)))
    if told:
        logger.info("blackout over after waiting %s: starting", _duration(now() - started))


def gate_run(
    inventory: Path,
    hosts: Sequence[str],
    read_groups: Callable[[], Mapping[str, Sequence[str]]],
    logger: Logger,
    *,
    policy: BlackoutPolicy | None = None,
) -> None:
    """Hold back a run that would change `hosts` while a window of the inventory is open.

    run_playbook calls it after the preflight, before taking host locks, and not in check
    mode. `read_groups` (host -> groups; runs ansible-inventory) is only called when the
    inventory has windows. If the groups cannot be read, the run fails rather than go
    ahead unchecked.
    """
    _check_policy(policy)
    blackouts = load_blackouts(inventory if inventory.is_dir() else inventory.parent)
    if not blackouts.windows:
        return
    known = read_groups()
    if hosts and not known and any(g != "all" for w in blackouts.windows for g in w.groups):
        raise ConfigurationError(
            f"cannot read the host groups of inventory {inventory} (ansible-inventory --graph "
            "failed), so its blackout windows cannot be checked: nothing was run"
        )
    enforce_blackouts(blackouts, {h: known.get(h, ()) for h in hosts}, logger, policy=policy)


def _check_policy(policy: object) -> None:
    if policy not in (None, "wait", "fail"):
        raise ConfigurationError(f"blackout policy must be 'wait' or 'fail', not {policy!r}")


def _matched(window: Window, groups: Sequence[str]) -> set[str]:
    """The window's groups a host with these groups is in ("all"; "ungrouped" if none)."""
    member_of = {"all", *groups} if groups else {"all", "ungrouped"}
    return member_of.intersection(window.groups)


def _instant(wall: datetime, zone: ZoneInfo, *, last: bool) -> datetime:
    """The UTC instant of a local wall time. One the clocks pass twice: the first, or the
    `last`; one they skip: the moment they jump past it."""
    first, second = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return second if last else first
    low, high = int(first.timestamp()), int(second.timestamp())  # the jump is in between
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _show(at: datetime, zone: tzinfo | None) -> str:
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _days(days: Sequence[Day] | None) -> str:
    """ "daily", "mon-fri", "sat, sun", "mon, wed-fri" """
    chosen = sorted({DAYS.index(day) for day in days or DAYS})
    if len(chosen) == len(DAYS):
        return "daily"
    runs: list[list[int]] = []
    for index in chosen:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(
        f"{DAYS[r[0]]}-{DAYS[r[-1]]}" if len(r) > 2 else ", ".join(DAYS[i] for i in r) for r in runs
    )


def _duration(span: timedelta) -> str:
    seconds = max(round(span.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    days, rest = divmod(seconds // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min")]
    return " ".join(f"{value} {unit}" for value, unit in parts if value)


def _too_long(blocked: list[Blocked], waited: timedelta, max_wait: float) -> str:
    where = "; ".join(map(str, blocked))
    limit = _duration(timedelta(seconds=max_wait))
    if waited.total_seconds() > 0:
        return (
            f"still in blackout after waiting {_duration(waited)} (at most {limit}): {where}: "
            "nothing was run"
        )
    return (
        f"{where}: longer than the maximum wait of {limit}: nothing was run. "
        f"Run again after it closes, {_HINT}."
    )


def _reasons(exc: ValidationError, data: Any) -> str:
    """Pydantic's errors, each naming the window (by name) and the key it is about."""
    reasons = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(map(str, loc))
        if len(loc) >= 2 and loc[0] == "windows" and isinstance(loc[1], int):
            where = " ".join([f"window {_window_name(data, loc[1])}", ".".join(map(str, loc[2:]))])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        message = str(message).removeprefix("Value error, ")
        reasons.append(f"{where.strip()}: {message}" if where.strip() else message)
    return "; ".join(reasons)


def _window_name(data: Any, index: int) -> str:
    try:
        name = data["windows"][index]["name"]
    except (TypeError, KeyError, IndexError):
        name = None
    return repr(name) if isinstance(name, str) and name else f"#{index + 1}"
