"""The security headers of every response, and the Content-Security-Policy of every page.

``SecurityHeadersMiddleware`` (grace/middleware.py, first in ``MIDDLEWARE``) sets them on
every response Django makes, with a per-request nonce in the CSP when the page used
``{{ request.csp_nonce }}``; ``HttpGuard`` (grace/http_guard.py) adds the same headers,
without a nonce, to responses made outside Django's middleware (its 413, Django's own
400/413 for a request it could not build). A header a view or an inner middleware set
is never replaced.

The policy allows scripts and styles from the site itself only: no inline script, no
``eval``; an inline ``<script>``/``<style>`` needs the nonce. One hash (in the default policy,
grace/ops_conf.py) allows the single inline ``<style>`` of Django 5.2's admin change
list (a list without actions).
"""

from __future__ import annotations

import secrets

from django.conf import settings

from grace.ops_conf import ops_settings

NONCE_DIRECTIVES = ("script-src", "style-src")
OFF = {"", "off", "none"}


class CspNonce:
    """A per-request nonce made on first use; a response whose page never used it gets
    the policy without a nonce."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: str | None = None

    def __str__(self) -> str:
        if self._value is None:
            self._value = secrets.token_urlsafe(18)
        return self._value

    @property
    def used(self) -> str | None:
        return self._value


def csp_policy(*, nonce: str | None = None) -> str | None:
    """``GRACE_CONTENT_SECURITY_POLICY`` with ``'nonce-…'`` added to script-src and
    style-src; None when the setting is ``off``."""
    policy = ops_settings.CONTENT_SECURITY_POLICY.strip()
    if policy.lower() in OFF:
        return None
    if nonce is None:
        return policy
    directives = []
    for directive in policy.split(";"):
        name = directive.strip().split(" ", 1)[0].lower()
        if name in NONCE_DIRECTIVES:
            directive = f"{directive.rstrip()} 'nonce-{nonce}'"
        directives.append(directive.strip())
    return "; ".join(part for part in directives if part)


def security_headers(*, nonce: str | None = None) -> dict[str, str]:
    """Every header to set, from Grace's and Django's settings (Django's own middleware
    sets some of the same on responses it sees; these are for all the others too)."""
    headers: dict[str, str] = {}
    policy = csp_policy(nonce=nonce)
    if policy:
        headers["Content-Security-Policy"] = policy
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers["X-Content-Type-Options"] = "nosniff"
    referrer = settings.SECURE_REFERRER_POLICY
    if referrer:
        headers["Referrer-Policy"] = referrer if isinstance(referrer, str) else ",".join(referrer)
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    frame_options = getattr(settings, "X_FRAME_OPTIONS", "DENY")
    if frame_options:
        headers["X-Frame-Options"] = frame_options.upper()
    permissions = ops_settings.PERMISSIONS_POLICY.strip()
    if permissions.lower() not in OFF:
        headers["Permissions-Policy"] = permissions
    return headers
