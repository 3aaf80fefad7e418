"""Structured logs: one JSON object a line (LOG_FORMAT=json, the default once DEBUG is off), each with the
request id of the HTTP request it was written in, so a log search by the X-Request-ID a client got back
finds every line of that request (and the audit entries carry the same id)."""

import datetime as dt
import json
import logging

from celery import current_task

from governance.context import current_request

# The attributes every LogRecord has; anything else on a record was passed in `extra` and is kept.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request", "request_id"}


class RequestIdFilter(logging.Filter):
    """Give each record the id of the request it was written in: the one being handled, or, for Django's
    own request log lines (written after the middleware let go), the request they are about. In a worker,
    the id and name of the Celery task being run."""

    def filter(self, record):
        request_id, _ = current_request()
        if not request_id:
            request_id = getattr(getattr(record, "request", None), "request_id", "")
        record.request_id = request_id
        task = current_task
        if task and getattr(task.request, "id", None):
            record.task_id, record.task_name = task.request.id, task.name
        return True


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601), level, logger, message, request_id, then the record's extra fields (such as
    Django's status_code) and the traceback, if any."""

    def format(self, record):
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", ""),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
