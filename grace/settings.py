"""Grace settings, the composition root: every value a deployment may change comes from
the environment.

Each app declares its variables (one ``Setting`` spec each, with its default) in its conf
module; this module reads them into one dict per app: ``GRACE`` (the core), ``GRACE_CHAT``
and ``EXECUTOR``, and fills Django's own settings from the variables below. A value that
cannot be used does not raise here: it is kept in ``GRACE_SETTINGS_PROBLEMS`` and reported
by the system check ``grace.E010``. docs/settings.md lists every variable
(``manage.py settings_reference``); ``manage.py check --deploy`` warns about defaults that
are not safe in production.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chat.conf import BACKEND_SPECS, CHAT_SPECS, reply_backends
from executor.conf import EXECUTOR_SPECS, OPTION_SPECS
from grace.allocator import MALLOC
from grace.conf import Setting, settings_read, settings_specs_register
from grace.features import module_problem
from grace.ops_conf import GRACE_SPECS

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_SECRET_KEY = "django-insecure-grace-local-development-key-change-me"  # noqa: S105
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The variables of Django's own settings (and of the launcher, bin/run.py).
_PROJECT_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_SECRET_KEY", "SECRET_KEY", str, INSECURE_SECRET_KEY,
            "Django's `SECRET_KEY`; set it in production (check `grace.W001`).",
            default_doc="a development key"),
    Setting("GRACE_DEBUG", "DEBUG", bool, False,
            "Django's `DEBUG`; a 500 never shows a traceback under `/api/` either way."),
    Setting("GRACE_ALLOWED_HOSTS", "ALLOWED_HOSTS", list,
            ["localhost", "127.0.0.1", "[::1]", "testserver"],
            "Host names the service answers to (Django's `ALLOWED_HOSTS`)."),
    Setting("GRACE_CSRF_TRUSTED_ORIGINS", "CSRF_TRUSTED_ORIGINS", list, [],
            "Origins for the admin and the page behind a proxy (Django's "
            "`CSRF_TRUSTED_ORIGINS`)."),
    Setting("DATABASE_URL", "DATABASE_URL", str, "",
            "The main database, `DATABASES[\"default\"]` (`postgres://...` for PostgreSQL). "
            "A URL that does not parse stops start-up at once (its password never printed).",
            default_doc="`sqlite:///db.sqlite3`"),
    Setting("GRACE_METRICS_DATABASE_URL", "METRICS_DATABASE_URL", str, "",
            "The metrics database, `DATABASES[\"metrics\"]`.",
            default_doc="`sqlite:///metrics.sqlite3`"),
    Setting("GRACE_DB_CONN_MAX_AGE", "CONN_MAX_AGE", int, 60,
            "Seconds a database connection is kept for the next request or task (Django's "
            "`CONN_MAX_AGE`, checked before reuse); 0 opens one per request and per task. "
            "Safe under ASGI: requests run on reused threads (grace/request_threads.py), "
            "so at most 32 idle request threads per process keep one (docs/architecture.md).",
            minimum=0),
    Setting("REDIS_URL", "REDIS_URL", str, "",
            "`redis://...` switches the channel layer to channels-redis.",
            default_doc="(empty: the in-memory channel layer)"),
    Setting("GRACE_REDIS_SOCKET_TIMEOUT", "REDIS_SOCKET_TIMEOUT", float, 30.0,
            "Seconds a read from Redis may take: channels-redis waits for messages in 5 s "
            "blocking reads, and redis-py 8's own default of 5 s closed every websocket idle "
            "for 5 s (1011).", minimum=6.0),
    Setting("GRACE_LOG_LEVEL", "LOG_LEVEL", str, "INFO",
            "Level of the JSON log lines on stderr.", choices=_LOG_LEVELS),
    Setting("GRACE_NUM_PROXIES", "NINJA_NUM_PROXIES", int, 0,
            "Proxies whose `X-Forwarded-For` gives the client IP (0: the socket address, "
            "unspoofable).", minimum=0),
    Setting("GRACE_TASKS_BACKEND", "TASKS_BACKEND", str, "executor.backend.ExecutorBackend",
            "The Tasks API backend of `TASKS[\"default\"]` (docs/executor.md)."),
    Setting("GRACE_EXECUTOR_QUEUES", "TASKS_QUEUES", list, ["default"],
            "Queue names the backend accepts (`TASKS[\"default\"][\"QUEUES\"]`)."),
    MALLOC,
    Setting("GRACE_TEST_DB_DIR", "TEST_DB_DIR", str, "",
            "Tests only: the directory of the test databases (a file per test process).",
            default_doc="the system's temporary directory"),
)
settings_specs_register(
    "", _PROJECT_SPECS, title="Django and the launcher",
    about="Django's own settings, filled from these variables; the key column names the "
    "Django setting.",
)

_project, _project_problems = settings_read(_PROJECT_SPECS)
GRACE, _core_problems = settings_read(GRACE_SPECS)
_chat, _chat_problems = settings_read(CHAT_SPECS)
_backends, _backend_problems = settings_read(BACKEND_SPECS)
GRACE_CHAT = {**_chat, "REPLY_BACKENDS": reply_backends(_backends)}
EXECUTOR, _executor_problems = settings_read(EXECUTOR_SPECS)
_options, _option_problems = settings_read(OPTION_SPECS)
# Values that could not be used (each kept its default): reported by grace.E010.
GRACE_SETTINGS_PROBLEMS = [
    *_project_problems, *_core_problems, *_chat_problems, *_backend_problems,
    *_executor_problems, *_option_problems,
]

SECRET_KEY = _project["SECRET_KEY"]
DEBUG = _project["DEBUG"]
ALLOWED_HOSTS = _project["ALLOWED_HOSTS"]
CSRF_TRUSTED_ORIGINS = _project["CSRF_TRUSTED_ORIGINS"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_tasks",
    "ninja",  # /api/docs from local static files (the CDN page has an inline script)
    "grace.apps.GraceConfig",
    "grace.metrics.apps.MetricsConfig",
    "chat.apps.ChatConfig",
    "executor.apps.ExecutorConfig",
]

# Django's own middleware through grace/inline_middleware.py: the same classes, run on
# the event loop instead of a worker thread when they cannot block.
MIDDLEWARE = [
    "grace.middleware.SecurityHeadersMiddleware",  # every response, refusals below included
    "grace.middleware.RequestIDMiddleware",
    "grace.metrics.middleware.MetricsMiddleware",  # request metrics: in-memory buffer only
    "grace.middleware.ApiErrorMiddleware",
    "grace.inline_middleware.SecurityMiddleware",
    "grace.inline_middleware.SessionMiddleware",
    "grace.inline_middleware.CommonMiddleware",
    "grace.inline_middleware.CsrfViewMiddleware",
    "grace.inline_middleware.AuthenticationMiddleware",
    "grace.inline_middleware.MessageMiddleware",
    "grace.inline_middleware.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "grace.urls"
ASGI_APPLICATION = "grace.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases -------------------------------------------------------------------------
# SQLite in WAL mode by default (pragmas are set per connection in grace/db.py);
# PostgreSQL (or any Django engine) through DATABASE_URL / GRACE_METRICS_DATABASE_URL.

_CONN_MAX_AGE: int = _project["CONN_MAX_AGE"]
# Tests use a database file per test process (never an in-memory one) so that WAL,
# several connections and real server processes behave as in production.
_TEST_DB_DIR = Path(_project["TEST_DB_DIR"] or tempfile.gettempdir())


def _database(key: str, url_var: str, default_file: str) -> dict[str, Any]:
    url = _project[key] or f"sqlite:///{BASE_DIR / default_file}"
    try:
        parsed = dj_database_url.parse(
            url, conn_max_age=_CONN_MAX_AGE, conn_health_checks=_CONN_MAX_AGE > 0
        )
    except Exception as exc:  # the message never quotes the URL (it may hold a password)
        raise ImproperlyConfigured(f"{url_var} is not a usable database URL: {exc}") from None
    config: dict[str, Any] = dict(parsed)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        options = config.setdefault("OPTIONS", {})
        # BEGIN IMMEDIATE: a write transaction takes the write lock up front and waits
        # busy_timeout for it, instead of failing at once on a lock upgrade.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", GRACE["SQLITE_BUSY_TIMEOUT_MS"] / 1000)
        stem = Path(default_file).stem
        config["TEST"] = {"NAME": str(_TEST_DB_DIR / f"grace-test-{os.getpid()}-{stem}.sqlite3")}
    else:
        # Both aliases may name the same server and database: their test databases must
        # differ (and differ between test runs at the same time), so each gets its own.
        stem = Path(default_file).stem
        config["TEST"] = {"NAME": f"test_grace_{os.getpid()}_{stem}"}
    return config


DATABASES = {
    "default": _database("DATABASE_URL", "DATABASE_URL", "db.sqlite3"),
    "metrics": _database("METRICS_DATABASE_URL", "GRACE_METRICS_DATABASE_URL", "metrics.sqlite3"),
}
DATABASE_ROUTERS = ["grace.routers.MetricsRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache -----------------------------------------------------------------------------
# With REDIS_URL, one cache every process shares (the chat throttles count there, in
# Lua scripts Redis runs atomically); its keys start with "grace:" and its clear()
# deletes only those, never the channel layer's. Without Redis, Django's per-process
# memory cache: the chat throttles then count in the main database (chat/throttling.py),
# which every process of the host (every host, on PostgreSQL) shares.

if _project["REDIS_URL"]:
    CACHES = {
        "default": {
            "BACKEND": "grace.cache.RedisCache",
            "LOCATION": _project["REDIS_URL"],
            "KEY_PREFIX": "grace",
            # A throttle count waits for Redis on the event loop: never for long.
            "OPTIONS": {"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Channels and tasks ----------------------------------------------------------------

if _project["REDIS_URL"]:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{
                    "address": _project["REDIS_URL"],
                    # channels-redis waits for messages with a 5 s BZPOPMIN; redis-py 8's
                    # default socket timeout of 5 s closed every websocket idle for 5 s.
                    "socket_timeout": _project["REDIS_SOCKET_TIMEOUT"],
                }]
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# TASKS: see the Executor section at the end.

# --- Auth, i18n, static ----------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

# --- Request limits --------------------------------------------------------------------

# Bodies above GRACE["MAX_BODY_BYTES"] are answered 413 before they are read.
DATA_UPLOAD_MAX_MEMORY_SIZE = GRACE["MAX_BODY_BYTES"]

# --- Logging: one JSON object per line on stderr, each with the request ID -------------

_LOG_LEVEL = _project["LOG_LEVEL"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "grace.logging.RequestIDFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stderr"], "level": _LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": _LOG_LEVEL, "propagate": False},
        "daphne": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

# --- Chat: GRACE_CHAT (above) --------------------------------------------------------

# Proxies in front of Grace whose X-Forwarded-For is trusted for the client IP (the
# anonymous throttle's key); 0 uses the socket address, so the header cannot be spoofed.
NINJA_NUM_PROXIES = _project["NINJA_NUM_PROXIES"]

# --- Executor: EXECUTOR (above) and Django's TASKS -------------------------------------

# Queue options are checked at start-up (system checks executor.E001..).
_TASKS_BACKEND = _project["TASKS_BACKEND"]
TASKS = {
    "default": {
        "BACKEND": _TASKS_BACKEND,
        "QUEUES": _project["TASKS_QUEUES"],
        "OPTIONS": _options if _TASKS_BACKEND.startswith("executor.") else {},
    }
}
if _TASKS_BACKEND.startswith("executor."):
    # The executor logs every state change itself (logger "executor", with the task id and
    # the request ID); django_tasks' own receivers would log each a second time.
    _loggers: dict[str, Any] = LOGGING["loggers"]  # type: ignore[assignment]
    _loggers["django_tasks"] = {"handlers": ["stderr"], "level": "CRITICAL"}

# --- Operations: GRACE (above) --------------------------------------------------------

# A channel layer whose package cannot be imported would break every websocket: use the
# in-memory layer instead (logged at start-up, system check grace.W010).
if str(CHANNEL_LAYERS["default"]["BACKEND"]).startswith("channels_redis."):
    GRACE["CHANNEL_LAYER_FALLBACK"] = module_problem("channels_redis.core") or ""
    if GRACE["CHANNEL_LAYER_FALLBACK"]:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
