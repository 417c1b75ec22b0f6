"""The core's settings (``settings.GRACE``): requests, error log, health, logging, audit
log, event bus, metrics, fault injection and feature switches.

Each default is written here once, in its spec; grace/settings.py reads the environment
into ``GRACE`` with these specs, and ``ops_settings`` reads ``GRACE`` when used (see
grace/conf.py).
"""

from __future__ import annotations

from typing import Any

from grace.conf import AppSettings, Setting

# Scripts and styles from the site only (inline ones need the request's nonce); the
# admin change list's one inline <style> by its hash (grace/headers.py).
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DEFAULT_PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=()"
)


def _at_most(value: int, limit: int) -> int:
    if value > limit:
        raise ValueError(f"is over {limit}")
    return value


GRACE_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_MAX_BODY_BYTES", "MAX_BODY_BYTES", int, 65536,
            "Request bodies above this are answered 413: refused from their `Content-Length` "
            "before they are read where the server allows (docs/security.md).", minimum=1024),
    Setting("GRACE_JSON_MAX_DEPTH", "JSON_MAX_DEPTH", int, 32,
            "JSON request bodies nested deeper than this are answered 400 (checked before "
            "parsing).", minimum=2, check=lambda depth: _at_most(depth, 200)),
    Setting("GRACE_CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY", str, DEFAULT_CSP,
            "The `Content-Security-Policy` of every response; a page that uses "
            "`{{ request.csp_nonce }}` gets `'nonce-...'` added to script-src and style-src. "
            "`off`: none (e.g. when a proxy sets it)."),
    Setting("GRACE_PERMISSIONS_POLICY", "PERMISSIONS_POLICY", str, DEFAULT_PERMISSIONS_POLICY,
            "The `Permissions-Policy` of every response; `off`: none."),
    Setting("GRACE_ACCESS_LOG", "ACCESS_LOG", bool, True,
            "One JSON `grace.access` line per request: method, path, status, duration_ms, "
            "request_id."),
    Setting("GRACE_SQLITE_BUSY_TIMEOUT_MS", "SQLITE_BUSY_TIMEOUT_MS", int, 5000,
            "SQLite `busy_timeout`, set on every connection.", minimum=0),
    Setting("GRACE_ERROR_LOG_MAX_ROWS", "ERROR_LOG_MAX_ROWS", int, 10000,
            "The error log keeps the newest rows only.", minimum=1),
    Setting("GRACE_ERROR_LOG_TIMEOUT", "ERROR_LOG_TIMEOUT", float, 2.0,
            "Seconds a 500 from sync code waits at most for its error-log row (async code never"
            " waits).", minimum=0.1),
    Setting("GRACE_HEALTH_TIMEOUT", "HEALTH_TIMEOUT", float, 2.0,
            "Seconds an `/api/health` round may take; a check still running then reports `timed"
            " out`.", minimum=0.1),
    Setting("GRACE_AUDIT_TIMEOUT", "AUDIT_TIMEOUT", float, 2.0,
            "Seconds a waiting `safe_log` waits for its audit entry.",
            minimum=0.05),
    Setting("GRACE_AUDIT_QUEUE", "AUDIT_QUEUE", int, 10000,
            "Audit entries waiting for the writer thread; beyond it they are refused (and "
            "logged).",
            minimum=1),
    Setting("GRACE_AUDIT_KEY", "AUDIT_KEY", str, "",
            "The key of the audit chain's HMAC-SHA256 (at least 32 characters): without it a "
            "changed entry cannot be re-hashed to verify. Keep it off the database host; "
            "`check --deploy` warns (`grace.W030`) while it is derived from the development "
            "secret key.",
            default_doc="derived from `GRACE_SECRET_KEY`"),
    Setting("GRACE_AUDIT_KEY_FALLBACKS", "AUDIT_KEY_FALLBACKS", list, [],
            "Former audit keys (after a change of `GRACE_AUDIT_KEY` or of the secret key it "
            "was derived from): entries they signed still verify; no entry signed with one "
            "may follow an entry signed with the current key."),
    Setting("GRACE_AUDIT_CHECKPOINT_PATH", "AUDIT_CHECKPOINT_PATH", str, "",
            "JSON-lines file the audit chain's head is appended to (outside the database), "
            "read by `verify_audit_log`; relative to the project directory; `off`: none "
            "(`grace.W031` in `check --deploy`).",
            default_doc="SQLite: `<database name>.audit-checkpoints.jsonl` beside the "
            "database file; other engines: none"),
    Setting("GRACE_AUDIT_CHECKPOINT_SECONDS", "AUDIT_CHECKPOINT_SECONDS", float, 60.0,
            "Each process that appended audit entries checkpoints the head it wrote at most "
            "this often (and at exit); the newest entries since are not anchored yet.",
            minimum=1.0),
    Setting("GRACE_EVENTS_TIMEOUT", "EVENTS_TIMEOUT", float, 1.0,
            "Seconds one event publish may take.", minimum=0.05),
    Setting("GRACE_WS_AUTH_RECHECK_SECONDS", "WS_AUTH_RECHECK_SECONDS", float, 5.0,
            "How often every open websocket's token or session is checked again, so that a "
            "revocation the channel layer did not announce (a direct SQL update, another "
            "host) closes it within this (an admin or command revocation closes it at once); "
            "also how long a process trusts an API token it found active before reading it "
            "again (docs/security.md).",
            minimum=0.1),
    Setting("GRACE_WS_BAD_FRAMES", "WS_BAD_FRAMES", int, 20,
            "Invalid frames (not JSON, too deep, unknown type, not valid...) one websocket may "
            "send within `GRACE_WS_BAD_FRAMES_SECONDS`; the next closes it (1008).",
            minimum=1),
    Setting("GRACE_WS_BAD_FRAMES_SECONDS", "WS_BAD_FRAMES_SECONDS", float, 10.0,
            "The window `GRACE_WS_BAD_FRAMES` counts over.", minimum=0.1),
    Setting("GRACE_METRICS_TOKEN", "METRICS_TOKEN", str, "",
            "`Authorization: Bearer <token>` that may scrape `GET /api/metrics`.",
            default_doc="(empty: staff sessions only)"),
    Setting("GRACE_METRICS_FLUSH_SECONDS", "METRICS_FLUSH_SECONDS", float, 2.0,
            "How often each process writes its buffered metrics.",
            minimum=0.05),
    Setting("GRACE_METRICS_BUFFER", "METRICS_BUFFER", int, 50000,
            "Measurements a process buffers; beyond it they are dropped and counted.", minimum=100),
    Setting("GRACE_METRICS_RETENTION_DAYS", "METRICS_RETENTION_DAYS", float, 14.0,
            "Days the per-minute rollups (the dashboard) are kept.", minimum=0.01),
    Setting("GRACE_METRICS_EVENTS_HOURS", "METRICS_EVENTS_HOURS", float, 24.0,
            "Hours raw request metrics (by request ID) are kept; `0` keeps none.", minimum=0),
    Setting("GRACE_FAULTS", "FAULTS", str, "",
            "Fault injection for drills: `point=mode,...` (`respond=error,store=hang`; modes "
            "`error`, `timeout`, `hang`). Unknown points: `grace.E020`. Never in production."),
    Setting("GRACE_FAULT_HANG_SECONDS", "FAULT_HANG_SECONDS", float, 60.0,
            "How long a `hang` fault holds its thread.", minimum=0.1),
    Setting("GRACE_DISABLED_FEATURES", "DISABLED_FEATURES", list, [],
            "Optional parts switched off, e.g. `learning,audit` (`manage.py check` lists the "
            "registered features; unknown names: `grace.E022`)."),
    Setting("", "CHANNEL_LAYER_FALLBACK", str, "",
            "Set by the settings module: why the Redis channel layer it was given could not "
            "be used (the in-memory layer replaced it; grace.W010), or empty."),
)


