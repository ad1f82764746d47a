"""Error pages: a clear message and the right status, never a stack trace."""

from __future__ import annotations

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from consent import NoTemplate

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please log in.",
    403: "You do not have access to this page.",
    404: "This page does not exist.",
    405: "This action is not allowed here.",
    413: "The upload is too large. Please send fewer or smaller files at a time.",
    429: "Too many attempts. Please wait a minute and try again.",
    500: "Something went wrong on our side. Nothing you sent was stored. Please try again later.",
}


def init_app(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(NoTemplate, _no_template)
    app.register_error_handler(Exception, _unexpected)


def _page(status: int, message: str) -> tuple[object, int]:
    if request.path.startswith(("/api/", "/healthz")):
        return jsonify({"status": status, "detail": message}), status
    return render_template("error.html", status=status, message=message), status


def _csrf_error(_error: CSRFError) -> tuple[object, int]:
    return _page(400, "This form has expired. Please go back, reload the page and try again.")


def _http_error(error: HTTPException) -> tuple[object, int]:
    status = error.code or 500
    return _page(status, MESSAGES.get(status, error.description or "Error."))


def _no_template(_error: NoTemplate) -> tuple[object, int]:
    return _page(503, "No consent text has been published yet. Please come back later.")


def _unexpected(error: Exception) -> tuple[object, int]:
    if isinstance(error, HTTPException):
        return _http_error(error)
    current_app.logger.exception("unhandled error on %s %s", request.method, request.url_rule)
    return _page(500, MESSAGES[500])
