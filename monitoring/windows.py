"""Time windows as users write them: `24h`, `7d`, `90m`, or `FROM..TO` (ISO 8601), ending now by default."""

import datetime as dt
import re
from dataclasses import dataclass

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.errors import InvalidInput

_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_WINDOW = dt.timedelta(days=400)


@dataclass(frozen=True)
class Window:
    """[start, end) and the label it was asked by."""

    label: str
    start: dt.datetime
    end: dt.datetime

    @property
    def hours(self):
        return (self.end - self.start).total_seconds() / 3600


def moment_parse(value, *, field):
    """A datetime from ISO 8601 (a date means its midnight, UTC when no offset is given)."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value or "").strip().replace(" ", "T")
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            if day is None:
                raise InvalidInput(f"{value!r} is not a date or time (ISO 8601, e.g. 2026-11-01T12:00Z)", field=field)
            moment = dt.datetime.combine(day, dt.time())
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def window_parse(text, *, now=None, field="window"):
    """`24h` (the last 24 hours), `7d`, `2w`, `90m`, or `2026-11-01..2026-11-08`."""
    now = now or timezone.now()
    text = str(text or "").strip().lower()
    if ".." in text:
        first, last = text.split("..", 1)
        start, end = moment_parse(first, field=field), moment_parse(last, field=field)
        label = text
    else:
        match = _DURATION.match(text)
        if not match or int(match.group(1)) == 0:
            raise InvalidInput(f"{text!r} is not a window: use 1h, 24h, 7d, 30d or FROM..TO", field=field)
        amount, unit = int(match.group(1)), match.group(2)
        end = now
        try:
            start = end - dt.timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise InvalidInput(f"{text!r} is too long (at most {MAX_WINDOW.days} days)", field=field) from None
        label = f"{amount}{unit}"
    if end <= start:
        raise InvalidInput("the window's end must come after its start", field=field)
    if end - start > MAX_WINDOW:
        raise InvalidInput(f"{text!r} is too long (at most {MAX_WINDOW.days} days)", field=field)
    return Window(label=label, start=start, end=end)


def hour_floor(moment):
    """The start of the hour `moment` falls in (UTC)."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
