"""Wiring of the operations parts, called once from ``GraceConfig.ready()``: signal
receivers (grace/observers.py), the system check of grace/features.py and the health
entries of grace/ops_health.py."""

from __future__ import annotations


def ops_ready() -> None:
    from django.core.checks import register

    from grace.features import features_check, features_startup_log
    from grace.observers import observers_connect
    from grace.ops_health import ops_health_register

    observers_connect()
    register(features_check)
    ops_health_register()
    features_startup_log()
