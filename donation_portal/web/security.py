"""Login, CSRF, rate limits and role checks; every refused authorisation (403) is audited."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect

from donation_portal.adapters.models import User
from donation_portal.adapters.request_session import get_session
from donation_portal.web import sessions
from donation_portal.workflows import accounts

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.session_protection = "strong"
limiter = Limiter(key_func=get_remote_address, default_limits=[])

F = TypeVar("F", bound=Callable[..., Any])


class LoginUser(UserMixin):
    """What flask-login keeps: the user row plus a session ID that logout can revoke."""

    def __init__(self, user: User) -> None:
        self.user = user

    def get_id(self) -> str:
        return accounts.login_id(self.user)

    @property
    def role(self) -> str:
        return self.user.role


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    sessions.init_app(app)  # first: an expired session is told so, not "this form has expired"
    csrf.init_app(app)
    # flask-login's own context processor loads the user (a query) for every template;
    # the proxy loads it only when a template reads it, so a page that does not (the error
    # page shown when the database is down) never touches the database.
    login_manager.init_app(app, add_context_processor=False)
    app.context_processor(lambda: {"current_user": current_user})
    limiter.init_app(app)
    app.after_request(_audit_refusal)


@login_manager.user_loader
def _load_user(login_id: str) -> LoginUser | None:
    user = accounts.user_for_login(get_session(), login_id)
    return LoginUser(user) if user is not None else None


def _audit_refusal(response: Response) -> Response:
    """Audit each 403 whichever check gave it (a role, the API's token check, tus, a wrong
    withdrawal code), under the endpoint refused."""
    if response.status_code != 403:
        return response
    user = current_user.user if current_user.is_authenticated else None
    session = get_session()
    session.rollback()  # the refused request's uncommitted work must not commit with the entry
    accounts.record_refusal(session, user, request.endpoint or "(none)")
    return response


def login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def role_required(*roles: str) -> Callable[[F], F]:
    """Only logged-in users with one of ``roles`` may pass; others get 403."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
