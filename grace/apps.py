from __future__ import annotations

from django.apps import AppConfig


class GraceConfig(AppConfig):
    name = "grace"
    verbose_name = "Grace operations"

    def ready(self) -> None:
        from grace import checks, db, signals  # noqa: F401 - receivers and checks
        from grace.conf import settings_specs_register
        from grace.ops import ops_ready
        from grace.ops_conf import GRACE_SPECS
        from grace.revocation import revocation_connect

        settings_specs_register("GRACE", GRACE_SPECS, title="Core")
        ops_ready()  # audit, events, metrics: receivers, system checks, health entries
        revocation_connect()  # open websockets hear of revoked tokens, users, sessions
