from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save

from chat.conf import BACKEND_SPECS, CHAT_SPECS
from chat.signals import reply_finished, security_events_recorded
from grace.conf import settings_specs_register
from grace.faults import fault_point_register
from grace.features import dependency_source_register, feature_register
from grace.health import health_register


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        # Imported here, once the app registry is ready: they import the models.
        from chat import checks  # noqa: F401 - registers the system checks
        from chat.backends.usage import usage_subscribe
        from chat.dashboard import chat_panel
        from chat.embeddings import checks as embeddings_checks  # noqa: F401 - same
        from chat.health import model_backend_health
        from chat.ingest import knowledge_embed_after_migrate
        from chat.inspection import MASK_DOES, MASK_POINT
        from chat.metrics import METRICS, breaker_states, chat_dependencies
        from chat.models import SecurityRule
        from chat.observers import reply_observe, security_events_observe, usage_observe
        from chat.pipeline import FEATURES, STAGES
        from chat.receivers import rules_changed
        from chat.story import story_sources_register
        from grace.metrics.buffer import gauge_source_register
        from grace.metrics.catalog import metric_register
        from grace.metrics.selectors import dashboard_panel_register

        settings_specs_register("GRACE_CHAT", CHAT_SPECS, title="Chat")
        settings_specs_register(
            'GRACE_CHAT["REPLY_BACKENDS"]', BACKEND_SPECS, title="Chat: the model backends",
            about="The OPTIONS of the `openai` and `local` reply backends (docs/models.md).",
        )
        fault_point_register(MASK_POINT, MASK_DOES)
        for stage in STAGES:
            fault_point_register(stage.name, f"the {stage.name} stage fails ({stage.does})")
        for name, description in FEATURES.items():
            feature_register(name, description)
        for metric in METRICS:
            metric_register(metric)
        gauge_source_register(breaker_states)
        dependency_source_register(chat_dependencies)
        health_register("model_backend", model_backend_health)
        story_sources_register()
        dashboard_panel_register(chat_panel([stage.name for stage in STAGES]))

        post_migrate.connect(
            knowledge_embed_after_migrate, sender=self, dispatch_uid="chat.knowledge.embed"
        )
        post_save.connect(rules_changed, sender=SecurityRule, dispatch_uid="chat.rules.saved")
        post_delete.connect(rules_changed, sender=SecurityRule, dispatch_uid="chat.rules.deleted")
        reply_finished.connect(reply_observe, dispatch_uid="chat.observers.reply")
        security_events_recorded.connect(
            security_events_observe, dispatch_uid="chat.observers.security_events"
        )
        usage_subscribe(usage_observe)
