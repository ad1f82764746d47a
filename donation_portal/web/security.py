"""Login, CSRF, rate limits and role checks; every refused authorisation (403) is audited.

Every view declares who may call it, with exactly one of these decorators placed directly
under its route decorator(s). Each records an :class:`Access` on the view (read it with
:func:`access_of`); ``tests/donation_portal/test_access_control.py`` fails for any endpoint
without one, and checks every role (and an anonymous caller) against every declaration.

- ``@public``: anyone, logged in or not (login, register, receipt checks, health).
- ``@logged_in``: any logged-in user, whatever their role; others are sent to log in.
- ``@role_required("steward", "admin")``: logged-in users with one of the roles; anonymous
  callers are sent to log in, other roles get 403.
- ``api_scope(scope)``: a researcher's bearer API token granting ``scope``, no login cookie.
  Only ``web.api.requires`` applies it, where it checks the token: views use ``requires``.
- ``@checked_in_hook("donor")``: the roles a blueprint's ``before_request`` hook lets
  through, for views whose refusals must be in the blueprint's own format (tus). It only
  declares; the hook enforces, and the test proves the two agree.

A declaration says which roles may call a view at all. Which objects they may reach is the
view's (or its use case's) business: another donor's donation, upload or release is answered
404, so its existence is not revealed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_wtf.csrf import CSRFProtect

from donation_portal.adapters.models import ROLES, User
from donation_portal.adapters.request_session import get_session
from donation_portal.web import sessions
from donation_portal.workflows import accounts, login_sessions

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.session_protection = "strong"
limiter = Limiter(key_func=get_remote_address, default_limits=[])

F = TypeVar("F", bound=Callable[..., Any])


class LoginUser(UserMixin):  # type: ignore[misc]  # flask-login ships no type information
    """What flask-login keeps: the user row, plus the key (kept in the cookie) and ID of the
    server-side login session that logging out, or its owner elsewhere, ends."""

    def __init__(self, user: User, key: str | None = None, session_id: int | None = None) -> None:
        self.user = user
        self.key = key  # set by ``sessions.begin`` when a login starts
        self.session_id = session_id

    def get_id(self) -> str | None:
        return self.key

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


@login_manager.user_loader  # type: ignore[untyped-decorator]  # flask-login is untyped
def _load_user(key: str) -> LoginUser | None:
    found = login_sessions.find(get_session(), key)
    if found is None:  # ended, or the account disabled
        return None
    row, user = found
    return LoginUser(user, key, row.id)


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
    limit: str = current_app.config["LOGIN_RATE_LIMIT"]
    return limit


@dataclass(frozen=True)
class Access:
    """Who may call a view, as its declaring decorator recorded it."""

    roles: frozenset[str]  # the roles of the logged-in users (or token owners) let through
    anonymous: bool = False  # callers who are not logged in, too
    scope: str | None = None  # a bearer API token granting this scope instead of a login


_ACCESS = "access"  # the attribute a view's declaration is kept in
ANYONE = Access(frozenset(ROLES), anonymous=True)
ANY_ROLE = Access(frozenset(ROLES))


def access_of(view: Callable[..., Any]) -> Access | None:
    """What ``view`` declared, or None if it declared nothing."""
    return getattr(view, _ACCESS, None)


def _declared(view: F, access: Access) -> F:
    setattr(view, _ACCESS, access)
    return view


def _known(roles: tuple[str, ...]) -> frozenset[str]:
    """``roles``, refused at import if one is misspelt: it would lock its users out."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"declare one or more of the roles {ROLES}, not {sorted(unknown)}")
    return frozenset(roles)


def public(view: F) -> F:
    """Anyone may call the view, logged in or not."""
    return _declared(view, ANYONE)


def logged_in(view: F) -> F:
    """Any logged-in user may call the view, whatever their role; others are sent to log in."""
    # flask-login is untyped; login_required wraps with functools.wraps, same signature
    guarded: F = login_required(view)
    return _declared(guarded, ANY_ROLE)


def role_required(*roles: str) -> Callable[[F], F]:
    """Only logged-in users with one of ``roles`` may pass; others get 403, and anonymous
    callers are sent to log in."""
    allowed = _known(roles)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        return _declared(wrapped, Access(allowed))  # type: ignore[return-value]

    return decorator


def api_scope(scope: str) -> Callable[[F], F]:
    """Declares that only a researcher's API token granting ``scope`` may call the view. It
    checks nothing itself: ``web.api.requires``, which checks the token, applies it."""

    def decorator(view: F) -> F:
        return _declared(view, Access(frozenset({"researcher"}), scope=scope))

    return decorator


def checked_in_hook(*roles: str) -> Callable[[F], F]:
    """Declares the ``roles`` the blueprint's ``before_request`` hook lets through to the
    view. It checks nothing itself: the hook does, answering in the blueprint's own format
    (tus problem replies rather than a login page)."""
    allowed = _known(roles)

    def decorator(view: F) -> F:
        return _declared(view, Access(allowed))

    return decorator
