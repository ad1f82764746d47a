"""Security headers on every response (OWASP ASVS V14.4), set with the ``secure`` library.

- Pages (HTML) may load scripts, styles and images from the portal only: no inline script
  or style (the JavaScript is in ``static/``), no plugins, no ``<base>``, forms posting only
  to the portal, and no framing by anyone.
- Everything else (downloads, JSON, problem replies, static files) loads nothing and is
  sandboxed, so a file opened in the browser cannot run script as the portal.
- Every response: ``nosniff``, the referrer only to the portal itself (Flask-WTF's CSRF check
  needs it on HTTPS), powerful browser features off, and HSTS where HSTS_SECONDS is set
  (production: the other environments serve plain HTTP).
- ``Cache-Control: no-store`` on every response but static files: pages show personal data
  or hold CSRF tokens, downloads and API replies are personal.
"""

from __future__ import annotations

from flask import Flask, request
from secure import (
    CacheControl,
    ContentSecurityPolicy,
    CrossOriginOpenerPolicy,
    PermissionsPolicy,
    ReferrerPolicy,
    Secure,
    StrictTransportSecurity,
    XContentTypeOptions,
    XFrameOptions,
)
from werkzeug.wrappers import Response

SELF, NONE = "'self'", "'none'"


def page_policy() -> ContentSecurityPolicy:
    return (
        ContentSecurityPolicy()
        .default_src(SELF)
        .script_src(SELF)
        .style_src(SELF)
        .object_src(NONE)
        .base_uri(NONE)
        .form_action(SELF)
        .frame_ancestors(NONE)
    )


def sandbox_policy() -> ContentSecurityPolicy:
    return ContentSecurityPolicy().default_src(NONE).frame_ancestors(NONE).sandbox()


def permissions() -> PermissionsPolicy:
    """Features the portal never uses, off for it and anything it might embed."""
    return (
        PermissionsPolicy()
        .accelerometer()
        .browsing_topics()
        .camera()
        .display_capture()
        .geolocation()
        .gyroscope()
        .hid()
        .magnetometer()
        .microphone()
        .midi()
        .payment()
        .serial()
        .usb()
    )


def init_app(app: Flask) -> None:
    hsts_seconds = int(app.config["HSTS_SECONDS"])
    hsts = StrictTransportSecurity().max_age(hsts_seconds).include_subdomains()

    def headers(csp: ContentSecurityPolicy, *, cacheable: bool = False) -> Secure:
        return Secure(
            cache=None if cacheable else CacheControl().no_store(),
            coop=CrossOriginOpenerPolicy().same_origin(),
            csp=csp,
            hsts=hsts if hsts_seconds else None,
            permissions=permissions(),
            referrer=ReferrerPolicy().same_origin(),
            xcto=XContentTypeOptions().nosniff(),
            xfo=XFrameOptions().deny(),
        )

    pages = headers(page_policy())
    sandboxed = headers(sandbox_policy())
    static = headers(sandbox_policy(), cacheable=True)

    @app.after_request
    def _secure(response: Response) -> Response:
        if request.endpoint == "static":
            static.set_headers(response)
        elif _is_page(response):
            pages.set_headers(response)
        else:
            sandboxed.set_headers(response)
        return response


def _is_page(response: Response) -> bool:
    """An HTML page shown in the portal, not a file handed over as an attachment."""
    disposition = response.headers.get("Content-Disposition", "")
    return response.mimetype == "text/html" and not disposition.startswith("attachment")