class OpsSettings(AppSettings):
    """``settings.GRACE``, read at use."""

    MAX_BODY_BYTES: int
    JSON_MAX_DEPTH: int
    CONTENT_SECURITY_POLICY: str
    PERMISSIONS_POLICY: str
    ACCESS_LOG: bool
    SQLITE_BUSY_TIMEOUT_MS: int
    ERROR_LOG_MAX_ROWS: int
    ERROR_LOG_TIMEOUT: float
    HEALTH_TIMEOUT: float
    AUDIT_TIMEOUT: float
    AUDIT_QUEUE: int
    AUDIT_KEY: str
    AUDIT_KEY_FALLBACKS: Any
    AUDIT_CHECKPOINT_PATH: str
    AUDIT_CHECKPOINT_SECONDS: float
    EVENTS_TIMEOUT: float
    WS_AUTH_RECHECK_SECONDS: float
    WS_BAD_FRAMES: int
    WS_BAD_FRAMES_SECONDS: float
    METRICS_TOKEN: str
    METRICS_FLUSH_SECONDS: float
    METRICS_BUFFER: int
    METRICS_RETENTION_DAYS: float
    METRICS_EVENTS_HOURS: float
    FAULTS: Any
    FAULT_HANG_SECONDS: float
    DISABLED_FEATURES: Any
    CHANNEL_LAYER_FALLBACK: str


ops_settings = OpsSettings("GRACE", GRACE_SPECS)
