"""Settings of the websocket chat and the page, with their defaults.

Properties read ``django.conf.settings`` on every access, so ``override_settings`` and
the pytest ``settings`` fixture just work.
"""

from __future__ import annotations

from django.conf import settings


class WsConf:
    @property
    def max_frame_bytes(self) -> int:
        """A frame above this gets an ``error`` frame (``payload_too_large``)."""
        return int(getattr(settings, "GRACE_WS_MAX_FRAME_BYTES", 65536))

    @property
    def close_frame_bytes(self) -> int:
        """A frame above this closes the socket with 1009 (message too big)."""
        return max(
            int(getattr(settings, "GRACE_WS_CLOSE_FRAME_BYTES", 1048576)), self.max_frame_bytes
        )

    @property
    def allow_anonymous(self) -> bool:
        """``GRACE_ALLOW_ANONYMOUS`` (the chat issue's setting): chat without logging in."""
        return bool(getattr(settings, "GRACE_ALLOW_ANONYMOUS", False))


ws_conf = WsConf()
