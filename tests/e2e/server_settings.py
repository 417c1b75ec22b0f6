"""Settings of the end-to-end server: the project's, plus a slow deterministic backend."""

from grace.settings import *  # noqa: F403
from grace.settings import GRACE_CHAT

GRACE_CHAT = {
    **GRACE_CHAT,
    "REPLY_BACKENDS": {
        **GRACE_CHAT["REPLY_BACKENDS"],
        "slow": {"BACKEND": "tests.e2e.slow_backend.SlowBackend", "OPTIONS": {"DELAY": 0.06}},
    },
}
