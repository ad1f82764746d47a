"""Structured logs: one JSON object per line on stderr, from the web app and the workers alike.

Every record goes through one handler on the root logger and one formatter: the portal's own
``logging`` calls, Flask's, werkzeug's and gunicorn's, Celery's, and structlog's should any
code use it. A log collector then reads a single format, and each line carries the context
bound for its request or job: ``request_id`` in the web app (also sent back as the
``X-Request-ID`` header and shown on every error page, so a person's report finds the log
lines), ``task_id`` and the enqueuing request's ``request_id`` in the workers.

What must never be logged (PHI, e-mail addresses, passwords, tokens, cookies) is kept out at
the source: log calls name rows by their IDs. The formatter adds one safeguard of its own,
because the servers write URLs it does not choose: access lines keep the method, path and
status only (no query string, such as a receipt's verification code; no client address,
referrer or user agent), and a query string in any other line is cut off.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from celery.signals import before_task_publish
from flask import Flask, Response, g, request
from structlog.typing import EventDict, Processor, WrappedLogger

REQUEST_ID_HEADER = "X-Request-ID"
HANDLER_NAME = "portal-json"
# an incoming ID is repeated (in headers, pages and logs) only if it can carry no markup,
# no line break and no long blob
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
_QUERY = re.compile(r"(/[^\s?\"']*)\?[^\s\"']*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SERVER_LOGGERS = ("gunicorn.error", "gunicorn.access")

log = logging.getLogger(__name__)


def configure() -> None:
    """Send every log record to stderr as JSON. Idempotent (each app factory call runs it)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    if not any(handler.name == HANDLER_NAME for handler in root.handlers):
        # the process's own stderr: a Celery worker replaces sys.stderr with a proxy that
        # logs what is written to it, which would loop back into this handler
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
        handler.name = HANDLER_NAME
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[*shared, _access_line],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _plain_text,
                    structlog.processors.JSONRenderer(),
                ],
                pass_foreign_args=True,
            )
        )
        root.addHandler(handler)
    for name in _SERVER_LOGGERS:
        # gunicorn gives its loggers handlers of their own, in its own format
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    before_task_publish.connect(_send_request_id, weak=False, dispatch_uid="portal-request-id")


def init_app(app: Flask) -> None:
    """Bind a request ID to each request's log lines and send it back. Register these hooks
    before any other, so that every later hook logs with the ID."""
    app.before_request(_begin_request)
    app.after_request(_answered)
    app.teardown_request(_end_request)


def request_id() -> str:
    """This request's ID: the caller's ``X-Request-ID`` when it is safe to repeat (a proxy's
    ID then finds its lines here too), a new random one otherwise. Needs no database."""
    if "request_id" not in g:
        incoming = safe_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id = incoming or secrets.token_hex(8)
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
    return g.request_id  # type: ignore[no-any-return]


def safe_request_id(value: object) -> str | None:
    """``value`` if it is a well-formed request ID, else None."""
    if isinstance(value, str) and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return None


def _begin_request() -> None:
    # a server thread serves many requests, and a test's app context many more: nothing
    # bound for the last one may stay
    structlog.contextvars.clear_contextvars()
    g.pop("request_id", None)
    request_id()


def _answered(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    # the development server's access lines cannot carry the ID; at DEBUG, this line does
    # (with the route's pattern: a URL's values can name a consent)
    rule = request.url_rule or "(no route)"
    log.debug("%s %s answered %s", request.method, rule, response.status_code)
    return response


def _end_request(_error: BaseException | None = None) -> None:
    structlog.contextvars.clear_contextvars()


def _send_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A job enqueued while handling a request carries that request's ID to the worker."""
    bound = structlog.contextvars.get_contextvars().get("request_id")
    if headers is not None and bound:
        headers["request_id"] = bound


def _access_line(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """werkzeug's and gunicorn's access lines as method, path and status (plus the request
    ID and duration gunicorn knows), rebuilt from the values they were formatted from."""
    args = event.pop("positional_args", ())
    record: logging.LogRecord = event["_record"]
    if record.name == "gunicorn.access" and isinstance(args, Mapping):
        method, path, status = args["m"], args["U"], args["s"]
        event["duration_ms"] = args["M"]
        sent_id = safe_request_id(args["{x-request-id}o"])
        if sent_id:
            event["request_id"] = sent_id
    elif (
        record.name == "werkzeug"
        and isinstance(args, tuple)
        and len(args) == 3
        and str(record.msg).rstrip().endswith('"%s" %s %s')
    ):
        method, _, target = _ANSI.sub("", str(args[0])).partition(" ")
        path, status = target.split("?", 1)[0].split(" ", 1)[0], args[1]
    else:
        return event
    event.update(event=f"{method} {path} {status}", method=method, path=path, status=status)
    return event


def _plain_text(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The message and traceback without query strings, nor terminal colours (werkzeug's)."""
    for key in ("event", "exception"):
        if isinstance(event.get(key), str):
            event[key] = _QUERY.sub(r"\1", _ANSI.sub("", event[key]))
    return event
