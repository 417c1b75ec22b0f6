from __future__ import annotations

import logging

from django.apps import AppConfig

logger = logging.getLogger("chat")


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat import checks, signals  # noqa: F401 - receivers and system checks
        from chat.conf import chat_settings
        from chat.faults import faults_describe
        from chat.health import faults_health

        faults = chat_settings.FAULTS
        if faults:
            from grace.health import health_register

            logger.warning(
                "GRACE_FAULTS is on (%s): these stages fail on purpose. Never in production.",
                faults_describe(faults),
            )
            health_register("faults", faults_health)
